package customers

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/projections"
)

// Verify implements projections.Projection: it folds the log and compares the result with
// both live tables, writing nothing. The tables lag the log by the feed's rows not yet
// consumed, so it reads everything in one snapshot taken while the consumers are held off
// (projections.HoldConsumers) and appends paused: there, an order with no row left in the feed must
// equal its fold, and one with rows left is expected as it stands (its consumer has yet to
// apply them). Each customer's totals must be the sum of its orders as so expected.
//
// An order's version column is not compared: events of the types Topic skips do not move
// a row, so a row may be folded from an older version than the log's newest, with the
// same values (TestSkippedEventsChangeNothing holds the skip list to that).
func (Projection) Verify(ctx context.Context, db *sql.DB, opts projections.VerifyOptions) (projections.VerifyStats, error) {
	start := time.Now()
	lock, err := projections.TakeLock(ctx, db, Name)
	if err != nil {
		return projections.VerifyStats{}, err
	}
	defer lock.Release(ctx)
	stats, err := verify(ctx, db, lock, opts)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return stats, fmt.Errorf("verify customers: %w", err)
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

func verify(ctx context.Context, db *sql.DB, lock *projections.Lock, opts projections.VerifyOptions) (projections.VerifyStats, error) {
	var stats projections.VerifyStats
	hold, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return stats, err
	}
	defer hold.Rollback() //nolint:errcheck // it only holds the consumers off
	if err := projections.HoldConsumers(ctx, hold, Name); err != nil {
		return stats, err
	}
	snap, err := projections.TakeSnapshot(ctx, db, lock.Conn(), 2)
	if err != nil {
		return stats, err
	}
	defer snap.Close()
	hold.Rollback() //nolint:errcheck // the snapshot's view is fixed: the consumers may go on
	stats.SnapshotAt = snap.Position()
	logConn, liveConn := snap.Conns()[0], snap.Conns()[1]
	onDiff := func(d projections.Difference) {
		stats.Differences++
		if opts.OnDiff != nil {
			opts.OnDiff(d)
		}
	}
	pending, err := feed.PendingStreams(ctx, liveConn, Topic.Name)
	if err != nil {
		return stats, err
	}

	// Both sides in order id order: the log's folds through logConn, the live rows through liveConn.
	liveRows, err := liveConn.QueryContext(ctx, `SELECT order_id, customer_name, customer_email, order_status, total_cents, version
		FROM `+live.orders+` ORDER BY order_id`)
	if err != nil {
		return stats, err
	}
	defer liveRows.Close()
	type keyed struct {
		id domain.OrderID
		order
	}
	var next *keyed
	advance := func() error {
		next = nil
		if !liveRows.Next() {
			return liveRows.Err()
		}
		k := &keyed{}
		if err := liveRows.Scan(&k.id, &k.name, &k.email, &k.status, &k.totalCents, &k.version); err != nil {
			return err
		}
		stats.LiveRows++
		next = k
		return nil
	}
	if err := advance(); err != nil {
		return stats, err
	}
	totals := map[customerKey]contribution{}
	expect := func(o order) {
		k := customerKey{o.name, o.email}
		c, oc := totals[k], o.contribution()
		totals[k] = contribution{c.placed + oc.placed, c.completed + oc.completed, c.completedCents + oc.completedCents}
	}
	// compare takes the fold of order id (version 0: no stream) against the live rows.
	compare := func(id domain.OrderID, folded order) error {
		for next != nil && (folded.version == 0 || next.id < id) {
			// A live row for an order the log does not have.
			onDiff(projections.Difference{Table: live.orders, OrderID: next.id, Kind: projections.DiffExtra})
			if err := advance(); err != nil {
				return err
			}
		}
		if folded.version == 0 {
			return nil
		}
		stats.Orders++
		var l *order
		if next != nil && next.id == id {
			l = &next.order
		}
		switch {
		case pending[id] && l != nil:
			expect(*l) // its consumer has yet to apply the rest
		case pending[id]: // not applied at all yet
		case l == nil:
			onDiff(projections.Difference{Table: live.orders, OrderID: id, Kind: projections.DiffMissing})
			expect(folded)
		default:
			for _, c := range [...]struct{ col, live, want string }{
				{"customer_name", l.name, folded.name}, {"customer_email", l.email, folded.email},
				{"order_status", l.status, folded.status},
				{"total_cents", strconv.FormatInt(l.totalCents, 10), strconv.FormatInt(folded.totalCents, 10)},
			} {
				if c.live != c.want {
					onDiff(projections.Difference{Table: live.orders, OrderID: id, Kind: projections.DiffColumn, Column: c.col,
						Live: strconv.Quote(c.live), Rebuilt: strconv.Quote(c.want)})
				}
			}
			expect(folded)
		}
		if l != nil {
			return advance()
		}
		return nil
	}
	stats.Events, err = foldLog(ctx, logConn, opts.Progress, func(id domain.OrderID, o order) error { return compare(id, o) })
	if err == nil {
		err = compare(0, order{}) // the live rows left are extra
	}
	if err != nil {
		return stats, err
	}
	liveRows.Close()
	return stats, compareTotals(ctx, liveConn, totals, onDiff)
}

type customerKey struct{ name, email string }

func (k customerKey) String() string {
	if k.email == "" {
		return strconv.Quote(k.name)
	}
	return fmt.Sprintf("%q <%s>", k.name, k.email)
}

// compareTotals compares the live customers table with the totals expected of the orders.
func compareTotals(ctx context.Context, q eventstore.Queryer, want map[customerKey]contribution, onDiff func(projections.Difference)) error {
	rows, err := q.QueryContext(ctx, `SELECT customer_name, customer_email, orders_placed, orders_completed, completed_cents FROM `+live.customers)
	if err != nil {
		return err
	}
	defer rows.Close()
	var diffs []projections.Difference
	seen := map[customerKey]bool{}
	for rows.Next() {
		var k customerKey
		var c contribution
		if err := rows.Scan(&k.name, &k.email, &c.placed, &c.completed, &c.completedCents); err != nil {
			return err
		}
		seen[k] = true
		w, ok := want[k]
		if !ok {
			if c != (contribution{}) { // a customer whose orders all went elsewhere keeps a zero row
				diffs = append(diffs, projections.Difference{Table: live.customers, Key: k.String(), Kind: projections.DiffExtra})
			}
			continue
		}
		for _, f := range [...]struct {
			col        string
			live, want int64
		}{
			{"orders_placed", int64(c.placed), int64(w.placed)}, {"orders_completed", int64(c.completed), int64(w.completed)},
			{"completed_cents", c.completedCents, w.completedCents},
		} {
			if f.live != f.want {
				diffs = append(diffs, projections.Difference{Table: live.customers, Key: k.String(), Kind: projections.DiffColumn,
					Column: f.col, Live: strconv.FormatInt(f.live, 10), Rebuilt: strconv.FormatInt(f.want, 10)})
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for k, w := range want {
		if !seen[k] && w != (contribution{}) {
			diffs = append(diffs, projections.Difference{Table: live.customers, Key: k.String(), Kind: projections.DiffMissing})
		}
	}
	slices.SortFunc(diffs, func(a, b projections.Difference) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.Column, b.Column))
	})
	for _, d := range diffs {
		onDiff(d)
	}
	return nil
}
