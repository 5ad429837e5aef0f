package main

import (
	"context"
	"testing"

	"orderd/internal/testenv"
)

// TestBackgroundReadsReadNoTableWhole: over 20,000 orders, what runs on its own in every
// process — a /metrics scrape, a sweep for stuck orders, a retention pass with nothing
// expired — reads about as many rows as it has work, not the table. (The dashboard's calls
// are checked by handlers.TestDashboardReadsNoTableWhole.)
func TestBackgroundReadsReadNoTableWhole(t *testing.T) {
	env := testenv.New(t)
	const orders, pending = 20_000, 20
	env.FillOrders(t, orders, pending)
	db := env.OneConnection(t)
	ctx := context.Background()
	state, err := metricsState(db, func(context.Context) (map[string]int, error) { return nil, nil })
	must(t, err)
	if _, err := state.OrderCounts(ctx); err != nil { // counts the terminal statuses once
		t.Fatal(err)
	}
	cfg, err := loadConfig(func(string) string { return "" })
	must(t, err)
	a := buildRelay(t, cfg, db)
	sweeper, cleaner := a.Sweeper, a.Cleaner

	for _, c := range []struct {
		what string
		run  func() error
	}{
		{"metrics: orders by status", func() error { _, err := state.OrderCounts(ctx); return err }},
		{"metrics: outbox backlog", func() error { _, _, err := state.OutboxBacklog(ctx); return err }},
		{"metrics: projection lag", func() error { _, _, err := state.ProjectionLag(ctx); return err }},
		{"readiness: relay lag", func() error { return relayLag(ctx, db, cfg.ReadyMaxLag) }},
		{"sweeper: find stuck orders", func() error { _, err := sweeper.Sweep(ctx); return err }},
		{"retention pass", func() error { _, _, err := cleaner.Clean(ctx); return err }},
	} {
		var err error
		// The pending orders are the work: each is read a few times at most.
		if n := testenv.RowsRead(t, db, func() { err = c.run() }); err != nil {
			t.Errorf("%s: %v", c.what, err)
		} else if n > 100 {
			t.Errorf("%s read %d rows of a %d-order database, want at most 100", c.what, n, orders)
		} else {
			t.Logf("%s: %d rows read", c.what, n)
		}
	}
}
