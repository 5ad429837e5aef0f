package eventstore_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
)

// commits records what every commit appended.
type commits struct {
	mu  sync.Mutex
	all [][]eventstore.Record
}

func (c *commits) add(appended []eventstore.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, slices.Clone(appended))
}

// together reports whether one commit appended to all of ids.
func (c *commits) together(ids ...domain.OrderID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, recs := range c.all {
		streams := map[domain.OrderID]bool{}
		for _, r := range recs {
			streams[r.StreamID] = true
		}
		if !slices.ContainsFunc(ids, func(id domain.OrderID) bool { return !streams[id] }) {
			return true
		}
	}
	return false
}

// groupRig is a store with one worker per lane, both of which the test can hold, so that the
// requests made meanwhile queue up and run as one group per lane when it lets go.
type groupRig struct {
	env     *testenv.Env
	store   *eventstore.Store
	commits *commits
	hook    *recordingHook
	gate    *testenv.Gate
}

func newGroupRig(t *testing.T, hooks ...eventstore.Hook) *groupRig {
	env := testenv.New(t)
	hook, gate := &recordingHook{}, testenv.NewGate()
	s, err := eventstore.New(env.DB, append([]eventstore.Hook{hook, gate}, hooks...)...)
	if err != nil {
		t.Fatal(err)
	}
	hook.f = &fixture{DB: env.DB, Events: countEvents}
	s.SetWorkers(1)
	c := &commits{}
	s.OnCommit(c.add)
	return &groupRig{env: env, store: s, commits: c, hook: hook, gate: gate}
}

// holdWorkers makes both lanes' only workers busy: a creation held uncommitted by the gate,
// and an Update of id whose decide blocks. It returns once both are held; release lets both
// go, and done yields their errors (the creation's first).
func (g *groupRig) holdWorkers(t *testing.T, id domain.OrderID) (release func(), done <-chan error) {
	t.Helper()
	errc := make(chan error, 2)
	_, created := g.gate.Hold(t, func() error {
		_, err := g.store.Create(ctxFor(t), eventstore.CreateRequest{}, placeWith(placed))
		return err
	})
	entered, unblock := make(chan struct{}), make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		_, err := g.store.Update(ctxFor(t), id, eventstore.Metadata{}, func(*domain.Order) ([]domain.Event, error) {
			close(entered)
			<-unblock
			return nil, nil
		})
		updated <- err
	}()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the holding update never decided")
	}
	go func() { errc <- <-created; errc <- <-updated }()
	return func() { close(unblock); g.gate.Release() }, errc
}

// waitQueued waits until n requests wait for the held workers.
func (g *groupRig) waitQueued(t *testing.T, n int) {
	t.Helper()
	waitPending(t, g.store, n)
}

// waitPending waits until n requests wait for s's workers.
func waitPending(t *testing.T, s *eventstore.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.Pending() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued after 20 s, want %d", s.Pending(), n)
		}
		time.Sleep(time.Millisecond) // polling a counter, not waiting for an outcome
	}
}

// TestGroupCommit: requests made while the workers are busy run as one group per lane, and
// each one's outcome is its own — new ids and positions right, a duplicate decided once, a
// missing order not found, a refused decide's writes undone and only those.
func TestGroupCommit(t *testing.T) {
	g := newGroupRig(t)
	ctx := ctxFor(t)
	g.env.MustExec(t, `INSERT INTO stock (sku, name, price_cents, available) VALUES ('SKU-GROUP', 'Group test', 100, 10)`)
	var orders []domain.OrderID
	for range 4 {
		orders = append(orders, mustCreate(t, g.store, eventstore.Metadata{}))
	}
	holder, paying, refusing, reserving := orders[0], orders[1], orders[2], orders[3]
	release, held := g.holdWorkers(t, holder)

	take := func(tx eventstore.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE stock SET available = available - 1 WHERE sku = 'SKU-GROUP'`)
		return err
	}
	pay := func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay"})
	}
	type result struct {
		name string
		recs []eventstore.Record
		id   domain.OrderID
		err  error
	}
	requests := []struct {
		name string
		run  func() result
	}{
		{"pay", func() result {
			r, err := g.store.Update(ctx, paying, eventstore.Metadata{CausationID: "first"}, pay)
			return result{recs: r, err: err}
		}},
		{"pay again", func() result {
			r, err := g.store.Update(ctx, paying, eventstore.Metadata{CausationID: "second"}, pay)
			return result{recs: r, err: err}
		}},
		{"refuse after a write", func() result {
			r, err := g.store.UpdateTx(ctx, refusing, eventstore.Metadata{}, func(_ context.Context, tx eventstore.Tx, _ *domain.Order) ([]domain.Event, error) {
				if err := take(tx); err != nil {
					return nil, err
				}
				return nil, domain.Invalid("test", "refused after writing")
			})
			return result{recs: r, err: err}
		}},
		{"write and append", func() result {
			r, err := g.store.UpdateTx(ctx, reserving, eventstore.Metadata{}, func(_ context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
				if err := take(tx); err != nil {
					return nil, err
				}
				return []domain.Event{paid}, nil
			})
			return result{recs: r, err: err}
		}},
		{"missing order", func() result {
			r, err := g.store.Update(ctx, 987654, eventstore.Metadata{}, pay)
			return result{recs: r, err: err}
		}},
		{"create 1", func() result {
			id, err := g.store.Create(ctx, eventstore.CreateRequest{}, placeWith(placed))
			return result{id: id, err: err}
		}},
		{"create 2", func() result {
			id, err := g.store.Create(ctx, eventstore.CreateRequest{IdempotencyKey: "k2", RequestHash: "h"}, placeWith(placed))
			return result{id: id, err: err}
		}},
		{"create 3", func() result {
			id, err := g.store.Create(ctx, eventstore.CreateRequest{}, placeWith(placed))
			return result{id: id, err: err}
		}},
	}
	results := make(chan result, len(requests))
	for i, r := range requests {
		go func() {
			res := r.run()
			res.name = r.name
			results <- res
		}()
		g.waitQueued(t, i+1) // queued in this order, so "pay" decides before "pay again"
	}
	release()
	for range 2 {
		if err := <-held; err != nil {
			t.Fatalf("holding request: %v", err)
		}
	}
	got := map[string]result{}
	for range requests {
		r := <-results
		got[r.name] = r
	}

	if !g.commits.together(paying, reserving) {
		t.Errorf("the two appending updates were not committed together")
	}
	if !g.commits.together(got["create 1"].id, got["create 2"].id, got["create 3"].id) {
		t.Errorf("the three creations were not committed together")
	}
	if r := got["pay"]; r.err != nil || len(r.recs) != 1 || r.recs[0].Version != 2 || r.recs[0].Type != domain.TypePaymentCompleted {
		t.Errorf("pay: %+v, %v; want PaymentCompleted at version 2", r.recs, r.err)
	}
	if r := got["pay again"]; !errors.Is(r.err, domain.ErrStepNotDue) || len(r.recs) != 0 {
		t.Errorf("pay again: %+v, %v; want ErrStepNotDue (it decided after pay, in the same group)", r.recs, r.err)
	}
	if r := got["refuse after a write"]; domain.ErrorKind(r.err) != domain.KindInvalid || len(r.recs) != 0 {
		t.Errorf("refuse: %+v, %v; want its own invalid error", r.recs, r.err)
	}
	if r := got["write and append"]; r.err != nil || len(r.recs) != 1 || r.recs[0].Version != 2 {
		t.Errorf("write and append: %+v, %v; want one event at version 2", r.recs, r.err)
	}
	if r := got["missing order"]; domain.ErrorKind(r.err) != domain.KindNotFound {
		t.Errorf("missing order: %v, want not found", r.err)
	}
	// Only the appending decide's write stayed: the refused one was rolled back to its savepoint.
	if n := g.env.Count(t, `SELECT available FROM stock WHERE sku = 'SKU-GROUP'`); n != 9 {
		t.Errorf("stock: %d available, want 9 (one write kept, one undone)", n)
	}

	// Every record handed back is what the log holds, position included.
	ids := map[domain.OrderID]bool{}
	for _, name := range []string{"create 1", "create 2", "create 3"} {
		r := got[name]
		if r.err != nil || r.id <= orders[3] || ids[r.id] {
			t.Fatalf("%s: id %d, %v; want a new id above %d, distinct", name, r.id, r.err, orders[3])
		}
		ids[r.id] = true
		recs, o := mustLoad(t, g.store, r.id)
		if len(recs) != 1 || o.CustomerName() != placed.CustomerName {
			t.Errorf("%s: stream %v", name, types(recs))
		}
	}
	if n := g.env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE idempotency_key = 'k2' AND order_id = ?`, got["create 2"].id); n != 1 {
		t.Errorf("create 2's idempotency key is not on its own id %d", got["create 2"].id)
	}
	for _, name := range []string{"pay", "write and append"} {
		for _, rec := range got[name].recs {
			recs, _ := mustLoad(t, g.store, rec.StreamID)
			stored := recs[rec.Version-1]
			if stored.Position != rec.Position || stored.Type != rec.Type || !stored.OccurredAt.Equal(rec.OccurredAt) {
				t.Errorf("%s: handed back %s at position %d, the log has %s at %d", name, rec.Type, rec.Position, stored.Type, stored.Position)
			}
		}
	}
	if recs, _ := mustLoad(t, g.store, paying); len(recs) != 2 || recs[1].Metadata.CausationID != "first" {
		t.Errorf("paid order's stream: %v", types(recs))
	}
	// The hook saw each changed stream once per commit, with its whole history.
	for _, c := range g.hook.Calls() {
		if c.seenInTx != len(c.history) || c.seenOutside != len(c.history)-len(c.appended) {
			t.Errorf("hook for order %d: saw %d in the tx and %d outside, history %d, appended %d",
				c.appended[0].StreamID, c.seenInTx, c.seenOutside, len(c.history), len(c.appended))
		}
	}
}

// TestGroupSavepointOnFirstStatement: in a group, a decide that may write takes its savepoint
// with its first statement, so one that runs none (an order with nothing to reserve) costs no
// SAVEPOINT; the store runs on one connection, whose session counter then counts this
// group's savepoints alone.
func TestGroupSavepointOnFirstStatement(t *testing.T) {
	env := testenv.New(t)
	db, err := sql.Open("mysql", env.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	s, err := eventstore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	s.SetWorkers(1)
	c := &commits{}
	s.OnCommit(c.add)
	ctx := ctxFor(t)
	env.MustExec(t, `INSERT INTO stock (sku, name, price_cents, available) VALUES ('SKU-SP', 'Savepoint test', 100, 10)`)
	var orders []domain.OrderID
	for range 4 {
		orders = append(orders, mustCreate(t, s, eventstore.Metadata{}))
	}
	holder, writing, refusing, quiet := orders[0], orders[1], orders[2], orders[3]
	savepoints := func() int {
		t.Helper()
		var name string
		var n int
		if err := db.QueryRowContext(ctx, `SHOW SESSION STATUS LIKE 'Com_savepoint'`).Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := savepoints()

	// The only worker is held by a decide that blocks, so the three updates queue behind it
	// and run as one group.
	entered, unblock, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := s.Update(ctx, holder, eventstore.Metadata{}, func(*domain.Order) ([]domain.Event, error) {
			close(entered)
			<-unblock
			return nil, nil
		})
		held <- err
	}()
	<-entered
	decides := map[domain.OrderID]eventstore.DecideTx{
		writing: func(ctx context.Context, tx eventstore.Tx, _ *domain.Order) ([]domain.Event, error) {
			if _, err := tx.ExecContext(ctx, `UPDATE stock SET available = available - 1 WHERE sku = 'SKU-SP'`); err != nil {
				return nil, err
			}
			return []domain.Event{paid}, nil
		},
		refusing: func(context.Context, eventstore.Tx, *domain.Order) ([]domain.Event, error) {
			return nil, domain.Invalid("test", "refused before writing")
		},
		quiet: func(context.Context, eventstore.Tx, *domain.Order) ([]domain.Event, error) {
			return []domain.Event{paid}, nil
		},
	}
	errs := map[domain.OrderID]chan error{}
	for i, id := range []domain.OrderID{writing, refusing, quiet} {
		errs[id] = make(chan error, 1)
		go func() {
			_, err := s.UpdateTx(ctx, id, eventstore.Metadata{}, decides[id])
			errs[id] <- err
		}()
		waitPending(t, s, i+1)
	}
	close(unblock)
	if err := <-held; err != nil {
		t.Fatalf("holding update: %v", err)
	}
	if err := <-errs[writing]; err != nil {
		t.Errorf("writing update: %v", err)
	}
	if err := <-errs[quiet]; err != nil {
		t.Errorf("update without statements: %v", err)
	}
	if err := <-errs[refusing]; domain.ErrorKind(err) != domain.KindInvalid {
		t.Errorf("refusing update: %v, want its own invalid error", err)
	}
	if !c.together(writing, quiet) {
		t.Errorf("the two appending updates were not committed together")
	}
	if n := savepoints() - before; n != 1 {
		t.Errorf("the group took %d savepoints, want 1 (only the decide that ran a statement)", n)
	}
	if n := env.Count(t, `SELECT available FROM stock WHERE sku = 'SKU-SP'`); n != 9 {
		t.Errorf("stock: %d available, want 9", n)
	}
	for _, id := range []domain.OrderID{writing, quiet} {
		if recs, _ := mustLoad(t, s, id); len(recs) != 2 || recs[1].Type != domain.TypePaymentCompleted {
			t.Errorf("order %d: stream %v, want PaymentCompleted appended", id, types(recs))
		}
	}
}

// TestFailedGroupRunsEachRequestAlone: a hook refusing one order's append fails its group;
// the others are appended anyway, each in a transaction of its own.
func TestFailedGroupRunsEachRequestAlone(t *testing.T) {
	poisoned := domain.OrderPlaced{CustomerName: "refused by the hook"}
	g := newGroupRig(t, failingHook{match: func(appended []eventstore.Record) bool {
		o, ok := appended[0].Event.(domain.OrderPlaced)
		return ok && o.CustomerName == poisoned.CustomerName
	}})
	ctx := ctxFor(t)
	holder := mustCreate(t, g.store, eventstore.Metadata{})
	release, held := g.holdWorkers(t, holder)
	type result struct {
		id  domain.OrderID
		err error
	}
	results := make([]chan result, 4)
	for i := range results {
		results[i] = make(chan result, 1)
		e := domain.Event(placed)
		if i == 2 {
			e = poisoned
		}
		go func() {
			id, err := g.store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{e})
			results[i] <- result{id, err}
		}()
		g.waitQueued(t, i+1)
	}
	release()
	for range 2 {
		if err := <-held; err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range results {
		r := <-c
		if i == 2 {
			if !errors.Is(r.err, errHook) {
				t.Errorf("refused create: id %d, %v; want the hook's error", r.id, r.err)
			}
			continue
		}
		if r.err != nil {
			t.Errorf("create %d: %v", i, r.err)
			continue
		}
		if recs, _ := mustLoad(t, g.store, r.id); len(recs) != 1 {
			t.Errorf("create %d: order %d has %v", i, r.id, types(recs))
		}
	}
	if n := g.env.Count(t, `SELECT COUNT(*) FROM events`); n != 5 {
		t.Errorf("the log holds %d events, want 5 (the holder's, the held creation's and three more)", n)
	}
	if n := g.env.Count(t, `SELECT COUNT(*) FROM order_ids`); n != 5 {
		t.Errorf("%d order ids allocated, want 5: the refused creation's was rolled back", n)
	}
}
