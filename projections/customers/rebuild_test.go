package customers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/projections"
	"orderd/projections/customers"
)

// verify runs the projection's Verify and returns its differences as text.
func (r *rig) verify(t *testing.T) (projections.VerifyStats, []string) {
	t.Helper()
	var diffs []string
	stats, err := customers.Projection{}.Verify(context.Background(), r.env.DB, projections.VerifyOptions{
		OnDiff: func(d projections.Difference) { diffs = append(diffs, d.String()) },
	})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if stats.Differences != int64(len(diffs)) {
		t.Errorf("verify counted %d differences and reported %d", stats.Differences, len(diffs))
	}
	return stats, diffs
}

// placeSome places n orders for a few customers, down every path.
func (r *rig) placeSome(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		path := []string{"completed", "declined", "cancelled"}[i%3]
		if err := r.order(context.Background(), []string{"Ada", "Bob", "Cy"}[i%3], []string{"a@example.com", ""}[i%2], int64(100+i), path); err != nil {
			t.Fatal(err)
		}
	}
}

// A rebuild while orders are placed and moved on and the feed's consumers run swaps in
// tables that, once the feed is drained, are exactly the log's fold: no event lost, none
// counted twice, whether it was consumed before, during or after the rebuild. The live
// tables are damaged first, so the result is the rebuild's and not the consumers' doing.
func TestRebuildWhileOrdersFlow(t *testing.T) {
	r := newRig(t)
	r.placeSome(t, 12)
	r.start(t, customers.Apply, 2)
	r.waitDrained(t)
	r.env.MustExec(t, `UPDATE customer_orders SET order_status = 'bogus' ORDER BY order_id LIMIT 3`)
	r.env.MustExec(t, `UPDATE customers SET completed_cents = completed_cents + 1`)

	ctx, stop := context.WithCancel(context.Background())
	var placed atomic.Int64
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				path := []string{"completed", "declined", "cancelled"}[(w+i)%3]
				err := r.order(context.Background(), fmt.Sprint("Flow", w), "", int64(10*i+w), path)
				if err != nil {
					t.Error(err)
					return
				}
				placed.Add(1)
			}
		})
	}
	// Each rebuild waits, before its swap, until the consumers have taken a few orders the
	// rebuild's snapshot does not hold to their last event, in the old tables: events that
	// no catch-up before the swap saw, and that are no longer in the feed.
	var holds atomic.Int64
	held := customers.HoldingBeforeSwap(func(snapshotAt int64) {
		holds.Add(1)
		deadline := time.Now().Add(10 * time.Second)
		for r.env.Count(t, `SELECT COUNT(*) FROM customer_orders WHERE order_id > (SELECT MAX(stream_id) FROM events WHERE position <= ?)
			AND (order_status, version) IN (('completed', 4), ('payment_failed', 3), ('cancelled', 5))`, snapshotAt) < 3 {
			if time.Now().After(deadline) {
				t.Error("the consumers finished no new order while a rebuild waited to swap")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	var during int64
	for rebuilds := 0; rebuilds < 3 || (during == 0 && rebuilds < 20); rebuilds++ {
		before := placed.Load()
		stats, err := held.Rebuild(context.Background(), r.env.DB, nil)
		if err != nil {
			stop()
			wg.Wait()
			t.Fatalf("rebuild: %v", err)
		}
		if stats.Orders == 0 || stats.SnapshotAt == 0 {
			t.Errorf("rebuild folded %d orders up to position %d", stats.Orders, stats.SnapshotAt)
		}
		during += placed.Load() - before
	}
	stop()
	wg.Wait()
	if during == 0 || holds.Load() == 0 {
		t.Fatalf("%d orders placed while a rebuild ran, %d rebuilds held before the swap: the test proves nothing", during, holds.Load())
	}
	r.waitDrained(t)
	r.checkAgainstLog(t)
	if _, diffs := r.verify(t); len(diffs) > 0 {
		t.Errorf("verify after the rebuilds: %v", diffs)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'customer%\_%'
		AND table_name NOT IN ('customer_orders')`); n != 0 {
		t.Errorf("%d rebuild tables left behind", n)
	}
}

// With no consumer running, a rebuild folds the whole backlog and drops the feed's rows it
// covers; what is appended after it reaches the new tables through the feed.
func TestRebuildConsumesTheBacklogItCovers(t *testing.T) {
	r := newRig(t)
	r.placeSome(t, 6)
	stats, err := customers.Projection{}.Rebuild(context.Background(), r.env.DB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM event_feed WHERE position <= ?`, stats.SnapshotAt); n != 0 {
		t.Errorf("%d feed rows the rebuild covers are left", n)
	}
	r.checkAgainstLog(t)
	r.placeSome(t, 3)
	r.start(t, customers.Apply, 1)
	r.waitDrained(t)
	r.checkAgainstLog(t)
}

// Verify finds nothing in a projection that is the log's fold, nor in one with a backlog
// still in the feed (those orders are expected as they stand), and names each damaged row:
// an order's column, one missing, one the log lacks, a customer's total.
func TestVerifyDetectsTamperedRows(t *testing.T) {
	r := newRig(t)
	r.placeSome(t, 6)
	if stats, diffs := r.verify(t); len(diffs) > 0 || stats.Orders != 6 || stats.LiveRows != 0 {
		t.Errorf("verify with the whole backlog pending: %d orders, %d live rows, %v", stats.Orders, stats.LiveRows, diffs)
	}
	r.start(t, customers.Apply, 1)
	r.waitDrained(t)
	if stats, diffs := r.verify(t); len(diffs) > 0 || stats.Orders != 6 || stats.LiveRows != 6 {
		t.Fatalf("verify of the fold: %d orders, %d live rows, %v", stats.Orders, stats.LiveRows, diffs)
	}
	ids := r.env.Strings(t, `SELECT order_id FROM customer_orders WHERE order_status = 'completed' ORDER BY order_id`)
	r.env.MustExec(t, `UPDATE customer_orders SET order_status = 'cancelled' WHERE order_id = ?`, ids[0])
	r.env.MustExec(t, `DELETE FROM customer_orders WHERE order_id = ?`, ids[1])
	r.env.MustExec(t, `INSERT INTO customer_orders VALUES (9999, 'Ghost', '', 'completed', 1, 1)`)
	r.env.MustExec(t, `UPDATE customers SET orders_placed = orders_placed + 5 WHERE customer_name = 'Bob' AND customer_email = ''`)
	_, diffs := r.verify(t)
	want := []string{
		fmt.Sprintf(`customer_orders: order %s: order_status: live "cancelled", rebuilt "completed"`, ids[0]),
		fmt.Sprintf(`customer_orders: order %s: missing from the live table`, ids[1]),
		`customer_orders: order 9999: in the live table but not in the log's fold`,
		`customers: "Bob": orders_placed: live 6, rebuilt 1`,
	}
	if !slices.Equal(diffs, want) {
		t.Errorf("differences:\n%s\nwant:\n%s", join(diffs), join(want))
	}
}

// A version recorded other than the code's makes RebuildIfStale rebuild the projection, once
// however many instances call it at start-up; then it is current and nothing is rebuilt.
func TestVersionChangeRebuildsOnce(t *testing.T) {
	r := newRig(t)
	r.placeSome(t, 6)
	ctx := context.Background()
	if rebuilt, err := projections.RebuildIfStale(ctx, r.env.DB, customers.Projection{}, nil); err != nil || rebuilt {
		t.Fatalf("fresh database: rebuilt %v, %v; want no rebuild", rebuilt, err)
	}
	r.env.MustExec(t, `UPDATE projections SET version = ? WHERE name = ?`, customers.Version+1, customers.Name)
	var rebuilds atomic.Int32
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			rebuilt, err := projections.RebuildIfStale(ctx, r.env.DB, customers.Projection{}, nil)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
			if rebuilt {
				rebuilds.Add(1)
			}
		})
	}
	wg.Wait()
	if n := rebuilds.Load(); n != 1 {
		t.Errorf("%d rebuilds, want 1", n)
	}
	if v, err := projections.StoredVersion(ctx, r.env.DB, customers.Name); err != nil || v != customers.Version {
		t.Errorf("recorded version %d (%v), want %d", v, err, customers.Version)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM projections WHERE name = ? AND rebuilt_at IS NOT NULL`, customers.Name); n != 1 {
		t.Error("rebuilt_at not recorded")
	}
	r.checkAgainstLog(t) // the backlog was never consumed: the rebuild made the tables
	start := time.Now()
	if rebuilt, err := projections.RebuildIfStale(ctx, r.env.DB, customers.Projection{}, nil); err != nil || rebuilt || time.Since(start) > 5*time.Second {
		t.Errorf("second call: rebuilt %v, %v after %s; want no rebuild, at once", rebuilt, err, time.Since(start))
	}
}
