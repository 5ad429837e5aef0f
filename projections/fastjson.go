package projections

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"orderd/domain"
)

// The payloads a replay must decode are written by encoding/json.Marshal, so they have one
// exact shape: the struct's fields in order, no spaces, strings escaped only where they must
// be. The parsers below accept that shape when its strings hold no escape at all and its
// numbers are plain integers, and give up otherwise; the caller then uses encoding/json.
// What they accept, encoding/json decodes to the same value (FuzzFastPayloads checks).

// fastPayload decodes b as encoding/json would decode it into the event type's struct.
func fastPayload[T domain.Event](parse func(*jsonScan) (T, bool), b []byte) (domain.Event, error) {
	s := jsonScan{b: b}
	if e, ok := parse(&s); ok && s.i == len(s.b) {
		return e, nil
	}
	return unmarshal[T](b)
}

func parseOrderPlaced(s *jsonScan) (e domain.OrderPlaced, ok bool) {
	if !s.lit(`{"customerName":`) || !s.str(&e.CustomerName) {
		return e, false
	}
	if s.lit(`,"customerEmail":`) && !s.str(&e.CustomerEmail) {
		return e, false
	}
	if !s.lit(`,"items":`) {
		return e, false
	}
	if !s.lit(`null`) {
		if !s.lit(`[`) {
			return e, false
		}
		e.Items = make([]domain.Item, 0, bytes.Count(s.b[s.i:], []byte(`{"sku":`)))
		for !s.lit(`]`) {
			if len(e.Items) > 0 && !s.lit(`,`) {
				return e, false
			}
			var it domain.Item
			var q int64
			if !s.lit(`{"sku":`) || !s.str(&it.SKU) || !s.lit(`,"quantity":`) || !s.int(&q) ||
				!s.lit(`,"unitPriceCents":`) || !s.int(&it.UnitPriceCents) || !s.lit(`}`) || int64(int(q)) != q {
				return e, false
			}
			it.Quantity = int(q)
			e.Items = append(e.Items, it)
		}
	}
	return e, s.lit(`,"totalCents":`) && s.int(&e.TotalCents) && s.lit(`}`)
}

func parseReason[T domain.PaymentFailed | domain.InventoryReservationFailed](s *jsonScan) (T, bool) {
	var reason string
	ok := s.lit(`{"reason":`) && s.str(&reason) && s.lit(`}`)
	return T{Reason: reason}, ok
}

func parseEmailFailed(s *jsonScan) (e domain.EmailFailed, ok bool) {
	ok = s.lit(`{"to":`) && s.str(&e.To) && s.lit(`,"template":`) && s.str(&e.Template) &&
		s.lit(`,"reply":`) && s.str(&e.Reply) && s.lit(`}`)
	return e, ok
}

// jsonScan walks a JSON text that is expected to be in encoding/json's canonical shape.
type jsonScan struct {
	b []byte
	i int
}

// lit consumes l if the text continues with it.
func (s *jsonScan) lit(l string) bool {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return false
	}
	s.i += len(l)
	return true
}

// str reads a string without escapes, control characters or invalid UTF-8 (encoding/json
// would unescape or replace those: they are left to it).
func (s *jsonScan) str(dst *string) bool {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return false
	}
	start, ascii := s.i+1, true
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(s.b[start:j]) {
				return false
			}
			*dst, s.i = string(s.b[start:j]), j+1
			return true
		case c == '\\' || c < 0x20:
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return false
}

// int reads an integer as JSON writes it (-?(0|[1-9][0-9]*)) of at most 18 digits.
func (s *jsonScan) int(dst *int64) bool {
	j := s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	digits := j
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		j++
	}
	if j == digits || j-digits > 18 || (s.b[digits] == '0' && j-digits > 1) || (j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E')) {
		return false // 19 digits and more may overflow: encoding/json decides
	}
	var n int64
	for _, c := range s.b[digits:j] {
		n = n*10 + int64(c-'0')
	}
	if digits > s.i {
		n = -n
	}
	*dst, s.i = n, j
	return true
}

// appendItemsJSON appends json.Marshal(items) (with nil as []), writing plain strings
// itself and leaving anything that needs escaping to encoding/json.
func appendItemsJSON(dst []byte, items []domain.Item) ([]byte, error) {
	for _, it := range items {
		if !plainJSON(it.SKU) {
			if items == nil {
				items = []domain.Item{}
			}
			b, err := json.Marshal(items)
			return append(dst, b...), err
		}
	}
	dst = append(dst, '[')
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"sku":"`...)
		dst = append(dst, it.SKU...)
		dst = append(dst, `","quantity":`...)
		dst = strconv.AppendInt(dst, int64(it.Quantity), 10)
		dst = append(dst, `,"unitPriceCents":`...)
		dst = strconv.AppendInt(dst, it.UnitPriceCents, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']'), nil
}

// plainJSON reports whether encoding/json writes s between quotes unchanged: printable
// ASCII other than the quote, the backslash and the HTML characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
