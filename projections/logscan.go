package projections

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// eventQuery selects what a fold needs of the events matching where, in the given order.
func eventQuery(where, orderBy string) (string, error) {
	payload, err := payloadColumn()
	if err != nil {
		return "", err
	}
	return "SELECT position, stream_id, version, event_type, schema_version, " + payload + ", occurred_at FROM events WHERE " +
		where + " ORDER BY " + orderBy, nil
}

// readEvents runs an eventQuery through q and appends the decoded records to buf. It reads
// the raw column bytes and interns the few event type names, so that a row costs no more
// allocations than its decoded payload.
func readEvents(ctx context.Context, q eventstore.Queryer, dec decoder, buf []eventstore.Record, query string, args ...any) ([]eventstore.Record, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var position, stream, version, typ, schema, payload sql.RawBytes
	for rows.Next() {
		var r eventstore.Record
		if err := rows.Scan(&position, &stream, &version, &typ, &schema, &payload, dateTime{&r.OccurredAt}); err != nil {
			return buf, fmt.Errorf("read the log: %w", err)
		}
		// Parsing the integers here rather than in Scan skips database/sql's reflection.
		var id, v, sv int64
		var ok [4]bool
		r.Position, ok[0] = atoi(position)
		id, ok[1] = atoi(stream)
		v, ok[2] = atoi(version)
		sv, ok[3] = atoi(schema)
		if ok != [4]bool{true, true, true, true} {
			return buf, fmt.Errorf("read the log: unexpected row %q %q %q %q", position, stream, version, schema)
		}
		r.StreamID, r.Version, r.SchemaVersion = domain.OrderID(id), int(v), int(sv)
		r.Type = dec.intern(typ)
		if err := dec.decode(&r, payload, payload != nil); err != nil {
			return buf, fmt.Errorf("read the log: %w", err)
		}
		buf = append(buf, r)
	}
	if err := rows.Err(); err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	return buf, nil
}

// intern returns the event type name without allocating for the known ones.
func (d decoder) intern(b []byte) string {
	if typ, ok := d.names[string(b)]; ok {
		return typ
	}
	return string(b)
}

// atoi parses a non-negative integer column read as text.
func atoi(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// dateTime scans a DATETIME(6) column whether or not the pool's DSN has parseTime.
type dateTime struct{ t *time.Time }

// Scan implements sql.Scanner.
func (d dateTime) Scan(v any) error {
	switch v := v.(type) {
	case time.Time:
		*d.t = v
	case []byte:
		t, err := parseDateTime(v)
		if err != nil {
			return err
		}
		*d.t = t
	default:
		return fmt.Errorf("occurred_at: unexpected %T", v)
	}
	return nil
}

// foldStreams folds records ordered by stream and version into one row per stream.
func foldStreams(recs []eventstore.Record, rows []OrderRow) []OrderRow {
	var cur OrderRow
	for _, r := range recs {
		if r.StreamID != cur.OrderID && cur.OrderID != 0 {
			rows, cur = append(rows, cur), OrderRow{}
		}
		cur.Apply(r)
	}
	if cur.OrderID != 0 {
		rows = append(rows, cur)
	}
	return rows
}

// streamsQuery reads whole streams by id range, in stream order, for Verify and catch-up.
func streamsQuery() (string, error) {
	return eventQuery("stream_id >= ? AND stream_id < ?", "stream_id, version")
}

// readStreams reads and folds the streams with ids in [lo, hi).
func readStreams(ctx context.Context, q eventstore.Queryer, dec decoder, lo, hi domain.OrderID, recs []eventstore.Record, rows []OrderRow) ([]eventstore.Record, []OrderRow, error) {
	query, err := streamsQuery()
	if err != nil {
		return recs, rows, err
	}
	recs, err = readEvents(ctx, q, dec, recs[:0], query, lo, hi)
	if err != nil {
		return recs, rows, err
	}
	return recs, foldStreams(recs, rows[:0]), nil
}
