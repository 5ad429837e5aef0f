package main

import (
	"container/heap"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// The log is generated as a shop would have written it: an order is placed every 2 ms and
// its later events follow 30–300 ms apart, so the streams interleave in position order the
// way they do in production (a stream's events are not neighbours in the log).
const (
	placeEvery = 2 * time.Millisecond
	minStep    = 30 * time.Millisecond
	maxStep    = 300 * time.Millisecond
	fillConns  = 4
)

var catalogue = []domain.Item{
	{SKU: "SKU-BOOK", UnitPriceCents: 1299}, {SKU: "SKU-MUG", UnitPriceCents: 899},
	{SKU: "SKU-TSHIRT", UnitPriceCents: 1999}, {SKU: "SKU-POSTER", UnitPriceCents: 4999},
}

// pending is the next event of one order, due at a moment of the simulated clock.
type pending struct {
	due   time.Time
	order *genOrder
}

type genOrder struct {
	id     int
	events []domain.Event
	next   int // index of the next event to emit
	corr   string
}

type dueHeap []pending

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(pending)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// newOrder draws one order and its whole path: 80% completed (4 events), 10% payment
// failed (3), 10% cancelled after a failed reservation (5) — 4 events per order on average.
func newOrder(rng *rand.Rand, id int) *genOrder {
	email := fmt.Sprintf("customer-%d@example.com", id)
	var items []domain.Item
	var total int64
	for n := 1 + rng.IntN(3); n > 0; n-- {
		it := catalogue[rng.IntN(len(catalogue))]
		it.Quantity = 1 + rng.IntN(3)
		items = append(items, it)
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	placed := domain.OrderPlaced{CustomerName: fmt.Sprintf("Customer %d", id), CustomerEmail: email, Items: items, TotalCents: total}
	msgID := func(v int) string { return fmt.Sprintf("<order-%d-v%d@shop.localhost>", id, v) }
	pay := domain.PaymentCompleted{PaymentID: fmt.Sprintf("pay_%d-1", id), AmountCents: total}
	var evs []domain.Event
	switch p := rng.IntN(10); {
	case p == 0:
		evs = []domain.Event{placed,
			domain.PaymentFailed{Reason: fmt.Sprintf("card declined: amount %d exceeds the limit of 100000 cents", total)},
			domain.EmailSent{To: email, MessageID: msgID(2), Template: domain.TemplatePaymentFailed}}
	case p == 1:
		evs = []domain.Event{placed, pay,
			domain.InventoryReservationFailed{Reason: "out of stock: SKU-POSTER"},
			domain.PaymentRefunded{RefundID: fmt.Sprintf("ref_%d-3", id), AmountCents: total},
			domain.EmailSent{To: email, MessageID: msgID(4), Template: domain.TemplateCancelled}}
	default:
		evs = []domain.Event{placed, pay, domain.InventoryReserved{Items: items},
			domain.EmailSent{To: email, MessageID: msgID(3), Template: domain.TemplateConfirmation}}
	}
	return &genOrder{id: id, events: evs, corr: strings.ToUpper(fmt.Sprintf("%026x", rng.Uint64()))}
}

// fill writes a log of about events events (events/4 orders) through eventstore's bulk
// importer, which writes the events and order_ids tables with multi-row INSERTs on several
// connections. Memory stays small: only the orders still in flight on the simulated clock
// are held.
func fill(ctx context.Context, db *sql.DB, events int) (orders int, written int64, err error) {
	orders = max(events/4, 1)
	rng := rand.New(rand.NewPCG(1, 2)) // the same log every run
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	im, err := eventstore.NewImporter(ctx, db, fillConns)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := im.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("fill the log: %w", cerr)
		}
	}()

	h := &dueHeap{}
	var position int64
	emit := func(p pending) error {
		o := p.order
		e := o.events[o.next]
		o.next++
		cause := o.corr
		if o.next > 1 {
			cause = eventstore.EventID(domain.OrderID(o.id), o.next-1)
		}
		position++
		if o.next < len(o.events) {
			heap.Push(h, pending{due: p.due.Add(minStep + time.Duration(rng.Int64N(int64(maxStep-minStep)))), order: o})
		}
		return im.Event(eventstore.Record{Position: position, StreamID: domain.OrderID(o.id), Version: o.next, Event: e,
			Metadata: eventstore.Metadata{CorrelationID: o.corr, CausationID: cause}, OccurredAt: p.due})
	}
	for id := 1; id <= orders && ctx.Err() == nil; id++ {
		now := start.Add(time.Duration(id) * placeEvery)
		for h.Len() > 0 && !(*h)[0].due.After(now) {
			if err := emit(heap.Pop(h).(pending)); err != nil {
				return 0, 0, err
			}
		}
		if err := im.Order(domain.OrderID(id), now); err != nil {
			return 0, 0, err
		}
		if err := emit(pending{due: now, order: newOrder(rng, id)}); err != nil {
			return 0, 0, err
		}
	}
	for h.Len() > 0 {
		if err := emit(heap.Pop(h).(pending)); err != nil {
			return 0, 0, err
		}
	}
	if err := im.Close(); err != nil {
		return 0, 0, fmt.Errorf("fill the log: %w", err)
	}
	return orders, position, ctx.Err()
}
