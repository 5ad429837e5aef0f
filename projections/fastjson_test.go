package projections

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"orderd/domain"
	"orderd/projections/orders"
)

// FuzzFastPayloads holds the replay's payload parsers to encoding/json: for any input, the
// same value, or an error from both. Run it longer with
//
//	go test -run '^$' -fuzz FuzzFastPayloads ./projections
func FuzzFastPayloads(f *testing.F) {
	for _, e := range []domain.Event{
		domain.OrderPlaced{CustomerName: "Zoë", CustomerEmail: "z@x", Items: []domain.Item{{SKU: "A", Quantity: 2, UnitPriceCents: -5}}, TotalCents: 10},
		domain.OrderPlaced{CustomerName: `"<&>"`, Items: []domain.Item{}},
		domain.OrderPlaced{},
		domain.PaymentFailed{Reason: "card declined\t"},
		domain.InventoryReservationFailed{Reason: "out of stock: 😀"},
		domain.EmailFailed{To: "a@b.example", Template: domain.TemplateConfirmation, Reply: "RCPT TO: 550 5.1.1 <a@b.example>: no such user"},
	} {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	for _, s := range []string{`{"customerName":"a","items":[{"sku":"x","quantity":01,"unitPriceCents":1}],"totalCents":0}`,
		`{"customerName":"a","items":[],"totalCents":-0}`, `{"reason":"a"} `, `{"reason":"\u00e9"}`, "{\"reason\":\"\xff\"}",
		`{"customerName":"a","items":[{"sku":"x","quantity":9223372036854775808,"unitPriceCents":1}],"totalCents":0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b, parseOrderPlaced)
		check(t, b, parseReason[domain.PaymentFailed])
		check(t, b, parseReason[domain.InventoryReservationFailed])
		check(t, b, parseEmailFailed)
	})
}

func check[T domain.Event](t *testing.T, b []byte, parse func(*jsonScan) (T, bool)) {
	got, gotErr := fastPayload(parse, b)
	var want T
	wantErr := json.Unmarshal(b, &want)
	if (gotErr != nil) != (wantErr != nil) || (wantErr == nil && !reflect.DeepEqual(got, domain.Event(want))) {
		t.Errorf("%T from %q: fast %#v (%v), encoding/json %#v (%v)", want, b, got, gotErr, want, wantErr)
	}
}

// FuzzItemsJSON holds appendItemsJSON to json.Marshal.
func FuzzItemsJSON(f *testing.F) {
	f.Add("SKU-BOOK", 2, int64(1299), 2)
	f.Add("<&>\"\\\u2028é\x01", -1, int64(-7), 1)
	f.Add("", 0, int64(0), 0)
	f.Fuzz(func(t *testing.T, sku string, q int, price int64, n int) {
		var items []domain.Item
		for i := 0; i < n%4; i++ {
			items = append(items, domain.Item{SKU: sku, Quantity: q + i, UnitPriceCents: price})
		}
		got, err := appendItemsJSON([]byte("x"), items)
		if items == nil {
			items = []domain.Item{}
		}
		want, _ := json.Marshal(items)
		if err != nil || string(got) != "x"+string(want) {
			t.Errorf("items %#v: got %s (%v), want %s", items, got, err, want)
		}
	})
}

// FuzzAppendTime holds the hand-written DATETIME(6) formatting to time.Format.
func FuzzAppendTime(f *testing.F) {
	f.Add(int64(1735689600123456), 0)
	f.Add(int64(0), 3600)
	f.Add(int64(253402300799999999), -7200)
	f.Fuzz(func(t *testing.T, micros int64, offset int) {
		micros %= 253402300800000000 // up to year 9999
		if micros < 0 {
			micros = -micros
		}
		tm := time.UnixMicro(micros).In(time.FixedZone("z", offset%86400))
		if y := tm.Year(); y < 1 || y > 9999 {
			return
		}
		got := string(appendTime(nil, tm))
		if want := tm.Format(dateTimeLayout); got != want {
			t.Errorf("%v: got %q, want %q", tm, got, want)
		}
	})
}

var benchPlaced, _ = json.Marshal(domain.OrderPlaced{CustomerName: "Customer 123456", CustomerEmail: "customer-123456@example.com",
	Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}, {SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}}, TotalCents: 3497})

// BenchmarkDecodeOrderPlaced compares the replay's parser with encoding/json on the
// commonest payload:  go test -run '^$' -bench . -benchmem ./projections
func BenchmarkDecodeOrderPlaced(b *testing.B) {
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := fastPayload(parseOrderPlaced, benchPlaced); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := unmarshal[domain.OrderPlaced](benchPlaced); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendLoadRows measures formatting rows for LOAD DATA, per row.
func BenchmarkAppendLoadRows(b *testing.B) {
	e, _ := fastPayload(parseOrderPlaced, benchPlaced)
	p := e.(domain.OrderPlaced)
	at := time.Date(2025, 1, 1, 12, 0, 0, 123456000, time.UTC)
	row := &orders.OrderRow{OrderID: 123456, CustomerName: p.CustomerName, CustomerEmail: p.CustomerEmail, Items: p.Items, TotalCents: p.TotalCents,
		OrderStatus: domain.StatusCompleted, PaymentStatus: domain.StatusCompleted, InventoryStatus: domain.StatusCompleted, EmailSent: true,
		Version: 4, LastPosition: 987654, PlacedAt: at, UpdatedAt: at.Add(time.Second)}
	rows := []*orders.OrderRow{row}
	var buf []byte
	for b.Loop() {
		buf, _ = appendLoadRows(buf[:0], rows)
	}
}

// FuzzParseDateTime holds the hand-written DATETIME(6) parser to time.ParseInLocation.
func FuzzParseDateTime(f *testing.F) {
	f.Add("2025-01-01 00:00:00.123456")
	f.Add("9999-12-31 23:59:59.999999")
	f.Add("2024-02-30 10:00:00.000000")
	f.Add("2024-13-01 10:00:00.000000")
	f.Add("0000-00-00 00:00:00.000000")
	f.Add("0000-00-00 00:00:00.000001")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) != len(dateTimeLayout) {
			return // MySQL prints DATETIME(6) in exactly this width
		}
		loc := time.FixedZone("z", 3600)
		got, gotErr := parseDateTime([]byte(s), loc)
		want, wantErr := time.ParseInLocation(dateTimeLayout, s, loc)
		if s == "0000-00-00 00:00:00.000000" {
			want, wantErr = time.Time{}, nil
		}
		if (gotErr != nil) != (wantErr != nil) || gotErr == nil && !got.Equal(want) {
			t.Errorf("%q: got %v (%v), want %v (%v)", s, got, gotErr, want, wantErr)
		}
	})
}

// BenchmarkRowValues measures the values an INSERT of one row is written with (every live
// append, the catch-up and the refolds), per row.
func BenchmarkRowValues(b *testing.B) {
	e, _ := fastPayload(parseOrderPlaced, benchPlaced)
	p := e.(domain.OrderPlaced)
	at := time.Date(2025, 1, 1, 12, 0, 0, 123456000, time.UTC)
	row := orders.OrderRow{OrderID: 123456, CustomerName: p.CustomerName, CustomerEmail: p.CustomerEmail, Items: p.Items, TotalCents: p.TotalCents,
		OrderStatus: domain.StatusCompleted, PaymentStatus: domain.StatusCompleted, InventoryStatus: domain.StatusCompleted, EmailSent: true,
		Version: 4, LastPosition: 987654, PlacedAt: at, UpdatedAt: at.Add(time.Second)}
	for b.Loop() {
		if _, err := row.Values(); err != nil {
			b.Fatal(err)
		}
	}
}
