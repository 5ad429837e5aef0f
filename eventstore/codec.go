package eventstore

import (
	"encoding/json"
	"fmt"
	"sync/atomic"

	"orderd/domain"
)

// schema is what the store knows of an event type: the schema version this release writes
// and a constructor for its payload.
type schema struct {
	version int
	decode  func(json.RawMessage) (domain.Event, error)
}

// schemas lists, per event type, the schema version this release writes and a constructor
// for its payload. Bump a version when a payload's shape changes, and add an upcaster below
// that turns the old shape into the new one: live code and replay then see one shape only.
// Event types of stages outside the built-in pipeline are added by Register.
var schemas = map[string]schema{
	domain.TypeOrderPlaced:                {2, decodeAs[domain.OrderPlaced]},
	domain.TypePaymentCompleted:           {1, decodeAs[domain.PaymentCompleted]},
	domain.TypePaymentFailed:              {1, decodeAs[domain.PaymentFailed]},
	domain.TypeInventoryReserved:          {1, decodeAs[domain.InventoryReserved]},
	domain.TypeInventoryReservationFailed: {1, decodeAs[domain.InventoryReservationFailed]},
	domain.TypePaymentRefunded:            {1, decodeAs[domain.PaymentRefunded]},
	domain.TypeEmailSent:                  {1, decodeAs[domain.EmailSent]},
	domain.TypeEmailFailed:                {1, decodeAs[domain.EmailFailed]},
}

// sealed is set once the table has been read for use (a store built, the versions listed):
// from then on it is read without a lock by every decode, so it must not change.
var sealed atomic.Bool

// Register teaches the store an event type it does not define, as gob.Register teaches gob
// a type: T's EventType names it, and version is the schema version this release writes
// (1 for a new type). A new stage's events need no edit of the store. Call it from an init
// function: it panics once a store has been built or the versions listed (the table is then
// read without a lock, and replay has taken its copy), if the type is already known with
// another version, or if version is below 1.
func Register[T domain.Event](version int) {
	var zero T
	typ := zero.EventType()
	if version < 1 || typ == "" {
		panic(fmt.Sprintf("eventstore: Register %T: want a type name and a version of at least 1, got %q, %d", zero, typ, version))
	}
	if sealed.Load() {
		panic(fmt.Sprintf("eventstore: Register %s after the event types were in use (a store built or SchemaVersions read): register in an init function", typ))
	}
	if s, ok := schemas[typ]; ok {
		if s.version != version {
			panic(fmt.Sprintf("eventstore: Register %s: already known at version %d, not %d", typ, s.version, version))
		}
		return
	}
	schemas[typ] = schema{version, decodeAs[T]}
}

// SchemaVersions returns, for every event type this release knows, the schema version it
// writes: the one list of event types that readers outside the store (a replay's own
// decoder, the replay benchmark's generator) derive theirs from.
func SchemaVersions() map[string]int {
	sealed.Store(true)
	out := make(map[string]int, len(schemas))
	for typ, s := range schemas {
		out[typ] = s.version
	}
	return out
}

// upcasters turn a payload of (type, version) into the payload of (type, version+1).
var upcasters = map[string]map[int]func(json.RawMessage) (json.RawMessage, error){
	domain.TypeOrderPlaced: {1: upcastOrderPlacedV1},
}

// upcastOrderPlacedV1 reads the first release's OrderPlaced, which carried only the seed's
// fields in snake case: {"customer_name": "...", "customer_email": "..."}. Such orders had no
// items and nothing to charge.
func upcastOrderPlacedV1(b json.RawMessage) (json.RawMessage, error) {
	var v1 struct {
		CustomerName  string `json:"customer_name"`
		CustomerEmail string `json:"customer_email"`
	}
	if err := json.Unmarshal(b, &v1); err != nil {
		return nil, err
	}
	return json.Marshal(domain.OrderPlaced{CustomerName: v1.CustomerName, CustomerEmail: v1.CustomerEmail, Items: []domain.Item{}})
}

func decodeAs[T domain.Event](b json.RawMessage) (domain.Event, error) {
	var e T
	err := json.Unmarshal(b, &e)
	return e, err
}

// encodeEvent returns the type, schema version and JSON payload to store for e.
func encodeEvent(e domain.Event) (string, int, []byte, error) {
	s, ok := schemas[e.EventType()]
	if !ok {
		return "", 0, nil, fmt.Errorf("encode event: unknown type %q", e.EventType())
	}
	b, err := json.Marshal(e)
	if err != nil {
		return "", 0, nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	return e.EventType(), s.version, b, nil
}

// decodeEvent decodes a stored or received payload, upcasting it first if it was written in
// an older schema. Unknown types and undecodable payloads are KindInvalid errors.
func decodeEvent(typ string, version int, payload []byte) (domain.Event, error) {
	s, ok := schemas[typ]
	if !ok {
		return nil, domain.Invalid("type", "unknown event type %.80q", typ) // quoted cut: it is whatever a message said
	}
	if version == 0 {
		version = s.version
	}
	if version > s.version {
		return nil, domain.Invalid("schemaVersion", "%s version %d is newer than this release understands (%d)", typ, version, s.version)
	}
	b := json.RawMessage(payload)
	for ; version < s.version; version++ {
		up, ok := upcasters[typ][version]
		if !ok {
			return nil, domain.Invalid("schemaVersion", "no upcaster for %s version %d", typ, version)
		}
		var err error
		if b, err = up(b); err != nil {
			return nil, domain.Invalid("data", "upcast %s v%d: %v", typ, version, err)
		}
	}
	e, err := s.decode(b)
	if err != nil {
		return nil, domain.Invalid("data", "is not a valid %s payload: %v", typ, err)
	}
	return e, nil
}
