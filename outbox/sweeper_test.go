package outbox_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/outbox"
	"orderd/projections"
	"orderd/projections/orders"
)

// TestSweepLeavesFinishedOrdersAlone: the sweeper re-drives orders whose email step is still
// due, and never one whose notification the mail server refused for good (EmailFailed): such
// an order is finished, though email_sent stays 0, and re-selecting it on every sweep would
// crowd the orders that do need help out of the sweep's batch.
func TestSweepLeavesFinishedOrdersAlone(t *testing.T) {
	env := testenv.New(t)
	ctx := context.Background()
	writer, err := outbox.NewWriter(func(string) string { return "EmailNotificationQueue" })
	if err != nil {
		t.Fatal(err)
	}
	store, err := eventstore.New(env.DB, projections.Orders{}, writer)
	if err != nil {
		t.Fatal(err)
	}
	var (
		pay = func(o *domain.Order) ([]domain.Event, error) {
			return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "p"})
		}
		decline = func(o *domain.Order) ([]domain.Event, error) { return o.Pay(domain.PaymentOutcome{Reason: "declined"}) }
		reserve = func(o *domain.Order) ([]domain.Event, error) {
			return o.Reserve(domain.ReservationOutcome{Reserved: true})
		}
		send   = func(o *domain.Order) ([]domain.Event, error) { return o.RecordEmail(o.CustomerEmail(), "<m@x>") }
		bounce = func(o *domain.Order) ([]domain.Event, error) {
			return o.RecordEmailFailure(o.CustomerEmail(), "RCPT TO: 550 5.1.1 no such user")
		}
	)
	order := func(steps ...eventstore.Decide) domain.OrderID {
		t.Helper()
		id, err := store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{domain.OrderPlaced{
			CustomerName: "C", CustomerEmail: "c@example.com", Items: []domain.Item{}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range steps {
			if _, err := store.Update(ctx, id, eventstore.Metadata{}, d); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	// The finished orders are the oldest: a sweep that took them for unfinished would spend
	// its whole batch on them and re-drive nothing.
	finished := []domain.OrderID{order(pay, reserve, bounce), order(decline, bounce), order(pay, reserve, send)}
	emailDue := []domain.OrderID{order(pay, reserve), order(decline)}
	env.MustExec(t, `DELETE FROM outbox`)

	// Every order is "unchanged for StuckAfter" at once.
	sw, err := newSweeper(env, store, writer, outbox.SweeperConfig{StuckAfter: time.Nanosecond, Batch: len(emailDue)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := sw.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(emailDue) {
		t.Errorf("the sweep re-drove %d orders, want %d", n, len(emailDue))
	}
	for _, id := range emailDue {
		if env.Count(t, `SELECT COUNT(*) FROM order_redrives WHERE order_id = ?`, id) != 1 ||
			env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id LIKE CONCAT(?, '-%')`, id) != 1 {
			t.Errorf("order %d, its email due, was not re-driven", id)
		}
	}
	for _, id := range finished {
		if env.Count(t, `SELECT COUNT(*) FROM order_redrives WHERE order_id = ?`, id) != 0 {
			t.Errorf("finished order %d was re-driven", id)
		}
	}
}

// newSweeper returns a sweeper over env's database wired as serve wires it: stuck orders
// found through the orders read model, held ones through the dead-letter log.
func newSweeper(env *testenv.Env, store *eventstore.Store, writer *outbox.Writer, cfg outbox.SweeperConfig) (*outbox.Sweeper, error) {
	reads := func(conn *sql.Conn) (outbox.UnfinishedOrders, outbox.HeldOrders, error) {
		orders, err := orders.NewReader(conn)
		if err != nil {
			return nil, nil, err
		}
		held, err := deadletter.NewLog(conn)
		return orders, held, err
	}
	return outbox.NewSweeper(env.DB, store, writer, reads, slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
}

// TestSweepReachesOrdersBehindHeldOnes: orders that a dead letter holds, or that were
// re-driven lately, are passed over, and however many of them come first (more than a
// sweep's batch here) the sweep still reaches the stuck orders behind them.
func TestSweepReachesOrdersBehindHeldOnes(t *testing.T) {
	env := testenv.New(t)
	ctx := context.Background()
	writer, err := outbox.NewWriter(func(string) string { return "PaymentStatusQueue" })
	if err != nil {
		t.Fatal(err)
	}
	store, err := eventstore.New(env.DB, projections.Orders{}, writer)
	if err != nil {
		t.Fatal(err)
	}
	place := func() domain.OrderID {
		t.Helper()
		id, err := store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{domain.OrderPlaced{
			CustomerName: "C", CustomerEmail: "c@example.com", Items: []domain.Item{}}})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	var passed []domain.OrderID
	for range 3 {
		id := place()
		env.MustExec(t, `INSERT INTO dead_letters (order_id, version, queue, event_id, event_type, reason, dead_at)
			VALUES (?, 1, 'PaymentStatusQueue', CONCAT(?, '-1'), 'OrderPlaced', 'test', UTC_TIMESTAMP(6))`, id, id)
		passed = append(passed, id)
	}
	lately := place()
	env.MustExec(t, `INSERT INTO order_redrives (order_id, redriven_at) VALUES (?, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)`, lately)
	passed = append(passed, lately)
	stuck := place()
	env.MustExec(t, `DELETE FROM outbox`)

	sw, err := newSweeper(env, store, writer, outbox.SweeperConfig{StuckAfter: time.Nanosecond, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sw.Sweep(ctx); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v; want the one stuck order re-driven", n, err)
	}
	if env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id = CONCAT(?, '-1')`, stuck) != 1 {
		t.Errorf("stuck order %d was not re-driven", stuck)
	}
	for _, id := range passed {
		if env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id = CONCAT(?, '-1')`, id) != 0 {
			t.Errorf("order %d, held or re-driven lately, was re-driven", id)
		}
	}
}
