package customers_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/internal/testenv"
	"orderd/projections/customers"
)

// The events the topic skips never change what the projection folds from a stream, on any
// path: placed or not, paid or not, refunded, emailed.
func TestSkippedEventsChangeNothing(t *testing.T) {
	skipped := map[string]domain.Event{
		domain.TypePaymentCompleted:           domain.PaymentCompleted{PaymentID: "p", AmountCents: 100},
		domain.TypeInventoryReserved:          domain.InventoryReserved{Items: []domain.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}}},
		domain.TypeInventoryReservationFailed: domain.InventoryReservationFailed{Reason: "short"},
	}
	if len(skipped) != len(customers.Topic.Skip) {
		t.Fatalf("the test knows %d skipped types, the topic skips %v", len(skipped), customers.Topic.Skip)
	}
	placed := domain.OrderPlaced{CustomerName: "Ada", CustomerEmail: "ada@example.com", TotalCents: 100}
	paths := [][]domain.Event{
		{placed},
		{placed, domain.PaymentCompleted{PaymentID: "p"}},
		{placed, domain.PaymentFailed{Reason: "declined"}},
		{placed, domain.PaymentCompleted{PaymentID: "p"}, domain.InventoryReserved{}},
		{placed, domain.PaymentCompleted{PaymentID: "p"}, domain.InventoryReserved{}, domain.EmailSent{To: "ada@example.com"}},
		{placed, domain.PaymentCompleted{PaymentID: "p"}, domain.InventoryReservationFailed{Reason: "short"}, domain.PaymentRefunded{RefundID: "r"}},
		{placed, domain.PaymentFailed{Reason: "declined"}, domain.EmailSent{To: "ada@example.com"}},
	}
	view := func(o *domain.Order) string {
		return fmt.Sprintf("%s|%s|%s|%d", o.CustomerName(), o.CustomerEmail(), o.Status(), o.TotalCents())
	}
	for _, typ := range customers.Topic.Skip {
		e, ok := skipped[typ]
		if !ok {
			t.Fatalf("no sample of skipped type %s", typ)
		}
		for _, path := range paths {
			before := domain.Rehydrate(1, path)
			after := domain.Rehydrate(1, append(slices.Clip(path), e))
			if view(before) != view(after) {
				t.Errorf("%s after %d events changes %s to %s", typ, len(path), view(before), view(after))
			}
		}
	}
}

type rig struct {
	env   *testenv.Env
	store *eventstore.Store
}

func newRig(t *testing.T, hooks ...eventstore.Hook) *rig {
	t.Helper()
	env := testenv.New(t)
	w, err := feed.NewWriter(customers.Topic)
	if err != nil {
		t.Fatal(err)
	}
	s, err := eventstore.New(env.DB, append([]eventstore.Hook{w}, hooks...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{env: env, store: s}
}

// start runs the projection's consumer with handle (customers.Apply, or one around it) until
// the test ends.
func (r *rig) start(t *testing.T, handle feed.Handler, workers int) {
	t.Helper()
	r.env.RunFeed(t, handle, feed.ConsumerConfig{Topic: customers.Topic.Name, Workers: workers, Batch: 5})
}

// paths are the event sequences the pipeline appends after OrderPlaced, each in the groups
// its stages append them in.
var paths = map[string][][]domain.Event{
	"completed": {{domain.PaymentCompleted{PaymentID: "p"}}, {domain.InventoryReserved{}}, {domain.EmailSent{To: "x"}}},
	"declined":  {{domain.PaymentFailed{Reason: "declined"}}, {domain.EmailSent{To: "x"}}},
	"cancelled": {{domain.PaymentCompleted{PaymentID: "p"}}, {domain.InventoryReservationFailed{Reason: "short"}},
		{domain.PaymentRefunded{RefundID: "r"}}, {domain.EmailSent{To: "x"}}},
}

// order places an order for the customer and takes it down path.
func (r *rig) order(ctx context.Context, name, email string, cents int64, path string) error {
	id, err := r.store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{
		domain.OrderPlaced{CustomerName: name, CustomerEmail: email, Items: []domain.Item{}, TotalCents: cents}})
	if err != nil {
		return err
	}
	for _, events := range paths[path] {
		if _, err := r.store.Update(ctx, id, eventstore.Metadata{}, func(*domain.Order) ([]domain.Event, error) { return events, nil }); err != nil {
			return err
		}
	}
	return nil
}

func (r *rig) waitDrained(t *testing.T) {
	t.Helper()
	r.env.WaitFeedDrained(t, customers.Topic.Name)
}

// tables returns both tables' rows as text.
func (r *rig) tables(t *testing.T) []string {
	t.Helper()
	return append(r.env.Strings(t, `SELECT CONCAT_WS('|', order_id, customer_name, customer_email, order_status, total_cents, version)
		FROM customer_orders ORDER BY order_id`),
		r.env.Strings(t, `SELECT CONCAT_WS('|', customer_name, customer_email, orders_placed, orders_completed, completed_cents)
		FROM customers ORDER BY customer_name, customer_email`)...)
}

// checkAgainstLog checks that the projection is the fold of every stream in the log and that
// each customer's totals add up its orders.
func (r *rig) checkAgainstLog(t *testing.T) {
	t.Helper()
	var want []string
	type key struct{ name, email string }
	totals := map[key][3]int64{}
	var keys []key
	ids := r.env.Strings(t, `SELECT DISTINCT stream_id FROM events ORDER BY stream_id`)
	for _, s := range ids {
		var id domain.OrderID
		fmt.Sscan(s, &id)
		_, o, err := r.store.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%d|%s|%s|%s|%d|%d", id, o.CustomerName(), o.CustomerEmail(), o.Status(), o.TotalCents(), o.Version()))
		k := key{o.CustomerName(), o.CustomerEmail()}
		if _, ok := totals[k]; !ok {
			keys = append(keys, k)
		}
		tot := totals[k]
		tot[0]++
		if o.Status() == domain.StatusCompleted {
			tot[1]++
			tot[2] += o.TotalCents()
		}
		totals[k] = tot
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.email, b.email)) })
	for _, k := range keys {
		tot := totals[k]
		want = append(want, fmt.Sprintf("%s|%s|%d|%d|%d", k.name, k.email, tot[0], tot[1], tot[2]))
	}
	if got := r.tables(t); !slices.Equal(got, want) {
		t.Errorf("projection:\n%s\nwant (folded from the log):\n%s", join(got), join(want))
	}
}

func join(lines []string) string { return "  " + strings.Join(lines, "\n  ") }

// Orders of two customers, consumed from a backlog by four workers (so that events of one
// order and of one customer are in several transactions at once, and some of them lose a race
// to a new order's row or end as a deadlock's victim), are each counted once; delivering
// every event again changes nothing.
func TestProjectsEveryOrderOnce(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			for j := range 10 {
				path := []string{"completed", "declined", "cancelled"}[(i+j)%3]
				email := []string{"ada@example.com", "", "bob@example.com"}[j%3]
				if err := r.order(ctx, []string{"Ada", "Bob"}[i%2], email, int64(100*(j+1)), path); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	r.start(t, customers.Apply, 4)
	r.waitDrained(t)
	r.checkAgainstLog(t)
	before := r.tables(t)

	// Every event delivered again, in the log's order: all of them are behind the rows now.
	r.env.MustExec(t, `INSERT INTO event_feed (topic, position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
		SELECT ?, position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at FROM events`, customers.Topic.Name)
	r.waitDrained(t)
	if after := r.tables(t); !slices.Equal(after, before) {
		t.Errorf("a second delivery changed the projection:\n%s\nwas:\n%s", join(after), join(before))
	}
}

// An order's later event handled before its first (the first taken late, by another worker
// or after a failure) brings the row up from the log; the first then changes nothing.
func TestLaterEventFirstFoldsFromTheLog(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.order(ctx, "Ada", "ada@example.com", 1299, "completed"); err != nil {
		t.Fatal(err)
	}
	placed := r.env.Strings(t, `SELECT position FROM event_feed WHERE version = 1`)
	r.env.MustExec(t, `CREATE TABLE held AS SELECT * FROM event_feed WHERE version = 1`)
	r.env.MustExec(t, `DELETE FROM event_feed WHERE version = 1`)
	r.start(t, customers.Apply, 1)
	r.waitDrained(t)
	r.checkAgainstLog(t)
	r.env.MustExec(t, `INSERT INTO event_feed SELECT * FROM held`)
	r.waitDrained(t)
	r.checkAgainstLog(t)
	if len(placed) != 1 {
		t.Errorf("OrderPlaced rows in the feed: %v, want one", placed)
	}
}

// An order whose append commits after a later order's was projected is projected too.
func TestLateCommitIsProjected(t *testing.T) {
	g := testenv.NewGate()
	r := newRig(t, g)
	r.start(t, customers.Apply, 1)
	ctx := context.Background()
	held, done := g.Hold(t, func() error { return r.order(ctx, "Late", "", 500, "completed") })
	if err := r.order(ctx, "Early", "", 700, "completed"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.env.Count(t, `SELECT COUNT(*) FROM customers WHERE customer_name = 'Early' AND orders_completed = 1`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the later order was not projected while the earlier one was held")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM customer_orders WHERE order_id = ?`, held.StreamID); n != 0 {
		t.Fatalf("the held order is projected before its commit")
	}
	g.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.waitDrained(t)
	r.checkAgainstLog(t)
}

// While the projection's handler is held inside its transaction, orders are placed and moved
// on (the held one too) without waiting for it.
func TestAppendsDoNotWaitForTheProjection(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.order(ctx, "Ada", "", 100, "completed"); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.start(t, func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
		if err := customers.Apply(ctx, tx, recs); err != nil {
			return err
		}
		once.Do(func() { close(entered); <-release })
		return nil
	}, 1)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the projection never ran")
	}
	appended := make(chan error, 1)
	go func() { appended <- r.order(ctx, "Ada", "", 200, "cancelled") }()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("an order waited 10 s for the held projection")
	}
	close(release)
	r.waitDrained(t)
	r.checkAgainstLog(t)
}
