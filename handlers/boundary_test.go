package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// The boundary refuses what cannot travel: every string that enters (body fields and the
// headers the service keeps) must fit SQS's characters, the utf8mb4 columns and their widths,
// and an email. What does not fit is a 400 naming the field and writes nothing. One test per
// class of input, on the real API over a database of its own.

// bodyWith returns a POST /orders body whose field (customerName, customerEmail or sku)
// holds v, written into the JSON as it is (so that it may hold escapes or raw bytes).
func bodyWith(field, v string) string {
	name, email, sku := `"Ann"`, `"ann@example.com"`, `"SKU-BOOK"`
	switch field {
	case "customerName":
		name = `"` + v + `"`
	case "customerEmail":
		email = `"` + v + `"`
	case "items[0].sku":
		sku = `"` + v + `"`
	}
	return `{"customerName":` + name + `,"customerEmail":` + email + `,"items":[{"sku":` + sku + `,"quantity":1}]}`
}

// refuses sends r and checks the answer is a 400 naming field and that nothing was written.
func (s *apiServer) refuses(t *testing.T, r request, field string) {
	t.Helper()
	before := s.rowCounts(t)
	res := s.do(t, r)
	if res.status >= 500 {
		t.Errorf("status %d: bad input must never be a server error", res.status)
	}
	assertError(t, res, http.StatusBadRequest, "invalid", field)
	if after := s.rowCounts(t); !reflect.DeepEqual(after, before) {
		t.Errorf("rows before %v, after %v: a refused request wrote something", before, after)
	}
}

// TestBoundaryRefusesWhatSQSRefuses: characters outside SQS's set (#x9 | #xA | #xD |
// #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF) in any body field are a 400 naming the
// field, as JSON escapes and as raw bytes, and no row in order_ids, events, outbox or orders.
func TestBoundaryRefusesWhatSQSRefuses(t *testing.T) {
	s := newAPIServer(t)
	chars := map[string]string{
		`U+FFFF escaped`: `\uffff`, `U+FFFF raw`: "\uffff", `U+FFFE escaped`: `\ufffe`,
		`U+0000 escaped`: `\u0000`, `U+0008 escaped`: `\b`, `U+001B escaped`: `\u001b`,
		`U+0000 raw`: "\x00", `U+0008 raw`: "\x08",
	}
	for what, c := range chars {
		for _, field := range []string{"customerName", "customerEmail", "items[0].sku"} {
			t.Run(field+" "+what, func(t *testing.T) {
				s.refuses(t, post("/orders", bodyWith(field, "Ann"+c+"Lee")), field)
			})
		}
		t.Run("seed customerName "+what, func(t *testing.T) {
			s.refuses(t, post("/place-order", `{"customerName":"Ann`+c+`"}`), "customerName")
		})
	}
	if n := s.env.Count(t, `SELECT COUNT(*) FROM order_ids`); n != 0 {
		t.Errorf("%d order ids allocated by refused requests", n)
	}
}

// TestBoundaryRefusesInvisibleCharactersInNames: bidi controls and zero-width characters
// make a name read as something else, or hide part of it.
func TestBoundaryRefusesInvisibleCharactersInNames(t *testing.T) {
	s := newAPIServer(t)
	for _, c := range []string{
		`\u202a`, `\u202b`, `\u202c`, `\u202d`, `\u202e`, `\u2066`, `\u2067`, `\u2068`, `\u2069`, `\u200e`, `\u200f`, `\u061c`,
		`\u200b`, `\u200c`, `\u200d`, `\u2060`, `\ufeff`, `\u00ad`, `\u2028`, `\u0085`, `\u007f`, `\t`, `\n`, `\r\n`, `\ufdd0`,
	} {
		t.Run(c, func(t *testing.T) {
			s.refuses(t, post("/orders", bodyWith("customerName", "Ann"+c+"Lee")), "customerName")
			s.refuses(t, post("/place-order", `{"customerName":"Ann`+c+`Lee"}`), "customerName")
			s.refuses(t, post("/orders", bodyWith("items[0].sku", "SKU"+c+"BOOK")), "items[0].sku")
		})
	}
	// Real names in many scripts pass and are stored as sent.
	for _, name := range []string{"Zoë Müller", "Łukasz Żółć", "李小龙", "محمد علي", "שרה לוי", "Nguyễn Thị Minh", "Ann & Bob <Lee>"} {
		res := s.do(t, post("/orders", bodyWith("customerName", name)))
		if res.status != http.StatusAccepted {
			t.Errorf("%q: status %d (%s), want 202", name, res.status, res.body)
			continue
		}
		id := decodeJSON(t, res)["orderId"]
		if n := s.env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id = ? AND customer_name = ?`, fmt.Sprint(id), name); n != 1 {
			t.Errorf("%q: not stored as sent", name)
		}
	}
}

// TestBoundaryLengths: limits count characters where the column does (VARCHAR(n) in
// utf8mb4), so a name of 100 four-byte characters fits and one of 101 ASCII does not; the
// headers are bounded by their columns too.
func TestBoundaryLengths(t *testing.T) {
	s := newAPIServer(t)
	longSKU := strings.Repeat("é", 64) // 64 characters, 128 bytes: stock.sku is VARCHAR(64)
	s.env.MustExec(t, `INSERT INTO stock (sku, name, price_cents, available) VALUES (?, 'long', 100, 10)`, longSKU)

	t.Run("refused", func(t *testing.T) {
		s.refuses(t, post("/orders", bodyWith("customerName", strings.Repeat("a", 101))), "customerName")
		s.refuses(t, post("/orders", bodyWith("customerName", strings.Repeat("😀", 101))), "customerName")
		s.refuses(t, post("/place-order", `{"customerName":"`+strings.Repeat("龍", 101)+`"}`), "customerName")
		s.refuses(t, post("/orders", bodyWith("items[0].sku", strings.Repeat("é", 65))), "items[0].sku")
		s.refuses(t, post("/orders", bodyWith("customerEmail", "a@"+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+"."+strings.Repeat("d", 63)+"."+strings.Repeat("e", 58)+".com")), "customerEmail")
		s.refuses(t, post("/orders", bodyWith("customerEmail", strings.Repeat("a", 65)+"@example.com")), "customerEmail")
		s.refuses(t, withHeader(post("/orders", validOrder), "Idempotency-Key", strings.Repeat("k", 256)), "Idempotency-Key")
		s.refuses(t, withHeader(post("/orders", validOrder), "X-Request-ID", strings.Repeat("r", 101)), "X-Request-ID")
	})
	t.Run("accepted at the limit", func(t *testing.T) {
		name, key, reqID := strings.Repeat("😀", 100), strings.Repeat("k", 255), strings.Repeat("r", 100)
		r := withHeader(post("/orders", `{"customerName":"`+name+`","customerEmail":"ann@example.com","items":[{"sku":"`+longSKU+`","quantity":1}]}`), "Idempotency-Key", key)
		r.header["X-Request-ID"] = reqID
		res := s.do(t, r)
		if res.status != http.StatusAccepted {
			t.Fatalf("status %d (%s), want 202", res.status, res.body)
		}
		id := fmt.Sprint(decodeJSON(t, res)["orderId"])
		if n := s.env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id = ? AND customer_name = ?`, id, name); n != 1 {
			t.Error("the 400-byte name was not stored whole")
		}
		if n := s.env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE order_id = ? AND idempotency_key = ?`, id, key); n != 1 {
			t.Error("the 255-character key was not stored whole")
		}
		if n := s.env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id = CONCAT(?, '-1') AND correlation_id = ?`, id, reqID); n != 1 {
			t.Error("the 100-character request id did not reach the outbox whole")
		}
	})
}

// TestBoundaryStrictJSON: a body must mean one thing. Duplicate names (encoding/json keeps
// the last), names differing only in case (encoding/json matches them), and invalid UTF-8
// (encoding/json turns it into U+FFFD) are refused, naming the field.
func TestBoundaryStrictJSON(t *testing.T) {
	s := newAPIServer(t)
	tests := []struct {
		name, path, body, field string
	}{
		{"duplicate name", "/orders", `{"customerName":"Ann","customerName":"Eve","customerEmail":"ann@example.com","items":[{"sku":"SKU-BOOK","quantity":1}]}`, "customerName"},
		{"duplicate within an item", "/orders", orderBody(`[{"sku":"SKU-BOOK","quantity":1,"quantity":900}]`), "items[0].quantity"},
		{"duplicate items", "/orders", `{"customerName":"Ann","customerEmail":"ann@example.com","items":[],"items":[{"sku":"SKU-BOOK","quantity":1}]}`, "items"},
		{"seed: duplicate name", "/place-order", `{"customerName":"Ann","customerName":"Eve"}`, "customerName"},
		{"name in another case", "/orders", `{"CustomerName":"Ann","customerEmail":"ann@example.com","items":[{"sku":"SKU-BOOK","quantity":1}]}`, "CustomerName"},
		{"both cases", "/orders", `{"customerName":"Ann","customername":"Eve","customerEmail":"ann@example.com","items":[{"sku":"SKU-BOOK","quantity":1}]}`, "customername"},
		{"item field in another case", "/orders", orderBody(`[{"SKU":"SKU-BOOK","quantity":1}]`), "items[0].SKU"},
		{"seed: name in upper case", "/place-order", `{"CUSTOMERNAME":"Ann"}`, "CUSTOMERNAME"},
		{"invalid UTF-8 in a value", "/orders", bodyWith("customerName", "Ann\xff"), "customerName"},
		{"overlong UTF-8 in a value", "/orders", bodyWith("customerName", "Ann\xc0\xaf"), "customerName"},
		{"encoded surrogate in a value", "/orders", bodyWith("items[0].sku", "SKU\xed\xa0\x80"), "items[0].sku"},
		{"lone surrogate escape", "/orders", bodyWith("customerName", `Ann\ud800`), "customerName"},
		{"reversed surrogate escapes", "/orders", bodyWith("customerEmail", `a\udc00\ud800@example.com`), "customerEmail"},
		{"seed: invalid UTF-8", "/place-order", "{\"customerName\":\"Ann\xfe\"}", "customerName"},
		{"invalid UTF-8 in a name", "/orders", "{\"customerName\xff\":\"Ann\"}", "body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { s.refuses(t, post(tc.path, tc.body), tc.field) })
	}
}

// TestBoundaryRefusesAddressesAShopNeverDeliversTo: an order whose email could never be
// delivered would end on a failure the customer is never told of.
func TestBoundaryRefusesAddressesAShopNeverDeliversTo(t *testing.T) {
	s := newAPIServer(t)
	for _, addr := range []string{
		"a@[127.0.0.1]", "a@[IPv6:::1]", "a@127.0.0.1", "a@shop", "a@localhost", "a@shop.localhost", "a@printer.local",
		"a@example.invalid", "Ann <ann@example.com>", "<ann@example.com>", `\"ann lee\"@example.com`, "ann@example.com (Ann)",
		"jörg@example.com", "ann@exämple.com", "ann@ex_ample.com", "ann@example.com,bob@example.com", "ann@",
	} {
		t.Run(addr, func(t *testing.T) { s.refuses(t, post("/orders", bodyWith("customerEmail", addr)), "customerEmail") })
	}
}

// TestBoundaryHeaders: Idempotency-Key and X-Request-ID are stored (order_ids, the events'
// metadata, the outbox) and the request id travels as an SQS attribute: printable ASCII
// within the columns' widths, or a 400 naming the header. A bad request id is refused, not
// replaced.
func TestBoundaryHeaders(t *testing.T) {
	s := newAPIServer(t)
	for _, h := range []string{"Idempotency-Key", "X-Request-ID"} {
		for what, v := range map[string]string{
			"invalid UTF-8": "k\xff", "Latin-1 byte": "caf\xe9", "valid UTF-8 outside ASCII": "schlüssel", "U+FFFF": "k\uffff",
		} {
			t.Run(h+" "+what, func(t *testing.T) {
				s.refuses(t, withHeader(post("/orders", validOrder), h, v), h)
				s.refuses(t, withHeader(post("/place-order", `{"customerName":"Ann"}`), h, v), h)
			})
		}
		t.Run(h+" sent twice", func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, s.URL+"/orders", strings.NewReader(validOrder))
			must(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Add(h, "one")
			req.Header.Add(h, "two")
			res, err := s.Client().Do(req)
			must(t, err)
			res.Body.Close()
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", res.StatusCode)
			}
		})
	}
}

// TestBadHeadersFailOnlyThemselves sends many orders at once, a quarter of them with invalid
// bytes in Idempotency-Key or X-Request-ID, so that they arrive together with good ones:
// each bad one gets a 400 naming its header, every good one a 202 and its order exists.
func TestBadHeadersFailOnlyThemselves(t *testing.T) {
	s := newAPIServer(t)
	const n = 64
	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			h := map[string]string{"Idempotency-Key": fmt.Sprintf("k-%d", i), "X-Request-ID": fmt.Sprintf("req-%d", i)}
			switch i % 8 {
			case 1:
				h["Idempotency-Key"] = fmt.Sprintf("k-\xff-%d", i)
			case 5:
				h["X-Request-ID"] = fmt.Sprintf("req-\xfe\xff-%d", i)
			}
			answers[i] = s.send(post("/orders", validOrder), h)
		})
	}
	wg.Wait()
	good := 0
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("request %d: %v", i, a.err)
			continue
		}
		switch i % 8 {
		case 1:
			assertError(t, a, http.StatusBadRequest, "invalid", "Idempotency-Key")
		case 5:
			assertError(t, a, http.StatusBadRequest, "invalid", "X-Request-ID")
		default:
			if a.status != http.StatusAccepted {
				t.Errorf("good request %d: status %d (%s), want 202", i, a.status, a.body)
				continue
			}
			good++
			id := fmt.Sprint(decodeJSON(t, a)["orderId"])
			if s.env.Count(t, `SELECT COUNT(*) FROM events WHERE stream_id = ?`, id) != 1 ||
				s.env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id = ?`, id) != 1 ||
				s.env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE order_id = ? AND idempotency_key = ?`, id, fmt.Sprintf("k-%d", i)) != 1 {
				t.Errorf("good request %d: order %s is not fully there", i, id)
			}
		}
	}
	if c := s.rowCounts(t); c["order_ids"] != good || c["events"] != good || c["outbox"] != good {
		t.Errorf("rows %v, want %d of each: only the good requests write", c, good)
	}
}

// TestLargestOrderFits places the largest order the API accepts, made of the characters that
// grow most in JSON ('<' becomes \u003c), and checks that it fits every column (the insert
// would fail otherwise) and an SQS message: at most 256 KiB with its attributes, and only
// characters SQS accepts.
func TestLargestOrderFits(t *testing.T) {
	s := newAPIServer(t)
	items := make([]map[string]any, 50)
	for i := range items {
		sku := fmt.Sprintf("%02d", i) + strings.Repeat("<", 62)
		s.env.MustExec(t, `INSERT INTO stock (sku, name, price_cents, available) VALUES (?, 'big', 100, 1000000)`, sku)
		items[i] = map[string]any{"sku": sku, "quantity": 1000}
	}
	email := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57) + ".com"
	body, err := json.Marshal(map[string]any{"customerName": strings.Repeat("<", 100), "customerEmail": email, "items": items})
	must(t, err)
	if len(email) != 254 {
		t.Fatalf("email of %d bytes, want 254", len(email))
	}
	r := withHeader(post("/orders", string(body)), "Idempotency-Key", strings.Repeat("k", 255))
	r.header["X-Request-ID"] = strings.Repeat("<", 100)
	res := s.do(t, r)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d (%s), want 202", res.status, res.body)
	}
	id := fmt.Sprint(decodeJSON(t, res)["orderId"])
	var msg, corr, eventType, eventID, trace string
	err = s.env.DB.QueryRow(`SELECT body, correlation_id, event_type, event_id, traceparent FROM outbox WHERE event_id = CONCAT(?, '-1')`, id).
		Scan(&msg, &corr, &eventType, &eventID, &trace)
	must(t, err)
	// The relay's attributes: event type, event id, correlation id, traceparent, and
	// Watermill's message UUID (the event id): five of SQS's ten, none empty.
	attrs := map[string]string{"event_type": eventType, "event_id": eventID, "correlation_id": corr, "_watermill_message_uuid": eventID}
	if trace != "" {
		attrs["traceparent"] = trace
	}
	size := len(msg)
	for k, v := range attrs {
		size += len(k) + len("String") + len(v) // SQS counts name, type and value
		if v == "" || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return !sqsAllows(r) }) {
			t.Errorf("attribute %s = %q: SQS refuses it", k, v)
		}
	}
	if size > 256<<10 || !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return !sqsAllows(r) }) {
		t.Errorf("message of %d bytes with its attributes: SQS refuses it", size)
	}
	t.Logf("largest order: a message of %d bytes with its attributes (SQS takes 262,144)", size)
}
