package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
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
		// Strict JSON: duplicates, names differing in case, invalid UTF-8 raw and escaped.
		`{"customerName":"Ann","customerName":"Bob"}`,
		`{"customerName":"Ann","CustomerName":"Bob"}`,
		`{"customername":"Ann"}`,
		orderBody(`[{"sku":"SKU-BOOK","quantity":1,"quantity":2}]`),
		orderBody(`[{"SKU":"SKU-BOOK","quantity":1}]`),
		"{\"customerName\":\"Ann\xff\"}",
		"{\"customerName\xc0\":\"Ann\"}",
		`{"customerName":"Ann\ud800"}`,
		`{"customerName":"Ann\udfff\ud800"}`,
		`{"customerName":"Ann\ud83d\ude00"}`,
		// Characters SQS refuses, and those refused in names.
		`{"customerName":"Ann\uffff"}`, `{"customerName":"Ann\ufffe"}`, `{"customerName":"Ann\u0000"}`, `{"customerName":"Ann\u0008"}`,
		`{"customerName":"Ann\u202eeL"}`, `{"customerName":"Ann\u2066Lee"}`, `{"customerName":"A\u200bnn"}`, `{"customerName":"\ufeffAnn"}`,
		`{"customerName":"Ann\u0085"}`, `{"customerName":"Ann\u2028Lee"}`, `{"customerName":"Ann\ufdd0"}`,
		orderBody(`[{"sku":"SKU-BOOK\uffff","quantity":1}]`),
		orderBody(`[{"sku":"SKU\u200d-BOOK","quantity":1}]`),
		// Addresses a shop never delivers to.
		`{"customerName":"Ann","customerEmail":"a@[127.0.0.1]","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"a@shop","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"a@localhost","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"a@x.localhost","items":[{"sku":"A","quantity":1}]}`,
		`{"customerName":"Ann","customerEmail":"a@10.0.0.1","items":[{"sku":"A","quantity":1}]}`,
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

// FuzzHeaders sends POST /orders with arbitrary Idempotency-Key and X-Request-ID values to
// the real API over a database of its own, straight to its handler (net/http's own parsing
// would refuse control bytes before it; the handler must not rely on that). Whatever the
// bytes: never a 5xx; a 202 exactly when both values fit (printable ASCII, at most 255 and
// 100 characters once trimmed), with the request id stored as sent; otherwise a 400 naming
// the header that does not fit.
func FuzzHeaders(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""}, {"key-1", "req-1"}, {" key-2 ", "\treq-2 "}, {"k\xff", ""}, {"", "r\xfe"}, {"schlüssel", ""}, {"", "\uffff"},
		{"k\x00", ""}, {"", "r\r\nX-Evil: 1"}, {strings.Repeat("k", 255), strings.Repeat("r", 100)},
		{strings.Repeat("k", 256), ""}, {"", strings.Repeat("r", 101)}, {"\x7f", "~"},
	} {
		f.Add(seed[0], seed[1])
	}
	s := newAPIServer(f)
	fits := func(v string, max int) bool {
		v = strings.Trim(v, " \t")
		return len(v) <= max && !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e })
	}
	f.Fuzz(func(t *testing.T, key, reqID string) {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(validOrder))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header["Idempotency-Key"] = []string{key}
		}
		if reqID != "" {
			req.Header["X-Request-Id"] = []string{reqID}
		}
		rec := httptest.NewRecorder()
		s.Config.Handler.ServeHTTP(rec, req)
		res := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		keyFits, idFits := fits(key, 255), fits(reqID, 100)
		switch {
		case res.status >= 500:
			t.Fatalf("key %q, request id %q: status %d (%s)", key, reqID, res.status, res.body)
		case !keyFits:
			assertError(t, res, http.StatusBadRequest, "invalid", "Idempotency-Key")
		case !idFits:
			assertError(t, res, http.StatusBadRequest, "invalid", "X-Request-ID")
		case res.status != http.StatusAccepted:
			t.Fatalf("key %q, request id %q fit: status %d (%s), want 202", key, reqID, res.status, res.body)
		case strings.Trim(reqID, " \t") != "" && res.header.Get("Idempotent-Replayed") == "":
			id := decodeJSON(t, res)["orderId"]
			if n := s.env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id = CONCAT(?, '-1') AND correlation_id = ?`,
				fmt.Sprint(id), strings.Trim(reqID, " \t")); n != 1 {
				t.Fatalf("request id %q: not stored as sent", reqID)
			}
		}
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
		wrong = n == "" || !fitsLabel(n, domain.MaxCustomerNameLen)
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
			wrong = strings.TrimSpace(it.SKU) == "" || !fitsLabel(it.SKU, domain.MaxSKULen) || dup
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
// invariants: a trimmed name that fits the seed's VARCHAR(100) and cannot inject headers or
// hide characters, a deliverable ASCII address, at most 50 distinct lines with sane
// quantities, the right total, and a payload that fits its TEXT column and an SQS message.
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
	if name != strings.TrimSpace(p.CustomerName) || name == "" || !fitsLabel(name, domain.MaxCustomerNameLen) {
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
		if strings.TrimSpace(it.SKU) == "" || !fitsLabel(it.SKU, domain.MaxSKULen) || seen[it.SKU] ||
			it.Quantity < 1 || it.Quantity > domain.MaxQuantity || it.UnitPriceCents < 0 {
			t.Fatalf("OrderPlaced line %d = %+v breaks the line rules", i, it)
		}
		seen[it.SKU] = true
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	if e.TotalCents != total {
		t.Fatalf("OrderPlaced total %d, want %d", e.TotalCents, total)
	}
	payload, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(payload) > 65535 || !utf8.Valid(payload) || strings.ContainsFunc(string(payload), func(r rune) bool { return !sqsAllows(r) }) {
		t.Fatalf("OrderPlaced payload %q does not fit a TEXT column and an SQS message", payload)
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

// validEmail is the address rule, said independently of domain: one bare ASCII address of at
// most 254 bytes, at most 64 before the @, at a host name with a dot whose top label is not
// numeric, and not at a special-use name that never resolves on the internet.
func validEmail(s string) bool {
	if len(s) > domain.MaxEmailLen || strings.ContainsFunc(s, func(r rune) bool { return r >= utf8.RuneSelf }) {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return false
	}
	local, host := s[:strings.LastIndex(s, "@")], strings.ToLower(s[strings.LastIndex(s, "@")+1:])
	top := host[strings.LastIndex(host, ".")+1:]
	return len(local) <= 64 && hostName.MatchString(host) && strings.Trim(top, "0123456789") != "" &&
		!slices.Contains([]string{"localhost", "local", "invalid"}, top)
}

// hostName is two or more DNS labels: letters, digits and inner hyphens, 1–63 each.
var hostName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// fitsLabel is the rule for names and SKUs, said independently of domain: valid UTF-8 of at
// most max characters, none that SQS refuses, no control or format character (bidi, zero
// width), line or paragraph separator, or noncharacter.
func fitsLabel(s string, max int) bool {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > max {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !sqsAllows(r) || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) ||
			(r >= 0xFDD0 && r <= 0xFDEF) || r%0x10000 >= 0xFFFE
	})
}

// sqsAllows reports whether SQS accepts r in a message body or attribute.
func sqsAllows(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}
