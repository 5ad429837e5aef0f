package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"orderd/domain"
)

// FuzzPostOrders feeds arbitrary bodies to the decoding and validation that POST /orders and
// POST /place-order run before anything touches the database. Whatever the body:
//   - nothing panics;
//   - a refusal is a KindInvalid *domain.Error that names a field, with a message, and
//     maps to a 4xx status;
//   - decodeStrict accepts only a body that is exactly one JSON value;
//   - a field named by Validate really breaks a rule;
//   - a placement that passes Validate can be placed, and the OrderPlaced it gives keeps
//     every invariant the database and the stages rely on.
func FuzzPostOrders(f *testing.F) {
	for _, seed := range []string{
		validOrder,
		`{"customerName":"Ann"}`,
		`{"customerName":"  Ann  ","customerEmail":"a@b.co","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":1000}]}`,
		orderBody(itemsJSON(50)),
		orderBody(itemsJSON(51)),
		orderBody(`[{"sku":"A","quantity":1},{"sku":"A","quantity":2}]`),
		orderBody(`[{"sku":"A","quantity":0}]`),
		orderBody(`[{"sku":"A","quantity":-1}]`),
		orderBody(`[{"sku":"A","quantity":1001}]`),
		orderBody(`[{"sku":"A","quantity":1e12}]`),
		orderBody(`[{"sku":"A","quantity":9223372036854775808}]`),
		orderBody(`[{"sku":"A","quantity":"1"}]`),
		orderBody(`[{"sku":"","quantity":1}]`),
		orderBody(`[{"sku":"` + strings.Repeat("S", 65) + `","quantity":1}]`),
		orderBody(`{"sku":"A"}`),
		`{"customerName":"` + strings.Repeat("é", 101) + `","customerEmail":"a@b.co","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann\r\nBcc: x","customerEmail":"a@b.co","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"jörg@example.com","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"Ann <a@b.co>","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":null,"customerEmail":null,"items":null}`,
		`{"customerName":"Ann","coupon":1}`,
		`{"customerName":"Ann"} {"customerName":"Bob"}`,
		`{"customerName":"Ann"}}`,
		`{"customerName":"Ann"}]`,
		`{"":0}`, `[]`, `"Ann"`, `42`, `null`, `{}`, ``, `{`, `{"customerName":`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkOrderBody(t, body)
		checkSeedBody(t, body)
	})
}

// FuzzPlacement builds well-formed POST /orders bodies from a few values, so that the fuzzer
// spends its time on the rules (lengths, characters, addresses, quantities, duplicates, the
// 50-line limit) rather than on JSON syntax.
func FuzzPlacement(f *testing.F) {
	f.Add("Ann", "ann@example.com", "SKU-BOOK", 2, "SKU-MUG", 1, uint8(0))
	f.Add(" Ann ", "", "A", 1000, "A", 1, uint8(48))
	f.Add(strings.Repeat("😀", 100), "a@b", " ", 0, "B", -1, uint8(49))
	f.Add("x\ny", "\"a b\"@example.com", strings.Repeat("S", 64), 1001, "C", 1, uint8(255))
	f.Fuzz(func(t *testing.T, name, email, sku0 string, q0 int, sku1 string, q1 int, filler uint8) {
		items := []map[string]any{{"sku": sku0, "quantity": q0}, {"sku": sku1, "quantity": q1}}
		for i := range int(filler) % 60 {
			items = append(items, map[string]any{"sku": fmt.Sprintf("F-%d", i), "quantity": 1})
		}
		body, err := json.Marshal(map[string]any{"customerName": name, "customerEmail": email, "items": items})
		if err != nil {
			t.Fatal(err)
		}
		checkOrderBody(t, body)
	})
}

// checkOrderBody runs POST /orders' decoding and validation on body.
func checkOrderBody(t *testing.T, body []byte) {
	t.Helper()
	var req orderRequest
	if err := decodeStrict(body, &req); err != nil {
		assertRefusal(t, "decodeStrict", body, err)
		return
	}
	assertOneJSONValue(t, body)
	p, err := req.placement()
	if err != nil {
		assertRefusal(t, "placement", body, err)
		return
	}
	if p.CustomerName != *req.CustomerName || p.CustomerEmail != *req.CustomerEmail || p.CustomerEmail == "" ||
		len(p.Items) == 0 || len(p.Items) != len(req.Items) {
		t.Fatalf("placement %+v does not mirror request %+v", p, req)
	}
	for i, it := range p.Items {
		if it.SKU != req.Items[i].SKU || it.Quantity != req.Items[i].Quantity || it.UnitPriceCents != 0 {
			t.Fatalf("placement line %d = %+v, request line %+v: the customer must not set prices", i, it, req.Items[i])
		}
	}
	if err := p.Validate(); err != nil {
		assertRefusal(t, "Validate", body, err)
		assertFieldIsWrong(t, p, err)
		return
	}
	assertPlaceable(t, p)
	assertRoundTrip(t, p)
}

// checkSeedBody runs POST /place-order's decoding and validation on body.
func checkSeedBody(t *testing.T, body []byte) {
	t.Helper()
	var req seedRequest
	if err := decodeStrict(body, &req); err != nil {
		assertRefusal(t, "decodeStrict (seed)", body, err)
		return
	}
	assertOneJSONValue(t, body)
	if req.CustomerName == nil {
		return // the handler answers "customerName is required"
	}
	p := domain.Placement{CustomerName: *req.CustomerName}
	if err := p.Validate(); err != nil {
		assertRefusal(t, "Validate (seed)", body, err)
		assertFieldIsWrong(t, p, err)
		return
	}
	assertPlaceable(t, p)
}

// assertRefusal checks that err is what the API can show a client: a KindInvalid domain
// error naming a field, answered with a 4xx.
func assertRefusal(t *testing.T, stage string, body []byte, err error) {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("%s(%q): error %v (%T) is not a *domain.Error", stage, body, err, err)
	}
	if de.Kind != domain.KindInvalid || de.Field == "" || de.Message == "" {
		t.Fatalf("%s(%q): error {Kind %d, Field %q, Message %q}, want KindInvalid naming a field, with a message",
			stage, body, de.Kind, de.Field, de.Message)
	}
	if status, _ := statusOf(err); status < 400 || status > 499 {
		t.Fatalf("%s(%q): error %v answers %d, want 4xx", stage, body, err, status)
	}
}

// assertOneJSONValue checks that an accepted body is a single JSON value and nothing else.
func assertOneJSONValue(t *testing.T, body []byte) {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("decodeStrict accepted %q, which is not exactly one JSON value", body)
	}
}

// assertFieldIsWrong checks that the field a Validate error names really breaks its rule.
func assertFieldIsWrong(t *testing.T, p domain.Placement, err error) {
	t.Helper()
	var de *domain.Error
	errors.As(err, &de)
	field := de.Field
	wrong := false
	switch {
	case field == "customerName":
		n := strings.TrimSpace(p.CustomerName)
		wrong = n == "" || utf8.RuneCountInString(n) > domain.MaxCustomerNameLen || !utf8.ValidString(n) || strings.ContainsAny(n, "\r\n\x00")
	case field == "customerEmail":
		wrong = p.CustomerEmail != "" && !validEmail(p.CustomerEmail)
	case field == "items":
		wrong = len(p.Items) > domain.MaxItems
	default:
		var i int
		var rest string
		if _, err := fmt.Sscanf(field, "items[%d].%s", &i, &rest); err != nil || i < 0 || i >= len(p.Items) || field != fmt.Sprintf("items[%d].%s", i, rest) {
			t.Fatalf("Validate(%+v) names %q, which is not a field of the placement", p, field)
		}
		it := p.Items[i]
		switch rest {
		case "sku":
			dup := false
			for _, earlier := range p.Items[:i] {
				dup = dup || earlier.SKU == it.SKU
			}
			wrong = strings.TrimSpace(it.SKU) == "" || len(it.SKU) > domain.MaxSKULen || dup
		case "quantity":
			wrong = it.Quantity < 1 || it.Quantity > domain.MaxQuantity
		case "unitPriceCents":
			wrong = it.UnitPriceCents < 0
		}
	}
	if !wrong {
		t.Fatalf("Validate(%+v) blames %q (%s), which keeps every rule", p, field, de.Message)
	}
}

// assertPlaceable checks that a valid placement is placed as an OrderPlaced that keeps the
// invariants: a trimmed name that fits the seed's VARCHAR(100) and cannot inject headers,
// an ASCII address, at most 50 distinct lines with sane quantities, and the right total.
func assertPlaceable(t *testing.T, p domain.Placement) {
	t.Helper()
	events, err := domain.Place(p)
	if err != nil {
		t.Fatalf("Validate accepted %+v but Place refused it: %v", p, err)
	}
	if len(events) != 1 {
		t.Fatalf("Place(%+v) = %d events, want 1", p, len(events))
	}
	e, ok := events[0].(domain.OrderPlaced)
	if !ok {
		t.Fatalf("Place(%+v) = %T, want OrderPlaced", p, events[0])
	}
	name := e.CustomerName
	if name != strings.TrimSpace(p.CustomerName) || name == "" || !utf8.ValidString(name) ||
		utf8.RuneCountInString(name) > domain.MaxCustomerNameLen || strings.ContainsAny(name, "\r\n\x00") {
		t.Fatalf("OrderPlaced name %q breaks the name rules", name)
	}
	if e.CustomerEmail != p.CustomerEmail || (e.CustomerEmail != "" && !validEmail(e.CustomerEmail)) {
		t.Fatalf("OrderPlaced email %q breaks the email rules", e.CustomerEmail)
	}
	if len(e.Items) > domain.MaxItems || !reflect.DeepEqual(e.Items, append([]domain.Item{}, p.Items...)) {
		t.Fatalf("OrderPlaced items %+v, placement items %+v", e.Items, p.Items)
	}
	seen := map[string]bool{}
	var total int64
	for i, it := range e.Items {
		if strings.TrimSpace(it.SKU) == "" || len(it.SKU) > domain.MaxSKULen || seen[it.SKU] ||
			it.Quantity < 1 || it.Quantity > domain.MaxQuantity || it.UnitPriceCents < 0 {
			t.Fatalf("OrderPlaced line %d = %+v breaks the line rules", i, it)
		}
		seen[it.SKU] = true
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	if e.TotalCents != total {
		t.Fatalf("OrderPlaced total %d, want %d", e.TotalCents, total)
	}
}

// assertRoundTrip checks that a valid placement, sent again as JSON, decodes to itself: what
// the API accepts, it accepts the same way twice (an idempotent retry must not change it).
func assertRoundTrip(t *testing.T, p domain.Placement) {
	t.Helper()
	req := orderRequest{CustomerName: &p.CustomerName, CustomerEmail: &p.CustomerEmail}
	for _, it := range p.Items {
		req.Items = append(req.Items, itemRequest{SKU: it.SKU, Quantity: it.Quantity})
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var again orderRequest
	if err := decodeStrict(body, &again); err != nil {
		t.Fatalf("re-encoded placement %s refused: %v", body, err)
	}
	q, err := again.placement()
	if err != nil || !reflect.DeepEqual(q, p) {
		t.Fatalf("re-encoded placement decodes to %+v (%v), want %+v", q, err, p)
	}
}

// validEmail is the address rule, said independently of domain: one bare ASCII address
// of at most 254 bytes.
func validEmail(s string) bool {
	if len(s) > domain.MaxEmailLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s
}
