package customers

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/projections"
)

// Name is the projection's name (its row in the projections table, its replay lock).
const Name = "customers"

// Version is the version of the projection's code (rowOf, contribution and the columns they
// fill). Bump it whenever a rebuilt table would differ from one the previous code wrote.
const Version = 1

// Projection is the customers projection as `orderd replay`, `--verify` and the
// version-triggered rebuild see it; it is kept live by Apply, a consumer of Topic. Its zero
// value is the projection.
type Projection struct {
	// beforeSwap, if set, is called with the snapshot's position between a rebuild's catch-up
	// and its swap: the one point where events the rebuild never saw must reach the new
	// tables through the feed.
	beforeSwap func(snapshotAt int64)
}

var _ projections.Projection = Projection{}

// Name implements projections.Projection.
func (Projection) Name() string { return Name }

// Version implements projections.Projection.
func (Projection) Version() int { return Version }

// Tuning of the rebuild.
var (
	foldBatch    = 2000 // rows per INSERT of the fold, 6 placeholders each
	catchUpBatch = 1000 // orders per catch-up transaction
)

// Rebuild implements projections.Projection. It rebuilds both tables while the service and
// the feed's consumers keep running:
//
//  1. it folds a consistent snapshot of the log (projections.TakeSnapshot: every event up to
//     its position P, none after) into new tables, each order with the domain's fold;
//  2. it refolds, from the log as committed now, the orders with events after P, applying
//     each one's change to the new totals as a consumer would (apply);
//  3. it holds off the consumers (projections.HoldConsumers), refolds what changed since, deletes the
//     feed rows the snapshot covers (position <= P), swaps the tables with one atomic RENAME
//     and records Version.
//
// No event is lost: one committed when the consumers are held off is in the new tables
// (from the snapshot or a refold) or still in the feed, which the consumers apply to the new
// tables after the swap. None is applied twice: rows carry the stream version they were
// folded from, and a feed row at or below it changes nothing (apply). The feed rows at or
// below P that a consumer held when the swap came are left to it, for that reason.
func (p Projection) Rebuild(ctx context.Context, db *sql.DB, progress projections.Progress) (projections.RebuildStats, error) {
	start := time.Now()
	lock, err := projections.TakeLock(ctx, db, Name)
	if err != nil {
		return projections.RebuildStats{}, err
	}
	defer lock.Release(ctx)
	stats, err := p.rebuild(ctx, db, lock, progress)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		projections.DropTables(context.WithoutCancel(ctx), db, rebuilt.orders, rebuilt.customers) //nolint:errcheck // best effort; a rerun drops them too
		return stats, fmt.Errorf("replay customers: %w", err)
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

func (p Projection) rebuild(ctx context.Context, db *sql.DB, lock *projections.Lock, progress projections.Progress) (projections.RebuildStats, error) {
	var stats projections.RebuildStats
	mark := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d, mark = now.Sub(mark), now
	}
	if err := projections.PrepareTables(ctx, db, ordersTable, customersTable); err != nil {
		return stats, err
	}
	snap, err := projections.TakeSnapshot(ctx, db, lock.Conn(), 1)
	if err != nil {
		return stats, err
	}
	defer snap.Close()
	stats.SnapshotAt = snap.Position()
	lap(&stats.Phases.Prepare)
	if stats.Events, stats.Orders, err = foldSnapshot(ctx, db, snap.Conn(), progress); err != nil {
		return stats, err
	}
	snap.Close()
	// The totals are the sum of the orders' contributions (order.contribution), computed once.
	_, err = db.ExecContext(ctx, `INSERT INTO `+rebuilt.customers+` (customer_name, customer_email, orders_placed, orders_completed, completed_cents)
		SELECT customer_name, customer_email, COUNT(*), SUM(order_status = ?), SUM(IF(order_status = ?, total_cents, 0))
		FROM `+rebuilt.orders+` GROUP BY customer_name, customer_email`, domain.StatusCompleted, domain.StatusCompleted)
	if err != nil {
		return stats, fmt.Errorf("sum the customers' totals: %w", err)
	}
	lap(&stats.Phases.Fold)

	applied := map[domain.OrderID]int{}
	stats.CaughtUp, err = projections.CatchUp(func() (int, error) { return catchUp(ctx, db, stats.SnapshotAt, applied) })
	if err != nil {
		return stats, err
	}
	lap(&stats.Phases.CatchUp)
	if p.beforeSwap != nil {
		p.beforeSwap(stats.SnapshotAt)
	}
	n, err := swap(ctx, db, lock.Conn(), stats.SnapshotAt, applied)
	stats.CaughtUp += n
	lap(&stats.Phases.Swap)
	stats.Pause = stats.Phases.Swap // the consumers', not the appends': those never wait here
	if err != nil {
		return stats, err
	}
	if err := projections.DropTables(ctx, db, ordersTable.Old, customersTable.Old); err != nil {
		return stats, fmt.Errorf("drop the replaced tables: %w", err)
	}
	lap(&stats.Phases.Drop)
	return stats, nil
}

// foldSnapshot folds every stream of the snapshot (read through q) into the new
// customer_orders, foldBatch rows per INSERT.
func foldSnapshot(ctx context.Context, db *sql.DB, q eventstore.Queryer, progress projections.Progress) (events, orders int64, err error) {
	var batch []any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := db.ExecContext(ctx, `INSERT INTO `+rebuilt.orders+` (order_id, customer_name, customer_email, order_status, total_cents, version) VALUES `+
			eventstore.PlaceholderRows(6, len(batch)/6), batch...)
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("write the new customer_orders: %w", err)
		}
		return nil
	}
	events, err = foldLog(ctx, q, progress, func(id domain.OrderID, o order) error {
		orders++
		batch = append(batch, id, o.name, o.email, o.status, o.totalCents, o.version)
		if len(batch) == 6*foldBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return events, orders, err
}

// foldLog reads every stream of the log through q, in stream order, and calls f with each
// one's fold (the domain's, as the live consumer's); it returns the events read.
func foldLog(ctx context.Context, q eventstore.Queryer, progress projections.Progress, f func(domain.OrderID, order) error) (events int64, err error) {
	var cur domain.OrderID
	var history []domain.Event
	emit := func() error {
		if len(history) == 0 {
			return nil
		}
		o := rowOf(domain.Rehydrate(cur, history))
		history = history[:0]
		return f(cur, o)
	}
	err = eventstore.ScanStreams(ctx, q, func(r eventstore.Record) error {
		if r.StreamID != cur {
			if err := emit(); err != nil {
				return err
			}
			cur = r.StreamID
		}
		history = append(history, r.Event)
		events++
		if progress != nil && events%16384 == 0 {
			progress(events)
		}
		return nil
	})
	if err == nil {
		err = emit()
	}
	if err == nil && progress != nil {
		progress(events)
	}
	return events, err
}

// catchUp refolds into the new tables every order with events after since that is not yet
// at its newest version there; applied records what each order was refolded to.
func catchUp(ctx context.Context, db *sql.DB, since int64, applied map[domain.OrderID]int) (int, error) {
	latest, err := eventstore.StreamVersionsSince(ctx, db, since)
	if err != nil {
		return 0, fmt.Errorf("catch up: %w", err)
	}
	var stale []eventstore.Record
	for id, v := range latest {
		if v > applied[id] {
			stale = append(stale, eventstore.Record{StreamID: id, Version: v})
		}
	}
	for start := 0; start < len(stale); start += catchUpBatch {
		part := stale[start:min(start+catchUpBatch, len(stale))]
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return 0, fmt.Errorf("catch up: %w", err)
		}
		if err := rebuilt.apply(ctx, tx, part); err != nil {
			tx.Rollback() //nolint:errcheck // already failing
			return 0, fmt.Errorf("catch up: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return 0, fmt.Errorf("catch up: %w", err)
		}
		for _, r := range part {
			applied[r.StreamID] = r.Version
		}
	}
	return len(stale), nil
}

// swap holds off the consumers, applies the last changes, drops the feed rows the snapshot
// covers and renames the tables, in that order.
func swap(ctx context.Context, db *sql.DB, conn *sql.Conn, since int64, applied map[domain.OrderID]int) (int, error) {
	// READ COMMITTED: the feed rows' deletion below locks those rows only, no gap that an
	// append's feed row would wait for.
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("swap: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := projections.HoldConsumers(ctx, tx, Name); err != nil {
		return 0, fmt.Errorf("swap: %w", err)
	}
	n, err := catchUp(ctx, db, since, applied)
	if err != nil {
		return n, err
	}
	if _, err := feed.DropCovered(ctx, tx, Topic.Name, since); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	if err := projections.SwapTables(ctx, db, ordersTable, customersTable); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	if err := projections.RecordVersion(ctx, tx, Name, Version); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return n, fmt.Errorf("swap: %w", err)
	}
	return n, nil
}
