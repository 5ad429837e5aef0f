package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/internal/testenv"
	"orderd/projections"
	"orderd/projections/customers"
	"orderd/projections/orders"
)

// replayCmd runs `orderd replay args...` against env as main would, and returns its stdout.
func replayCmd(t *testing.T, env *testenv.Env, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"replay"}, args...), env.Getenv(nil), &out, io.Discard)
	return out.String(), err
}

// TestReplayVerifyCommand: `orderd replay --verify` passes on the live table, names the
// order and column of a corrupted row and fails, and passes again once `orderd replay` has
// rebuilt the table.
func TestReplayVerifyCommand(t *testing.T) {
	env := testenv.New(t)
	feedWriter, err := feed.NewWriter(customers.Topic) // as the service's store: every projection is fed
	if err != nil {
		t.Fatal(err)
	}
	store, err := eventstore.New(env.DB, projections.Orders{}, feedWriter)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var completed domain.OrderID
	for i := 0; i < 5; i++ {
		e := domain.OrderPlaced{CustomerName: fmt.Sprintf("Customer %d", i), Items: []domain.Item{{SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}}, TotalCents: 899}
		id, err := store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{e})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []eventstore.Decide{
			func(o *domain.Order) ([]domain.Event, error) {
				return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "p"})
			},
			func(o *domain.Order) ([]domain.Event, error) {
				return o.Reserve(domain.ReservationOutcome{Reserved: true})
			},
			func(o *domain.Order) ([]domain.Event, error) { return o.RecordEmail("c@example.com", "<m@x>") },
		}[:i%4] {
			if _, err := store.Update(ctx, id, eventstore.Metadata{}, d); err != nil {
				t.Fatal(err)
			}
		}
		if i%4 == 3 {
			completed = id
		}
	}

	out, err := replayCmd(t, env, "--verify")
	if err != nil || !strings.Contains(out, "5 orders; the live table has 5 rows; no differences") {
		t.Fatalf("verify of a correct table: %v\n%s", err, out)
	}

	env.MustExec(t, `UPDATE orders SET order_status = 'pending' WHERE order_id = ?`, completed)
	out, err = replayCmd(t, env, "--verify")
	if !errors.Is(err, errDifferences) {
		t.Errorf("verify of a corrupted table returned %v, want errDifferences (a non-zero exit)", err)
	}
	want := fmt.Sprintf(`order %d: order_status: live "pending", rebuilt "completed"`, completed)
	if !strings.Contains(out, want+"\n") || !strings.Contains(out, "1 differences") {
		t.Errorf("verify output lacks %q and a count:\n%s", want, out)
	}

	out, err = replayCmd(t, env)
	if err != nil || !strings.Contains(out, "rebuilt orders from") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if out, err := replayCmd(t, env, "--verify"); err != nil {
		t.Errorf("verify after the rebuild: %v\n%s", err, out)
	}
	if _, err := replayCmd(t, env, "extra"); err == nil {
		t.Error("replay with a stray argument succeeded")
	}

	// The customers projection, by name: the replay above built it (its feed had no
	// consumer); a damaged row is named, and a replay of that projection alone repairs it.
	env.MustExec(t, `UPDATE customer_orders SET total_cents = 1 WHERE order_id = ?`, completed)
	out, err = replayCmd(t, env, "--verify", "--projection", "customers")
	want = fmt.Sprintf(`customer_orders: order %d: total_cents: live "1", rebuilt "899"`, completed)
	if !errors.Is(err, errDifferences) || !strings.Contains(out, want+"\n") || strings.Contains(out, "verify: ") {
		t.Errorf("verify of the customers projection: %v, output lacks %q or verified orders too:\n%s", err, want, out)
	}
	out, err = replayCmd(t, env, "--projection", "customers")
	if err != nil || !strings.Contains(out, "rebuilt customers from") || strings.Contains(out, "rebuilt orders") {
		t.Fatalf("replay of the customers projection: %v\n%s", err, out)
	}
	if out, err := replayCmd(t, env, "--verify"); err != nil || !strings.Contains(out, "verify customers: ") {
		t.Errorf("verify of every projection after the rebuild: %v\n%s", err, out)
	}
	if _, err := replayCmd(t, env, "--projection", "nope"); err == nil || !strings.Contains(err.Error(), "orders, customers") {
		t.Errorf("replay of an unknown projection: %v; want an error naming the known ones", err)
	}
}

// TestProgressLines: off a terminal, progress is plain lines with the count, the total,
// the rate and an ETA.
func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgressPrinter(&b, "replay", 1_000_000)
	p.every = 0
	p.start = time.Now().Add(-time.Second)
	p.update(250_000)
	p.clear()
	line := b.String()
	if !strings.HasPrefix(line, "replay: 250,000 of about 1,000,000 events (25%), ") || !strings.Contains(line, " events/s, ETA 3") ||
		strings.Count(line, "\n") != 1 || strings.Contains(line, "\r") {
		t.Errorf("progress line %q", line)
	}
	if g := group(1234567); g != "1,234,567" {
		t.Errorf("group(1234567) = %q", g)
	}
}

// TestReplayDuringLiveLoad rebuilds and verifies the projection back to back while orders
// are placed and move through payment, inventory and email over SQS and SMTP. Every verify
// must pass (each compares the log and the table in one snapshot, however busy the service),
// every order must still end right, with exactly one email, and a verify at the end passes:
// the rebuilt table equals a fresh fold of the log.
func TestReplayDuringLiveLoad(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "PAYMENT_DECLINE_ABOVE_CENTS": "100000"})
	stockBefore := stock(t, env)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var replays, verifies, duringLoad int
	var loopErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var unfinished int
			err := env.DB.QueryRow(`SELECT COUNT(*) FROM orders WHERE NOT (email_sent = 1 AND order_status IN ('completed','payment_failed','cancelled'))`).Scan(&unfinished)
			if err != nil {
				mu.Lock()
				loopErr = err
				mu.Unlock()
				return
			}
			if out, err := replayCmd(t, env, "--quiet"); err != nil {
				mu.Lock()
				loopErr = fmt.Errorf("replay: %w\n%s", err, out)
				mu.Unlock()
				return
			}
			if out, err := replayCmd(t, env, "--verify", "--quiet"); err != nil {
				mu.Lock()
				loopErr = fmt.Errorf("verify during the load: %w\n%s", err, out)
				mu.Unlock()
				return
			}
			mu.Lock()
			replays++
			verifies++
			if unfinished > 0 {
				duringLoad++
			}
			mu.Unlock()
		}
	}()

	orders := placeOrders(t, srv.URL, mailDomain, 300, nil)
	waitFinished(t, env, len(orders), 120*time.Second)
	close(stop)
	wg.Wait()
	if loopErr != nil {
		t.Fatal(loopErr)
	}
	if duringLoad < 2 {
		t.Errorf("only %d of %d replays started while orders were still moving", duringLoad, replays)
	}

	out, err := replayCmd(t, env, "--verify")
	if err != nil {
		t.Fatalf("verify after the load: %v\n%s", err, out)
	}
	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain)
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}
	t.Logf("%d replays and %d verifies (%d while orders were moving) over %d orders, %d events, %d emails; %s",
		replays, verifies, duringLoad, len(orders), events, emails, strings.TrimSpace(out))
}

// TestServeRebuildsAStaleProjection deploys "new projection code": the stored version differs
// from orders.Version, so `orderd serve` rebuilds the table in the background
// while it serves, and records the new version.
func TestServeRebuildsAStaleProjection(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	env.MustExec(t, `UPDATE projections SET version = ? WHERE name = 'orders'`, orders.Version-1)
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + env.ID + ".example"})
	waitFor(t, 30*time.Second, "the stale projection to be rebuilt", func() (bool, string) {
		var v int
		var rebuilt sql.NullTime
		if err := env.DB.QueryRow(`SELECT version, rebuilt_at FROM projections WHERE name = 'orders'`).Scan(&v, &rebuilt); err != nil {
			return false, err.Error()
		}
		return v == orders.Version && rebuilt.Valid, fmt.Sprintf("version %d, rebuilt at %v", v, rebuilt)
	})
	// And it still serves: an order placed afterwards completes in the new table.
	code, body := postJSON(t, srv.URL+"/place-order", `{"customerName":"After rebuild"}`)
	if code != 200 {
		t.Fatalf("place after rebuild: %d %s", code, body)
	}
	waitFinished(t, env, 1, 30*time.Second)
}
