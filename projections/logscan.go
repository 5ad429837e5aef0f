package projections

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// readEvents runs q through p (prepared: see eventstore.ReadRawOnce) and appends the
// decoded records to buf.
func readEvents(ctx context.Context, p eventstore.Preparer, dec decoder, buf []eventstore.Record, q eventstore.RawQuery, args ...any) ([]eventstore.Record, error) {
	err := eventstore.ReadRawOnce(ctx, p, q, dec.appendTo(&buf), args...)
	return buf, err
}

// readRaw is eventstore.ReadRaw with each read appending the decoded records to a buffer.
func readRaw(ctx context.Context, conn *sql.Conn, dec decoder, q eventstore.RawQuery, f func(read func(buf []eventstore.Record, args ...any) ([]eventstore.Record, error)) error) error {
	return eventstore.ReadRaw(ctx, conn, q, func(read func(eventstore.RawRow, ...any) error) error {
		return f(func(buf []eventstore.Record, args ...any) ([]eventstore.Record, error) {
			err := read(dec.appendTo(&buf), args...)
			return buf, err
		})
	})
}

// appendTo returns the eventstore.RawRow that decodes each row and appends it to *buf.
func (d decoder) appendTo(buf *[]eventstore.Record) eventstore.RawRow {
	return func(position, stream, version, schema, occurredAt any, typ, payload []byte) error {
		var err error
		*buf, err = d.appendRecord(*buf, position, stream, version, schema, occurredAt, typ, payload)
		return err
	}
}

// appendRecord decodes the columns of an eventstore.RawQuery's row (see eventstore.RawRow;
// the payload is nil where the query left it out: see noPayload) and appends the record to buf.
func (d decoder) appendRecord(buf []eventstore.Record, position, stream, version, schema, occurredAt any, typ, payload []byte) ([]eventstore.Record, error) {
	var r eventstore.Record
	var nums [4]int64
	for i, v := range [4]any{position, stream, version, schema} {
		n, ok := v.(int64)
		if !ok {
			return buf, fmt.Errorf("read the log: unexpected row %v", [...]any{position, stream, version, schema, occurredAt, typ})
		}
		nums[i] = n
	}
	r.Position, r.StreamID, r.Version, r.SchemaVersion = nums[0], domain.OrderID(nums[1]), int(nums[2]), int(nums[3])
	switch at := occurredAt.(type) {
	case time.Time: // with parseTime, in the pool's location, as the driver reads DATETIMEs anywhere
		r.OccurredAt = at
	case []byte:
		var err error
		if r.OccurredAt, err = parseDateTime(at, d.loc); err != nil {
			return buf, fmt.Errorf("read the log: event %s: %w", r.EventID(), err)
		}
	default:
		return buf, fmt.Errorf("read the log: event %s: occurred_at %v", r.EventID(), occurredAt)
	}
	t := d.types[string(typ)]
	if t != nil {
		r.Type = t.name // without allocating
	} else {
		r.Type = string(typ)
	}
	if err := d.decode(&r, t, payload, payload != nil); err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	return append(buf, r), nil
}

// foldStreams folds records ordered by stream and version into one row per stream.
func foldStreams(recs []eventstore.Record, rows []orders.OrderRow) []orders.OrderRow {
	var cur orders.OrderRow
	for _, r := range recs {
		if r.StreamID != cur.OrderID && cur.OrderID != 0 {
			rows, cur = append(rows, cur), orders.OrderRow{}
		}
		cur.Apply(r)
	}
	if cur.OrderID != 0 {
		rows = append(rows, cur)
	}
	return rows
}

// readStreams reads and folds the streams with ids in [lo, hi).
func readStreams(ctx context.Context, q eventstore.Preparer, dec decoder, lo, hi domain.OrderID, recs []eventstore.Record, rows []orders.OrderRow) ([]eventstore.Record, []orders.OrderRow, error) {
	query, err := rawQuery(eventstore.RawByStreamRange)
	if err != nil {
		return recs, rows, err
	}
	recs, err = readEvents(ctx, q, dec, recs[:0], query, lo, hi)
	if err != nil {
		return recs, rows, err
	}
	return recs, foldStreams(recs, rows[:0]), nil
}
