package projections_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/ordering"
	"orderd/projections"
	"orderd/projections/orders"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T, db *sql.DB, hooks ...eventstore.Hook) *eventstore.Store {
	t.Helper()
	s, err := eventstore.New(db, append([]eventstore.Hook{projections.Orders{}}, hooks...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAtBarrier waits until Rebuild, running against env's database, waits for the append
// in flight: at the log barrier, which it takes exclusively (eventstore.Pause) for a gap-free
// snapshot and for the swap, or — were the barrier missing — on a metadata lock of the
// swap. It fails the test if finished is closed first: Rebuild returned without waiting.
func waitAtBarrier(t *testing.T, env *testenv.Env, finished <-chan struct{}) {
	t.Helper()
	waitFor(t, 30*time.Second, "Rebuild waits for the append in flight", func() bool {
		select {
		case <-finished:
			t.Fatal("Rebuild returned without waiting for the append in flight")
		default:
		}
		return env.Count(t, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE DB = DATABASE() AND ID <> CONNECTION_ID()
			AND (INFO LIKE '%event_log_barrier%FOR UPDATE%' OR STATE LIKE 'Waiting for table metadata lock%')`) > 0
	})
}

// replayLockHolder returns the database of the session holding the replay lock, "" if free.
func replayLockHolder(t *testing.T, env *testenv.Env) (held bool, db string) {
	t.Helper()
	var id sql.NullInt64
	if err := env.DB.QueryRow(`SELECT IS_USED_LOCK(?)`, projections.ReplayLockName(env.DBName)).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if !id.Valid {
		return false, ""
	}
	var name sql.NullString
	err := env.DB.QueryRow(`SELECT DB FROM information_schema.PROCESSLIST WHERE ID = ?`, id.Int64).Scan(&name)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return true, name.String
}

// rebuild runs projections.Rebuild on env. The replay lock is server-wide, so a replay of
// another test's database (another package runs `orderd replay`) can hold it: rebuild waits
// for that one, and only that one, to finish.
func rebuild(ctx context.Context, t *testing.T, env *testenv.Env, progress projections.Progress) (projections.RebuildStats, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		stats, err := projections.Rebuild(ctx, env.DB, progress)
		if !errors.Is(err, projections.ErrReplayRunning) || time.Now().After(deadline) {
			return stats, err
		}
		if held, db := replayLockHolder(t, env); held && db == env.DBName {
			return stats, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustRebuild(t *testing.T, env *testenv.Env) projections.RebuildStats {
	t.Helper()
	stats, err := rebuild(ctxFor(t, 60*time.Second), t, env, nil)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	return stats
}

// tableRows returns every row of table, ordered by order_id, as "column=value" lists in which
// each value is the column's exact bytes as MySQL stores them (read through HEX(CAST(… AS
// BINARY))), NULL kept apart from the empty string.
func tableRows(t *testing.T, env *testenv.Env, table string) []string {
	t.Helper()
	cols, err := env.DB.Query(`SELECT COLUMN_NAME FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, table)
	if err != nil {
		t.Fatal(err)
	}
	var names, exprs []string
	for cols.Next() {
		var c string
		if err := cols.Scan(&c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c)
		exprs = append(exprs, "HEX(CAST(`"+c+"` AS BINARY))")
	}
	cols.Close()
	if len(names) == 0 {
		t.Fatalf("table %s has no columns", table)
	}
	rows, err := env.DB.Query(`SELECT ` + strings.Join(exprs, ", ") + ` FROM ` + table + ` ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(names[i] + "=")
			if !v.Valid {
				b.WriteString("NULL")
				continue
			}
			raw, err := hex.DecodeString(v.String)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(strconv.Quote(string(raw)))
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func compareRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d rows, want %d", what, len(got), len(want))
	}
	for i := 0; i < min(len(got), len(want)); i++ {
		if got[i] != want[i] {
			t.Errorf("%s: row %d differs\n got  %s\n want %s", what, i, got[i], want[i])
		}
	}
}

// foldedRows computes the expected orders table from the log: FoldOrder over each stream.
func foldedRows(t *testing.T, env *testenv.Env, s *eventstore.Store) map[domain.OrderID]orders.OrderRow {
	t.Helper()
	ids, err := env.DB.Query(`SELECT DISTINCT stream_id FROM events ORDER BY stream_id`)
	if err != nil {
		t.Fatal(err)
	}
	var streams []domain.OrderID
	for ids.Next() {
		var id domain.OrderID
		if err := ids.Scan(&id); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, id)
	}
	ids.Close()
	out := map[domain.OrderID]orders.OrderRow{}
	for _, id := range streams {
		history, _, err := s.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = normalise(orders.FoldOrder(history))
	}
	return out
}

// normalise makes "no items" one value: the table stores [] for both nil and empty.
func normalise(r orders.OrderRow) orders.OrderRow {
	if len(r.Items) == 0 {
		r.Items = nil
	}
	return r
}

// checkTableIsFold checks that the orders table holds exactly one row per stream, each equal
// to a fresh fold of the stream.
func checkTableIsFold(t *testing.T, env *testenv.Env, s *eventstore.Store) {
	t.Helper()
	want := foldedRows(t, env, s)
	if n := env.Count(t, `SELECT COUNT(*) FROM orders`); n != len(want) {
		t.Errorf("orders has %d rows, the log %d streams", n, len(want))
	}
	rd, err := orders.NewReader(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		got, err := rd.Order(context.Background(), id)
		if err != nil {
			t.Errorf("order %d: %v", id, err)
			continue
		}
		if got = normalise(got); !reflect.DeepEqual(got, w) {
			t.Errorf("order %d:\n table %+v\n fold  %+v", id, got, w)
		}
	}
}

// Decisions, as the stages take them.
var (
	pay = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay-" + strconv.Itoa(int(o.ID()))})
	}
	decline = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Reason: "card declined"})
	}
	reserve = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: true})
	}
	short = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reason: "out of stock: SKU-MUG"})
	}
	refund = func(o *domain.Order) ([]domain.Event, error) { return o.Refund("ref-" + strconv.Itoa(int(o.ID()))) }
	email  = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmail(o.CustomerEmail(), fmt.Sprintf("<%d@test>", o.ID()))
	}
	bounce = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmailFailure(o.CustomerEmail(), "RCPT TO: 550 5.1.0 Requested action not taken: mailbox unavailable")
	}
	txDecide = func(d eventstore.Decide) eventstore.DecideTx {
		return func(_ context.Context, _ eventstore.Tx, o *domain.Order) ([]domain.Event, error) { return d(o) }
	}
)

func placement(name string, items ...domain.Item) domain.OrderPlaced {
	var total int64
	for _, it := range items {
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	return domain.OrderPlaced{CustomerName: name, CustomerEmail: "c@example.com", Items: items, TotalCents: total}
}

func create(t *testing.T, s *eventstore.Store, e domain.OrderPlaced) domain.OrderID {
	t.Helper()
	id, err := s.Create(context.Background(), eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "c-" + e.CustomerName}},
		[]domain.Event{e})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return id
}

func step(t *testing.T, s *eventstore.Store, id domain.OrderID, d eventstore.Decide) {
	t.Helper()
	if _, err := s.Update(context.Background(), id, eventstore.Metadata{CausationID: "step"}, d); err != nil {
		t.Fatalf("order %d: %v", id, err)
	}
}

// TestRebuildWaitsForAnAppendInFlight provokes the gap of DESIGN invariant 5: an append holds
// log position p uncommitted while position p+1 commits. A reader that trusted "everything
// up to the highest position I saw" would skip p for good. Rebuild must wait for it.
func TestRebuildWaitsForAnAppendInFlight(t *testing.T) {
	env := testenv.New(t)
	g := testenv.NewGate()
	s := newStore(t, env.DB, g)
	id1 := create(t, s, placement("One", domain.Item{SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}))

	// Order 1's payment takes position p and stays uncommitted.
	held, appendDone := g.Hold(t, func() error {
		_, err := s.UpdateTx(context.Background(), id1, eventstore.Metadata{}, txDecide(pay))
		return err
	})
	// Order 2 commits at p+1.
	id2 := create(t, s, placement("Two"))
	recs2, _, err := s.Load(context.Background(), id2)
	if err != nil {
		t.Fatal(err)
	}
	p, p1 := held.Position, recs2[0].Position
	if p1 <= p {
		t.Fatalf("order 2 got position %d, not after the held append's %d", p1, p)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM events WHERE position = ?`, p); n != 0 {
		t.Fatalf("the held append at position %d is already visible", p)
	}
	if max := env.Count(t, `SELECT MAX(position) FROM events`); max != int(p1) {
		t.Fatalf("highest committed position is %d, want %d", max, p1)
	}

	var stats projections.RebuildStats
	var rebuildErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		stats, rebuildErr = rebuild(ctxFor(t, 90*time.Second), t, env, nil)
	}()
	waitAtBarrier(t, env, finished)
	select {
	case <-finished:
		t.Fatalf("Rebuild finished (stats %+v, err %v) while position %d was still uncommitted", stats, rebuildErr, p)
	case <-time.After(300 * time.Millisecond):
		// Still waiting, as it must.
	}
	g.Release()
	if err := <-appendDone; err != nil {
		t.Fatalf("held append: %v", err)
	}
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("Rebuild did not finish once the held append committed")
	}
	if rebuildErr != nil {
		t.Fatalf("rebuild: %v", rebuildErr)
	}
	if stats.Orders != 2 || stats.Events != 3 || stats.SnapshotAt != p1 {
		t.Errorf("stats %+v: want 2 orders, 3 events, snapshot at %d", stats, p1)
	}
	rd, _ := orders.NewReader(env.DB)
	o1, err := rd.Order(context.Background(), id1)
	if err != nil {
		t.Fatal(err)
	}
	if o1.Version != 2 || o1.LastPosition != p || o1.PaymentStatus != domain.StatusCompleted {
		t.Errorf("rebuilt order 1: version %d, last position %d, payment %q; want 2, %d, completed (the late commit was skipped)",
			o1.Version, o1.LastPosition, o1.PaymentStatus, p)
	}
	o2, err := rd.Order(context.Background(), id2)
	if err != nil {
		t.Fatal(err)
	}
	if o2.Version != 1 || o2.LastPosition != p1 {
		t.Errorf("rebuilt order 2: version %d, last position %d; want 1, %d", o2.Version, o2.LastPosition, p1)
	}
	checkTableIsFold(t, env, s)
}

// buildShop appends orders along every path the pipeline knows, through Create, Update and
// UpdateTx, and returns their ids.
func buildShop(t *testing.T, s *eventstore.Store) []domain.OrderID {
	t.Helper()
	book := domain.Item{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}
	mug := domain.Item{SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}
	var ids []domain.OrderID
	path := func(e domain.OrderPlaced, steps ...eventstore.Decide) {
		id := create(t, s, e)
		for i, d := range steps {
			if i%2 == 1 { // alternate Update and UpdateTx
				if _, err := s.UpdateTx(context.Background(), id, eventstore.Metadata{}, txDecide(d)); err != nil {
					t.Fatalf("order %d: %v", id, err)
				}
				continue
			}
			step(t, s, id, d)
		}
		ids = append(ids, id)
	}
	path(placement("Completed Zoë 😀", book, mug), pay, reserve, email)
	path(placement(`O'Brien "Declined"`, mug), decline, email)
	path(placement("Cancelled", book), pay, short, refund, email)
	path(domain.OrderPlaced{CustomerName: "Seed user", Items: []domain.Item{}}) // as POST /place-order makes it
	path(placement("Paid only", mug, book), pay)
	path(placement("Reserved, not yet emailed", mug), pay, reserve)
	path(domain.OrderPlaced{CustomerName: "No items field"}, pay, reserve, email) // Items nil
	// The mail server refused the notification for good, on each path.
	path(placement("Bounced confirmation", book), pay, reserve, bounce)
	path(placement("Bounced decline", mug), decline, bounce)
	path(placement("Bounced cancellation", book), pay, short, refund, bounce)
	return ids
}

func TestRebuildEqualsLive(t *testing.T) {
	env := testenv.New(t)
	s := newStore(t, env.DB)
	ids := buildShop(t, s)
	live := tableRows(t, env, projections.OrdersTable)
	if len(live) != len(ids) {
		t.Fatalf("live table has %d rows for %d orders", len(live), len(ids))
	}
	checkTableIsFold(t, env, s)
	events := env.Count(t, `SELECT COUNT(*) FROM events`)

	stats := mustRebuild(t, env)
	if stats.Orders != int64(len(ids)) || stats.Events != int64(events) {
		t.Errorf("stats %+v: want %d orders, %d events", stats, len(ids), events)
	}
	compareRows(t, "rebuilt over the live table", tableRows(t, env, projections.OrdersTable), live)

	// Dropping the projection's rows and replaying the log gives them back, byte for byte.
	env.MustExec(t, `DELETE FROM orders`)
	mustRebuild(t, env)
	compareRows(t, "rebuilt from nothing", tableRows(t, env, projections.OrdersTable), live)
	if n := env.Count(t, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\_%'`); n != 0 {
		t.Errorf("%d work tables (orders_*) left behind after rebuilds", n)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM projections WHERE name = 'orders' AND rebuilt_at IS NOT NULL`); n != 1 {
		t.Error("projections.rebuilt_at not recorded")
	}

	// Appends after the swap keep the swapped-in table current.
	step(t, s, ids[4], reserve)
	rd, _ := orders.NewReader(env.DB)
	row, err := rd.Order(context.Background(), ids[4])
	if err != nil {
		t.Fatal(err)
	}
	if row.Version != 3 || row.InventoryStatus != domain.StatusCompleted {
		t.Errorf("order %d after an append following the rebuild: version %d, inventory %q", ids[4], row.Version, row.InventoryStatus)
	}
	checkTableIsFold(t, env, s)
}

func TestSecondRebuildIsRefused(t *testing.T) {
	env := testenv.New(t)
	g := testenv.NewGate()
	s := newStore(t, env.DB, g)
	ids := buildShop(t, s)
	before := tableRows(t, env, projections.OrdersTable)

	// Hold an append so that the first Rebuild waits at the barrier, holding the replay lock.
	_, appendDone := g.Hold(t, func() error {
		_, err := s.UpdateTx(context.Background(), ids[4], eventstore.Metadata{}, txDecide(reserve))
		return err
	})
	first := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := rebuild(ctxFor(t, 90*time.Second), t, env, nil)
		first <- err
	}()
	waitAtBarrier(t, env, finished)
	if held, db := replayLockHolder(t, env); !held || db != env.DBName {
		g.Release()
		t.Fatalf("replay lock held=%v by a session of %q, want the first Rebuild's (%s)", held, db, env.DBName)
	}

	_, err := projections.Rebuild(ctxFor(t, 10*time.Second), env.DB, nil)
	if !errors.Is(err, projections.ErrReplayRunning) {
		t.Errorf("second concurrent Rebuild: %v, want ErrReplayRunning", err)
	}
	g.Release()
	if err := <-appendDone; err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first Rebuild: %v", err)
	}
	after := tableRows(t, env, projections.OrdersTable)
	if len(after) != len(before) {
		t.Errorf("%d rows after, %d before", len(after), len(before))
	}
	checkTableIsFold(t, env, s)
	// The lock was released: the next Rebuild runs.
	mustRebuild(t, env)
	checkTableIsFold(t, env, s)
}

func TestCancelledRebuildLeavesTheTableIntact(t *testing.T) {
	t.Run("cancelled after folding the snapshot", func(t *testing.T) {
		env := testenv.New(t)
		s := newStore(t, env.DB)
		buildShop(t, s)
		before := tableRows(t, env, projections.OrdersTable)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var folded int64
		_, err := rebuild(ctx, t, env, func(events int64) {
			folded = events
			cancel() // the snapshot is in orders_rebuild; catching up and swapping are left
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Rebuild: %v, want context.Canceled", err)
		}
		if folded == 0 {
			t.Fatal("Rebuild never reported progress: the cancellation did not happen midway")
		}
		compareRows(t, "live table after a cancelled rebuild", tableRows(t, env, projections.OrdersTable), before)

		mustRebuild(t, env)
		compareRows(t, "table after the rerun", tableRows(t, env, projections.OrdersTable), before)
		checkTableIsFold(t, env, s)
	})

	t.Run("cancelled while waiting at the barrier", func(t *testing.T) {
		env := testenv.New(t)
		g := testenv.NewGate()
		s := newStore(t, env.DB, g)
		ids := buildShop(t, s)

		_, appendDone := g.Hold(t, func() error {
			_, err := s.UpdateTx(context.Background(), ids[3], eventstore.Metadata{}, txDecide(pay))
			return err
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			_, err := rebuild(ctx, t, env, nil)
			done <- err
		}()
		waitAtBarrier(t, env, finished)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled Rebuild: %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			g.Release()
			t.Fatal("Rebuild did not return after its context was cancelled")
		}
		g.Release()
		if err := <-appendDone; err != nil {
			t.Fatal(err)
		}
		// The live table took the held append as usual.
		checkTableIsFold(t, env, s)
		live := tableRows(t, env, projections.OrdersTable)

		// The cancelled Rebuild's server session may hold the replay lock until it notices
		// its client has gone; the rerun waits for that, then succeeds.
		waitFor(t, 60*time.Second, "the cancelled Rebuild's replay lock is released", func() bool {
			held, db := replayLockHolder(t, env)
			return !held || db != env.DBName
		})
		mustRebuild(t, env)
		compareRows(t, "table after the rerun", tableRows(t, env, projections.OrdersTable), live)
	})
}

// TestRebuildDuringConcurrentAppends rebuilds while several writers keep appending, and
// makes sure appends land in every phase: before the snapshot, while it is folded (so
// Rebuild must catch up), and after the swap.
func TestRebuildDuringConcurrentAppends(t *testing.T) {
	env := testenv.New(t)
	s := newStore(t, env.DB)
	var appended atomic.Int64
	stop := make(chan struct{})
	var errMu sync.Mutex
	var firstErr error
	writerErr := func() error { errMu.Lock(); defer errMu.Unlock(); return firstErr }
	var wg sync.WaitGroup
	paths := [][]eventstore.Decide{{pay, reserve, email}, {decline, email}, {pay, short, refund, email}, {pay}, {pay, reserve, bounce}}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				item := domain.Item{SKU: "SKU-MUG", Quantity: 1 + n%3, UnitPriceCents: 899}
				e := placement(fmt.Sprintf("writer %d order %d", w, n), item)
				id, err := s.Create(context.Background(), eventstore.CreateRequest{}, []domain.Event{e})
				appended.Add(1)
				for _, d := range paths[(w+n)%len(paths)] {
					if err != nil {
						break
					}
					if _, err = s.Update(context.Background(), id, eventstore.Metadata{}, d); err == nil {
						appended.Add(1)
					}
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
			}
		}()
	}
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopWriters()
	waitUntilAppended := func(n int64, what string) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("%d more events are appended %s", n, what), func() bool {
			return appended.Load() >= n || writerErr() != nil
		})
	}
	waitUntilAppended(60, "before the rebuild")

	var once sync.Once
	stats, err := rebuild(ctxFor(t, 120*time.Second), t, env, func(int64) {
		// The snapshot is folded; let the writers move on before catching up.
		once.Do(func() { waitUntilAppended(appended.Load()+40, "while the snapshot is folded") })
	})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	waitUntilAppended(appended.Load()+40, "after the swap")
	stopWriters()
	if err := writerErr(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	if stats.CaughtUp == 0 {
		t.Errorf("stats %+v: no stream was caught up, so appends did not overlap the rebuild", stats)
	}
	total := env.Count(t, `SELECT COUNT(*) FROM events`)
	t.Logf("rebuild: %+v; %d events in the log at the end", stats, total)
	checkTableIsFold(t, env, s)
}

// TestRebuildLockIsPerDatabase: a replay of one database must not refuse to run because a
// replay of another database on the same server is running (two deployments, or two test
// runs, sharing a MySQL server).
func TestRebuildLockIsPerDatabase(t *testing.T) {
	a, b := testenv.New(t), testenv.New(t)
	g := testenv.NewGate()
	sa := newStore(t, a.DB, g)
	sb := newStore(t, b.DB)
	ida := create(t, sa, placement("A"))
	create(t, sb, placement("B"))

	_, appendDone := g.Hold(t, func() error {
		_, err := sa.UpdateTx(context.Background(), ida, eventstore.Metadata{}, txDecide(pay))
		return err
	})
	doneA := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := rebuild(ctxFor(t, 90*time.Second), t, a, nil)
		doneA <- err
	}()
	waitAtBarrier(t, a, finished)
	_, err := projections.Rebuild(ctxFor(t, 30*time.Second), b.DB, nil)
	g.Release()
	if err != nil {
		t.Errorf("Rebuild of database %s while database %s is being rebuilt: %v", b.DBName, a.DBName, err)
	}
	if err := <-appendDone; err != nil {
		t.Fatal(err)
	}
	if err := <-doneA; err != nil {
		t.Fatalf("Rebuild of %s: %v", a.DBName, err)
	}
}

// TestLongFailureReasonIsProjected: a reservation that fails for several items records a
// reason listing each (ordering.Catalog.Reserve); the append must still succeed and the
// projection must hold the order, or the paid order can never be refunded.
func TestLongFailureReasonIsProjected(t *testing.T) {
	env := testenv.New(t)
	s := newStore(t, env.DB)
	cat, err := ordering.NewCatalog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	var items []domain.Item
	for i := 0; i < 6; i++ {
		sku := fmt.Sprintf("SKU-LIMITED-EDITION-PRINT-%02d", i)
		env.MustExec(t, `INSERT INTO stock (sku, name, price_cents, available) VALUES (?, ?, 1000, 0)`, sku, "Print")
		items = append(items, domain.Item{SKU: sku, Quantity: 1, UnitPriceCents: 1000})
	}
	id := create(t, s, placement("Collector", items...))
	step(t, s, id, pay)
	recs, err := s.UpdateTx(context.Background(), id, eventstore.Metadata{}, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		out, err := cat.Reserve(ctx, tx, o.Items())
		if err != nil {
			return nil, err
		}
		return o.Reserve(out)
	})
	if err != nil {
		t.Fatalf("appending the failed reservation of %d out-of-stock items: %v", len(items), err)
	}
	reason := recs[0].Event.(domain.InventoryReservationFailed).Reason
	rd, _ := orders.NewReader(env.DB)
	row, err := rd.Order(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if row.InventoryStatus != domain.StatusFailed || !strings.HasPrefix(reason, row.FailureReason) || row.FailureReason == "" {
		t.Errorf("row: inventory %q, reason %q; want failed and (a prefix of) %q", row.InventoryStatus, row.FailureReason, reason)
	}
	live := tableRows(t, env, projections.OrdersTable)
	mustRebuild(t, env)
	compareRows(t, "rebuilt", tableRows(t, env, projections.OrdersTable), live)
}

// TestEmailFailedIsProjected: an order whose notification the mail server refused keeps its
// outcome, says why in failure_reason, is not marked emailed, and a rebuild (the bulk fold
// with its own decoder) writes exactly the row each append wrote.
func TestEmailFailedIsProjected(t *testing.T) {
	env := testenv.New(t)
	s := newStore(t, env.DB)
	mug := domain.Item{SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}
	reply := "RCPT TO: 550 5.1.0 Requested action not taken: mailbox unavailable"
	tests := []struct {
		steps                      []eventstore.Decide
		status, payment, inventory string
		reason                     string
	}{
		{[]eventstore.Decide{pay, reserve, bounce}, domain.StatusCompleted, domain.StatusCompleted, domain.StatusCompleted,
			"email not delivered: " + reply},
		{[]eventstore.Decide{decline, bounce}, domain.StatusPaymentFailed, domain.StatusFailed, domain.StatusPending,
			"card declined; email not delivered: " + reply},
		{[]eventstore.Decide{pay, short, refund, bounce}, domain.StatusCancelled, domain.StatusRefunded, domain.StatusFailed,
			"out of stock: SKU-MUG; email not delivered: " + reply},
	}
	rd, _ := orders.NewReader(env.DB)
	for i, tc := range tests {
		id := create(t, s, placement(fmt.Sprintf("Bounced %d", i), mug))
		for _, d := range tc.steps {
			step(t, s, id, d)
		}
		row, err := rd.Order(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if row.OrderStatus != tc.status || row.PaymentStatus != tc.payment || row.InventoryStatus != tc.inventory ||
			row.EmailSent || !row.EmailFailed || row.FailureReason != tc.reason {
			t.Errorf("order %d: status %s/%s/%s, email sent %v, failed %v, reason %q; want %s/%s/%s, not sent, failed, %q",
				id, row.OrderStatus, row.PaymentStatus, row.InventoryStatus, row.EmailSent, row.EmailFailed, row.FailureReason,
				tc.status, tc.payment, tc.inventory, tc.reason)
		}
		if n := env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id = ? AND email_failed = 1 AND email_sent = 0`, id); n != 1 {
			t.Errorf("order %d: the email_failed column does not say so", id)
		}
	}
	checkTableIsFold(t, env, s)
	live := tableRows(t, env, projections.OrdersTable)
	mustRebuild(t, env)
	compareRows(t, "rebuilt", tableRows(t, env, projections.OrdersTable), live)
	env.MustExec(t, `DELETE FROM orders`)
	mustRebuild(t, env)
	compareRows(t, "rebuilt from nothing", tableRows(t, env, projections.OrdersTable), live)
}
