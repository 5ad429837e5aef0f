package ordering_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/mail"
	"orderd/ordering"
	"orderd/payment"
	"orderd/pipeline"
)

// These are the use cases' decisions against in-memory fakes of the interfaces ordering
// declares (StageStore, Stock, OrderLog, Prices): pure logic, no MySQL. The store's own
// rules (optimistic concurrency, the outbox, the projection) are tested on MariaDB in
// eventstore, and the stages end to end in cmd/orderd and app.

// memLog is an event log in memory: it folds a stream, lets decide act on it and appends
// what it returns, as eventstore.Store does (an unknown order is KindNotFound).
type memLog struct {
	streams map[domain.OrderID][]domain.Event
	tx      eventstore.Tx // what UpdateTx hands decide
	updates int
}

func newLog(id domain.OrderID, history ...domain.Event) *memLog {
	return &memLog{streams: map[domain.OrderID][]domain.Event{id: history}}
}

func (l *memLog) Update(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.Decide) ([]eventstore.Record, error) {
	return l.UpdateTx(ctx, id, md, func(_ context.Context, _ eventstore.Tx, o *domain.Order) ([]domain.Event, error) { return decide(o) })
}

func (l *memLog) UpdateTx(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.DecideTx) ([]eventstore.Record, error) {
	l.updates++
	history, ok := l.streams[id]
	if !ok {
		return nil, domain.NotFound("order %d does not exist", id)
	}
	events, err := decide(ctx, l.tx, domain.Rehydrate(id, slices.Clone(history)))
	if err != nil {
		return nil, err
	}
	var out []eventstore.Record
	for _, e := range events {
		history = append(history, e)
		out = append(out, eventstore.Record{StreamID: id, Version: len(history), Type: e.EventType(), Event: e, Metadata: md})
	}
	l.streams[id] = history
	return out, nil
}

// types returns the types of the stream's events, in order.
func (l *memLog) types(id domain.OrderID) []string {
	var out []string
	for _, e := range l.streams[id] {
		out = append(out, e.EventType())
	}
	return out
}

// trigger returns version v of the stream as its stage would receive it.
func (l *memLog) trigger(id domain.OrderID, v int) eventstore.Record {
	e := l.streams[id][v-1]
	return eventstore.Record{StreamID: id, Version: v, Type: e.EventType(), Event: e, Metadata: eventstore.Metadata{CorrelationID: "c1"}}
}

type gateway struct {
	chargeErr, refundErr error
	decline              bool
	charges, refunds     int
}

func (g *gateway) Charge(_ context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
	g.charges++
	if g.chargeErr != nil {
		return payment.ChargeResult{}, g.chargeErr
	}
	if g.decline {
		return payment.ChargeResult{Reason: "insufficient funds"}, nil
	}
	return payment.ChargeResult{Approved: true, PaymentID: "pay_" + req.IdempotencyKey}, nil
}

func (g *gateway) Refund(_ context.Context, req payment.RefundRequest) (string, error) {
	g.refunds++
	return "ref_" + req.IdempotencyKey, g.refundErr
}

type stock struct {
	out domain.ReservationOutcome
	tx  eventstore.Tx // the transaction Reserve was given
}

func (s *stock) Reserve(_ context.Context, tx eventstore.Tx, _ []domain.Item) (domain.ReservationOutcome, error) {
	s.tx = tx
	return s.out, nil
}

type mailer struct {
	err  error
	sent []mail.Message
}

func (m *mailer) Send(_ context.Context, msg mail.Message) error {
	if m.err != nil {
		return m.err
	}
	m.sent = append(m.sent, msg)
	return nil
}

// fakeTx stands for the append's transaction; only its identity matters here.
type fakeTx struct{ eventstore.Tx }

var book = domain.Item{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}

func placed(t *testing.T, p domain.Placement) []domain.Event {
	t.Helper()
	events, err := domain.Place(p)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

type rig struct {
	log    *memLog
	gw     *gateway
	stock  *stock
	mail   *mailer
	stages *ordering.Stages
}

func newRig(t *testing.T, history ...domain.Event) *rig {
	t.Helper()
	r := &rig{log: newLog(7, history...), gw: &gateway{}, stock: &stock{out: domain.ReservationOutcome{Reserved: true}}, mail: &mailer{}}
	r.log.tx = &fakeTx{}
	var err error
	r.stages, err = ordering.NewStages(ordering.StagesConfig{Store: r.log, Catalog: r.stock, Gateway: r.gw, Mailer: r.mail,
		MailFrom: "shop@example.com", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs the default pipeline's stage for component on version v of order 7.
func (r *rig) run(component string, v int) error {
	st := pipeline.MustLookup(component)
	return st.Func(r.stages)(context.Background(), r.log.trigger(7, v))
}

func TestStagesRefuseWhatIsNotTheTrigger(t *testing.T) {
	r := newRig(t, placed(t, domain.Placement{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: []domain.Item{book}})...)
	if err := r.run(pipeline.Payment, 1); err != nil {
		t.Fatalf("charge: %v", err)
	}
	if got := r.log.types(7); !slices.Equal(got, []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted}) || r.gw.charges != 1 {
		t.Fatalf("after the charge: log %v, %d charges", got, r.gw.charges)
	}

	// A redelivered OrderPlaced is older than the log's latest event: acknowledged, no
	// second charge.
	if err := r.run(pipeline.Payment, 1); err != nil || r.gw.charges != 1 || len(r.log.types(7)) != 2 {
		t.Errorf("redelivery: %v, %d charges, log %v", err, r.gw.charges, r.log.types(7))
	}

	ctx := context.Background()
	payment := pipeline.MustLookup(pipeline.Payment)
	for name, trigger := range map[string]eventstore.Record{
		"a version the log does not have": {StreamID: 7, Version: 3, Type: domain.TypeInventoryReserved},
		"a type the log does not have":    {StreamID: 7, Version: 2, Type: domain.TypeInventoryReservationFailed},
		"a trigger of another stage":      r.log.trigger(7, 2), // PaymentCompleted is inventory's
		"an order nobody placed":          {StreamID: 99, Version: 1, Type: domain.TypeOrderPlaced},
	} {
		err := payment.Func(r.stages)(ctx, trigger)
		if !errors.Is(err, domain.ErrNotTrigger) || domain.ErrorKind(err) == domain.KindUnavailable {
			t.Errorf("%s: %v, want a permanent domain.ErrNotTrigger", name, err)
		}
	}
	if len(r.log.types(7)) != 2 || r.gw.charges != 1 {
		t.Errorf("refused triggers changed the order: log %v, %d charges", r.log.types(7), r.gw.charges)
	}
}

func TestPaymentGatewayErrors(t *testing.T) {
	order := placed(t, domain.Placement{CustomerName: "Ann", Items: []domain.Item{book}})
	for _, c := range []struct {
		name    string
		gw      gateway
		kind    domain.Kind // of the stage's error; KindInternal with no error
		log     []string
		reason  string
		noError bool
	}{
		{name: "approved", noError: true, log: []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted}},
		{name: "declined", gw: gateway{decline: true}, noError: true, log: []string{domain.TypeOrderPlaced, domain.TypePaymentFailed}, reason: "insufficient funds"},
		{name: "refused for good", gw: gateway{chargeErr: payment.Permanent(errors.New("402"), "card reported stolen")}, noError: true,
			log: []string{domain.TypeOrderPlaced, domain.TypePaymentFailed}, reason: "card reported stolen"},
		{name: "outage", gw: gateway{chargeErr: errors.New("connection reset")}, kind: domain.KindUnavailable, log: []string{domain.TypeOrderPlaced}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, order...)
			*r.gw = c.gw
			err := r.run(pipeline.Payment, 1)
			if c.noError != (err == nil) || (err != nil && domain.ErrorKind(err) != c.kind) {
				t.Errorf("error %v (kind %v), want kind %v", err, domain.ErrorKind(err), c.kind)
			}
			if got := r.log.types(7); !slices.Equal(got, c.log) {
				t.Errorf("log %v, want %v", got, c.log)
			}
			if c.reason != "" {
				if f, ok := r.log.streams[7][1].(domain.PaymentFailed); !ok || f.Reason != c.reason {
					t.Errorf("PaymentFailed %+v, want reason %q", r.log.streams[7][1], c.reason)
				}
			}
		})
	}
}

func TestRefundErrors(t *testing.T) {
	history := append(placed(t, domain.Placement{CustomerName: "Ann", Items: []domain.Item{book}}),
		domain.PaymentCompleted{PaymentID: "pay_1", AmountCents: 2598}, domain.InventoryReservationFailed{Reason: "out of stock"})
	for _, c := range []struct {
		name string
		err  error
		kind domain.Kind
	}{
		{"refused for good", payment.Permanent(errors.New("400"), "refund window closed"), domain.KindInvalid}, // dead-lettered
		{"outage", errors.New("timeout"), domain.KindUnavailable},                                              // retried
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, history...)
			r.gw.refundErr = c.err
			err := r.run(pipeline.Payment, 3)
			if domain.ErrorKind(err) != c.kind {
				t.Errorf("error %v (kind %v), want kind %v", err, domain.ErrorKind(err), c.kind)
			}
			if c.kind == domain.KindInvalid && !strings.Contains(err.Error(), "refund window closed") {
				t.Errorf("error %v does not give the gateway's reason", err)
			}
			if len(r.log.types(7)) != 3 {
				t.Errorf("log %v: nothing may be appended", r.log.types(7))
			}
		})
	}
}

func TestInventoryReservesInTheAppendsTransaction(t *testing.T) {
	history := append(placed(t, domain.Placement{CustomerName: "Ann", Items: []domain.Item{book}}), domain.PaymentCompleted{PaymentID: "pay_1"})
	for _, reserved := range []bool{true, false} {
		r := newRig(t, history...)
		r.stock.out = domain.ReservationOutcome{Reserved: reserved, Reason: map[bool]string{false: "out of stock"}[reserved]}
		if err := r.run(pipeline.Inventory, 2); err != nil {
			t.Fatal(err)
		}
		if r.stock.tx != r.log.tx {
			t.Errorf("Reserve was given %v, not the append's transaction", r.stock.tx)
		}
		want := map[bool]string{true: domain.TypeInventoryReserved, false: domain.TypeInventoryReservationFailed}[reserved]
		if got := r.log.types(7); len(got) != 3 || got[2] != want {
			t.Errorf("reserved=%v: log %v, want %s last", reserved, got, want)
		}
	}
}

func TestEmail(t *testing.T) {
	history := append(placed(t, domain.Placement{CustomerName: "Seed"}), domain.PaymentCompleted{}, domain.InventoryReserved{})
	r := newRig(t, history...)
	r.mail.err = errors.New("dial tcp: connection refused")
	if err := r.run(pipeline.Email, 3); domain.ErrorKind(err) != domain.KindUnavailable || len(r.log.types(7)) != 3 {
		t.Errorf("mail server down: %v, log %v; want a retry and nothing appended", err, r.log.types(7))
	}
	r.mail.err = nil
	if err := r.run(pipeline.Email, 3); err != nil {
		t.Fatal(err)
	}
	// An order placed without an address notifies the shop.
	if len(r.mail.sent) != 1 || r.mail.sent[0].To != "shop@example.com" || r.mail.sent[0].MessageID != "<order-7-v3@example.com>" {
		t.Errorf("sent %+v", r.mail.sent)
	}
	if sent, ok := r.log.streams[7][3].(domain.EmailSent); !ok || sent.MessageID != r.mail.sent[0].MessageID {
		t.Errorf("appended %+v, want EmailSent with the message's id", r.log.streams[7][3])
	}
}

// TestTakeRunsANewStagesDecision is what a stage that is not built in relies on: Take
// checks the trigger against the stage's own spec, and appends what its decision returns.
func TestTakeRunsANewStagesDecision(t *testing.T) {
	history := append(placed(t, domain.Placement{CustomerName: "Ann"}), domain.PaymentCompleted{}, domain.InventoryReserved{})
	r := newRig(t, history...)
	spec := ordering.StageSpec{Name: "gift-wrap", Triggers: []string{domain.TypeInventoryReserved}, Produces: []string{domain.TypeEmailFailed}}
	decided := 0
	decide := func(_ context.Context, o *domain.Order) ([]domain.Event, error) {
		decided++
		if o.Version() != 3 || o.LastEventType() != domain.TypeInventoryReserved {
			t.Errorf("decide saw version %d, last %s", o.Version(), o.LastEventType())
		}
		return []domain.Event{domain.EmailFailed{Template: "wrapped"}}, nil // any event will do: only its type is looked at
	}
	if err := r.stages.Take(context.Background(), spec, r.log.trigger(7, 3), decide); err != nil || decided != 1 || len(r.log.types(7)) != 4 {
		t.Fatalf("take: %v, decided %d times, log %v", err, decided, r.log.types(7))
	}
	// The event it appended is not one of its triggers: a second run refuses it.
	err := r.stages.Take(context.Background(), spec, r.log.trigger(7, 4), decide)
	if !errors.Is(err, domain.ErrNotTrigger) || decided != 1 {
		t.Errorf("a trigger the stage does not accept: %v, decided %d times", err, decided)
	}
}

// TestTakeRefusesWhatTheStageDoesNotProduce: an event the stage's entry does not list would
// have no route (or the wrong one); it is refused as a permanent error and nothing is appended.
func TestTakeRefusesWhatTheStageDoesNotProduce(t *testing.T) {
	history := append(placed(t, domain.Placement{CustomerName: "Ann"}), domain.PaymentCompleted{}, domain.InventoryReserved{})
	r := newRig(t, history...)
	spec := ordering.StageSpec{Name: "gift-wrap", Triggers: []string{domain.TypeInventoryReserved}, Produces: []string{"GiftWrapped"}}
	err := r.stages.Take(context.Background(), spec, r.log.trigger(7, 3), func(context.Context, *domain.Order) ([]domain.Event, error) {
		return []domain.Event{domain.EmailFailed{}}, nil
	})
	if domain.ErrorKind(err) != domain.KindInvalid || len(r.log.types(7)) != 3 {
		t.Errorf("take: %v (kind %v), log %v; want KindInvalid and nothing appended", err, domain.ErrorKind(err), r.log.types(7))
	}
}

// memOrders is an OrderLog in memory: ids by idempotency key, and capability hashes.
type memOrders struct {
	byKey  map[string]domain.OrderID
	access map[domain.OrderID][][]byte
	calls  int
}

func (m *memOrders) Create(_ context.Context, req eventstore.CreateRequest, _ []domain.Event) (domain.OrderID, error) {
	m.calls++
	if id, ok := m.byKey[req.IdempotencyKey]; ok && req.IdempotencyKey != "" {
		return id, eventstore.ErrAlreadyCreated
	}
	id := domain.OrderID(len(m.access) + 1)
	m.byKey[req.IdempotencyKey] = id
	m.access[id] = append(m.access[id], req.AccessHash)
	return id, nil
}

func (m *memOrders) GrantAccess(_ context.Context, id domain.OrderID, hash []byte) error {
	m.access[id] = append(m.access[id], hash)
	return nil
}

func (m *memOrders) HasAccess(_ context.Context, id domain.OrderID, hash []byte) (bool, error) {
	m.calls++
	return slices.ContainsFunc(m.access[id], func(h []byte) bool { return string(h) == string(hash) }), nil
}

// prices prices every SKU at 500 cents but SKU-GONE, which the catalogue does not sell.
type prices struct{}

func (prices) Price(_ context.Context, items []domain.Item) ([]domain.Item, error) {
	out := slices.Clone(items)
	for i := range out {
		if out[i].SKU == "SKU-GONE" {
			return nil, domain.Invalid("items", "unknown SKU %s", out[i].SKU)
		}
		out[i].UnitPriceCents = 500
	}
	return out, nil
}

func TestPlacer(t *testing.T) {
	ctx := context.Background()
	orders := &memOrders{byKey: map[string]domain.OrderID{}, access: map[domain.OrderID][][]byte{}}
	p, err := ordering.NewPlacer(orders, prices{})
	if err != nil {
		t.Fatal(err)
	}
	req := ordering.PlaceRequest{Placement: domain.Placement{CustomerName: "Ann", Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 1}}},
		IdempotencyKey: "k1", RequestHash: "h1"}
	first, err := p.Place(ctx, req)
	if err != nil || !first.Created || first.ID == 0 {
		t.Fatalf("first placement: %+v, %v", first, err)
	}
	again, err := p.Place(ctx, req)
	if err != nil || again.Created || again.ID != first.ID || again.Access == first.Access {
		t.Fatalf("the same key again: %+v, %v; want the first id, not created, a new capability", again, err)
	}
	for _, token := range []string{first.Access, again.Access} {
		if ok, err := p.CanRead(ctx, first.ID, token); !ok || err != nil {
			t.Errorf("capability %s does not read its order: %v, %v", token, ok, err)
		}
	}
	if ok, _ := p.CanRead(ctx, first.ID+1, first.Access); ok {
		t.Error("a capability reads another order")
	}

	// Refused before the log is asked: a malformed placement, an unknown SKU, a token not of
	// the capability's form.
	calls := orders.calls
	for name, bad := range map[string]domain.Placement{
		"no name":     {Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 1}}},
		"unknown SKU": {CustomerName: "Ann", Items: []domain.Item{{SKU: "SKU-GONE", Quantity: 1}}},
	} {
		if _, err := p.Place(ctx, ordering.PlaceRequest{Placement: bad}); domain.ErrorKind(err) != domain.KindInvalid {
			t.Errorf("%s: %v, want KindInvalid", name, err)
		}
	}
	if ok, err := p.CanRead(ctx, first.ID, "not-a-capability"); ok || err != nil {
		t.Errorf("a malformed token: %v, %v", ok, err)
	}
	if orders.calls != calls {
		t.Errorf("the log was asked %d times for requests refused up front", orders.calls-calls)
	}
}
