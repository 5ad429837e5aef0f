package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"orderd/app"
	"orderd/domain"
	"orderd/internal/testenv"
	"orderd/ordering"
)

// buildRelay assembles the relay's side as serve does, over db, without running it: its
// publisher goes nowhere.
func buildRelay(t *testing.T, cfg config, db *sql.DB) *app.App {
	t.Helper()
	ac := cfg.app(db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ac.Components = []string{app.ComponentRelay}
	ac.Relay.Publisher = gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	a, err := app.Build(ac)
	must(t, err)
	t.Cleanup(func() { a.Close() })
	return a
}

// TestRetention runs the cleaner serve runs, with the default retentions, over records just
// past and just within them: idempotency keys older than IDEMPOTENCY_TTL are forgotten (and
// the key places a new order), dead letters and re-drive records older than
// DEAD_LETTER_RETENTION are removed, except a dead letter still holding an unfinished order;
// nothing newer is touched.
func TestRetention(t *testing.T) {
	env := testenv.New(t)
	ctx := context.Background()
	cfg, err := loadConfig(func(string) string { return "" })
	must(t, err)
	a := buildRelay(t, cfg, env.DB)
	placer, err := ordering.NewPlacer(a.Store, a.Catalog)
	must(t, err)
	cleaner := a.Cleaner

	place := func(key, hash string) (domain.OrderID, bool, error) {
		placed, err := placer.Place(ctx, ordering.PlaceRequest{Placement: domain.Placement{CustomerName: "Ann"},
			IdempotencyKey: key, RequestHash: hash, CorrelationID: "c-" + key})
		return placed.ID, placed.Created, err
	}
	ids := map[string]domain.OrderID{}
	for _, key := range []string{"expired-1", "expired-2", "fresh", "unkeyed"} {
		k := key
		if key == "unkeyed" {
			k = ""
		}
		id, _, err := place(k, "hash-"+key)
		must(t, err)
		ids[key] = id
	}
	// An hour either side of the TTL.
	env.MustExec(t, `UPDATE order_ids SET created_at = UTC_TIMESTAMP(6) - INTERVAL 25 HOUR WHERE idempotency_key LIKE 'expired-%' OR idempotency_key IS NULL`)
	env.MustExec(t, `UPDATE order_ids SET created_at = UTC_TIMESTAMP(6) - INTERVAL 23 HOUR WHERE idempotency_key = 'fresh'`)

	// Dead letters a day either side of the retention (30 days): the placed orders are
	// pending at version 1, so a letter about version 1 holds its order.
	letter := func(name string, order any, version, daysOld int) {
		env.MustExec(t, `INSERT INTO dead_letters (order_id, version, queue, event_id, event_type, reason, dead_at)
			VALUES (?, ?, 'PaymentStatusQueue', ?, 'OrderPlaced', 'test', UTC_TIMESTAMP(6) - INTERVAL ? DAY)`, order, version, name, daysOld)
	}
	letter("old-moved-on", ids["expired-1"], 0, 31) // the order has moved past it
	letter("old-no-order", nil, 0, 31)              // a message no order could be read from
	letter("old-holding", ids["expired-2"], 1, 31)  // still what holds its order
	letter("new-moved-on", ids["fresh"], 0, 29)
	for _, r := range []struct {
		key     string
		daysOld int
	}{{"expired-1", 31}, {"fresh", 29}} {
		env.MustExec(t, `INSERT INTO order_redrives (order_id, redriven_at) VALUES (?, UTC_TIMESTAMP(6) - INTERVAL ? DAY)`, ids[r.key], r.daysOld)
	}

	removed, ran, err := cleaner.Clean(ctx)
	must(t, err)
	want := map[string]int64{"idempotency keys": 2, "dead letters": 2, "re-drive records": 1}
	if !ran || !reflect.DeepEqual(removed, want) {
		t.Fatalf("cleaned %v (ran %v), want %v", removed, ran, want)
	}
	if got := env.Strings(t, `SELECT idempotency_key FROM order_ids WHERE idempotency_key IS NOT NULL`); !reflect.DeepEqual(got, []string{"fresh"}) {
		t.Errorf("keys left %q, want only the fresh one", got)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM order_ids`); n != 4 {
		t.Errorf("%d order ids left, want all 4 orders", n)
	}
	if got := env.Strings(t, `SELECT event_id FROM dead_letters ORDER BY event_id`); !reflect.DeepEqual(got, []string{"new-moved-on", "old-holding"}) {
		t.Errorf("dead letters left %q, want the new one and the one holding its order", got)
	}
	if got := env.Strings(t, `SELECT order_id FROM order_redrives`); len(got) != 1 || got[0] != fmt.Sprint(ids["fresh"]) {
		t.Errorf("re-drive records left for orders %q, want only order %d's", got, ids["fresh"])
	}

	// An expired key places a new order, even with another body; a fresh one is still bound.
	if id, created, err := place("expired-1", "another body"); err != nil || !created || id == ids["expired-1"] {
		t.Errorf("expired key: order %d (created %v), %v; want a new order", id, created, err)
	}
	if _, _, err := place("fresh", "another body"); domain.ErrorKind(err) != domain.KindConflict {
		t.Errorf("fresh key with another body: %v, want a conflict", err)
	}
	if id, created, err := place("fresh", "hash-fresh"); err != nil || created || id != ids["fresh"] {
		t.Errorf("fresh key replayed: order %d (created %v), %v; want order %d again", id, created, err, ids["fresh"])
	}
	if removed, _, err := cleaner.Clean(ctx); err != nil || removed["idempotency keys"]+removed["dead letters"]+removed["re-drive records"] != 0 {
		t.Errorf("a second pass removed %v (%v), want nothing", removed, err)
	}
	t.Logf("with IDEMPOTENCY_TTL %s and DEAD_LETTER_RETENTION %s: removed %v; kept what is newer and the letter holding an order; an expired key placed a new order",
		cfg.IdempotencyTTL, cfg.DeadLetterRetention, want)
}
