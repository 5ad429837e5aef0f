package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/outbox"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// place creates an order with the given idempotency key ("" for none) in store.
func place(t *testing.T, store *eventstore.Store, key string) domain.OrderID {
	t.Helper()
	req := eventstore.CreateRequest{IdempotencyKey: key, Metadata: eventstore.Metadata{CorrelationID: "c", CausationID: "c"}}
	if key != "" {
		req.RequestHash = "hash-" + key
	}
	id, err := store.Create(context.Background(), req, []domain.Event{domain.OrderPlaced{CustomerName: "Ann", TotalCents: 0}})
	if err != nil {
		t.Fatalf("create order (key %q): %v", key, err)
	}
	return id
}

// blockingRetention is a retention whose Remove runs remove and then waits, inside the
// cleaner's transaction, until release is closed; entered is closed once the first call waits.
func blockingRetention(remove func(context.Context, *sql.Tx, time.Time, int) (int64, error)) (r outbox.Retention, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	return outbox.Retention{Name: "blocking", Keep: time.Hour, Remove: func(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int64, error) {
		n, err := remove(ctx, tx, before, limit)
		once.Do(func() { close(entered) })
		<-release
		return n, err
	}}, entered, release
}

// TestOneCleanerAtATime: while one cleaner is at work on a database, a second one (another
// process, in production) does nothing; a cleaner on another database is not held up; once
// the first is done the second runs.
func TestOneCleanerAtATime(t *testing.T) {
	env, other := testenv.New(t), testenv.New(t)
	noop := func(context.Context, *sql.Tx, time.Time, int) (int64, error) { return 0, nil }
	busy, entered, release := blockingRetention(noop)
	first, err := outbox.NewCleaner(env.DB, quiet, outbox.CleanerConfig{}, busy)
	must(t, err)
	var secondCalls atomic.Int32
	counting := outbox.Retention{Name: "counting", Keep: time.Hour, Remove: func(context.Context, *sql.Tx, time.Time, int) (int64, error) {
		secondCalls.Add(1)
		return 0, nil
	}}
	second, err := outbox.NewCleaner(env.DB, quiet, outbox.CleanerConfig{}, counting)
	must(t, err)
	elsewhere, err := outbox.NewCleaner(other.DB, quiet, outbox.CleanerConfig{}, counting)
	must(t, err)

	done := make(chan bool)
	go func() {
		_, ran, err := first.Clean(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- ran
	}()
	<-entered
	if _, ran, err := second.Clean(context.Background()); err != nil || ran || secondCalls.Load() != 0 {
		t.Fatalf("second cleaner while the first works: ran %v, %d removals, err %v; want it to do nothing", ran, secondCalls.Load(), err)
	}
	if _, ran, err := elsewhere.Clean(context.Background()); err != nil || !ran || secondCalls.Load() != 1 {
		t.Fatalf("cleaner of another database: ran %v, %d removals, err %v; want it to run", ran, secondCalls.Load(), err)
	}
	close(release)
	if !<-done {
		t.Fatal("the first cleaner did not run")
	}
	if _, ran, err := second.Clean(context.Background()); err != nil || !ran || secondCalls.Load() != 2 {
		t.Fatalf("second cleaner once the first is done: ran %v, %d removals, err %v; want it to run", ran, secondCalls.Load(), err)
	}
}

// TestCleanerDoesNotHoldUpPlacements: while a batch of expired idempotency keys is being
// cleared (its transaction open), orders with and without keys are still placed at once.
// At REPEATABLE READ the batch's range scan would lock the gap every new order_ids row
// without a key goes into, and placements would wait for it.
func TestCleanerDoesNotHoldUpPlacements(t *testing.T) {
	env := testenv.New(t)
	store, err := eventstore.New(env.DB)
	must(t, err)
	for _, key := range []string{"old-1", "old-2", "old-3"} {
		place(t, store, key)
	}
	env.MustExec(t, `UPDATE order_ids SET created_at = created_at - INTERVAL 2 HOUR`)
	busy, entered, release := blockingRetention(store.ExpireIdempotencyKeys)
	cleaner, err := outbox.NewCleaner(env.DB, quiet, outbox.CleanerConfig{Batch: 2}, busy)
	must(t, err)
	done := make(chan map[string]int64)
	go func() {
		removed, _, err := cleaner.Clean(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- removed
	}()
	<-entered
	start := time.Now()
	placed := make(chan error, 1)
	go func() {
		for _, key := range []string{"", "new-1", ""} {
			req := eventstore.CreateRequest{IdempotencyKey: key, Metadata: eventstore.Metadata{CorrelationID: "c", CausationID: "c"}}
			if key != "" {
				req.RequestHash = "h"
			}
			if _, err := store.Create(context.Background(), req, []domain.Event{domain.OrderPlaced{CustomerName: "Bob"}}); err != nil {
				placed <- fmt.Errorf("place an order (key %q) during a cleanup batch: %w", key, err)
				return
			}
		}
		placed <- nil
	}()
	select {
	case err := <-placed:
		must(t, err)
	case <-time.After(5 * time.Second):
		t.Errorf("placements held up for 5 s by a cleanup batch's locks")
		close(release)
		must(t, <-placed)
	}
	took := time.Since(start)
	if !t.Failed() {
		close(release)
	}
	// Batch 2 over 3 expired keys: a full batch, then one more, and nothing newer.
	if removed := <-done; removed["blocking"] != 3 {
		t.Errorf("cleared %d keys, want the 3 expired ones", removed["blocking"])
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE idempotency_key IS NOT NULL`); n != 1 {
		t.Errorf("%d keys left, want only new-1", n)
	}
	t.Logf("3 placements took %s while a cleanup batch held its transaction open", took.Round(time.Millisecond))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
