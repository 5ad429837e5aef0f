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

// ordersTable is the orders table as a rebuild sees it: a replay builds orders_rebuild and
// swaps it in.
var ordersTable = ShadowOf(OrdersTable)

// rebuildTable is where a replay builds the new orders table before swapping it in.
var rebuildTable = ordersTable.New

// RebuildStats describes a finished rebuild.
type RebuildStats struct {
	Events     int64         // events folded from the snapshot
	Orders     int64         // orders (streams) in the snapshot, one row each
	Refolded   int           // streams folded a second time, stream by stream (see foldLog)
	CaughtUp   int           // streams refolded because they changed while the rebuild ran
	Pause      time.Duration // how long appends were paused for the swap
	Duration   time.Duration
	SnapshotAt int64 // highest log position in the snapshot
	Phases     Phases
}

// Phases says where a rebuild's time went.
type Phases struct {
	Prepare time.Duration // the new table and the snapshot
	Fold    time.Duration // reading, folding and writing the snapshot, refolds included
	CatchUp time.Duration // refolding what changed since the snapshot, appends running
	Swap    time.Duration // the last catch-up and the RENAME, appends paused (= Pause)
	Drop    time.Duration // dropping the replaced table
}

func (p Phases) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("prepare %s, fold %s, catch up %s, swap %s, drop %s",
		r(p.Prepare), r(p.Fold), r(p.CatchUp), r(p.Swap), r(p.Drop))
}

// Progress is called as a replay or verify goes, from one goroutine at a time, with the
// number of events folded so far (eventstore.EstimateEvents tells about how many there will be). It
// may cancel the replay's context to stop it; while it runs, folding waits.
type Progress func(events int64)

// Rebuild rebuilds the orders table from the log while the service keeps running:
//
//  1. it folds a consistent snapshot of the log into a new table;
//  2. it refolds, without pausing anyone, the streams that changed meanwhile;
//  3. it pauses appends (eventstore.Pause: every append in flight commits, new ones wait),
//     refolds what changed since, swaps the tables with one atomic RENAME and records
//     orders.Version as the projection's version. Appends then resume and write to the new
//     table.
//
// Readers see the old table until the swap and the new one after; no event is skipped (the
// last refold runs when nothing is in flight) and none is applied twice (rows are whole
// folds of their stream). If Rebuild fails or is interrupted the old table stays live, and a
// rerun starts from scratch. It never appends, publishes or sends anything. progress may be nil.
func Rebuild(ctx context.Context, db *sql.DB, progress Progress) (RebuildStats, error) {
	return rebuildOrders(ctx, db, progress, true)
}

// rebuildOrders is Rebuild; with localLoad false it writes with INSERTs only, as it does
// for a server that refuses LOAD DATA LOCAL.
func rebuildOrders(ctx context.Context, db *sql.DB, progress Progress, localLoad bool) (RebuildStats, error) {
	start := time.Now()
	lock, err := TakeLock(ctx, db, OrdersTable)
	if err != nil {
		return RebuildStats{}, err
	}
	defer lock.Release(ctx)
	stats, err := rebuild(ctx, db, lock.Conn(), progress, loadWriter{db: db, table: rebuildTable, insertOnly: !localLoad})
	if err != nil && ctx.Err() != nil {
		err = ctx.Err() // whatever the driver made of it, the replay was interrupted
	}
	if err != nil {
		// Leave nothing half-built behind; a rerun would drop it anyway.
		DropTables(context.WithoutCancel(ctx), db, rebuildTable) //nolint:errcheck // best effort
		return stats, fmt.Errorf("replay: %w", err)
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

func rebuild(ctx context.Context, db *sql.DB, lock *sql.Conn, progress Progress, w loadWriter) (RebuildStats, error) {
	var stats RebuildStats
	mark := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d, mark = now.Sub(mark), now
	}
	if err := PrepareTables(ctx, db, ordersTable); err != nil {
		return stats, err
	}
	snap, err := TakeSnapshot(ctx, db, lock, readers)
	if err != nil {
		return stats, err
	}
	defer snap.Close()
	stats.SnapshotAt = snap.maxPosition
	lap(&stats.Phases.Prepare)
	var refold []domain.OrderID
	stats.Events, stats.Orders, refold, err = foldLog(ctx, w, snap, progress)
	if err != nil {
		return stats, err
	}
	err = refoldStreams(ctx, snap, refold, func(rows []orders.OrderRow) error { return orders.WriteRows(ctx, db, rebuildTable, rows) })
	if err != nil {
		return stats, err
	}
	stats.Refolded = len(refold)
	snap.Close()
	lap(&stats.Phases.Fold)

	applied := map[domain.OrderID]int{}
	stats.CaughtUp, err = CatchUp(func() (int, error) { return catchUp(ctx, db, db, stats.SnapshotAt, applied) })
	if err != nil {
		return stats, err
	}
	lap(&stats.Phases.CatchUp)
	n, err := swap(ctx, db, lock, stats.SnapshotAt, applied)
	stats.CaughtUp += n
	lap(&stats.Phases.Swap)
	stats.Pause = stats.Phases.Swap
	if err != nil {
		return stats, err
	}
	if err := DropTables(ctx, db, ordersTable.Old); err != nil {
		return stats, fmt.Errorf("drop the replaced table: %w", err)
	}
	lap(&stats.Phases.Drop)
	return stats, nil
}

// catchUp refolds into the rebuild table every stream that gained events after the snapshot
// and is not yet at its newest version there; applied records what each stream was refolded to.
func catchUp(ctx context.Context, db *sql.DB, q eventstore.Queryer, since int64, applied map[domain.OrderID]int) (int, error) {
	latest, err := eventstore.StreamVersionsSince(ctx, q, since)
	if err != nil {
		return 0, fmt.Errorf("catch up: %w", err)
	}
	var stale []domain.OrderID
	for id, v := range latest {
		if v > applied[id] {
			stale = append(stale, id)
		}
	}
	for start := 0; start < len(stale); start += writeBatch {
		ids := stale[start:min(start+writeBatch, len(stale))]
		var rows []orders.OrderRow
		var cur orders.OrderRow
		err := eventstore.ScanStreamsOf(ctx, q, ids, func(r eventstore.Record) error {
			if r.StreamID != cur.OrderID && cur.OrderID != 0 {
				rows, cur = append(rows, cur), orders.OrderRow{}
			}
			cur.Apply(r)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("catch up: %w", err)
		}
		if cur.OrderID != 0 {
			rows = append(rows, cur)
		}
		if err := orders.WriteRows(ctx, db, rebuildTable, rows); err != nil {
			return 0, fmt.Errorf("catch up: %w", err)
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
		return 0, fmt.Errorf("swap: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	// Every append that passed the barrier before us has committed; the rest wait. Reads
	// go through the pool, outside tx, so each sees everything committed up to now.
	n, err := catchUp(ctx, db, db, since, applied)
	if err != nil {
		return n, err
	}
	if err := SwapTables(ctx, db, ordersTable); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	if err := RecordVersion(ctx, tx, OrdersTable, orders.Version); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	return n, nil
}
