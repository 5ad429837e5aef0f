package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// rebuildTable is where a replay builds the new orders table before swapping it in.
const rebuildTable = "orders_rebuild"

// replayLock keeps two replays of the orders projection from running at once.
const replayLock = "orderd.replay.orders"

// ErrReplayRunning is returned when another replay holds the replay lock.
var ErrReplayRunning = errors.New("another replay of the orders projection is running; try again when it has finished")

// batchRows is how many rows one INSERT writes during a rebuild.
const batchRows = 1000

// RebuildStats describes a finished rebuild.
type RebuildStats struct {
	Events     int64         // events folded from the snapshot
	Orders     int64         // rows written from the snapshot
	CaughtUp   int           // streams refolded because they changed while the rebuild ran
	Pause      time.Duration // how long appends were paused for the swap
	Duration   time.Duration
	SnapshotAt int64 // highest log position in the snapshot
}

// Progress is called now and then with the number of events folded so far.
type Progress func(events int64)

// Rebuild rebuilds the orders table from the log while the service keeps running:
//
//  1. it folds a consistent snapshot of the log into a new table;
//  2. it refolds, without pausing anyone, the streams that changed meanwhile;
//  3. it pauses appends (eventstore.Pause: every append in flight commits, new ones wait),
//     refolds what changed since, and swaps the tables with one atomic RENAME. Appends then
//     resume and write to the new table.
//
// Readers see the old table until the swap and the new one after; no event is skipped (the
// last refold runs when nothing is in flight) and none is applied twice (rows are whole
// folds of their stream). If Rebuild fails or is interrupted the old table stays live, and a
// rerun starts from scratch. It never appends, publishes or sends anything.
func Rebuild(ctx context.Context, db *sql.DB, progress Progress) (RebuildStats, error) {
	start := time.Now()
	lock, err := db.Conn(ctx)
	if err != nil {
		return RebuildStats{}, fmt.Errorf("replay: %w", err)
	}
	defer lock.Close()
	var got sql.NullInt64
	if err := lock.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, replayLock).Scan(&got); err != nil {
		return RebuildStats{}, fmt.Errorf("replay: take lock: %w", err)
	}
	if got.Int64 != 1 {
		return RebuildStats{}, ErrReplayRunning
	}
	defer lock.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, replayLock) //nolint:errcheck // released on close too

	for _, stmt := range []string{`DROP TABLE IF EXISTS ` + rebuildTable, `CREATE TABLE ` + rebuildTable + ` LIKE ` + OrdersTable} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return RebuildStats{}, fmt.Errorf("replay: prepare %s: %w", rebuildTable, err)
		}
	}
	stats, err := foldSnapshot(ctx, db, lock, rebuildTable, progress)
	if err != nil {
		return stats, err
	}
	applied := map[domain.OrderID]int{}
	for pass := 0; pass < 5; pass++ { // catch up while appends run, until little is left
		n, err := catchUp(ctx, db, db, stats.SnapshotAt, applied)
		if err != nil {
			return stats, err
		}
		stats.CaughtUp += n
		if n < 100 {
			break
		}
	}
	pauseStart := time.Now()
	n, err := swap(ctx, db, lock, stats.SnapshotAt, applied)
	stats.CaughtUp += n
	stats.Pause, stats.Duration = time.Since(pauseStart), time.Since(start)
	return stats, err
}

// foldSnapshot folds every stream of one gap-free snapshot of the log into table. Reading
// and writing overlap: a writer goroutine inserts batches while the next is folded.
func foldSnapshot(ctx context.Context, db *sql.DB, lock *sql.Conn, table string, progress Progress) (RebuildStats, error) {
	var stats RebuildStats
	tx, err := snapshot(ctx, db, lock, &stats.SnapshotAt)
	if err != nil {
		return stats, err
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	batches := make(chan []OrderRow, 2)
	writeErr := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err == nil {
				err = writeRows(ctx, db, table, b)
			}
		}
		writeErr <- err
	}()
	var cur OrderRow
	batch := make([]OrderRow, 0, batchRows)
	flush := func() {
		batches <- batch
		batch = make([]OrderRow, 0, batchRows)
	}
	scanErr := eventstore.ScanStreams(ctx, tx, func(r eventstore.Record) error {
		if r.StreamID != cur.OrderID && cur.OrderID != 0 {
			batch = append(batch, cur)
			stats.Orders++
			if len(batch) == batchRows {
				flush()
			}
			cur = OrderRow{}
		}
		cur.Apply(r)
		stats.Events++
		if progress != nil && stats.Events%50000 == 0 {
			progress(stats.Events)
		}
		return nil
	})
	if cur.OrderID != 0 {
		batch = append(batch, cur)
		stats.Orders++
	}
	flush()
	close(batches)
	if err := errors.Join(scanErr, <-writeErr); err != nil {
		return stats, fmt.Errorf("replay: %w", err)
	}
	if progress != nil {
		progress(stats.Events)
	}
	return stats, nil
}

// snapshot starts a read-only transaction whose view of the log has no gaps: it is taken
// while appends are paused, so every position up to the highest it sees has committed (or
// never will), and everything appended later has a higher position. at receives that position.
func snapshot(ctx context.Context, db *sql.DB, lock *sql.Conn, at *int64) (*sql.Tx, error) {
	pause, err := eventstore.Pause(ctx, lock)
	if err != nil {
		return nil, fmt.Errorf("replay: snapshot: %w", err)
	}
	defer pause.Rollback() //nolint:errcheck // only releases the barrier
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("replay: snapshot: %w", err)
	}
	// The first read fixes the snapshot; every later read in tx sees the log as of here.
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(at); err != nil {
		tx.Rollback() //nolint:errcheck // already failing
		return nil, fmt.Errorf("replay: snapshot: %w", err)
	}
	return tx, nil
}

// catchUp refolds into the rebuild table every stream that gained events after the snapshot
// and is not yet at its newest version there; applied records what each stream was refolded to.
func catchUp(ctx context.Context, db *sql.DB, q eventstore.Queryer, since int64, applied map[domain.OrderID]int) (int, error) {
	latest, err := eventstore.StreamVersionsSince(ctx, q, since)
	if err != nil {
		return 0, fmt.Errorf("replay: catch up: %w", err)
	}
	var stale []domain.OrderID
	for id, v := range latest {
		if v > applied[id] {
			stale = append(stale, id)
		}
	}
	for start := 0; start < len(stale); start += batchRows {
		ids := stale[start:min(start+batchRows, len(stale))]
		var rows []OrderRow
		var cur OrderRow
		err := eventstore.ScanStreamsOf(ctx, q, ids, func(r eventstore.Record) error {
			if r.StreamID != cur.OrderID && cur.OrderID != 0 {
				rows, cur = append(rows, cur), OrderRow{}
			}
			cur.Apply(r)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("replay: catch up: %w", err)
		}
		if cur.OrderID != 0 {
			rows = append(rows, cur)
		}
		if err := writeRows(ctx, db, rebuildTable, rows); err != nil {
			return 0, fmt.Errorf("replay: catch up: %w", err)
		}
		for _, r := range rows {
			applied[r.OrderID] = r.Version
		}
	}
	return len(stale), nil
}

// swap pauses appends, applies the last changes and renames the tables, in that order.
func swap(ctx context.Context, db *sql.DB, lock *sql.Conn, since int64, applied map[domain.OrderID]int) (int, error) {
	tx, err := eventstore.Pause(ctx, lock)
	if err != nil {
		return 0, fmt.Errorf("replay: swap: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	// Every append that passed the barrier before us has committed; the rest wait. Reads
	// go through the pool, outside tx, so each sees everything committed up to now.
	n, err := catchUp(ctx, db, db, since, applied)
	if err != nil {
		return n, err
	}
	old := OrdersTable + "_old"
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS `+old); err != nil {
		return n, fmt.Errorf("replay: swap: %w", err)
	}
	if _, err := db.ExecContext(ctx, `RENAME TABLE `+OrdersTable+` TO `+old+`, `+rebuildTable+` TO `+OrdersTable); err != nil {
		return n, fmt.Errorf("replay: swap: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE projections SET rebuilt_at = UTC_TIMESTAMP(6) WHERE name = ?`, OrdersTable); err != nil {
		return n, fmt.Errorf("replay: swap: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return n, fmt.Errorf("replay: swap: %w", err)
	}
	if _, err := db.ExecContext(ctx, `DROP TABLE `+old); err != nil {
		return n, fmt.Errorf("replay: drop the replaced table %s: %w", old, err)
	}
	return n, nil
}
