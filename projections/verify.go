package projections

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// verifyChunk is how many order ids one step of Verify compares: it bounds the rows held.
var verifyChunk domain.OrderID = 4096

// DiffKind says how a live row differs from its rebuilt one.
type DiffKind string

// The kinds of differences Verify reports.
const (
	DiffColumn  DiffKind = "column"  // both have the row; Column differs
	DiffMissing DiffKind = "missing" // the log has the order; the live table lacks its row
	DiffExtra   DiffKind = "extra"   // the live table has a row for an order the log lacks
)

// Difference is one way a live table differs from what the log folds to.
type Difference struct {
	// Table is the table that differs; "" for the orders table, whose differences were
	// reported before there was any other.
	Table   string
	OrderID domain.OrderID // the row's key, for a table keyed by order
	Key     string         // the row's key, for any other table
	Kind    DiffKind
	Column  string // for DiffColumn
	Live    string // the live value as SQL shows it (NULL for NULL), for DiffColumn
	Rebuilt string // the rebuilt value, likewise
}

func (d Difference) String() string {
	if d.Table != "" {
		row := d.Key
		if row == "" {
			row = fmt.Sprintf("order %d", d.OrderID)
		}
		switch d.Kind {
		case DiffMissing:
			return fmt.Sprintf("%s: %s: missing from the live table", d.Table, row)
		case DiffExtra:
			return fmt.Sprintf("%s: %s: in the live table but not in the log's fold", d.Table, row)
		}
		return fmt.Sprintf("%s: %s: %s: live %s, rebuilt %s", d.Table, row, d.Column, d.Live, d.Rebuilt)
	}
	switch d.Kind {
	case DiffMissing:
		return fmt.Sprintf("order %d: missing from the live table", d.OrderID)
	case DiffExtra:
		return fmt.Sprintf("order %d: in the live table but not in the log", d.OrderID)
	}
	return fmt.Sprintf("order %d: %s: live %s, rebuilt %s", d.OrderID, d.Column, d.Live, d.Rebuilt)
}

// VerifyOptions tune Verify; every field may be left zero.
type VerifyOptions struct {
	Progress Progress
	OnDiff   func(Difference) // called for every difference, in order id order, one at a time
}

// VerifyStats describes a finished verification.
type VerifyStats struct {
	Events      int64 // events folded
	Orders      int64 // rows the log folds to
	LiveRows    int64 // rows in the live table
	Differences int64
	SnapshotAt  int64 // highest log position in the snapshot
	Duration    time.Duration
}

// Verify folds the log and compares the result with the live orders table, row by row
// and column by column, without writing anything. Both are read in one consistent snapshot
// (see snapshot): the live rows are written in the same transactions as the events, so the
// comparison holds however busy the service is. It streams both sides sorted by order id,
// a chunk of ids at a time, on several connections, so memory does not grow with the log.
// It holds the replay lock, so it never runs beside a replay (ErrReplayRunning).
func Verify(ctx context.Context, db *sql.DB, opts VerifyOptions) (VerifyStats, error) {
	start := time.Now()
	lock, err := TakeLock(ctx, db, OrdersTable)
	if err != nil {
		return VerifyStats{}, err
	}
	defer lock.Release(ctx)
	snap, err := TakeSnapshot(ctx, db, lock.Conn(), readers)
	if err != nil {
		return VerifyStats{}, fmt.Errorf("verify: %w", err)
	}
	defer snap.Close()
	dec, err := newDecoder(ctx, snap.conns[0])
	if err != nil {
		return VerifyStats{}, err
	}
	stats := VerifyStats{SnapshotAt: snap.maxPosition}
	onDiff := func(d Difference) {
		stats.Differences++
		if opts.OnDiff != nil {
			opts.OnDiff(d)
		}
	}

	// Live rows with ids below or above every stream's cannot match one: they are listed
	// before and after the chunks, which cover the streams' ids.
	below, above := "order_id < ?", "order_id > ?"
	if snap.maxPosition == 0 { // no stream at all: every row is extra
		below, above = "order_id = order_id OR ? = 0", "FALSE AND ? = 0"
	}
	if err := extraRows(ctx, snap.conns[0], below, snap.minStream, &stats, onDiff); err != nil {
		return stats, fmt.Errorf("verify: %w", err)
	}

	// Worker r compares chunks r, r+n, r+2n…; the main loop takes their results in order.
	g, gctx := errgroup.WithContext(ctx)
	n := len(snap.conns)
	results := make([]chan chunkResult, n)
	for r := range n {
		results[r] = make(chan chunkResult, 1)
		g.Go(func() error {
			defer close(results[r])
			var recs []eventstore.Record
			var rows []orders.OrderRow
			for lo := snap.minStream + domain.OrderID(r)*verifyChunk; snap.maxPosition > 0 && lo <= snap.maxStream; lo += domain.OrderID(n) * verifyChunk {
				hi := min(lo+verifyChunk, snap.maxStream+1)
				res, err := compareChunk(gctx, snap.conns[r], dec, lo, hi, &recs, &rows)
				if err != nil {
					return fmt.Errorf("orders %d to %d: %w", lo, hi-1, err)
				}
				select {
				case results[r] <- res:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for k := 0; ; k++ {
			res, ok := <-results[k%n]
			if !ok {
				return nil
			}
			stats.Events += res.events
			stats.Orders += res.orders
			stats.LiveRows += res.live
			for _, d := range res.diffs {
				onDiff(d)
			}
			if opts.Progress != nil {
				opts.Progress(stats.Events)
			}
		}
	})
	err = g.Wait()
	if err == nil {
		err = extraRows(ctx, snap.conns[0], above, snap.maxStream, &stats, onDiff)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return stats, fmt.Errorf("verify: %w", err)
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

// extraRows reports the live rows matching where as rows the log has no stream for.
func extraRows(ctx context.Context, tx *sql.Conn, where string, arg domain.OrderID, stats *VerifyStats, onDiff func(Difference)) error {
	rows, err := tx.QueryContext(ctx, `SELECT order_id FROM `+OrdersTable+` WHERE `+where+` ORDER BY order_id`, arg)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id domain.OrderID
		if err := rows.Scan(&id); err != nil {
			return err
		}
		stats.LiveRows++
		onDiff(Difference{OrderID: id, Kind: DiffExtra})
	}
	return rows.Err()
}

type chunkResult struct {
	events, orders, live int64
	diffs                []Difference
}

// compareChunk folds the streams with ids in [lo, hi) and merges them with the live rows of
// the same ids, both sorted by id.
func compareChunk(ctx context.Context, tx *sql.Conn, dec decoder, lo, hi domain.OrderID, recs *[]eventstore.Record, rows *[]orders.OrderRow) (chunkResult, error) {
	var res chunkResult
	var err error
	if *recs, *rows, err = readStreams(ctx, tx, dec, lo, hi, *recs, *rows); err != nil {
		return res, err
	}
	res.events, res.orders = int64(len(*recs)), int64(len(*rows))
	live, err := tx.QueryContext(ctx, `SELECT `+orders.Columns+` FROM `+OrdersTable+` WHERE order_id >= ? AND order_id < ? ORDER BY order_id`, lo, hi)
	if err != nil {
		return res, err
	}
	defer live.Close()
	rebuilt := *rows
	cells := make([]any, len(columnNames))
	ptrs := make([]any, len(cells))
	for i := range cells {
		ptrs[i] = &cells[i]
	}
	for live.Next() {
		if err := live.Scan(ptrs...); err != nil {
			return res, err
		}
		res.live++
		id, err := strconv.ParseInt(render(cells[0]).String, 10, 64)
		if err != nil {
			return res, fmt.Errorf("live order_id %q: %w", render(cells[0]).String, err)
		}
		for len(rebuilt) > 0 && rebuilt[0].OrderID < domain.OrderID(id) {
			res.diffs = append(res.diffs, Difference{OrderID: rebuilt[0].OrderID, Kind: DiffMissing})
			rebuilt = rebuilt[1:]
		}
		if len(rebuilt) == 0 || rebuilt[0].OrderID != domain.OrderID(id) {
			res.diffs = append(res.diffs, Difference{OrderID: domain.OrderID(id), Kind: DiffExtra})
			continue
		}
		if res.diffs, err = compareRow(&rebuilt[0], cells, res.diffs); err != nil {
			return res, err
		}
		rebuilt = rebuilt[1:]
	}
	if err := live.Err(); err != nil {
		return res, err
	}
	for _, r := range rebuilt {
		res.diffs = append(res.diffs, Difference{OrderID: r.OrderID, Kind: DiffMissing})
	}
	return res, nil
}

// columnNames are the orders table's columns, in orders.TableColumns order.
var columnNames = func() []string {
	var names []string
	for _, c := range orders.TableColumns {
		names = append(names, c.Name)
	}
	return names
}()

// compareRow compares, column by column, the values the live table holds with the values
// the rebuilt row would be written with (orders.OrderRow.Values, as every write uses).
func compareRow(r *orders.OrderRow, live []any, diffs []Difference) ([]Difference, error) {
	want, err := r.Values()
	if err != nil {
		return diffs, err
	}
	for i, name := range columnNames {
		l, w := render(live[i]), render(want[i])
		if l != w {
			diffs = append(diffs, Difference{OrderID: r.OrderID, Kind: DiffColumn, Column: name, Live: show(l), Rebuilt: show(w)})
		}
	}
	return diffs, nil
}

// render turns a value read from, or about to be written to, the table into the text MySQL
// stores for it, so that a read-back value and a value to write compare byte for byte
// whatever the driver's settings (parseTime, text or binary protocol).
func render(v any) sql.NullString {
	switch v := v.(type) {
	case nil:
		return sql.NullString{}
	case []byte:
		return sql.NullString{String: string(v), Valid: true}
	case string:
		return sql.NullString{String: v, Valid: true}
	case bool:
		if v {
			return sql.NullString{String: "1", Valid: true}
		}
		return sql.NullString{String: "0", Valid: true}
	case int64:
		return sql.NullString{String: strconv.FormatInt(v, 10), Valid: true}
	case int:
		return sql.NullString{String: strconv.Itoa(v), Valid: true}
	case domain.OrderID:
		return sql.NullString{String: strconv.FormatInt(int64(v), 10), Valid: true}
	case time.Time:
		return sql.NullString{String: v.UTC().Format(dateTimeLayout), Valid: true}
	}
	return sql.NullString{String: fmt.Sprint(v), Valid: true}
}

func show(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return strconv.Quote(s.String)
}
