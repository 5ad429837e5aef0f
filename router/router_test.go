package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/metrics"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
)

// TestRouteFollowsThePipelineTable: every trigger of every stage goes to that stage's queue
// (prefixed), and an event that triggers no stage goes nowhere.
func TestRouteFollowsThePipelineTable(t *testing.T) {
	q := queues.Config{Prefix: "t-"}
	route := Route(q)
	triggers := 0
	for _, st := range pipeline.Stages() {
		for _, typ := range st.Triggers {
			triggers++
			if got, want := route(typ), q.Name(st.Queue); got != want {
				t.Errorf("Route(%s) = %q, want %q (stage %s)", typ, got, want, st.Name)
			}
		}
	}
	if triggers == 0 {
		t.Fatal("the pipeline table lists no trigger")
	}
	for _, typ := range []string{domain.EmailSent{}.EventType(), domain.EmailFailed{}.EventType(), "NoSuchEvent"} {
		if got := route(typ); got != "" {
			t.Errorf("Route(%s) = %q, want no queue", typ, got)
		}
	}
}

// TestIsPermanent: which errors dead-letter a message and which leave it to be retried.
func TestIsPermanent(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"bad input", fmt.Errorf("stage: %w", domain.Invalid("body", "bad")), true},
		{"unknown order", fmt.Errorf("load: %w", domain.NotFound("order 7 does not exist")), true},
		{"not the trigger", fmt.Errorf("%w: %w", domain.ErrNotTrigger, domain.Invalid("event", "stale")), true},
		{"panic", middleware.RecoveredPanicError{V: "boom"}, true},
		{"step not due (a conflict)", fmt.Errorf("pay: %w", domain.ErrStepNotDue), false},
		{"attempt timed out", fmt.Errorf("charge: %w", context.DeadlineExceeded), false},
		{"timed out while invalid", errors.Join(context.DeadlineExceeded, domain.Invalid("x", "y")), false},
		{"a dependency is down", errors.New("dial tcp: connection refused"), false},
	} {
		if got := IsPermanent(c.err); got != c.want {
			t.Errorf("%s: IsPermanent(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestCheckSignature: without a key every message passes; with one, only the relay's
// signature of that very message does, and anything else is not its order's trigger.
func TestCheckSignature(t *testing.T) {
	key := []byte("k")
	body := []byte(`{"x":1}`)
	sig := outbox.Signature(key, "7-1", "OrderPlaced", body)
	if err := CheckSignature(nil, "", "7-1", "OrderPlaced", body); err != nil {
		t.Errorf("no key: %v", err)
	}
	if err := CheckSignature(key, sig, "7-1", "OrderPlaced", body); err != nil {
		t.Errorf("signed: %v", err)
	}
	for name, err := range map[string]error{
		"missing":       CheckSignature(key, "", "7-1", "OrderPlaced", body),
		"other body":    CheckSignature(key, sig, "7-1", "OrderPlaced", []byte(`{"x":2}`)),
		"other event":   CheckSignature(key, sig, "7-2", "OrderPlaced", body),
		"other type":    CheckSignature(key, sig, "7-1", "PaymentCompleted", body),
		"other key":     CheckSignature([]byte("other"), sig, "7-1", "OrderPlaced", body),
		"not a base-64": CheckSignature(key, "!!", "7-1", "OrderPlaced", body),
	} {
		if !errors.Is(err, domain.ErrNotTrigger) || !IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent ErrNotTrigger", name, err)
		}
	}
}

// letters plays the dead-letter publisher: it keeps what PoisonQueue hands it.
type letters struct {
	mu   sync.Mutex
	msgs []*message.Message
	tops []string
}

func (l *letters) Publish(topic string, msgs ...*message.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msgs...)
	for range msgs {
		l.tops = append(l.tops, topic)
	}
	return nil
}

func (l *letters) Close() error { return nil }

func (l *letters) all() ([]*message.Message, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs), slices.Clone(l.tops)
}

// TestRouterDecisions runs the router's handlers and middleware on Watermill's in-memory
// pub/sub, one stage per outcome, and checks what becomes of each message: handled, dead-
// lettered at once (bad input, an unknown order, a panic, a wrong trigger — that one
// detached from its order), or retried in process and then nacked for SQS to deliver again.
func TestRouterDecisions(t *testing.T) {
	const retries = 2
	attempts := map[string]*atomic.Int64{}
	stage := func(name string, run func(n int64) error) Stage {
		attempts[name] = &atomic.Int64{}
		return Stage{Name: name, Queue: name, Run: func(ctx context.Context, rec eventstore.Record) error {
			if rec.StreamID != 7 || rec.Version != 1 {
				return fmt.Errorf("stage %s got record %d-%d, want 7-1", name, rec.StreamID, rec.Version)
			}
			return run(attempts[name].Add(1))
		}}
	}
	stages := []Stage{
		stage("handled", func(int64) error { return nil }),
		stage("invalid", func(int64) error { return domain.Invalid("items", "empty") }),
		stage("not-found", func(int64) error { return domain.NotFound("order 7 does not exist") }),
		stage("panics", func(int64) error { panic("a bug") }),
		stage("stale", func(int64) error { return fmt.Errorf("%w: %w", domain.ErrNotTrigger, domain.Invalid("event", "stale")) }),
		stage("flaky", func(n int64) error {
			if n <= retries {
				return errors.New("gateway unavailable")
			}
			return nil
		}),
		stage("down", func(int64) error { return errors.New("gateway unavailable") }),
	}
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	dlq := &letters{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := New(Config{HandlerTimeout: 5 * time.Second, Retries: retries}, pubsub, dlq, metrics.New(), log, stages...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-r.Running()

	body, err := json.Marshal(eventstore.Record{StreamID: 7, Version: 1, Type: "OrderPlaced",
		Event: domain.OrderPlaced{CustomerName: "Ann", Items: []domain.Item{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stages {
		if err := pubsub.Publish(st.Queue, message.NewMessage(watermill.NewUUID(), body)); err != nil {
			t.Fatal(err)
		}
	}
	// A body that is no event message is dead-lettered before any stage runs.
	if err := pubsub.Publish("handled", message.NewMessage(watermill.NewUUID(), []byte("not json"))); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs, _ := dlq.all()
		if len(msgs) >= 5 && attempts["down"].Load() > 2*(retries+1) && attempts["flaky"].Load() == retries+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	msgs, topics := dlq.all()
	got := map[string]string{} // poisoned topic → reason
	for i, m := range msgs {
		from := m.Metadata.Get(middleware.PoisonedTopicKey)
		if topics[i] != from+queues.DLQSuffix {
			t.Errorf("a letter from %s went to %s, want %s", from, topics[i], from+queues.DLQSuffix)
		}
		if detached := m.Metadata.Get(deadletter.MetaDetached) != ""; detached != (from == "stale") {
			t.Errorf("letter from %s: detached %v", from, detached)
		}
		if _, dup := got[from]; dup && from != "handled" {
			t.Errorf("%s dead-lettered twice", from)
		}
		got[from] = m.Metadata.Get(middleware.ReasonForPoisonedKey)
	}
	for _, q := range []string{"invalid", "not-found", "panics", "stale", "handled"} {
		if _, ok := got[q]; !ok {
			t.Errorf("nothing from %s was dead-lettered; letters: %v", q, got)
		}
	}
	if len(msgs) != 5 {
		t.Errorf("%d letters, want 5 (the four permanent failures and the malformed body): %v", len(msgs), got)
	}
	for _, q := range []string{"invalid", "not-found", "panics", "stale"} {
		if n := attempts[q].Load(); n != 1 {
			t.Errorf("%s ran %d times, want once: a permanent failure is not retried", q, n)
		}
	}
	if n := attempts["handled"].Load(); n != 1 {
		t.Errorf("handled ran %d times, want once (the malformed body must not reach it)", n)
	}
	if n := attempts["flaky"].Load(); n != retries+1 {
		t.Errorf("flaky ran %d times, want %d: retried in process until it succeeds", n, retries+1)
	}
	if n := attempts["down"].Load(); n <= 2*(retries+1) {
		t.Errorf("down ran %d times, want more than %d: retried, nacked and delivered again, never dead-lettered", n, 2*(retries+1))
	}
}

// TestEachAttemptIsBounded: a stage that never returns on its own is stopped at
// HandlerTimeout, attempt by attempt, and its message retried rather than held for ever.
func TestEachAttemptIsBounded(t *testing.T) {
	var attempts atomic.Int64
	errs := make(chan error, 8)
	st := Stage{Name: "stuck", Queue: "stuck", Run: func(ctx context.Context, _ eventstore.Record) error {
		attempts.Add(1)
		<-ctx.Done()
		select {
		case errs <- ctx.Err():
		default:
		}
		return ctx.Err()
	}}
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	r, err := New(Config{HandlerTimeout: 50 * time.Millisecond, Retries: 1}, pubsub, &letters{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)), st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-r.Running()
	body, err := json.Marshal(eventstore.Record{StreamID: 7, Version: 1, Type: "OrderPlaced",
		Event: domain.OrderPlaced{CustomerName: "Ann", Items: []domain.Item{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pubsub.Publish("stuck", message.NewMessage(watermill.NewUUID(), body)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("attempt %d ended with %v, want its deadline", i+1, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d was never stopped (%d attempts)", i+1, attempts.Load())
		}
	}
}
