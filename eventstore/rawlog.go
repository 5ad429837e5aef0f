package eventstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"orderd/domain"
)

// This file is the log's fast read path for readers that decode events themselves (a
// projection's bulk rebuild): the columns as the server sends them, no metadata, and no
// payload for the events whose payload the reader does not need.

// RawRow receives one row of a RawQuery: position, stream_id, version and schema_version as
// int64, occurred_at as time.Time (or, without the DSN's parseTime, as its text), then the
// event type and the payload (nil where the query left it out). The byte slices are valid
// only during the call.
type RawRow func(position, stream, version, schema, occurredAt any, typ, payload []byte) error

// RawQuery is a read of the log for ReadRaw and ReadRawOnce: one of RawByPosition,
// RawByStreamRange or RawOfStreams.
type RawQuery struct{ sql string }

// RawByPosition reads the events with positions in [lo, hi) (the two arguments), in position
// order: the cheapest read MySQL can do, a walk of the clustered index. noPayload lists the
// event types, with the schema version, whose payload the reader does not need: it gets nil.
func RawByPosition(noPayload map[string]int) RawQuery {
	return rawQuery("position >= ? AND position < ?", "position", noPayload)
}

// RawByStreamRange reads the streams with ids in [lo, hi) (the two arguments), whole, stream
// by stream in version order.
func RawByStreamRange(noPayload map[string]int) RawQuery {
	return rawQuery("stream_id >= ? AND stream_id < ?", "stream_id, version", noPayload)
}

// RawOfStreams reads n streams, whose ids are the n arguments, whole, stream by stream in
// version order.
func RawOfStreams(n int, noPayload map[string]int) RawQuery {
	return rawQuery("stream_id IN ("+Placeholders(n)+")", "stream_id, version", noPayload)
}

func rawQuery(where, orderBy string, noPayload map[string]int) RawQuery {
	return RawQuery{sql: "SELECT position, stream_id, version, schema_version, occurred_at, event_type, " + payloadColumn(noPayload) +
		" FROM events WHERE " + where + " ORDER BY " + orderBy}
}

// payloadColumn is the expression selected instead of the payload: NULL for the types (in
// the given schema version) the reader does not need the payload of, the payload otherwise.
func payloadColumn(noPayload map[string]int) string {
	if len(noPayload) == 0 {
		return "payload"
	}
	byVersion := map[int][]string{}
	for typ, v := range noPayload {
		byVersion[v] = append(byVersion[v], "'"+strings.ReplaceAll(typ, "'", "''")+"'")
	}
	var conds []string
	for v, types := range byVersion {
		slices.Sort(types)
		conds = append(conds, fmt.Sprintf("(schema_version = %d AND event_type IN (%s))", v, strings.Join(types, ", ")))
	}
	slices.Sort(conds)
	return "IF(" + strings.Join(conds, " OR ") + ", NULL, payload)"
}

// Preparer is a pool, connection or transaction (*sql.DB, *sql.Conn, *sql.Tx).
type Preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// ReadRawOnce prepares q on p, runs it with args and calls row for each row. It always runs
// as a prepared statement, whose results come in the binary protocol: numbers and times as
// such, which costs the server less than the text protocol's formatting them (about a fifth
// of its CPU for the log's read), and the client less than parsing them.
func ReadRawOnce(ctx context.Context, p Preparer, q RawQuery, row RawRow, args ...any) error {
	stmt, err := p.PrepareContext(ctx, q.sql)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer stmt.Close()
	return readPrepared(ctx, stmt, row, args...)
}

// readPrepared runs a prepared RawQuery and calls row for each row.
func readPrepared(ctx context.Context, stmt *sql.Stmt, row RawRow, args ...any) error {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	// Numbers and times scan into any, which database/sql passes through as the driver
	// made them (int64, time.Time); the type and payload into RawBytes, which it does not copy.
	var cols [5]any
	var typ, payload sql.RawBytes
	dest := []any{&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &typ, &payload}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		if err := row(cols[0], cols[1], cols[2], cols[3], cols[4], typ, payload); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}

// errNoRawQuery says that the driver cannot run prepared queries itself (see ReadRaw).
var errNoRawQuery = errors.New("the driver has no prepared queries with a context")

// ReadRaw prepares q on conn and calls f with a function that runs it with args and calls
// row for each row, as ReadRawOnce does but on the driver's connection (sql.Conn.Raw),
// without database/sql in between: a replay reads every event of the log, and its locking
// and Scan conversions cost as much as the decoding. Drivers without the interfaces it needs
// get ReadRawOnce's path instead.
func ReadRaw(ctx context.Context, conn *sql.Conn, q RawQuery, f func(read func(row RawRow, args ...any) error) error) error {
	err := conn.Raw(func(dc any) error {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return errNoRawQuery
		}
		st, err := pc.PrepareContext(ctx, q.sql)
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
		return f(func(row RawRow, args ...any) error {
			named = named[:0]
			for i, a := range args {
				named = append(named, driver.NamedValue{Ordinal: i + 1, Value: a})
			}
			rows, err := sq.QueryContext(ctx, named)
			if err != nil {
				return fmt.Errorf("read the log: %w", err)
			}
			defer rows.Close()
			if len(rows.Columns()) != len(dest) {
				return fmt.Errorf("read the log: %d columns", len(rows.Columns()))
			}
			for {
				if err := rows.Next(dest); err == io.EOF {
					return nil
				} else if err != nil {
					return fmt.Errorf("read the log: %w", err)
				}
				typ, _ := dest[5].([]byte)
				payload, _ := dest[6].([]byte) // nil for NULL
				if err := row(dest[0], dest[1], dest[2], dest[3], dest[4], typ, payload); err != nil {
					return err
				}
			}
		})
	})
	if !errors.Is(err, errNoRawQuery) {
		return err
	}
	stmt, err := conn.PrepareContext(ctx, q.sql)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer stmt.Close()
	return f(func(row RawRow, args ...any) error { return readPrepared(ctx, stmt, row, args...) })
}

// Bounds are the lowest and highest positions and stream ids of the log; all zero for an
// empty log.
type Bounds struct {
	MinPosition, MaxPosition int64
	MinStream, MaxStream     domain.OrderID
}

// ReadBounds reads the log's bounds through q, by four index dives. On a connection that
// will read the log with ReadRaw, it also grows the driver's read buffer (see
// readBufferPadding); in a transaction, it can be its first read, which fixes its view.
func ReadBounds(ctx context.Context, q Queryer) (Bounds, error) {
	var minPos, maxPos, minID, maxID sql.NullInt64
	rows, err := q.QueryContext(ctx, `SELECT (SELECT MIN(position) FROM events), (SELECT MAX(position) FROM events),
		(SELECT MIN(stream_id) FROM events), (SELECT MAX(stream_id) FROM events)`+readBufferPadding)
	if err != nil {
		return Bounds{}, fmt.Errorf("read the log's bounds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&minPos, &maxPos, &minID, &maxID); err != nil {
			return Bounds{}, fmt.Errorf("read the log's bounds: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return Bounds{}, fmt.Errorf("read the log's bounds: %w", err)
	}
	return Bounds{MinPosition: minPos.Int64, MaxPosition: maxPos.Int64, MinStream: domain.OrderID(minID.Int64), MaxStream: domain.OrderID(maxID.Int64)}, nil
}

// readBufferPadding pads a statement to readBufferSize bytes with a comment, which the
// server skips. The driver reads results into its connection's buffer, 4 KiB unless a
// bigger packet went through it before (it then keeps the bigger one, up to 256 KiB): a
// replay's connection reads the whole log, and with 4 KiB a read system call per 4 KiB
// of it; sending one big statement first makes each read take up to 64 KiB.
var readBufferPadding = " /*" + strings.Repeat(" ", readBufferSize) + "*/"

const readBufferSize = 64 << 10

// EstimateEvents returns about how many events the log holds, cheaply: the span of its
// positions, exact unless rolled-back appends left holes. COUNT(*) would read the whole log.
func EstimateEvents(ctx context.Context, q Queryer) (int64, error) {
	var lo, hi sql.NullInt64
	rows, err := q.QueryContext(ctx, `SELECT MIN(position), MAX(position) FROM events`)
	if err != nil {
		return 0, fmt.Errorf("estimate the log's size: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&lo, &hi); err != nil {
			return 0, fmt.Errorf("estimate the log's size: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("estimate the log's size: %w", err)
	}
	if !hi.Valid {
		return 0, nil
	}
	return hi.Int64 - lo.Int64 + 1, nil
}

// Newest is the log's newest event, for a projection's lag.
type Newest struct {
	Position   int64 // 0 for an empty log
	StreamID   domain.OrderID
	OccurredAt time.Time
}

// ReadNewest reads the newest event's position, stream and time, by key.
func ReadNewest(ctx context.Context, q Queryer) (Newest, error) {
	rows, err := q.QueryContext(ctx, `SELECT position, stream_id, occurred_at FROM events ORDER BY position DESC LIMIT 1`)
	if err != nil {
		return Newest{}, fmt.Errorf("read the newest event: %w", err)
	}
	defer rows.Close()
	var n Newest
	for rows.Next() {
		if err := rows.Scan(&n.Position, &n.StreamID, &n.OccurredAt); err != nil {
			return Newest{}, fmt.Errorf("read the newest event: %w", err)
		}
	}
	return n, rows.Err()
}
