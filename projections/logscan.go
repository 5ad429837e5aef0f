package projections

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"

	"orderd/domain"
	"orderd/eventstore"
)

// eventQuery selects what a fold needs of the events matching where, in the given order,
// joined in one text column: the driver allocates for every column of every row, and
// splitting the text here costs less than that (the server's cost is about the same either
// way, the text protocol sends numbers and times as text anyway). The type sits before the
// payload, which may hold commas; event types have none.
func eventQuery(where, orderBy string) (string, error) {
	payload, err := payloadColumn()
	if err != nil {
		return "", err
	}
	return "SELECT CONCAT_WS(',', position, stream_id, version, schema_version, occurred_at, event_type, " + payload + ") FROM events WHERE " +
		where + " ORDER BY " + orderBy, nil
}

// readEvents runs an eventQuery through q and appends the decoded records to buf.
func readEvents(ctx context.Context, q eventstore.Queryer, dec decoder, buf []eventstore.Record, query string, args ...any) ([]eventstore.Record, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var line sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&line); err != nil {
			return buf, fmt.Errorf("read the log: %w", err)
		}
		var r eventstore.Record
		payload, hasPayload, ok := dec.split(&r, line)
		if !ok {
			return buf, fmt.Errorf("read the log: unexpected row %q", line)
		}
		if err := dec.decode(&r, payload, hasPayload); err != nil {
			return buf, fmt.Errorf("read the log: %w", err)
		}
		buf = append(buf, r)
	}
	if err := rows.Err(); err != nil {
		return buf, fmt.Errorf("read the log: %w", err)
	}
	return buf, nil
}

// split parses "position,stream,version,schema,occurred_at,type[,payload]" into r and
// returns the payload, which is absent when the query left it out (payloadColumn).
func (d decoder) split(r *eventstore.Record, line []byte) (payload []byte, hasPayload, ok bool) {
	var nums [4]int64
	for i := range nums {
		comma := bytes.IndexByte(line, ',')
		if comma < 0 {
			return nil, false, false
		}
		if nums[i], ok = atoi(line[:comma]); !ok {
			return nil, false, false
		}
		line = line[comma+1:]
	}
	r.Position, r.StreamID, r.Version, r.SchemaVersion = nums[0], domain.OrderID(nums[1]), int(nums[2]), int(nums[3])
	comma := bytes.IndexByte(line, ',')
	if comma < 0 {
		return nil, false, false
	}
	var err error
	if r.OccurredAt, err = parseDateTime(line[:comma], d.loc); err != nil {
		return nil, false, false
	}
	line = line[comma+1:]
	typ := line
	if comma := bytes.IndexByte(line, ','); comma >= 0 {
		typ, payload, hasPayload = line[:comma], line[comma+1:], true
	}
	r.Type = d.intern(typ)
	return payload, hasPayload, true
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
