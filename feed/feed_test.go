package feed_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/internal/testenv"
)

const topic = "test"

// rig is a store whose appends fill the feed's test topic (PaymentCompleted skipped), with
// the hooks given after the feed's, and a table in which test handlers count their effects.
type rig struct {
	env   *testenv.Env
	store *eventstore.Store
}

func newRig(t *testing.T, hooks ...eventstore.Hook) *rig {
	t.Helper()
	env := testenv.New(t)
	w, err := feed.NewWriter(feed.Topic{Name: topic, Skip: []string{domain.TypePaymentCompleted}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := eventstore.New(env.DB, append([]eventstore.Hook{w}, hooks...)...)
	if err != nil {
		t.Fatal(err)
	}
	env.MustExec(t, `CREATE TABLE handled (position BIGINT NOT NULL PRIMARY KEY, times INT NOT NULL)`)
	return &rig{env: env, store: s}
}

func (r *rig) place(name string) (domain.OrderID, error) {
	return r.store.Create(context.Background(), eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "corr-" + name}},
		[]domain.Event{domain.OrderPlaced{CustomerName: name, Items: []domain.Item{}}})
}

// pay appends a skipped event and one that is not.
func (r *rig) pay(id domain.OrderID) error {
	_, err := r.store.Update(context.Background(), id, eventstore.Metadata{}, func(*domain.Order) ([]domain.Event, error) {
		return []domain.Event{domain.PaymentCompleted{PaymentID: "p"}, domain.PaymentFailed{Reason: "test"}}, nil
	})
	return err
}

func (r *rig) mustPlace(t *testing.T, name string) domain.OrderID {
	t.Helper()
	id, err := r.place(name)
	if err != nil {
		t.Fatalf("place order for %s: %v", name, err)
	}
	return id
}

// count records in the handled table that the events were handled.
func count(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
	for _, rec := range recs {
		_, err := tx.ExecContext(ctx, `INSERT INTO handled (position, times) VALUES (?, 1) ON DUPLICATE KEY UPDATE times = times + 1`, rec.Position)
		if err != nil {
			return err
		}
	}
	return nil
}

// start runs a consumer of the test topic until the test ends.
func (r *rig) start(t *testing.T, handle feed.Handler, cfg feed.ConsumerConfig) {
	t.Helper()
	cfg.Topic = topic
	r.env.RunFeed(t, handle, cfg)
}

// positions returns the log positions of the events of the test topic, in order.
func (r *rig) positions(t *testing.T) []int64 {
	t.Helper()
	var out []int64
	rows, err := r.env.DB.Query(`SELECT position FROM events WHERE event_type <> ? ORDER BY position`, domain.TypePaymentCompleted)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// handled returns how many times each handled position's effect was committed.
func (r *rig) handled(t *testing.T) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	rows, err := r.env.DB.Query(`SELECT position, times FROM handled`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int64
		var n int
		if err := rows.Scan(&p, &n); err != nil {
			t.Fatal(err)
		}
		out[p] = n
	}
	return out
}

// waitDrained waits until the topic has no rows left, then checks that every event of the
// topic was handled exactly once.
func (r *rig) waitDrained(t *testing.T) {
	t.Helper()
	r.env.WaitFeedDrained(t, topic)
	want := r.positions(t)
	got := r.handled(t)
	for _, p := range want {
		if got[p] != 1 {
			t.Errorf("event at position %d was handled %d times, want once", p, got[p])
		}
	}
	if len(got) != len(want) {
		t.Errorf("handled %d positions, want %d (%v)", len(got), len(want), want)
	}
}

func TestWriterPublishesTheAppendedEventsInOrder(t *testing.T) {
	r := newRig(t)
	id := r.mustPlace(t, "Ada")
	if err := r.pay(id); err != nil {
		t.Fatal(err)
	}
	recs, _, err := r.store.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := r.env.DB.Query(`SELECT topic, position, stream_id, version, event_type, metadata FROM event_feed ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var tp, typ, meta string
		var pos int64
		var sid, v int
		if err := rows.Scan(&tp, &pos, &sid, &v, &typ, &meta); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d %d/%d %s %s", tp, pos, sid, v, typ, meta))
	}
	var want []string
	for _, rec := range recs {
		if rec.Type != domain.TypePaymentCompleted {
			meta := `{}`
			if rec.Version == 1 {
				meta = `{"correlationId":"corr-Ada"}`
			}
			want = append(want, fmt.Sprintf("%s %d %d/%d %s %s", topic, rec.Position, id, rec.Version, rec.Type, meta))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("feed rows:\n%s\nwant:\n%s", got, want)
	}
}

func TestConsumerHandlesEveryEventOnce(t *testing.T) {
	r := newRig(t)
	r.start(t, count, feed.ConsumerConfig{Batch: 7, Workers: 3})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				id, err := r.place(fmt.Sprintf("c%d-%d", i, j))
				if err == nil {
					err = r.pay(id)
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	r.waitDrained(t)
}

// A lower position that commits after a higher one was handled is still handled: the
// consumer takes whatever rows are there, it keeps no offset to skip past it.
func TestConsumerHandlesALateCommit(t *testing.T) {
	g := testenv.NewGate()
	r := newRig(t, g)
	seen := make(chan int64, 10)
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		for _, rec := range recs {
			seen <- rec.Position
		}
		return count(ctx, tx, recs)
	}, feed.ConsumerConfig{})
	held, done := g.Hold(t, func() error { _, err := r.place("late"); return err })
	r.mustPlace(t, "early")
	if p := recv(t, seen); p <= held.Position {
		t.Fatalf("handled position %d while %d is uncommitted; want the higher one first", p, held.Position)
	}
	g.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := recv(t, seen); p != held.Position {
		t.Fatalf("handled position %d after the late commit; want %d", p, held.Position)
	}
	r.waitDrained(t)
}

// While a handler runs (its transaction holds its batch's rows), appends commit at once:
// new orders and events of the very order being handled.
func TestAppendsDoNotWaitForAHandler(t *testing.T) {
	r := newRig(t)
	first := r.mustPlace(t, "first")
	entered, release := make(chan eventstore.Record), make(chan struct{})
	var once sync.Once
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		if err := count(ctx, tx, recs); err != nil {
			return err
		}
		once.Do(func() { entered <- recs[0]; <-release })
		return nil
	}, feed.ConsumerConfig{})
	if rec := recv(t, entered); rec.StreamID != first {
		t.Fatalf("the handler holds order %d, want %d", rec.StreamID, first)
	}
	defer close(release)
	appended := make(chan error, 1)
	go func() {
		_, err := r.store.Create(context.Background(), eventstore.CreateRequest{}, []domain.Event{domain.OrderPlaced{CustomerName: "second", Items: []domain.Item{}}})
		if err == nil {
			_, err = r.store.Update(context.Background(), first, eventstore.Metadata{}, func(*domain.Order) ([]domain.Event, error) {
				return []domain.Event{domain.PaymentFailed{Reason: "declined"}}, nil
			})
		}
		appended <- err
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("appends waited 10 s for a handler that holds its batch")
	}
	release <- struct{}{}
	r.waitDrained(t)
}

// A failed batch's writes are undone, not committed with the transaction; its events are
// then applied one by one, so that the one that fails keeps its row (and comes again) while
// the others are applied.
func TestFailedHandlerLeavesNoWriteBehind(t *testing.T) {
	r := newRig(t)
	ids := []domain.OrderID{r.mustPlace(t, "a"), r.mustPlace(t, "b"), r.mustPlace(t, "c")}
	var mu sync.Mutex
	var calls []int // the number of events of each call
	failures := 0
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		if err := count(ctx, tx, recs); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, len(recs))
		if slices.ContainsFunc(recs, func(r eventstore.Record) bool { return r.StreamID == ids[0] }) && failures < 3 {
			failures++
			return errors.New("refused")
		}
		return nil
	}, feed.ConsumerConfig{})
	r.waitDrained(t)
	mu.Lock()
	defer mu.Unlock()
	// The batch fails, then a alone (fails), b and c alone; then a alone, twice.
	if want := []int{3, 1, 1, 1, 1, 1}; !slices.Equal(calls, want) {
		t.Errorf("handler calls of %v events, want %v", calls, want)
	}
}

// A backlog is applied a batch per handler call, in the log's order.
func TestBacklogIsAppliedInBatches(t *testing.T) {
	r := newRig(t)
	for i := range 12 {
		r.mustPlace(t, fmt.Sprint(i))
	}
	var mu sync.Mutex
	var calls [][]int64
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		mu.Lock()
		defer mu.Unlock()
		var ps []int64
		for _, rec := range recs {
			ps = append(ps, rec.Position)
		}
		calls = append(calls, ps)
		return count(ctx, tx, recs)
	}, feed.ConsumerConfig{Batch: 5})
	r.waitDrained(t)
	mu.Lock()
	defer mu.Unlock()
	var sizes []int
	var all []int64
	for _, c := range calls {
		sizes = append(sizes, len(c))
		all = append(all, c...)
	}
	if !slices.Equal(sizes, []int{5, 5, 2}) || !slices.Equal(all, r.positions(t)) {
		t.Errorf("handler calls %v; want batches of 5, 5 and 2 events in the log's order", calls)
	}
}

// An event of a type this release does not know is a later release's (a rolling deploy): it
// stays in the feed for an instance that knows it, and the events after it go on.
func TestUnknownEventTypeWaits(t *testing.T) {
	r := newRig(t)
	// First in the feed: the log's positions start above it.
	r.env.MustExec(t, `ALTER TABLE events AUTO_INCREMENT = 100`)
	r.env.MustExec(t, `INSERT INTO event_feed (topic, position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
		VALUES (?, 1, 999, 1, 'OrderTeleported', 1, '{}', '{}', UTC_TIMESTAMP(6))`, topic)
	r.mustPlace(t, "a")
	var rejected sync.Map
	r.start(t, count, feed.ConsumerConfig{RetryInterval: 20 * time.Millisecond, Reject: func(_ context.Context, _ eventstore.Tx, rj feed.Rejection) error {
		rejected.Store(rj.EventID, rj)
		return nil
	}})
	deadline := time.Now().Add(20 * time.Second)
	for r.env.Count(t, `SELECT COUNT(*) FROM handled`) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the event after the unknown one was never handled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM handled`); n != 1 {
		t.Errorf("%d events handled, want the decodable one only", n)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM event_feed WHERE event_type = 'OrderTeleported'`); n != 1 {
		t.Errorf("the event of an unknown type left the feed (%d rows): it must wait for an instance that knows it", 1-n)
	}
	rejected.Range(func(k, _ any) bool {
		t.Errorf("event %v of an unknown type was rejected; it should wait", k)
		return true
	})
}

// An event this release knows but cannot decode is recorded as a dead letter with its
// reason, in the transaction that consumes it, and the events after it go on; a Reject that
// fails leaves the event (and its letter) for the next poll.
func TestUndecodableEventIsDeadLettered(t *testing.T) {
	r := newRig(t)
	r.env.MustExec(t, `ALTER TABLE events AUTO_INCREMENT = 100`)
	r.env.MustExec(t, `INSERT INTO event_feed (topic, position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
		VALUES (?, 1, 999, 2, ?, 1, '{"reason": 42}', '{}', UTC_TIMESTAMP(6))`, topic, domain.TypePaymentFailed)
	r.mustPlace(t, "a")
	deadLog, err := deadletter.NewLog(r.env.DB)
	if err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int32
	r.start(t, count, feed.ConsumerConfig{Reject: func(ctx context.Context, tx eventstore.Tx, rj feed.Rejection) error {
		if failures.Add(1) == 1 {
			return errors.New("the dead-letter table is away")
		}
		return deadLog.RecordIn(ctx, tx, deadletter.Letter{Queue: "feed " + rj.Topic, EventID: rj.EventID, EventType: rj.EventType,
			Reason: rj.Reason, DeadAt: time.Now().UTC()})
	}})
	r.waitDrained(t)
	if n := r.env.Count(t, `SELECT COUNT(*) FROM handled`); n != 1 {
		t.Errorf("%d events handled, want the decodable one only", n)
	}
	if n := failures.Load(); n != 2 {
		t.Errorf("Reject called %d times, want 2 (a failure, then the record)", n)
	}
	var queue, eventID, typ, reason string
	err = r.env.DB.QueryRow(`SELECT queue, event_id, event_type, reason FROM dead_letters`).Scan(&queue, &eventID, &typ, &reason)
	if err != nil {
		t.Fatalf("the dead letter: %v", err)
	}
	if queue != "feed "+topic || eventID != "999-2" || typ != domain.TypePaymentFailed || !strings.Contains(reason, "reason") {
		t.Errorf("dead letter %q %q %q %q; want the event, its type and why it cannot be decoded", queue, eventID, typ, reason)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was not called within 30 s")
	}
	panic("unreachable")
}

// When InnoDB rolls a batch's transaction back (a deadlock victim), the connection would run
// every later statement on its own, outside any transaction. The consumer stops there: the
// rest of the batch is never handled outside a transaction, and the undone work comes again.
func TestDeadlockedBatchIsRedoneNotContinuedOutsideATransaction(t *testing.T) {
	r := newRig(t)
	if err := r.env.DB.QueryRow(`SELECT @@in_transaction`).Err(); err != nil {
		t.Skipf("the test tells a transaction by MariaDB's @@in_transaction, which this server lacks: %v", err)
	}
	r.env.MustExec(t, `CREATE TABLE locks (id INT NOT NULL PRIMARY KEY, n INT NOT NULL)`)
	r.env.MustExec(t, `INSERT INTO locks VALUES (1, 0), (2, 0)`)
	for _, name := range []string{"a", "b", "c", "d"} {
		r.mustPlace(t, name)
	}
	var (
		mu                 sync.Mutex
		calls              int
		outside, deadlocks []int64
	)
	holdsFirst, holdsSecond := make(chan struct{}), make(chan struct{})
	lock := func(ctx context.Context, tx eventstore.Tx, id int) error {
		_, err := tx.ExecContext(ctx, `UPDATE locks SET n = n + 1 WHERE id = ?`, id)
		return err
	}
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		var n int
		rows, err := tx.QueryContext(ctx, `SELECT @@in_transaction`)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		mu.Lock()
		calls++
		call := calls
		if n == 0 {
			outside = append(outside, recs[0].Position)
		}
		mu.Unlock()
		if err := count(ctx, tx, recs); err != nil {
			return err
		}
		// The first call (one worker's batch) and the second (necessarily the other worker's:
		// the first one's is blocked) take the two locks in opposite orders.
		switch call {
		case 1:
			err = lock(ctx, tx, 1)
			if err == nil {
				close(holdsFirst)
				<-holdsSecond
				err = lock(ctx, tx, 2)
			}
		case 2:
			err = lock(ctx, tx, 2)
			if err == nil {
				close(holdsSecond)
				<-holdsFirst
				err = lock(ctx, tx, 1)
			}
		}
		if err != nil {
			mu.Lock()
			deadlocks = append(deadlocks, recs[0].Position)
			mu.Unlock()
		}
		return err
	}, feed.ConsumerConfig{Workers: 2, Batch: 2})
	r.waitDrained(t)
	mu.Lock()
	defer mu.Unlock()
	if len(deadlocks) != 1 {
		t.Fatalf("handlers failed at positions %v; want one deadlock victim", deadlocks)
	}
	if len(outside) > 0 {
		t.Errorf("positions %v were handled outside a transaction", outside)
	}
}
