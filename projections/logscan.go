package projections

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// eventQuery selects what a fold needs of the events matching where, in the given order.
// It is always run as a prepared statement (readEvents, readRaw), whose results come in
// the binary protocol: numbers and times as such, which costs the server less than the
// text protocol's formatting them (about a fifth of its CPU for the log's read), and the
// client less than parsing them.
func eventQuery(where, orderBy string) (string, error) {
	payload, err := payloadColumn()
	if err != nil {
		return "", err
	}
	return "SELECT position, stream_id, version, schema_version, occurred_at, event_type, " + payload + " FROM events WHERE " +
		where + " ORDER BY " + orderBy, nil
}

// preparer is a pool, connection or transaction (*sql.DB, *sql.Conn, *sql.Tx).
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// readEvents prepares an eventQuery on q, runs it and appends the decoded records to buf.
func readEvents(ctx context.Context, q preparer, dec decoder, buf []eventstore.Record, query string, args ...any) ([]eventstore.Record, error) {
	stmt, err := q.PrepareContext(ctx, query)
	if err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	defer stmt.Close()
	return readPrepared(ctx, stmt, dec, buf, args...)
}

// readPrepared runs a prepared eventQuery and appends the decoded records to buf.
func readPrepared(ctx context.Context, stmt *sql.Stmt, dec decoder, buf []eventstore.Record, args ...any) ([]eventstore.Record, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	// Numbers and times scan into any, which database/sql passes through as the driver
	// made them (int64, time.Time); the type and payload into RawBytes, which it does not copy.
	var cols [5]any
	var typ, payload sql.RawBytes
	dest := []any{&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &typ, &payload}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return buf, fmt.Errorf("read the log: %w", err)
		}
		if buf, err = dec.appendRecord(buf, cols[0], cols[1], cols[2], cols[3], cols[4], typ, payload); err != nil {
			return buf, err
		}
	}
	if err := rows.Err(); err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	return buf, nil
}

// errNoRawQuery says that the driver cannot run prepared queries itself (see readRaw).
var errNoRawQuery = errors.New("the driver has no prepared queries with a context")

// readRaw prepares an eventQuery on conn and calls f with a function that runs it and
// appends the decoded records to buf, as readPrepared does but on the driver's connection
// (sql.Conn.Raw), without database/sql in between: a replay reads every event of the log,
// and its locking and Scan conversions cost as much as the decoding. Drivers without the
// interfaces it needs get readPrepared instead.
func readRaw(ctx context.Context, conn *sql.Conn, dec decoder, query string, f func(read func(buf []eventstore.Record, args ...any) ([]eventstore.Record, error)) error) error {
	err := conn.Raw(func(dc any) error {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return errNoRawQuery
		}
		st, err := pc.PrepareContext(ctx, query)
		if err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		defer st.Close()
		sq, ok := st.(driver.StmtQueryContext)
		if !ok {
			return errNoRawQuery
		}
		var named []driver.NamedValue
		dest := make([]driver.Value, 7)
		return f(func(buf []eventstore.Record, args ...any) ([]eventstore.Record, error) {
			named = named[:0]
			for i, a := range args {
				named = append(named, driver.NamedValue{Ordinal: i + 1, Value: a})
			}
			rows, err := sq.QueryContext(ctx, named)
			if err != nil {
				return buf, fmt.Errorf("read the log: %w", err)
			}
			defer rows.Close()
			if len(rows.Columns()) != len(dest) {
				return buf, fmt.Errorf("read the log: %d columns", len(rows.Columns()))
			}
			for {
				if err := rows.Next(dest); err == io.EOF {
					return buf, nil
				} else if err != nil {
					return buf, fmt.Errorf("read the log: %w", err)
				}
				typ, _ := dest[5].([]byte)
				payload, _ := dest[6].([]byte) // nil for NULL
				if buf, err = dec.appendRecord(buf, dest[0], dest[1], dest[2], dest[3], dest[4], typ, payload); err != nil {
					return buf, err
				}
			}
		})
	})
	if !errors.Is(err, errNoRawQuery) {
		return err
	}
	stmt, err := conn.PrepareContext(ctx, query)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer stmt.Close()
	return f(func(buf []eventstore.Record, args ...any) ([]eventstore.Record, error) {
		return readPrepared(ctx, stmt, dec, buf, args...)
	})
}

// appendRecord decodes the columns of an eventQuery's row (position, stream_id, version and
// schema_version as int64, occurred_at as time.Time or, without parseTime, as text, then
// event_type and the payload, nil where the query left it out: see payloadColumn) and
// appends the record to buf.
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
func readStreams(ctx context.Context, q preparer, dec decoder, lo, hi domain.OrderID, recs []eventstore.Record, rows []OrderRow) ([]eventstore.Record, []OrderRow, error) {
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
