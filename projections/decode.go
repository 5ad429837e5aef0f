package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// A replay reads the log's columns itself instead of going through eventstore's reader,
// for speed: it skips the metadata (orders.OrderRow.Apply does not read it) and does not even fetch
// the payload of events whose payload Apply ignores. Everything else decodes exactly as
// eventstore decodes it: an event in its type's current schema becomes the same domain
// struct encoding/json would make of it (fastjson.go), and anything else (an old schema that
// needs upcasting, an unknown type) goes through eventstore's own decoder
// (eventstore.DecodeMessage), so upcasting still happens in one place.
// TestFastDecodeMatchesEventstore and FuzzFastPayloads hold this to it.

// fastTypes decode from a payload of their current schema as encoding/json does, as
// eventstore does (see fastjson.go).
var fastTypes = map[string]func([]byte) (domain.Event, error){
	domain.TypeOrderPlaced: func(b []byte) (domain.Event, error) { return fastPayload(parseOrderPlaced, b) },
	domain.TypePaymentFailed: func(b []byte) (domain.Event, error) {
		return fastPayload(parseReason[domain.PaymentFailed], b)
	},
	domain.TypeInventoryReservationFailed: func(b []byte) (domain.Event, error) {
		return fastPayload(parseReason[domain.InventoryReservationFailed], b)
	},
	domain.TypeEmailFailed: func(b []byte) (domain.Event, error) { return fastPayload(parseEmailFailed, b) },
}

func unmarshal[T domain.Event](b []byte) (domain.Event, error) {
	var e T
	err := json.Unmarshal(b, &e)
	return e, err
}

// currentSchemas returns the schema version eventstore writes for each event type.
var currentSchemas = sync.OnceValues(func() (map[string]int, error) {
	return eventstore.SchemaVersions(), nil
})

// noPayload lists the payload-free types in their current schema: a replay's reads of the
// log leave their payload out (eventstore.RawQuery).
var noPayload = sync.OnceValues(func() (map[string]int, error) {
	versions, err := currentSchemas()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for typ := range orders.PayloadFree {
		out[typ] = versions[typ]
	}
	return out, nil
})

// rawQuery returns the read of the log that kind makes, without the payloads replay ignores.
func rawQuery(kind func(noPayload map[string]int) eventstore.RawQuery) (eventstore.RawQuery, error) {
	np, err := noPayload()
	if err != nil {
		return eventstore.RawQuery{}, err
	}
	return kind(np), nil
}

// decoder turns the columns a replay reads into records.
type decoder struct {
	types map[string]*eventType // the known types, by name
	loc   *time.Location        // the pool's, as its driver would read DATETIMEs
}

// eventType is what a replay decodes a known event type with: one map lookup per event
// instead of one per table.
type eventType struct {
	name    string                             // the type's name, interned
	current int                                // its current schema version
	free    domain.Event                       // the zero value, if Apply ignores its payload (orders.PayloadFree)
	fast    func([]byte) (domain.Event, error) // its fast decoder, if any (fastTypes)
}

// newDecoder returns a decoder for records read through q.
func newDecoder(ctx context.Context, q eventstore.Queryer) (decoder, error) {
	v, err := currentSchemas()
	if err != nil {
		return decoder{}, err
	}
	d := decoder{types: map[string]*eventType{}, loc: time.UTC}
	for typ, current := range v {
		d.types[typ] = &eventType{name: typ, current: current, free: orders.PayloadFree[typ], fast: fastTypes[typ]}
	}
	// Without parseTime the driver hands times over as text, parsed here; they must land in
	// the location the driver would put them in (its DSN's loc, with parseTime), or a row
	// written back through it would shift.
	rows, err := q.QueryContext(ctx, `SELECT CAST('2000-01-01 00:00:00' AS DATETIME)`)
	if err != nil {
		return decoder{}, fmt.Errorf("read the pool's time zone: %w", err)
	}
	defer rows.Close()
	var probe any
	for rows.Next() {
		if err := rows.Scan(&probe); err != nil {
			return decoder{}, fmt.Errorf("read the pool's time zone: %w", err)
		}
	}
	if t, ok := probe.(time.Time); ok {
		d.loc = t.Location()
	}
	return d, rows.Err()
}

// decode fills rec.Event (and rec.SchemaVersion, which becomes the current one, as
// eventstore's reader does) from the stored type, schema version and payload; typ is
// rec.Type's entry in d.types, nil for an unknown type.
func (d decoder) decode(rec *eventstore.Record, typ *eventType, payload []byte, hasPayload bool) error {
	if typ != nil && rec.SchemaVersion == typ.current {
		if typ.free != nil {
			rec.Event = typ.free
			return nil
		}
		if typ.fast != nil && hasPayload {
			e, err := typ.fast(payload)
			if err != nil {
				// Let eventstore word the error, exactly as it would on a live read.
				return d.slow(rec, payload)
			}
			rec.Event = e
			return nil
		}
	}
	return d.slow(rec, payload)
}

// slow decodes through eventstore, which upcasts old schemas and rejects what it does not
// understand. DecodeMessage is its exported way in: it takes the record's wire form.
func (d decoder) slow(rec *eventstore.Record, payload []byte) error {
	if len(payload) == 0 {
		payload = []byte("null")
	}
	wire, err := json.Marshal(struct {
		OrderID       domain.OrderID  `json:"orderId"`
		Version       int             `json:"version"`
		Type          string          `json:"type"`
		SchemaVersion int             `json:"schemaVersion"`
		Data          json.RawMessage `json:"data"`
	}{rec.StreamID, rec.Version, rec.Type, rec.SchemaVersion, payload})
	if err != nil {
		return fmt.Errorf("event %s: %w", rec.EventID(), err)
	}
	got, err := eventstore.DecodeMessage(wire)
	if err != nil {
		return fmt.Errorf("event %s: %w", rec.EventID(), err)
	}
	rec.Event, rec.SchemaVersion = got.Event, got.SchemaVersion
	return nil
}

// dateTimeLayout is how MySQL prints a DATETIME(6).
const dateTimeLayout = "2006-01-02 15:04:05.000000"

// parseDateTime parses a DATETIME(6) read as text ("2006-01-02 15:04:05.000000").
func parseDateTime(b []byte, loc *time.Location) (time.Time, error) {
	if len(b) == len(dateTimeLayout) && b[4] == '-' && b[7] == '-' && b[10] == ' ' && b[13] == ':' && b[16] == ':' && b[19] == '.' {
		var f [7]int // by hand: time.Parse would cost more than the rest of the row
		ok := true
		for i, span := range [7][2]int{{0, 4}, {5, 7}, {8, 10}, {11, 13}, {14, 16}, {17, 19}, {20, 26}} {
			for _, c := range b[span[0]:span[1]] {
				ok = ok && c >= '0' && c <= '9'
				f[i] = f[i]*10 + int(c-'0')
			}
		}
		if ok && f == [7]int{} {
			return time.Time{}, nil // MySQL's zero date, as the driver reads it
		}
		if ok && f[1] >= 1 && f[1] <= 12 && f[2] >= 1 && f[3] < 24 && f[4] < 60 && f[5] < 60 {
			if t := time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], f[6]*1000, loc); t.Day() == f[2] {
				return t, nil // time.Date did not carry an impossible day into the next month
			}
		}
	}
	return time.ParseInLocation(dateTimeLayout[:min(len(b), len(dateTimeLayout))], string(b), loc)
}
