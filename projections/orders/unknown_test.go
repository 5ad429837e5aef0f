package orders_test

import (
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// parcelShipped stands for an event type added after this code was written: no fold acts on it.
type parcelShipped struct{ Carrier string }

func (parcelShipped) EventType() string { return "ParcelShipped" }

// An event type the orders row does not act on still advances the row's version, position
// and update time, as the domain's fold counts it in the version, and changes nothing else:
// live appends, replay and verify, which all fold with Apply, agree on it with no edit here.
func TestOrderRowSkipsUnknownEventsConsistently(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	history := []eventstore.Record{
		{StreamID: 7, Version: 1, Position: 10, OccurredAt: at, Type: domain.TypeOrderPlaced,
			Event: domain.OrderPlaced{CustomerName: "Ada", Items: []domain.Item{}, TotalCents: 100}},
		{StreamID: 7, Version: 2, Position: 12, OccurredAt: at.Add(time.Second), Type: domain.TypePaymentCompleted, Event: domain.PaymentCompleted{}},
	}
	before := orders.FoldOrder(history)
	after := orders.FoldOrder(append(history, eventstore.Record{StreamID: 7, Version: 3, Position: 15,
		OccurredAt: at.Add(2 * time.Second), Type: "ParcelShipped", Event: parcelShipped{Carrier: "x"}}))
	if after.Version != 3 || after.LastPosition != 15 || !after.UpdatedAt.Equal(at.Add(2*time.Second)) {
		t.Errorf("after an unknown event: version %d, position %d, updated %s; want 3, 15 and its time", after.Version, after.LastPosition, after.UpdatedAt)
	}
	after.Version, after.LastPosition, after.UpdatedAt = before.Version, before.LastPosition, before.UpdatedAt
	if after.OrderStatus != before.OrderStatus || after.PaymentStatus != before.PaymentStatus || after.FailureReason != before.FailureReason ||
		after.TotalCents != before.TotalCents || after.EmailSent != before.EmailSent {
		t.Errorf("an unknown event changed the row: %+v, was %+v", after, before)
	}
	events := []domain.Event{history[0].Event, history[1].Event, parcelShipped{}}
	if o := domain.Rehydrate(7, events); o.Version() != 3 || o.Status() != before.OrderStatus {
		t.Errorf("the domain's fold: version %d, status %s; the row's: %d, %s", o.Version(), o.Status(), 3, before.OrderStatus)
	}
}
