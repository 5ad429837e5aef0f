package orders_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// TestOrderRowAgreesWithTheDomain: the orders state machine is written twice, in the domain's
// fold (domain.Rehydrate) and in the read model's (OrderRow.Apply, which live appends, replay
// and the bulk rebuild's folder all go through). Every history the domain's decisions can
// produce, walked from a placement by every command due at each step, is folded both ways,
// and the two must agree on every prefix: the order's statuses, its email outcome, its
// version and what was placed.
func TestOrderRowAgreesWithTheDomain(t *testing.T) {
	type command struct {
		name string
		run  func(o *domain.Order) ([]domain.Event, error)
	}
	commands := []command{
		{"pay approved", func(o *domain.Order) ([]domain.Event, error) {
			return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay-1"})
		}},
		{"pay declined", func(o *domain.Order) ([]domain.Event, error) {
			return o.Pay(domain.PaymentOutcome{Reason: "card declined"})
		}},
		{"reserve", func(o *domain.Order) ([]domain.Event, error) {
			return o.Reserve(domain.ReservationOutcome{Reserved: true})
		}},
		{"out of stock", func(o *domain.Order) ([]domain.Event, error) {
			return o.Reserve(domain.ReservationOutcome{Reason: "out of stock: SKU-MUG"})
		}},
		{"refund", func(o *domain.Order) ([]domain.Event, error) { return o.Refund("ref-1") }},
		{"email", func(o *domain.Order) ([]domain.Event, error) { return o.RecordEmail(o.CustomerEmail(), "msg-1") }},
		{"email refused", func(o *domain.Order) ([]domain.Event, error) {
			return o.RecordEmailFailure(o.CustomerEmail(), "RCPT TO: 550 5.1.1 no such user")
		}},
	}
	const id domain.OrderID = 7
	paths := map[string]bool{} // the finished paths, by their commands
	var walk func(path string, history []domain.Event)
	walk = func(path string, history []domain.Event) {
		o := domain.Rehydrate(id, history)
		recs := make([]eventstore.Record, len(history))
		for i, e := range history {
			recs[i] = eventstore.Record{Position: int64(i + 1), StreamID: id, Version: i + 1, Type: e.EventType(), Event: e}
		}
		row := orders.FoldOrder(recs)
		got := []any{row.OrderStatus, row.PaymentStatus, row.InventoryStatus, row.EmailSent, row.EmailFailed, row.Version,
			row.CustomerName, row.CustomerEmail, row.TotalCents}
		want := []any{o.Status(), o.PaymentStatus(), o.InventoryStatus(), o.EmailSent(), o.EmailFailed(), o.Version(),
			o.CustomerName(), o.CustomerEmail(), o.TotalCents()}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: row (status, payment, inventory, email sent, email failed, version, name, email, total) = %v, the domain's order = %v",
				path, got, want)
		}
		if !slices.Equal(row.Items, o.Items()) {
			t.Errorf("%s: row's items %v, the domain's order's %v", path, row.Items, o.Items())
		}
		if o.Terminal() != (row.OrderStatus == domain.StatusCompleted || row.OrderStatus == domain.StatusPaymentFailed || row.OrderStatus == domain.StatusCancelled) {
			t.Errorf("%s: the domain's order is terminal=%t, the row's status is %q", path, o.Terminal(), row.OrderStatus)
		}
		due := false
		for _, c := range commands {
			events, err := c.run(o)
			if err != nil {
				continue
			}
			due = true
			walk(path+" → "+c.name, append(append([]domain.Event(nil), history...), events...))
		}
		if !due {
			paths[path] = true
		}
	}
	for _, p := range []domain.Placement{
		{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}}},
		{CustomerName: "Seed"}, // as the seed's POST /place-order places it: a name, nothing else
	} {
		history, err := domain.Place(p)
		if err != nil {
			t.Fatalf("Place(%+v): %v", p, err)
		}
		walk(fmt.Sprintf("placed by %s", p.CustomerName), history)
	}
	// The walk must have reached every outcome, each with the email sent and refused:
	// completed, payment failed and cancelled (out of stock, refunded), for both placements.
	var ends []string
	for p := range paths {
		ends = append(ends, p)
	}
	if len(paths) != 12 {
		t.Errorf("walked %d finished paths, want 12:\n%s", len(paths), strings.Join(ends, "\n"))
	}
}
