package testenv

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"orderd/eventstore"
)

// Gate is an event-store hook that, once armed, holds the next append inside its transaction
// (its events have taken their log positions and its outbox rows are written, none committed)
// until released: the way to make a lower position commit after a higher one.
type Gate struct {
	mu          sync.Mutex
	armed       bool
	entered     chan eventstore.Record
	release     chan struct{}
	releaseOnce sync.Once
}

// NewGate returns a gate, not armed.
func NewGate() *Gate {
	return &Gate{entered: make(chan eventstore.Record, 1), release: make(chan struct{})}
}

// Release lets the held append (and any later one) through.
func (g *Gate) Release() { g.releaseOnce.Do(func() { close(g.release) }) }

// AfterAppend implements eventstore.Hook.
func (g *Gate) AfterAppend(_ context.Context, _ *sql.Tx, changes []eventstore.Change) error {
	g.mu.Lock()
	hold := g.armed
	g.armed = false
	g.mu.Unlock()
	if hold {
		g.entered <- changes[0].Appended[0]
		<-g.release
	}
	return nil
}

// Hold starts append in a goroutine with the gate armed and returns the first held record
// once the append sits uncommitted in its transaction, and a channel with append's result.
func (g *Gate) Hold(t testing.TB, append func() error) (eventstore.Record, <-chan error) {
	t.Helper()
	t.Cleanup(g.Release) // before the test's database is dropped, which the held tx would block
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- append() }()
	select {
	case rec := <-g.entered:
		return rec, done
	case err := <-done:
		t.Fatalf("the append to hold finished without reaching the gate: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the append to hold never reached the gate")
	}
	panic("unreachable")
}
