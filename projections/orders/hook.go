package orders

import (
	"context"
	"database/sql"

	"go.opentelemetry.io/otel/trace"

	"orderd/eventstore"
	"orderd/tracing"
)

// Hook keeps the orders table up to date as events are appended, in the append's
// transaction: readers see their own writes, and the table is exactly-once by construction.
type Hook struct{}

// AfterAppend implements eventstore.Hook: one row per order, folded from its whole stream,
// all written in one statement.
func (Hook) AfterAppend(ctx context.Context, tx *sql.Tx, changes []eventstore.Change) error {
	ctx, span := tracing.Start(ctx, "project orders", trace.SpanKindInternal)
	defer span.End()
	rows := make([]OrderRow, len(changes))
	for i, c := range changes {
		rows[i] = FoldOrder(c.History)
	}
	return WriteRows(ctx, tx, Table, rows)
}
