package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"orderd/app"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/ordering"
	"orderd/pipeline"
	"orderd/projections"
	"orderd/router"
)

// This file is the worked example of docs/extending.md, "Add a stage": a fourth stage,
// shipping, between inventory and email, defined entirely here — its event type, its
// decision, its entry in a pipeline — and assembled by app.Build like the built-in ones.
// Nothing outside this file knows it exists.

// typeParcelShipped is the toy stage's event.
const typeParcelShipped = "ParcelShipped"

// ParcelShipped records that a reserved order's parcel left the warehouse.
type ParcelShipped struct {
	Carrier  string `json:"carrier"`
	Tracking string `json:"tracking"`
}

// EventType implements domain.Event.
func (ParcelShipped) EventType() string { return typeParcelShipped }

// The store learns the new type as gob learns one: no edit of its codec.
func init() { eventstore.Register[ParcelShipped](1) }

// shipping is the toy stage's entry: triggered by InventoryReserved, it appends
// ParcelShipped. Its function takes its step through ordering.Stages.Take, which reloads the
// order and checks that the trigger is the order's latest event and one this stage accepts,
// exactly as for the built-in stages.
var shipping = pipeline.Stage{
	Name: "shipping-ship-on-inventory-reserved", Component: "shipping", Queue: "ShippingQueue",
	Triggers: []string{domain.TypeInventoryReserved},
	Produces: []string{typeParcelShipped},
	Run: func(s *ordering.Stages, ctx context.Context, spec ordering.StageSpec, trigger eventstore.Record) error {
		return s.Take(ctx, spec, trigger, func(_ context.Context, o *domain.Order) ([]domain.Event, error) {
			return []domain.Event{ParcelShipped{Carrier: "toy-post", Tracking: fmt.Sprintf("TOY%d", o.ID())}}, nil
		})
	},
}

// withShipping returns the default pipeline with shipping between inventory and email: the
// email stage is triggered by ParcelShipped instead of InventoryReserved.
func withShipping(t *testing.T) *pipeline.Pipeline {
	t.Helper()
	var stages []pipeline.Stage
	for _, st := range pipeline.Default().Stages() {
		if st.Component == pipeline.Email {
			st.Triggers[slices.Index(st.Triggers, domain.TypeInventoryReserved)] = typeParcelShipped
			stages = append(stages, shipping)
		}
		stages = append(stages, st)
	}
	p, err := pipeline.New(stages...)
	must(t, err)
	return p
}

// TestToyFourthStage drives orders over HTTP through a pipeline with the toy shipping stage,
// on MariaDB, SQS and Mailpit: completed orders pass through shipping, declined and cancelled
// ones skip it, the emails arrive, the stage's queue and dead-letter queue exist, and a
// replay rebuilds the orders table to the same rows, which --verify's check agrees with.
func TestToyFourthStage(t *testing.T) {
	testenv.EachSQS(t, func(t *testing.T, impl testenv.SQS) {
		p := withShipping(t)
		toyFourthStage(t, startService(t, impl, p, app.Adapters{DeclineAboveCents: 100_000}))
	})
}

func toyFourthStage(t *testing.T, s *service) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The route follows the pipeline value: ParcelShipped goes to the email stage's queue,
	// InventoryReserved to shipping's.
	route := router.Route(s.qcfg)
	if got, want := route(typeParcelShipped), s.qcfg.Name(pipeline.EmailQueue); got != want {
		t.Errorf("ParcelShipped is routed to %q, want %q", got, want)
	}
	if got, want := route(domain.TypeInventoryReserved), s.qcfg.Name("ShippingQueue"); got != want {
		t.Errorf("InventoryReserved is routed to %q, want %q", got, want)
	}
	for _, q := range []string{"ShippingQueue", "ShippingQueue-DLQ"} {
		if _, err := s.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(s.qcfg.Name(q))}); err != nil {
			t.Errorf("queue %s: %v", q, err)
		}
	}

	// Stock for one cancelled order: the poster has 10 in stock.
	const completed = 6
	var ids []domain.OrderID
	for i := range completed {
		ids = append(ids, s.place(t, fmt.Sprintf("ship%d", i), domain.Item{SKU: "SKU-BOOK", Quantity: i + 1}))
	}
	declined := s.place(t, "declined", domain.Item{SKU: "SKU-TSHIRT", Quantity: 60}) // 1199.40 > the 1000.00 limit
	cancelled := s.place(t, "cancelled", domain.Item{SKU: "SKU-POSTER", Quantity: 11})

	want := map[domain.OrderID][]string{
		declined:  {domain.TypeOrderPlaced, domain.TypePaymentFailed, domain.TypeEmailSent},
		cancelled: {domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReservationFailed, domain.TypePaymentRefunded, domain.TypeEmailSent},
	}
	wantStatus := map[domain.OrderID]string{declined: domain.StatusPaymentFailed, cancelled: domain.StatusCancelled}
	for _, id := range ids {
		want[id] = []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, typeParcelShipped, domain.TypeEmailSent}
		wantStatus[id] = domain.StatusCompleted
	}
	// An order's status is final before its email is sent: wait for its whole log.
	waitFor(t, "every order to reach its end", 90*time.Second, func() bool {
		for id, w := range want {
			if status, events := s.order(t, id); status != wantStatus[id] || len(events) < len(w) {
				return false
			}
		}
		return true
	})
	for id, w := range want {
		status, events := s.order(t, id)
		if status != wantStatus[id] || !slices.Equal(events, w) {
			t.Errorf("order %d: %s, log %v; want %s, log %v", id, status, events, wantStatus[id], w)
		}
	}
	if n := s.env.Count(t, `SELECT COUNT(*) FROM events WHERE event_type = ? AND payload LIKE '%toy-post%'`, typeParcelShipped); n != completed {
		t.Errorf("%d ParcelShipped events carry the stage's payload, want %d", n, completed)
	}

	// One email per order, each sent after its parcel left (or after its decline/refund).
	msgs, err := s.mail.WaitFor(ctx, "to:"+s.domain, len(want))
	if err != nil {
		t.Fatalf("emails: %v", err)
	}
	subjects := map[string]int{}
	for _, m := range msgs {
		switch {
		case strings.Contains(m.Subject, "confirmed"):
			subjects["confirmed"]++
		case strings.Contains(m.Subject, "payment declined"):
			subjects["declined"]++
		case strings.Contains(m.Subject, "cancelled"):
			subjects["cancelled"]++
		}
	}
	if subjects["confirmed"] != completed || subjects["declined"] != 1 || subjects["cancelled"] != 1 || len(msgs) != len(want) {
		t.Errorf("emails %v (%d in all), want %d confirmed, 1 declined, 1 cancelled", subjects, len(msgs), completed)
	}

	// The per-customer read model, fed asynchronously, folds the new type as the domain does.
	waitFor(t, "the customers read model to catch up", 30*time.Second, func() bool {
		return s.env.Count(t, `SELECT COUNT(*) FROM customer_orders c
			WHERE c.version = (SELECT MAX(version) FROM events e WHERE e.stream_id = c.order_id)`) == len(want)
	})
	if n := s.env.Count(t, `SELECT COUNT(*) FROM customer_orders WHERE order_status = 'completed'`); n != completed {
		t.Errorf("%d completed orders in customer_orders, want %d", n, completed)
	}

	// Replay: rebuild the orders table from the log, which holds an event type the
	// projection has no case for, and find the same rows; then verify agrees.
	before := ordersTable(t, s.env.DB)
	if _, err := projections.Rebuild(ctx, s.env.DB, nil); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if after := ordersTable(t, s.env.DB); !slices.Equal(before, after) {
		t.Errorf("replay changed the orders table:\nbefore %v\nafter  %v", before, after)
	}
	var diffs []string
	stats, err := projections.Verify(ctx, s.env.DB, projections.VerifyOptions{OnDiff: func(d projections.Difference) { diffs = append(diffs, fmt.Sprint(d)) }})
	if err != nil || stats.Differences != 0 || stats.Orders != int64(len(want)) {
		t.Errorf("verify: %+v, %v; differences %v", stats, err, diffs)
	}
}

// ordersTable returns every row of the orders table, as text, in order id order.
func ordersTable(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT * FROM orders ORDER BY order_id`)
	must(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	must(t, err)
	var out []string
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		must(t, rows.Scan(ptrs...))
		var b strings.Builder
		for i, v := range vals {
			fmt.Fprintf(&b, "%s=%s ", cols[i], v)
		}
		out = append(out, b.String())
	}
	must(t, rows.Err())
	if len(out) == 0 {
		t.Fatal("the orders table is empty")
	}
	return out
}
