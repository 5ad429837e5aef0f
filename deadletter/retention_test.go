package deadletter

import (
	"context"
	"database/sql"
	"reflect"
	"testing"
	"time"

	"orderd/domain"
	"orderd/internal/testenv"
	"orderd/projections/orders"
)

// heads plays the orders read model: where each order stands.
type heads map[domain.OrderID]orders.Head

func (h heads) Heads(_ context.Context, ids []domain.OrderID) (map[domain.OrderID]orders.Head, error) {
	out := map[domain.OrderID]orders.Head{}
	for _, id := range ids {
		if v, ok := h[id]; ok {
			out[id] = v
		}
	}
	return out, nil
}

// TestRemoveOlderReachesLettersBehindHoldingOnes: old letters that still hold their order
// are kept, and however many of them come first (more than one call's limit here) the old
// letters behind them that hold nothing are removed; new letters stay.
func TestRemoveOlderReachesLettersBehindHoldingOnes(t *testing.T) {
	env := testenv.New(t)
	lg, err := NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	orders := heads{
		1: {Version: 2}, 2: {Version: 3}, 3: {Version: 1}, // unfinished, at the letters' versions
		4: {Version: 5},                  // moved on past its letter
		5: {Version: 2, EmailSent: true}, // finished at its letter's version
	}
	for i, l := range []Letter{
		{OrderID: 1, Version: 2, EventID: "holding-1"}, {OrderID: 2, Version: 3, EventID: "holding-2"},
		{OrderID: 3, Version: 1, EventID: "holding-3"}, {OrderID: 4, Version: 2, EventID: "moved-on"},
		{OrderID: 5, Version: 2, EventID: "finished"}, {EventID: "no-order"}, {OrderID: 9, Version: 1, EventID: "unknown-order"},
	} {
		l.Queue, l.EventType, l.Reason, l.DeadAt = "q", "T", "test", now.Add(-time.Hour+time.Duration(i)*time.Second)
		if err := lg.Record(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := lg.Record(ctx, Letter{OrderID: 4, Version: 1, Queue: "q", EventID: "new", EventType: "T", Reason: "test", DeadAt: now}); err != nil {
		t.Fatal(err)
	}
	remove := lg.RemoveOlder(orders)
	clean := func(limit int) int64 {
		t.Helper()
		tx, err := env.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck // no-op after commit
		n, err := remove(ctx, tx, now.Add(-time.Minute), limit)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := clean(2); n != 2 {
		t.Errorf("first call removed %d letters, want its limit, 2", n)
	}
	if got := env.Strings(t, `SELECT event_id FROM dead_letters ORDER BY id`); !reflect.DeepEqual(got,
		[]string{"holding-1", "holding-2", "holding-3", "no-order", "unknown-order", "new"}) {
		t.Errorf("after the first call: %q, want the oldest two that hold nothing gone", got)
	}
	if n := clean(100); n != 2 {
		t.Errorf("second call removed %d letters, want the 2 old ones left that hold nothing", n)
	}
	if got := env.Strings(t, `SELECT event_id FROM dead_letters ORDER BY id`); !reflect.DeepEqual(got,
		[]string{"holding-1", "holding-2", "holding-3", "new"}) {
		t.Errorf("left %q, want the holding letters and the new one", got)
	}
}
