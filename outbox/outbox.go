// Package outbox delivers events from the log to the queues without dual writes: the
// Writer records, in the append's own transaction, which queue must receive each event; the
// Relay publishes those rows and deletes them once the queue has accepted them.
//
// Delivery is at least once: a relay that dies after publishing but before deleting
// publishes again. Consumers are idempotent by (stream, version), so that is harmless.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"orderd/eventstore"
)

// Route names the queue that must receive an event of the given type, or "" for none.
type Route func(eventType string) string

// Writer is the eventstore.Hook that fills the outbox.
type Writer struct{ route Route }

// NewWriter returns a writer that routes events with route.
func NewWriter(route Route) (*Writer, error) {
	if route == nil {
		return nil, errors.New("outbox: nil route")
	}
	return &Writer{route: route}, nil
}

// AfterAppend implements eventstore.Hook.
func (w *Writer) AfterAppend(ctx context.Context, tx *sql.Tx, changes []eventstore.Change) error {
	var ph []string
	var args []any
	for _, c := range changes {
		if err := w.add(c.Appended, &ph, &args); err != nil {
			return err
		}
	}
	if len(ph) == 0 {
		return nil
	}
	// A row may already be there when the sweeper re-drives an event the relay has not sent yet.
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox (position, queue, event_id, event_type, correlation_id, traceparent, body, created_at) VALUES `+
		strings.Join(ph, ", ")+` ON DUPLICATE KEY UPDATE position = position`, args...)
	if err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// add appends the placeholders and arguments of the rows for the records that have a queue.
func (w *Writer) add(appended []eventstore.Record, ph *[]string, args *[]any) error {
	for _, rec := range appended {
		queue := w.route(rec.Type)
		if queue == "" {
			continue
		}
		body, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("outbox: encode %s: %w", rec.EventID(), err)
		}
		*ph = append(*ph, "(?, ?, ?, ?, ?, ?, ?, ?)")
		*args = append(*args, rec.Position, queue, rec.EventID(), rec.Type, rec.Metadata.CorrelationID, rec.Metadata.TraceParent, body, rec.OccurredAt)
	}
	return nil
}
