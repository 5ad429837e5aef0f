package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
	"orderd/router"
)

// rig is one test's database, queues and event store, with the outbox writer installed.
type rig struct {
	env    *testenv.Env
	qcfg   queues.Config
	client *sqs.Client
	pub    message.Publisher
	store  *eventstore.Store
	route  outbox.Route
}

func newRig(t *testing.T, hooks ...eventstore.Hook) *rig {
	t.Helper()
	return newRigAt(t, testenv.Require(t, "SQS_ENDPOINT"), hooks...)
}

// newRigAt is newRig with the queues at endpoint.
func newRigAt(t *testing.T, endpoint string, hooks ...eventstore.Hook) *rig {
	t.Helper()
	env := testenv.New(t)
	ctx := ctxFor(t)
	// goaws, or a strict front to it.
	qcfg := queues.Config{Endpoint: endpoint, Emulator: queues.Goaws, Region: "us-east-1", Prefix: env.QueuePrefix, VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5}
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, qcfg)
	if err := queues.Ensure(ctx, client, qcfg); err != nil {
		t.Fatalf("create queues: %v", err)
	}
	t.Cleanup(func() {
		for _, q := range qcfg.All() {
			for _, name := range []string{q, q + queues.DLQSuffix} {
				if out, err := client.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String(name)}); err == nil {
					client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}) //nolint:errcheck // best effort
				}
			}
		}
	})
	pub, err := queues.NewPublisher(awsCfg, qcfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	route := router.Route(qcfg)
	w, err := outbox.NewWriter(route)
	if err != nil {
		t.Fatal(err)
	}
	s, err := eventstore.New(env.DB, append([]eventstore.Hook{w}, hooks...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{env: env, qcfg: qcfg, client: client, pub: pub, store: s, route: route}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) relay(t *testing.T, pub message.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	dead, err := deadletter.NewLog(r.env.DB)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := outbox.NewRelay(r.env.DB, pub, dead, slog.New(slog.NewTextHandler(t.Output(), nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

// outboxRow is a row of the outbox table.
type outboxRow struct {
	Position                                 int64
	Queue, EventID, EventType, CorrelationID string
	Body                                     string
	CreatedAt                                time.Time
}

func (r *rig) outboxRows(t *testing.T) []outboxRow {
	t.Helper()
	rows, err := r.env.DB.Query(`SELECT position, queue, event_id, event_type, correlation_id, body, created_at FROM outbox ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var o outboxRow
		if err := rows.Scan(&o.Position, &o.Queue, &o.EventID, &o.EventType, &o.CorrelationID, &o.Body, &o.CreatedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// received is one message taken off a queue.
type received struct {
	Queue string
	Body  string
	Attrs map[string]string
}

func (r *rig) queueURL(t *testing.T, name string) *string {
	t.Helper()
	out, err := r.client.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatalf("queue %s: %v", name, err)
	}
	return out.QueueUrl
}

// receive takes n messages off queue (deleting each), failing if they do not all arrive in
// time, then drains whatever else is there: every publish has returned by the time a test
// receives, so an extra message is a duplicate (or a stray), which checkMessages reports.
func (r *rig) receive(t *testing.T, queue string, n int) []received {
	t.Helper()
	url := r.queueURL(t, queue)
	var out []received
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("queue %s: %d of %d messages arrived within 30 s", queue, len(out), n)
		}
		// One at a time: goaws sometimes answers batches the SDK cannot decode.
		// Long-poll while messages are due; once all are in, a short poll finds any extra.
		var wait int32 = 1
		if len(out) >= n {
			wait = 0
		}
		res, err := r.client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: url, MaxNumberOfMessages: 1, WaitTimeSeconds: wait, MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			t.Fatalf("receive from %s: %v", queue, err)
		}
		if len(res.Messages) == 0 && len(out) >= n {
			break // all expected arrived, and nothing more is waiting
		}
		for _, m := range res.Messages {
			attrs := map[string]string{}
			for k, v := range m.MessageAttributes {
				attrs[k] = aws.ToString(v.StringValue)
			}
			out = append(out, received{Queue: queue, Body: aws.ToString(m.Body), Attrs: attrs})
			if _, err := r.client.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatalf("delete from %s: %v", queue, err)
			}
		}
	}
	r.expectEmpty(t, queue)
	return out
}

// expectEmpty checks that queue holds no message, visible or in flight.
func (r *rig) expectEmpty(t *testing.T, queue string) {
	t.Helper()
	attrs, err := r.client.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: r.queueURL(t, queue),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		t.Fatalf("attributes of %s: %v", queue, err)
	}
	for _, k := range []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible} {
		if v := attrs.Attributes[string(k)]; v != "0" {
			t.Errorf("queue %s: %s = %q, want 0", queue, k, v)
		}
	}
}

type step = eventstore.Decide

var (
	pay step = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "p"})
	}
	decline step = func(o *domain.Order) ([]domain.Event, error) { return o.Pay(domain.PaymentOutcome{Reason: "declined"}) }
	reserve step = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: true})
	}
	short step = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reason: "out of stock"})
	}
	refund step = func(o *domain.Order) ([]domain.Event, error) { return o.Refund("r") }
	email  step = func(o *domain.Order) ([]domain.Event, error) { return o.RecordEmail("c@example.com", "<m@x>") }
)

// order appends an order along steps, every event with the order's correlation id.
func (r *rig) order(t *testing.T, name string, steps ...step) domain.OrderID {
	t.Helper()
	md := eventstore.Metadata{CorrelationID: "corr-" + name, CausationID: "req-" + name}
	mug := domain.Item{SKU: "SKU-MUG", Quantity: 1, UnitPriceCents: 899}
	id, err := r.store.Create(context.Background(), eventstore.CreateRequest{Metadata: md},
		[]domain.Event{domain.OrderPlaced{CustomerName: name, CustomerEmail: "c@example.com", Items: []domain.Item{mug}, TotalCents: 899}})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	for _, s := range steps {
		if _, err := r.store.Update(context.Background(), id, md, s); err != nil {
			t.Fatalf("order %s (%d): %v", name, id, err)
		}
	}
	return id
}

// shop appends orders along every path; together their events cover every event type.
func (r *rig) shop(t *testing.T) []domain.OrderID {
	return []domain.OrderID{
		r.order(t, "completed", pay, reserve, email),       // placed, paid, reserved, emailed
		r.order(t, "declined", decline, email),             // placed, payment failed, emailed
		r.order(t, "cancelled", pay, short, refund, email), // placed, paid, short, refunded, emailed
	}
}

// expected is what the outbox must hold for the streams ids: a row per routed event.
func (r *rig) expected(t *testing.T, ids ...domain.OrderID) []outboxRow {
	t.Helper()
	var out []outboxRow
	for _, id := range ids {
		recs, _, err := r.store.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			q := r.route(rec.Type)
			if q == "" {
				continue
			}
			body, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, outboxRow{Position: rec.Position, Queue: q, EventID: rec.EventID(), EventType: rec.Type,
				CorrelationID: rec.Metadata.CorrelationID, Body: string(body), CreatedAt: rec.OccurredAt})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Position < out[j].Position })
	return out
}

func TestWriterRoutesEvents(t *testing.T) {
	r := newRig(t)
	ids := r.shop(t)
	got := r.outboxRows(t)
	want := r.expected(t, ids...)
	if len(want) != 9 {
		t.Fatalf("test expects 9 routed events (all but the 3 EmailSent), computed %d", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outbox rows:\n got  %+v\n want %+v", got, want)
	}
	byType := map[string]string{}
	for _, row := range got {
		if row.EventType == domain.TypeEmailSent {
			t.Errorf("EmailSent routes nowhere, but the outbox has %s", row.EventID)
		}
		byType[row.EventType] = row.Queue
	}
	// Each event goes to the queue of the stage it triggers, as the pipeline table says.
	wantQueues := map[string]string{}
	for _, st := range pipeline.Stages() {
		for _, tr := range st.Triggers {
			wantQueues[tr] = r.qcfg.Name(st.Queue)
		}
	}
	if !reflect.DeepEqual(byType, wantQueues) {
		t.Errorf("queues by event type: got %v, want %v", byType, wantQueues)
	}
}

// checkMessages checks that msgs are exactly the messages of the outbox rows want: on the
// row's queue, body = the record's JSON, metadata as SQS attributes.
func checkMessages(t *testing.T, msgs []received, want []outboxRow) {
	t.Helper()
	byID := map[string]outboxRow{}
	for _, w := range want {
		byID[w.EventID] = w
	}
	seen := map[string]int{}
	for _, m := range msgs {
		id := m.Attrs[outbox.MetaEventID]
		seen[id]++
		w, ok := byID[id]
		if !ok {
			t.Errorf("unexpected message on %s: attributes %v body %s", m.Queue, m.Attrs, m.Body)
			continue
		}
		if m.Queue != w.Queue {
			t.Errorf("%s arrived on %s, want %s", id, m.Queue, w.Queue)
		}
		if m.Body != w.Body {
			t.Errorf("%s body:\n got  %s\n want %s", id, m.Body, w.Body)
		}
		if m.Attrs[outbox.MetaEventType] != w.EventType || m.Attrs["correlation_id"] != w.CorrelationID || w.CorrelationID == "" {
			t.Errorf("%s attributes %v, want event_type %s, correlation_id %s", id, m.Attrs, w.EventType, w.CorrelationID)
		}
		rec, err := eventstore.DecodeMessage([]byte(m.Body))
		if err != nil || rec.EventID() != id || rec.Position != w.Position {
			t.Errorf("%s: decoded as %+v, %v", id, rec, err)
		}
	}
	for _, w := range want {
		if seen[w.EventID] != 1 {
			t.Errorf("%s was received %d times, want once", w.EventID, seen[w.EventID])
		}
	}
}

// receiveAll takes every message the rows want are expected to produce, queue by queue.
func (r *rig) receiveAll(t *testing.T, want []outboxRow) []received {
	t.Helper()
	perQueue := map[string]int{}
	for _, w := range want {
		perQueue[w.Queue]++
	}
	var msgs []received
	for _, q := range r.qcfg.All() {
		if perQueue[q] == 0 {
			r.expectEmpty(t, q)
			continue
		}
		msgs = append(msgs, r.receive(t, q, perQueue[q])...)
	}
	return msgs
}

func TestRelayPublishesAndDeletes(t *testing.T) {
	r := newRig(t)
	ids := r.shop(t)
	want := r.expected(t, ids...)
	rl := r.relay(t, r.pub, outbox.RelayConfig{})
	n, err := rl.RelayOnce(ctxFor(t))
	if err != nil || n != len(want) {
		t.Fatalf("RelayOnce = %d, %v; want %d, nil", n, err, len(want))
	}
	if rows := r.outboxRows(t); len(rows) != 0 {
		t.Errorf("outbox still holds %d rows after they were published: %+v", len(rows), rows)
	}
	checkMessages(t, r.receiveAll(t, want), want)
	if n, err := rl.RelayOnce(ctxFor(t)); n != 0 || err != nil {
		t.Errorf("RelayOnce on an empty outbox = %d, %v", n, err)
	}
}

// TestRelayPublishesALateCommit: order 1's append takes position p and its outbox row, but
// has not committed when order 2 commits at p+1. The relay publishes order 2 at once and
// order 1 once it commits: nothing is skipped for having committed late.
func TestRelayPublishesALateCommit(t *testing.T) {
	g := testenv.NewGate()
	r := newRig(t, g)
	var id1 domain.OrderID
	held, done := g.Hold(t, func() error {
		var err error
		id1, err = r.store.Create(context.Background(), eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "corr-1"}},
			[]domain.Event{domain.OrderPlaced{CustomerName: "One"}})
		return err
	})
	id2 := r.order(t, "two")
	want2 := r.expected(t, id2)
	if len(want2) != 1 || want2[0].Position <= held.Position {
		t.Fatalf("order 2's row %+v is not after order 1's held position %d", want2, held.Position)
	}

	rl := r.relay(t, r.pub, outbox.RelayConfig{})
	n, err := rl.RelayOnce(ctxFor(t))
	if err != nil || n != 1 {
		t.Fatalf("RelayOnce with order 1 uncommitted = %d, %v; want order 2's row only", n, err)
	}
	checkMessages(t, r.receive(t, r.qcfg.Name(pipeline.PaymentQueue), 1), want2)

	g.Release()
	if err := <-done; err != nil {
		t.Fatalf("order 1's create: %v", err)
	}
	want1 := r.expected(t, id1)
	if len(want1) != 1 || want1[0].Position != held.Position {
		t.Fatalf("order 1's row %+v, want position %d", want1, held.Position)
	}
	n, err = rl.RelayOnce(ctxFor(t))
	if err != nil || n != 1 {
		t.Fatalf("RelayOnce after order 1 committed = %d, %v; want its row", n, err)
	}
	checkMessages(t, r.receive(t, r.qcfg.Name(pipeline.PaymentQueue), 1), want1)
	if rows := r.outboxRows(t); len(rows) != 0 {
		t.Errorf("outbox holds %+v, want nothing", rows)
	}
}

// countingPublisher counts publishes and can hold the first one until told to go on.
type countingPublisher struct {
	message.Publisher
	mu        sync.Mutex
	published int
	first     chan struct{} // closed when the first Publish starts
	firstOnce sync.Once
	wait      <-chan struct{} // the first Publish waits for it, if set
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	started := false
	p.firstOnce.Do(func() { started = true; close(p.first) })
	if started && p.wait != nil {
		<-p.wait
	}
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	p.mu.Lock()
	p.published += len(msgs)
	p.mu.Unlock()
	return nil
}

func (p *countingPublisher) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published
}

// TestConcurrentRelaysPublishEachRowOnce runs two relays at once over one outbox. The first
// holds its claimed batch (its first publish waits) until the second has published from
// another batch: they really overlap, and still no row is published twice.
func TestConcurrentRelaysPublishEachRowOnce(t *testing.T) {
	r := newRig(t)
	var ids []domain.OrderID
	for i := 0; i < 30; i++ {
		ids = append(ids, r.order(t, fmt.Sprintf("o%02d", i), pay))
	}
	want := r.expected(t, ids...)
	if len(want) != 60 {
		t.Fatalf("expected 60 rows, computed %d", len(want))
	}
	secondPublished := make(chan struct{})
	p1 := &countingPublisher{Publisher: r.pub, first: make(chan struct{}), wait: secondPublished}
	p2 := &countingPublisher{Publisher: r.pub, first: make(chan struct{})}
	cfg := outbox.RelayConfig{Batch: 5, Parallel: 4}
	relays := []*outbox.Relay{r.relay(t, p1, cfg), r.relay(t, p2, cfg)}

	ctx := ctxFor(t)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	run := func(i int) {
		defer wg.Done()
		for ctx.Err() == nil {
			n, err := relays[i].RelayOnce(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			if n == 0 {
				var left int
				if err := r.env.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&left); err != nil {
					errs[i] = err
					return
				}
				if left == 0 {
					return
				}
				time.Sleep(5 * time.Millisecond) // the other relay holds what is left; look again
			}
		}
		errs[i] = ctx.Err()
	}
	wg.Add(1)
	go run(0)
	select {
	case <-p1.first: // relay 1 has claimed a batch and holds it
	case <-ctx.Done():
		t.Fatal("relay 1 never published")
	}
	wg.Add(1)
	go run(1)
	select {
	case <-p2.first:
	case <-ctx.Done():
	}
	waitDeadline := time.Now().Add(30 * time.Second)
	for p2.Published() == 0 && time.Now().Before(waitDeadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(secondPublished)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("relay %d: %v", i+1, err)
		}
	}
	if p2.Published() == 0 {
		t.Fatal("relay 2 published nothing while relay 1 held its batch: SKIP LOCKED did not share the work")
	}
	t.Logf("relay 1 published %d, relay 2 published %d", p1.Published(), p2.Published())
	if got := p1.Published() + p2.Published(); got != len(want) {
		t.Errorf("%d publishes for %d rows", got, len(want))
	}
	if rows := r.outboxRows(t); len(rows) != 0 {
		t.Errorf("outbox holds %d rows after both relays finished", len(rows))
	}
	checkMessages(t, r.receiveAll(t, want), want)
}

// failingPublisher refuses every message for one queue.
type failingPublisher struct {
	message.Publisher
	queue string
}

var errQueueDown = errors.New("queue unavailable")

func (p failingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == p.queue {
		return errQueueDown
	}
	return p.Publisher.Publish(topic, msgs...)
}

func TestRelayKeepsRowsItCouldNotPublish(t *testing.T) {
	r := newRig(t)
	ids := r.shop(t)
	want := r.expected(t, ids...)
	down := r.qcfg.Name(pipeline.InventoryQueue)
	var failed, sent []outboxRow
	for _, w := range want {
		if w.Queue == down {
			failed = append(failed, w)
		} else {
			sent = append(sent, w)
		}
	}
	if len(failed) != 2 {
		t.Fatalf("expected 2 rows for %s, computed %d", down, len(failed))
	}

	n, err := r.relay(t, failingPublisher{r.pub, down}, outbox.RelayConfig{}).RelayOnce(ctxFor(t))
	if err == nil {
		t.Error("RelayOnce returned no error although some publishes failed")
	}
	if n != len(want) {
		t.Errorf("RelayOnce claimed %d rows, want %d", n, len(want))
	}
	if rows := r.outboxRows(t); !reflect.DeepEqual(rows, failed) {
		t.Errorf("outbox after a partly failed pass:\n got  %+v\n want the unpublished rows %+v", rows, failed)
	}
	checkMessages(t, r.receiveAll(t, sent), sent)

	// Once the queue is back, the next pass sends what was left, and only that.
	n, err = r.relay(t, r.pub, outbox.RelayConfig{}).RelayOnce(ctxFor(t))
	if err != nil || n != len(failed) {
		t.Errorf("RelayOnce after recovery = %d, %v; want %d, nil", n, err, len(failed))
	}
	if rows := r.outboxRows(t); len(rows) != 0 {
		t.Errorf("outbox holds %+v, want nothing", rows)
	}
	checkMessages(t, r.receiveAll(t, failed), failed)
}
