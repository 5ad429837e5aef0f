// Package eventstore is the MySQL event log: one stream per order, a version per stream and a
// global position, appended with optimistic concurrency. Whatever must be written together
// with an append (projection rows, outbox rows, stock) is written in the same transaction,
// through hooks or the decide function of UpdateTx.
package eventstore

import (
	"encoding/json"
	"fmt"
	"time"

	"orderd/domain"
)

// Metadata travels with every event: the correlation id ties every event of one order's
// journey to the request that started it; the causation id names the event (or request)
// that directly caused this one.
type Metadata struct {
	CorrelationID string `json:"correlationId,omitempty"`
	CausationID   string `json:"causationId,omitempty"`
	// TraceParent is the W3C trace context of the span that appended the event, so the work
	// it causes (in another process, after SQS) joins the same trace.
	TraceParent string `json:"traceParent,omitempty"`
}

// Record is an event as stored in the log.
type Record struct {
	Position      int64
	StreamID      domain.OrderID
	Version       int
	Type          string
	SchemaVersion int
	Event         domain.Event // decoded and upcast to the current shape
	Metadata      Metadata
	OccurredAt    time.Time
}

// EventID is the event's stable identity, derived from stream and version so that it is
// the same however many times the event is read or relayed.
func (r Record) EventID() string { return EventID(r.StreamID, r.Version) }

// EventID returns the identity of version v of stream id.
func EventID(id domain.OrderID, v int) string { return fmt.Sprintf("%d-%d", id, v) }

// wireRecord is the JSON shape of a record: in queue messages and in the HTTP history.
type wireRecord struct {
	EventID       string          `json:"eventId"`
	OrderID       domain.OrderID  `json:"orderId"`
	Version       int             `json:"version"`
	Position      int64           `json:"position"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schemaVersion"`
	OccurredAt    time.Time       `json:"occurredAt"`
	Data          json.RawMessage `json:"data"`
	Metadata      Metadata        `json:"metadata"`
}

// MarshalJSON encodes the record in its wire shape.
func (r Record) MarshalJSON() ([]byte, error) {
	data, err := json.Marshal(r.Event)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.Type, err)
	}
	return json.Marshal(wireRecord{
		EventID: r.EventID(), OrderID: r.StreamID, Version: r.Version, Position: r.Position,
		Type: r.Type, SchemaVersion: schemas[r.Type].version, OccurredAt: r.OccurredAt,
		Data: data, Metadata: r.Metadata,
	})
}

// DecodeMessage decodes a record from its wire shape, as a consumer receives it. It checks
// the fields a consumer relies on and returns a KindInvalid error for anything malformed, so
// that the message can be dead-lettered with the reason.
func DecodeMessage(b []byte) (Record, error) {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return Record{}, domain.Invalid("body", "is not a valid event message: %v", err)
	}
	switch {
	case w.OrderID <= 0:
		return Record{}, domain.Invalid("orderId", "is missing or not positive")
	case w.Version <= 0:
		return Record{}, domain.Invalid("version", "is missing or not positive")
	case w.Type == "":
		return Record{}, domain.Invalid("type", "is missing")
	case w.EventID != "" && w.EventID != EventID(w.OrderID, w.Version):
		// The id is derived from stream and version; a message whose id says otherwise was
		// not written by the log.
		return Record{}, domain.Invalid("eventId", "%.80q is not the id of version %d of order %d", w.EventID, w.Version, w.OrderID)
	}
	e, err := decodeEvent(w.Type, w.SchemaVersion, w.Data)
	if err != nil {
		return Record{}, err
	}
	return Record{
		Position: w.Position, StreamID: w.OrderID, Version: w.Version, Type: w.Type,
		SchemaVersion: schemas[w.Type].version, Event: e, Metadata: w.Metadata, OccurredAt: w.OccurredAt,
	}, nil
}

func jsonMarshalMeta(md Metadata) ([]byte, error) {
	b, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return b, nil
}

func jsonUnmarshalMeta(b []byte, md *Metadata) error {
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, md); err != nil {
		return fmt.Errorf("decode metadata: %w", err)
	}
	return nil
}
