package eventstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
)

// Store is the event store's contract: what the suite below exercises. Every implementation
// must pass the whole suite (STYLE.md #7). Hooks receive a *sql.Tx, so every implementation
// keeps its log in a SQL database.
type Store interface {
	Create(ctx context.Context, req eventstore.CreateRequest, events []domain.Event) (domain.OrderID, error)
	Update(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.Decide) ([]eventstore.Record, error)
	UpdateTx(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.DecideTx) ([]eventstore.Record, error)
	Load(ctx context.Context, id domain.OrderID) ([]eventstore.Record, *domain.Order, error)
}

var _ Store = (*eventstore.Store)(nil)

// fixture is a fresh, empty store of one implementation, with what the suite needs to look
// underneath it.
type fixture struct {
	Store Store
	DB    *sql.DB // the database the store writes to; hooks get transactions on it
	// Events counts the stored events of stream id, read through q (the pool or a hook's tx).
	Events func(ctx context.Context, q eventstore.Queryer, id domain.OrderID) (int, error)
	// AllEvents and AllocatedIDs count every stored event and every allocated order id.
	AllEvents    func(t *testing.T) int
	AllocatedIDs func(t *testing.T) int
	// InsertRaw writes a stored event as an older release (or a corrupted log) left it.
	InsertRaw func(t *testing.T, id domain.OrderID, version int, typ string, schemaVersion int, payload string)
	// UpdateWaitsForOrder reports whether an Update of id is waiting for another Update of
	// the same order to finish (implementations that serialise Update per order); always
	// false for one that does not.
	UpdateWaitsForOrder func(t *testing.T, id domain.OrderID) bool
}

// implementation is an event store under test: open returns a fresh, empty instance.
type implementation struct {
	name string
	open func(t *testing.T, hooks ...eventstore.Hook) *fixture
}

// implementations lists every event store; a new one is added here and must pass the suite.
var implementations = []implementation{
	{name: "mysql", open: openMySQL},
}

func openMySQL(t *testing.T, hooks ...eventstore.Hook) *fixture {
	t.Helper()
	env := testenv.New(t)
	s, err := eventstore.New(env.DB, hooks...)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		Store:        s,
		DB:           env.DB,
		Events:       countEvents,
		AllEvents:    func(t *testing.T) int { return env.Count(t, `SELECT COUNT(*) FROM events`) },
		AllocatedIDs: func(t *testing.T) int { return env.Count(t, `SELECT COUNT(*) FROM order_ids`) },
		InsertRaw: func(t *testing.T, id domain.OrderID, version int, typ string, schemaVersion int, payload string) {
			// As an older release (or another writer) would have: a new stream's id row, then the event.
			if version == 1 {
				env.MustExec(t, `INSERT INTO order_ids (order_id, created_at) VALUES (?, UTC_TIMESTAMP(6))`, id)
			}
			env.MustExec(t, `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
				VALUES (?, ?, ?, ?, ?, '{}', UTC_TIMESTAMP(6))`, id, version, typ, schemaVersion, payload)
		},
		UpdateWaitsForOrder: func(t *testing.T, id domain.OrderID) bool {
			// Updates of one order in one group wait for each other in the store; in
			// different groups, for the order's row in order_ids: a waiter shows in the
			// process list with that statement (parameters are interpolated client-side).
			return s.UpdateQueuedBehind(id) || env.Count(t, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
				WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND INFO LIKE CONCAT('%FROM order_ids WHERE order_id IN (', ?, ') %FOR UPDATE%')`, id) > 0
		},
	}
}

// countEvents counts the stored events of stream id, read through q.
func countEvents(ctx context.Context, q eventstore.Queryer, id domain.OrderID) (int, error) {
	rows, err := q.QueryContext(ctx, `SELECT COUNT(*) FROM events WHERE stream_id = ?`, id)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int
	for rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

func TestStore(t *testing.T) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) { runStoreSuite(t, impl) })
	}
}

// runStoreSuite is the suite every implementation passes. Each case opens its own store.
func runStoreSuite(t *testing.T, impl implementation) {
	cases := []struct {
		name string
		run  func(t *testing.T, impl implementation)
	}{
		{"CreateAppendsOrderPlacedAndRunsHooksInItsTransaction", testCreate},
		{"FailingHookRollsBackTheWholeAppend", testFailingHook},
		{"UpdateAppendsAtTheNextVersion", testUpdate},
		{"DecideWithNothingToDoWritesNothing", testNothingToDo},
		{"UpdateOfMissingOrderIsNotFound", testUpdateMissing},
		{"ConcurrentUpdatesOnOneVersionAppendOnce", testConcurrentUpdates},
		{"UpdateLosingToAnotherAppendReloadsAndDecidesAgain", testUpdateLosesRace},
		{"UpdateTxWritesRollBackWithAConflictingAppend", testUpdateTxConflict},
		{"IdempotencyKey", testIdempotencyKey},
		{"ConcurrentCreatesWithOneKeyCreateOneOrder", testConcurrentIdempotentCreates},
		{"OldSchemaIsUpcastOnLoad", testUpcast},
		{"UnknownEventTypeInTheLogIsAClearError", testUnknownType},
		{"StoresOverDifferentDatabasesDoNotBlockEachOther", testIndependentStores},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, impl)
		})
	}
}

// ctxFor returns a context that ends with the test, bounded so that a hang fails rather
// than stalls the run.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	mug    = domain.Item{SKU: "SKU-MUG", Quantity: 2, UnitPriceCents: 899}
	placed = domain.OrderPlaced{CustomerName: "Zoë Ünïcode", CustomerEmail: "zoe@example.com",
		Items: []domain.Item{mug}, TotalCents: 1798}
	paid     = domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: 1798}
	reserved = domain.InventoryReserved{Items: []domain.Item{mug}}
)

func placeWith(e domain.Event) []domain.Event { return []domain.Event{e} }

func appendEvents(events ...domain.Event) eventstore.Decide {
	return func(*domain.Order) ([]domain.Event, error) { return events, nil }
}

func mustCreate(t *testing.T, s Store, md eventstore.Metadata) domain.OrderID {
	t.Helper()
	id, err := s.Create(ctxFor(t), eventstore.CreateRequest{Metadata: md}, placeWith(placed))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return id
}

func mustLoad(t *testing.T, s Store, id domain.OrderID) ([]eventstore.Record, *domain.Order) {
	t.Helper()
	recs, o, err := s.Load(ctxFor(t), id)
	if err != nil {
		t.Fatalf("load order %d: %v", id, err)
	}
	return recs, o
}

// types returns the event types of recs, in order.
func types(recs []eventstore.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Type)
	}
	return out
}

// recordingHook records each call and, from inside the append's transaction, how many
// events of the stream the transaction sees and how many the rest of the world sees.
type recordingHook struct {
	f     *fixture
	mu    sync.Mutex
	calls []hookCall
}

type hookCall struct {
	history, appended     []eventstore.Record
	seenInTx, seenOutside int
}

// AfterAppend records one call per stream changed.
func (h *recordingHook) AfterAppend(ctx context.Context, tx *sql.Tx, changes []eventstore.Change) error {
	for _, c := range changes {
		id := c.Appended[0].StreamID
		inTx, err := h.f.Events(ctx, tx, id)
		if err != nil {
			return err
		}
		outside, err := h.f.Events(ctx, h.f.DB, id)
		if err != nil {
			return err
		}
		h.mu.Lock()
		h.calls = append(h.calls, hookCall{history: c.History, appended: c.Appended, seenInTx: inTx, seenOutside: outside})
		h.mu.Unlock()
	}
	return nil
}

func (h *recordingHook) Calls() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.calls...)
}

func testCreate(t *testing.T, impl implementation) {
	hook := &recordingHook{}
	f := impl.open(t, hook)
	hook.f = f
	ctx := ctxFor(t)
	md := eventstore.Metadata{CorrelationID: "corr-1", CausationID: "req-1"}

	id1, err := f.Store.Create(ctx, eventstore.CreateRequest{Metadata: md}, placeWith(placed))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id2, err := f.Store.Create(ctx, eventstore.CreateRequest{}, placeWith(placed))
	if err != nil {
		t.Fatalf("second create: %v", err)
	}
	if id1 <= 0 || id2 <= id1 {
		t.Fatalf("ids: got %d then %d, want positive and increasing", id1, id2)
	}

	recs, o := mustLoad(t, f.Store, id1)
	if len(recs) != 1 {
		t.Fatalf("stream of order %d has %d events, want 1", id1, len(recs))
	}
	r := recs[0]
	if r.StreamID != id1 || r.Version != 1 || r.Type != domain.TypeOrderPlaced || r.Position <= 0 {
		t.Errorf("record: stream %d version %d type %q position %d; want stream %d, version 1, OrderPlaced, position > 0",
			r.StreamID, r.Version, r.Type, r.Position, id1)
	}
	if !reflect.DeepEqual(r.Event, placed) {
		t.Errorf("event: got %#v, want %#v", r.Event, placed)
	}
	if r.Metadata != md {
		t.Errorf("metadata: got %+v, want %+v", r.Metadata, md)
	}
	if r.OccurredAt.IsZero() || time.Since(r.OccurredAt) > time.Minute || time.Since(r.OccurredAt) < -time.Minute {
		t.Errorf("occurred at %v, want about now", r.OccurredAt)
	}
	if o.ID() != id1 || o.Version() != 1 || o.CustomerName() != placed.CustomerName || o.Status() != domain.StatusPending {
		t.Errorf("folded order: id %d version %d name %q status %q", o.ID(), o.Version(), o.CustomerName(), o.Status())
	}

	calls := hook.Calls()
	if len(calls) != 2 {
		t.Fatalf("hook ran %d times for 2 creates", len(calls))
	}
	c := calls[0]
	if len(c.appended) != 1 || len(c.history) != 1 || c.appended[0].StreamID != id1 || c.appended[0].Version != 1 ||
		c.appended[0].Position != r.Position || !reflect.DeepEqual(c.appended[0].Event, placed) {
		t.Errorf("hook got history %+v, appended %+v; want the one new record of order %d", c.history, c.appended, id1)
	}
	// The hook saw the event inside the append's transaction, and nobody else saw it yet:
	// the hook ran in the same, still uncommitted, transaction.
	if c.seenInTx != 1 || c.seenOutside != 0 {
		t.Errorf("inside the hook the stream had %d events in the append's tx and %d outside it; want 1 and 0", c.seenInTx, c.seenOutside)
	}
}

// failingHook fails every append (or only those whose appended records match).
type failingHook struct {
	match func([]eventstore.Record) bool
}

var errHook = errors.New("hook refused the append")

func (h failingHook) AfterAppend(_ context.Context, _ *sql.Tx, changes []eventstore.Change) error {
	for _, c := range changes {
		if h.match == nil || h.match(c.Appended) {
			return errHook
		}
	}
	return nil
}

func testFailingHook(t *testing.T, impl implementation) {
	// Creates fail; appends of PaymentCompleted fail; anything else passes.
	var failCreates = true
	var mu sync.Mutex
	f := impl.open(t, failingHook{match: func(appended []eventstore.Record) bool {
		mu.Lock()
		defer mu.Unlock()
		return (appended[0].Version == 1 && failCreates) || appended[0].Type == domain.TypePaymentCompleted
	}})
	ctx := ctxFor(t)
	req := eventstore.CreateRequest{IdempotencyKey: "key-1", RequestHash: "hash-1"}

	id, err := f.Store.Create(ctx, req, placeWith(placed))
	if !errors.Is(err, errHook) {
		t.Fatalf("create with a failing hook: got id %d, err %v; want the hook's error", id, err)
	}
	if n := f.AllEvents(t); n != 0 {
		t.Errorf("%d events stored after a failed create, want 0", n)
	}
	if n := f.AllocatedIDs(t); n != 0 {
		t.Errorf("%d order ids allocated after a failed create, want 0", n)
	}

	// A failed create does not use up its idempotency key: the retry creates the order.
	mu.Lock()
	failCreates = false
	mu.Unlock()
	id, err = f.Store.Create(ctx, req, placeWith(placed))
	if err != nil {
		t.Fatalf("retry of the failed create: %v", err)
	}

	// Update and UpdateTx roll back too, UpdateTx's own writes included.
	if _, err := f.Store.Update(ctx, id, eventstore.Metadata{}, appendEvents(paid)); !errors.Is(err, errHook) {
		t.Errorf("update with a failing hook: %v, want the hook's error", err)
	}
	_, err = f.Store.UpdateTx(ctx, id, eventstore.Metadata{}, func(ctx context.Context, tx eventstore.Tx, _ *domain.Order) ([]domain.Event, error) {
		if _, err := tx.ExecContext(ctx, `UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-MUG'`); err != nil {
			return nil, err
		}
		return []domain.Event{paid}, nil
	})
	if !errors.Is(err, errHook) {
		t.Errorf("UpdateTx with a failing hook: %v, want the hook's error", err)
	}
	if recs, _ := mustLoad(t, f.Store, id); len(recs) != 1 {
		t.Errorf("order %d has events %v after failed updates, want only OrderPlaced", id, types(recs))
	}
	var reservedMugs int
	if err := f.DB.QueryRow(`SELECT reserved FROM stock WHERE sku = 'SKU-MUG'`).Scan(&reservedMugs); err != nil {
		t.Fatal(err)
	}
	if reservedMugs != 0 {
		t.Errorf("UpdateTx's stock write survived the failed append: reserved = %d", reservedMugs)
	}
}

func testUpdate(t *testing.T, impl implementation) {
	hook := &recordingHook{}
	f := impl.open(t, hook)
	hook.f = f
	ctx := ctxFor(t)
	id := mustCreate(t, f.Store, eventstore.Metadata{CorrelationID: "corr-1", CausationID: "req-1"})
	other := mustCreate(t, f.Store, eventstore.Metadata{})

	md2 := eventstore.Metadata{CorrelationID: "corr-1", CausationID: eventstore.EventID(id, 1)}
	var sawVersion int
	got, err := f.Store.Update(ctx, id, md2, func(o *domain.Order) ([]domain.Event, error) {
		sawVersion = o.Version()
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay-1"})
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if sawVersion != 1 {
		t.Errorf("decide saw version %d, want 1", sawVersion)
	}
	if len(got) != 1 || got[0].Version != 2 || got[0].Type != domain.TypePaymentCompleted || got[0].StreamID != id {
		t.Fatalf("update returned %+v, want PaymentCompleted at version 2 of order %d", got, id)
	}
	// Another order appended in between must not disturb this stream's versions.
	if _, err := f.Store.Update(ctx, other, eventstore.Metadata{}, appendEvents(paid)); err != nil {
		t.Fatal(err)
	}
	// Two events in one append get consecutive versions.
	md3 := eventstore.Metadata{CorrelationID: "corr-1", CausationID: eventstore.EventID(id, 2)}
	email := domain.EmailSent{To: "zoe@example.com", MessageID: "<m-1@x>", Template: domain.TemplateConfirmation}
	got, err = f.Store.UpdateTx(ctx, id, md3, func(_ context.Context, _ eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		return []domain.Event{reserved, email}, nil
	})
	if err != nil {
		t.Fatalf("UpdateTx: %v", err)
	}
	if len(got) != 2 || got[0].Version != 3 || got[1].Version != 4 || got[1].Position <= got[0].Position {
		t.Fatalf("UpdateTx returned %+v, want versions 3 and 4 with increasing positions", got)
	}

	recs, o := mustLoad(t, f.Store, id)
	want := []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeEmailSent}
	if !reflect.DeepEqual(types(recs), want) {
		t.Fatalf("loaded %v, want %v", types(recs), want)
	}
	wantMeta := []eventstore.Metadata{{CorrelationID: "corr-1", CausationID: "req-1"}, md2, md3, md3}
	wantEvents := []domain.Event{placed, domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: placed.TotalCents}, reserved, email}
	for i, r := range recs {
		if r.Version != i+1 {
			t.Errorf("record %d has version %d", i, r.Version)
		}
		if i > 0 && r.Position <= recs[i-1].Position {
			t.Errorf("positions not increasing: %d after %d", r.Position, recs[i-1].Position)
		}
		if r.Metadata != wantMeta[i] {
			t.Errorf("version %d metadata: got %+v, want %+v", r.Version, r.Metadata, wantMeta[i])
		}
		if !reflect.DeepEqual(r.Event, wantEvents[i]) {
			t.Errorf("version %d event: got %#v, want %#v", r.Version, r.Event, wantEvents[i])
		}
	}
	if recs[2].Position != got[0].Position || recs[3].Position != got[1].Position {
		t.Errorf("positions returned by UpdateTx (%d, %d) differ from the stored ones (%d, %d)",
			got[0].Position, got[1].Position, recs[2].Position, recs[3].Position)
	}
	if o.Version() != 4 || o.Status() != domain.StatusCompleted || o.NextStep() != domain.StepNone {
		t.Errorf("folded order: version %d, status %q, next step %q; want 4, completed, none", o.Version(), o.Status(), o.NextStep())
	}
	// The hook's history is the whole stream after the append.
	calls := hook.Calls()
	last := calls[len(calls)-1]
	if len(last.history) != 4 || len(last.appended) != 2 || last.history[3].Position != recs[3].Position {
		t.Errorf("last hook call: history of %d, appended %d; want 4 and 2", len(last.history), len(last.appended))
	}
}

func testNothingToDo(t *testing.T, impl implementation) {
	hook := &recordingHook{}
	f := impl.open(t, hook)
	hook.f = f
	ctx := ctxFor(t)
	id := mustCreate(t, f.Store, eventstore.Metadata{})
	hooksBefore := len(hook.Calls())

	if recs, err := f.Store.Update(ctx, id, eventstore.Metadata{}, appendEvents()); err != nil || len(recs) != 0 {
		t.Errorf("update deciding nothing: %v, %v; want no records and no error", recs, err)
	}
	if recs, err := f.Store.Update(ctx, id, eventstore.Metadata{}, func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmail("x@example.com", "m") // not due: the order is not paid
	}); !errors.Is(err, domain.ErrStepNotDue) || len(recs) != 0 {
		t.Errorf("update deciding ErrStepNotDue: %v, %v; want ErrStepNotDue and no records", recs, err)
	}
	if recs, err := f.Store.UpdateTx(ctx, id, eventstore.Metadata{}, func(context.Context, eventstore.Tx, *domain.Order) ([]domain.Event, error) {
		return nil, nil
	}); err != nil || len(recs) != 0 {
		t.Errorf("UpdateTx deciding nothing: %v, %v", recs, err)
	}
	if _, err := f.Store.UpdateTx(ctx, id, eventstore.Metadata{}, func(context.Context, eventstore.Tx, *domain.Order) ([]domain.Event, error) {
		return nil, domain.ErrStepNotDue
	}); !errors.Is(err, domain.ErrStepNotDue) {
		t.Errorf("UpdateTx deciding ErrStepNotDue: %v", err)
	}
	if recs, _ := mustLoad(t, f.Store, id); len(recs) != 1 {
		t.Errorf("stream has %v, want only OrderPlaced", types(recs))
	}
	if n := f.AllEvents(t); n != 1 {
		t.Errorf("log has %d events, want 1", n)
	}
	if n := len(hook.Calls()) - hooksBefore; n != 0 {
		t.Errorf("hooks ran %d times for appends of nothing", n)
	}
}

func testUpdateMissing(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	called := false
	decide := func(*domain.Order) ([]domain.Event, error) { called = true; return []domain.Event{paid}, nil }
	_, err := f.Store.Update(ctx, 4242, eventstore.Metadata{}, decide)
	if domain.ErrorKind(err) != domain.KindNotFound {
		t.Errorf("update of a missing order: %v (kind %d), want KindNotFound", err, domain.ErrorKind(err))
	}
	_, err = f.Store.UpdateTx(ctx, 4242, eventstore.Metadata{}, func(context.Context, eventstore.Tx, *domain.Order) ([]domain.Event, error) {
		return decide(nil)
	})
	if domain.ErrorKind(err) != domain.KindNotFound {
		t.Errorf("UpdateTx of a missing order: %v, want KindNotFound", err)
	}
	if called {
		t.Error("decide was called for an order that does not exist")
	}
	if n := f.AllEvents(t); n != 0 {
		t.Errorf("%d events written for a missing order", n)
	}
}

// raceDecider is the decide function of one of two racing Updates: it records the version
// it saw on each call and, on its first call, says so and waits until released.
type raceDecider struct {
	name    string
	entered chan struct{}
	release <-chan struct{}
	decide  func(name string, o *domain.Order) ([]domain.Event, error)
	mu      sync.Mutex
	seen    []int
}

func (d *raceDecider) Decide(o *domain.Order) ([]domain.Event, error) {
	d.mu.Lock()
	d.seen = append(d.seen, o.Version())
	first := len(d.seen) == 1
	d.mu.Unlock()
	if first {
		close(d.entered)
		<-d.release
	}
	return d.decide(d.name, o)
}

func (d *raceDecider) Seen() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.seen...)
}

func testConcurrentUpdates(t *testing.T, impl implementation) {
	cases := []struct {
		name   string
		decide func(name string, o *domain.Order) ([]domain.Event, error)
		// loserAppends says whether the loser, deciding again on version 2, appends at 3.
		loserAppends bool
	}{
		{"loser finds the step taken", func(_ string, o *domain.Order) ([]domain.Event, error) {
			return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay"})
		}, false},
		{"loser appends at the next version", func(name string, o *domain.Order) ([]domain.Event, error) {
			return []domain.Event{domain.PaymentFailed{Reason: fmt.Sprintf("%s decided on version %d", name, o.Version())}}, nil
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := impl.open(t)
			ctx := ctxFor(t)
			id := mustCreate(t, f.Store, eventstore.Metadata{})
			release := make(chan struct{})
			deciders := []*raceDecider{
				{name: "A", entered: make(chan struct{}), release: release, decide: c.decide},
				{name: "B", entered: make(chan struct{}), release: release, decide: c.decide},
			}
			type result struct {
				recs []eventstore.Record
				err  error
			}
			results := make([]chan result, 2)
			for i, d := range deciders {
				results[i] = make(chan result, 1)
				go func() {
					recs, err := f.Store.Update(ctx, id, eventstore.Metadata{CausationID: d.name}, d.Decide)
					results[i] <- result{recs, err}
				}()
			}
			// Release both once both have loaded version 1 and are deciding on it. An
			// implementation that serialises Update per order lets only one decide; the
			// other is then seen waiting for it, which also rules out a lost update.
			serialised := false
			entered := 0
			deadline := time.Now().Add(20 * time.Second)
			for a, b := deciders[0].entered, deciders[1].entered; entered < 2 && !serialised; {
				select {
				case <-a:
					entered, a = entered+1, nil
				case <-b:
					entered, b = entered+1, nil
				case <-time.After(10 * time.Millisecond):
					serialised = entered == 1 && f.UpdateWaitsForOrder(t, id)
				}
				if time.Now().After(deadline) {
					close(release)
					t.Fatalf("after 20 s, %d of 2 Updates were deciding and none waited for the other", entered)
				}
			}
			close(release)
			var res [2]result
			for i := range results {
				select {
				case res[i] = <-results[i]:
				case <-ctx.Done():
					t.Fatalf("update %s did not return", deciders[i].name)
				}
			}

			winner, loser := 0, 1
			if len(res[1].recs) > 0 && res[1].recs[0].Version == 2 {
				winner, loser = 1, 0
			}
			w, l := res[winner], res[loser]
			if w.err != nil || len(w.recs) != 1 || w.recs[0].Version != 2 {
				t.Fatalf("winner %s: %+v, %v; want one event at version 2", deciders[winner].name, w.recs, w.err)
			}
			wantSeen := []int{1, 2} // lost the race at version 2, reloaded, decided again
			if serialised {
				wantSeen = []int{2} // waited for the winner, then decided once on its result
			}
			if got := deciders[loser].Seen(); !reflect.DeepEqual(got, wantSeen) {
				t.Errorf("loser %s decided on versions %v, want %v", deciders[loser].name, got, wantSeen)
			}
			if got := deciders[winner].Seen(); !reflect.DeepEqual(got, []int{1}) {
				t.Errorf("winner %s decided on versions %v, want [1]", deciders[winner].name, got)
			}
			recs, _ := mustLoad(t, f.Store, id)
			if c.loserAppends {
				if l.err != nil || len(l.recs) != 1 || l.recs[0].Version != 3 {
					t.Fatalf("loser: %+v, %v; want its own event at version 3", l.recs, l.err)
				}
				want := fmt.Sprintf("%s decided on version 2", deciders[loser].name)
				if len(recs) != 3 || recs[2].Event != (domain.PaymentFailed{Reason: want}) || recs[2].Metadata.CausationID != deciders[loser].name {
					t.Errorf("stream: %+v; want version 3 = PaymentFailed %q by the loser", recs, want)
				}
			} else {
				if !errors.Is(l.err, domain.ErrStepNotDue) || len(l.recs) != 0 {
					t.Errorf("loser: %+v, %v; want ErrStepNotDue", l.recs, l.err)
				}
				if len(recs) != 2 {
					t.Errorf("stream has %v, want OrderPlaced and one PaymentCompleted", types(recs))
				}
			}
			if recs[1].Metadata.CausationID != deciders[winner].name {
				t.Errorf("version 2 was written by %q, want the winner %s", recs[1].Metadata.CausationID, deciders[winner].name)
			}
			t.Logf("serialised by the implementation: %v", serialised)
		})
	}
}

// otherPayment is the payload of the PaymentCompleted a competing writer appends.
var otherPayment = fmt.Sprintf(`{"paymentId":"other","amountCents":%d}`, placed.TotalCents)

// testUpdateLosesRace makes Update lose an optimistic-concurrency race for certain: while its
// decide runs on version 1, another writer that does not take the order's lock (an older
// release, a hand-written fix) appends version 2. The unique (stream, version) key is the
// backstop: Update must reload and decide again, never overwrite.
func testUpdateLosesRace(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	id := mustCreate(t, f.Store, eventstore.Metadata{})
	var seen []int
	recs, err := f.Store.Update(ctx, id, eventstore.Metadata{CausationID: "update"}, func(o *domain.Order) ([]domain.Event, error) {
		seen = append(seen, o.Version())
		if len(seen) == 1 {
			f.InsertRaw(t, id, 2, domain.TypePaymentCompleted, 1, otherPayment)
		}
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "update"})
	})
	if !errors.Is(err, domain.ErrStepNotDue) || len(recs) != 0 {
		t.Errorf("update that lost the race: %+v, %v; want ErrStepNotDue after deciding again", recs, err)
	}
	if !reflect.DeepEqual(seen, []int{1, 2}) {
		t.Errorf("decide saw versions %v, want [1 2]: it must reload after the conflict", seen)
	}
	stream, _ := mustLoad(t, f.Store, id)
	if len(stream) != 2 || stream[1].Event != (domain.PaymentCompleted{PaymentID: "other", AmountCents: placed.TotalCents}) {
		t.Errorf("stream: %+v; want the competing payment only, never overwritten", stream)
	}
}

func testUpdateTxConflict(t *testing.T, impl implementation) {
	for _, loserAppends := range []bool{false, true} {
		t.Run(fmt.Sprintf("loserAppends=%v", loserAppends), func(t *testing.T) {
			f := impl.open(t)
			ctx := ctxFor(t)
			id := mustCreate(t, f.Store, eventstore.Metadata{})
			var seen []int
			recs, err := f.Store.UpdateTx(ctx, id, eventstore.Metadata{}, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
				seen = append(seen, o.Version())
				if len(seen) == 2 && !loserAppends {
					return nil, domain.ErrStepNotDue
				}
				if _, err := tx.ExecContext(ctx, `UPDATE stock SET reserved = reserved + 2, available = available - 2 WHERE sku = 'SKU-MUG'`); err != nil {
					return nil, err
				}
				if len(seen) == 1 {
					// Another writer, not taking the order's lock, appends version 2 and
					// commits while this decision is being taken on version 1.
					f.InsertRaw(t, id, 2, domain.TypePaymentCompleted, 1, otherPayment)
				}
				return []domain.Event{reserved}, nil
			})
			var mugs int
			if err := f.DB.QueryRow(`SELECT reserved FROM stock WHERE sku = 'SKU-MUG'`).Scan(&mugs); err != nil {
				t.Fatal(err)
			}
			stream, _ := mustLoad(t, f.Store, id)
			if !reflect.DeepEqual(seen, []int{1, 2}) {
				t.Errorf("decide saw versions %v, want [1 2]", seen)
			}
			if loserAppends {
				if err != nil || len(recs) != 1 || recs[0].Version != 3 {
					t.Errorf("UpdateTx: %+v, %v; want its event at version 3", recs, err)
				}
				if mugs != 2 {
					t.Errorf("reserved = %d, want 2: the first attempt's write must roll back, the retry's commit", mugs)
				}
				if len(stream) != 3 {
					t.Errorf("stream has %v, want placed, paid, reserved", types(stream))
				}
			} else {
				if !errors.Is(err, domain.ErrStepNotDue) {
					t.Errorf("UpdateTx: %+v, %v; want ErrStepNotDue", recs, err)
				}
				if mugs != 0 {
					t.Errorf("reserved = %d, want 0: the conflicting attempt's write must roll back", mugs)
				}
				if len(stream) != 2 {
					t.Errorf("stream has %v, want placed, paid", types(stream))
				}
			}
		})
	}
}

func testIdempotencyKey(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	req := eventstore.CreateRequest{IdempotencyKey: "idem-1", RequestHash: strings.Repeat("a", 64)}
	id, err := f.Store.Create(ctx, req, placeWith(placed))
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Store.Create(ctx, req, placeWith(placed))
	if !errors.Is(err, eventstore.ErrAlreadyCreated) || again != id {
		t.Errorf("repeat with the same key and hash: id %d, %v; want id %d and ErrAlreadyCreated", again, err, id)
	}
	if n := f.AllEvents(t); n != 1 {
		t.Errorf("the log holds %d events after a repeated creation, want 1", n)
	}
	other := req
	other.RequestHash = strings.Repeat("b", 64)
	_, err = f.Store.Create(ctx, other, placeWith(placed))
	var de *domain.Error
	if !errors.As(err, &de) || de.Kind != domain.KindConflict || de.Field != "Idempotency-Key" {
		t.Errorf("same key, other body: %v; want a KindConflict error on Idempotency-Key", err)
	}
	// A different key creates another order.
	if id2, err := f.Store.Create(ctx, eventstore.CreateRequest{IdempotencyKey: "idem-2", RequestHash: req.RequestHash}, placeWith(placed)); err != nil || id2 == id {
		t.Errorf("another key: id %d, %v; want a new order", id2, err)
	}
	if n := f.AllocatedIDs(t); n != 2 {
		t.Errorf("%d order ids allocated, want 2", n)
	}
	if n := f.AllEvents(t); n != 2 {
		t.Errorf("%d events, want 2", n)
	}
}

func testConcurrentIdempotentCreates(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	const n = 8
	req := eventstore.CreateRequest{IdempotencyKey: "same-key", RequestHash: "same-hash"}
	start := make(chan struct{})
	ids := make([]domain.OrderID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ids[i], errs[i] = f.Store.Create(ctx, req, placeWith(placed))
		}()
	}
	close(start)
	wg.Wait()
	created := 0
	for i := 0; i < n; i++ {
		switch {
		case errs[i] == nil:
			created++
		case !errors.Is(errs[i], eventstore.ErrAlreadyCreated):
			t.Errorf("create %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("create %d returned id %d, create 0 returned %d", i, ids[i], ids[0])
		}
	}
	if created != 1 {
		t.Errorf("%d of %d concurrent creates with one key created an order, want 1", created, n)
	}
	if got := f.AllocatedIDs(t); got != 1 {
		t.Errorf("%d order ids allocated, want 1", got)
	}
	if got := f.AllEvents(t); got != 1 {
		t.Errorf("%d events, want 1", got)
	}
}

func testUpcast(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	const id domain.OrderID = 77
	f.InsertRaw(t, id, 1, domain.TypeOrderPlaced, 1, `{"customer_name":"Old","customer_email":"old@example.com"}`)
	recs, o := mustLoad(t, f.Store, id)
	if len(recs) != 1 {
		t.Fatalf("loaded %d records, want 1", len(recs))
	}
	e, ok := recs[0].Event.(domain.OrderPlaced)
	if !ok {
		t.Fatalf("event is %T, want domain.OrderPlaced", recs[0].Event)
	}
	if e.CustomerName != "Old" || e.CustomerEmail != "old@example.com" || len(e.Items) != 0 || e.TotalCents != 0 {
		t.Errorf("upcast event: %#v; want Old, old@example.com, no items, 0 total", e)
	}
	if recs[0].SchemaVersion != 2 {
		t.Errorf("schema version after upcast: %d, want the current 2", recs[0].SchemaVersion)
	}
	if o.CustomerName() != "Old" || o.CustomerEmail() != "old@example.com" || o.NextStep() != domain.StepPayment {
		t.Errorf("folded order: %q %q next %q", o.CustomerName(), o.CustomerEmail(), o.NextStep())
	}
	// The old order goes on living: its next event is appended in the current schema.
	if _, err := f.Store.Update(ctx, id, eventstore.Metadata{}, func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "p"})
	}); err != nil {
		t.Fatalf("update of an upcast order: %v", err)
	}
	if recs, _ := mustLoad(t, f.Store, id); len(recs) != 2 || recs[1].Version != 2 {
		t.Errorf("after update: %v", types(recs))
	}
	// A wire message of the old schema is upcast the same way.
	msg := fmt.Sprintf(`{"orderId":%d,"version":1,"type":"OrderPlaced","schemaVersion":1,"data":{"customer_name":"Old","customer_email":"old@example.com"}}`, id)
	r, err := eventstore.DecodeMessage([]byte(msg))
	if err != nil {
		t.Fatalf("decode a v1 message: %v", err)
	}
	if got := r.Event.(domain.OrderPlaced); got.CustomerName != "Old" || got.CustomerEmail != "old@example.com" || len(got.Items) != 0 {
		t.Errorf("decoded v1 message: %#v", got)
	}
}

func testUnknownType(t *testing.T, impl implementation) {
	f := impl.open(t)
	ctx := ctxFor(t)
	const id domain.OrderID = 78
	f.InsertRaw(t, id, 1, domain.TypeOrderPlaced, 2, `{"customerName":"Ann","items":[],"totalCents":0}`)
	f.InsertRaw(t, id, 2, "OrderTeleported", 1, `{}`)
	_, _, err := f.Store.Load(ctx, id)
	if err == nil {
		t.Fatal("load of a stream with an unknown event type succeeded")
	}
	if domain.ErrorKind(err) != domain.KindInvalid || !strings.Contains(err.Error(), "OrderTeleported") || !strings.Contains(err.Error(), eventstore.EventID(id, 2)) {
		t.Errorf("error %q (kind %d): want KindInvalid naming the type and the event %s", err, domain.ErrorKind(err), eventstore.EventID(id, 2))
	}
	if _, err := f.Store.Update(ctx, id, eventstore.Metadata{}, appendEvents(paid)); err == nil {
		t.Error("update of a stream holding an unknown event type succeeded")
	}
	// A payload written by a newer release is refused too, not misread.
	f.InsertRaw(t, id+1, 1, domain.TypeOrderPlaced, 99, `{"customerName":"Future"}`)
	if _, _, err := f.Store.Load(ctx, id+1); domain.ErrorKind(err) != domain.KindInvalid || !strings.Contains(err.Error(), "99") {
		t.Errorf("load of a newer schema version: %v, want a KindInvalid error naming version 99", err)
	}
}

// testIndependentStores checks that stores over different databases do not share state: an
// Update in one, however slow its decision, does not hold up an Update of the same order id
// in the other. (Several deployments, or test runs, share one MySQL server.)
func testIndependentStores(t *testing.T, impl implementation) {
	a, b := impl.open(t), impl.open(t)
	ctx := ctxFor(t)
	idA, idB := mustCreate(t, a.Store, eventstore.Metadata{}), mustCreate(t, b.Store, eventstore.Metadata{})
	if idA != idB {
		t.Fatalf("fresh stores gave ids %d and %d; the test needs equal ids", idA, idB)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	releaseA := func() { once.Do(func() { close(release) }) }
	doneA := make(chan error, 1)
	go func() {
		_, err := a.Store.Update(ctx, idA, eventstore.Metadata{}, func(o *domain.Order) ([]domain.Event, error) {
			close(entered)
			<-release // a slow payment gateway
			return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "a"})
		})
		doneA <- err
	}()
	defer func() {
		releaseA()
		if err := <-doneA; err != nil {
			t.Errorf("update in the first database: %v", err)
		}
	}()
	<-entered
	doneB := make(chan error, 1)
	go func() {
		_, err := b.Store.Update(ctx, idB, eventstore.Metadata{}, func(o *domain.Order) ([]domain.Event, error) {
			return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "b"})
		})
		doneB <- err
	}()
	for {
		select {
		case err := <-doneB:
			if err != nil {
				t.Errorf("update in the second database: %v", err)
			}
			return
		case <-time.After(10 * time.Millisecond):
			if b.UpdateWaitsForOrder(t, idB) {
				t.Errorf("an Update of order %d in one database waits for an Update of order %d in another database "+
					"that is still deciding: the per-order lock is not scoped to the database", idB, idA)
				releaseA()
				if err := <-doneB; err != nil {
					t.Logf("second update, once the first finished: %v", err)
				}
				return
			}
		}
	}
}

func TestDecodeMessage(t *testing.T) {
	cases := []struct {
		name, body, field string
	}{
		{"not JSON", `{"orderId":`, "body"},
		{"wrong JSON type", `{"orderId":"seven","version":1,"type":"OrderPlaced"}`, "body"},
		{"empty object", `{}`, "orderId"},
		{"missing orderId", `{"version":1,"type":"OrderPlaced","data":{}}`, "orderId"},
		{"negative orderId", `{"orderId":-3,"version":1,"type":"OrderPlaced","data":{}}`, "orderId"},
		{"missing version", `{"orderId":7,"type":"OrderPlaced","data":{}}`, "version"},
		{"zero version", `{"orderId":7,"version":0,"type":"OrderPlaced","data":{}}`, "version"},
		{"missing type", `{"orderId":7,"version":1,"data":{}}`, "type"},
		{"unknown type", `{"orderId":7,"version":1,"type":"OrderTeleported","data":{}}`, "type"},
		{"missing data", `{"orderId":7,"version":1,"type":"OrderPlaced","schemaVersion":2}`, "data"},
		{"data of the wrong shape", `{"orderId":7,"version":1,"type":"OrderPlaced","schemaVersion":2,"data":{"customerName":5}}`, "data"},
		{"schema from the future", `{"orderId":7,"version":1,"type":"OrderPlaced","schemaVersion":3,"data":{}}`, "schemaVersion"},
		{"another event's id", `{"eventId":"7-2","orderId":7,"version":1,"type":"OrderPlaced","data":{}}`, "eventId"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := eventstore.DecodeMessage([]byte(c.body))
			var de *domain.Error
			if !errors.As(err, &de) || de.Kind != domain.KindInvalid {
				t.Fatalf("DecodeMessage(%s) = %v; want a KindInvalid error", c.body, err)
			}
			if de.Field != c.field {
				t.Errorf("error %q names field %q, want %q", err, de.Field, c.field)
			}
		})
	}
}

// TestRecordRoundTrip sends every kind of stored record through its wire shape and back.
func TestRecordRoundTrip(t *testing.T) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			f := impl.open(t)
			ctx := ctxFor(t)
			md := eventstore.Metadata{CorrelationID: "corr-7", CausationID: "req-7"}
			id := mustCreate(t, f.Store, md)
			events := []domain.Event{
				paid, reserved,
				domain.InventoryReservationFailed{Reason: "short"},
				domain.PaymentRefunded{RefundID: "ref", AmountCents: 1798},
				domain.PaymentFailed{Reason: "declined \"quoted\" ✓"},
				domain.EmailSent{To: "zoe@example.com", MessageID: "<m@x>", Template: domain.TemplateCancelled},
			}
			if _, err := f.Store.Update(ctx, id, md, appendEvents(events...)); err != nil {
				t.Fatal(err)
			}
			recs, _ := mustLoad(t, f.Store, id)
			if len(recs) != 7 {
				t.Fatalf("stream has %d records, want 7", len(recs))
			}
			for _, r := range recs {
				b, err := json.Marshal(r)
				if err != nil {
					t.Fatalf("marshal %s: %v", r.EventID(), err)
				}
				var wire map[string]any
				if err := json.Unmarshal(b, &wire); err != nil {
					t.Fatal(err)
				}
				if wire["eventId"] != r.EventID() || wire["type"] != r.Type || wire["orderId"] != float64(r.StreamID) {
					t.Errorf("wire shape of %s: %s", r.EventID(), b)
				}
				got, err := eventstore.DecodeMessage(b)
				if err != nil {
					t.Fatalf("decode %s: %v", b, err)
				}
				if !got.OccurredAt.Equal(r.OccurredAt) {
					t.Errorf("%s occurred at %v after the round trip, %v before", r.EventID(), got.OccurredAt, r.OccurredAt)
				}
				got.OccurredAt, r.OccurredAt = time.Time{}, time.Time{}
				if !reflect.DeepEqual(got, r) {
					t.Errorf("round trip of %s:\n got  %+v\n want %+v", r.EventID(), got, r)
				}
			}
		})
	}
}
