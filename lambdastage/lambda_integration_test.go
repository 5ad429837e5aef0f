package lambdastage_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/app"
	"orderd/domain"
	"orderd/internal/mailpit"
	"orderd/internal/testenv"
	"orderd/lambdastage"
	"orderd/mail"
	"orderd/ordering"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
)

// rig is a test's deployment: the three stage functions, a relay (the API server's job in
// AWS), a placer, and an event source mapping emulated over goaws.
type rig struct {
	env    *testenv.Env
	qcfg   queues.Config
	client *sqs.Client
	urls   map[string]string // stage → queue URL
	fns    map[string]*lambdastage.Function
	relay  *outbox.Relay
	placer *ordering.Placer
	mail   *mailpit.Client
	domain string // this test's customers' mail domain
}

func newRig(t *testing.T) *rig {
	t.Helper()
	env := testenv.New(t).WithMessaging(t)
	ctx := ctxFor(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	r := &rig{env: env, urls: map[string]string{}, fns: map[string]*lambdastage.Function{},
		mail: mailpit.New(env.MailpitURL), domain: env.ID + ".example"}
	r.qcfg = queues.Config{Endpoint: env.SQSEndpoint, Emulator: queues.Emulator(env.SQSEmulator), Region: "us-east-1", Prefix: env.QueuePrefix,
		VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5}
	awsCfg, err := queues.AWSConfig(ctx, r.qcfg)
	if err != nil {
		t.Fatal(err)
	}
	r.client = queues.NewClient(awsCfg, r.qcfg)
	if err := queues.Ensure(ctx, r.client, r.qcfg); err != nil {
		t.Fatal(err)
	}
	for _, st := range pipeline.Stages() {
		out, err := r.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(r.qcfg.Name(st.Queue))})
		if err != nil {
			t.Fatal(err)
		}
		r.urls[st.Component] = aws.ToString(out.QueueUrl)
		fn, err := lambdastage.Build(env.DB, lambdastage.Config{Stage: st.Component, Queues: r.qcfg,
			Adapters: app.Adapters{SMTP: mail.SMTPConfig{Addr: env.SMTPAddr}, MailFrom: "shop@" + r.domain, DeclineAboveCents: 100000}}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fn.Close() })
		r.fns[st.Component] = fn
	}
	pub, err := queues.NewBatchPublisher(r.client)
	if err != nil {
		t.Fatal(err)
	}
	// The relay and the placer, as `orderd serve` assembles them.
	a, err := app.Build(app.Config{DB: env.DB, Log: log, Queues: r.qcfg, Components: []string{app.ComponentRelay},
		Relay: app.RelayConfig{Publisher: pub}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	r.relay = a.Relay
	if r.placer, err = ordering.NewPlacer(a.Store, a.Catalog); err != nil {
		t.Fatal(err)
	}
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) place(t *testing.T, name string) domain.OrderID {
	t.Helper()
	placed, err := r.placer.Place(ctxFor(t), ordering.PlaceRequest{Placement: domain.Placement{
		CustomerName: name, CustomerEmail: strings.ToLower(name) + "@" + r.domain,
		Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 1}},
	}, CorrelationID: "test-" + name})
	if err != nil {
		t.Fatalf("place order for %s: %v", name, err)
	}
	return placed.ID
}

// receive takes up to max messages from a stage's queue and turns them into the SQS event
// Lambda's event source mapping would invoke the function with. visibility is short so that
// a receive goaws answers in a shape the SDK cannot read only delays its messages briefly.
func (r *rig) receive(ctx context.Context, t *testing.T, stage string, max int32, visibility int32) events.SQSEvent {
	t.Helper()
	out, err := r.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(r.urls[stage]), MaxNumberOfMessages: max, VisibilityTimeout: visibility,
		MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{"All"},
	})
	if err != nil {
		t.Logf("receive from %s (retried): %v", stage, err)
		return events.SQSEvent{}
	}
	var ev events.SQSEvent
	for _, m := range out.Messages {
		rec := events.SQSMessage{
			MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body),
			Attributes: m.Attributes, MessageAttributes: map[string]events.SQSMessageAttribute{},
			EventSource: "aws:sqs", EventSourceARN: "arn:aws:sqs:us-east-1:000000000000:" + stage,
		}
		for k, v := range m.MessageAttributes {
			rec.MessageAttributes[k] = events.SQSMessageAttribute{StringValue: v.StringValue, DataType: aws.ToString(v.DataType)}
		}
		ev.Records = append(ev.Records, rec)
	}
	return ev
}

// invoke calls the stage's function with ev and, like the event source mapping, deletes
// every record the response does not list as failed. It returns the failed message ids.
func (r *rig) invoke(ctx context.Context, t *testing.T, stage string, ev events.SQSEvent) []string {
	t.Helper()
	resp, err := r.fns[stage].Handler.Handle(ctx, ev)
	if err != nil {
		t.Fatalf("%s function failed the whole batch: %v", stage, err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, m := range ev.Records {
		if !slices.Contains(failed, m.MessageId) {
			del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(string(rune('a' + i))), ReceiptHandle: aws.String(m.ReceiptHandle)})
		}
	}
	if len(del) > 0 {
		if _, err := r.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(r.urls[stage]), Entries: del}); err != nil {
			t.Fatalf("delete from %s: %v", stage, err)
		}
	}
	return failed
}

func (r *rig) eventTypes(t *testing.T, id domain.OrderID) []string {
	t.Helper()
	return r.env.Strings(t, `SELECT event_type FROM events WHERE stream_id = ? ORDER BY version`, id)
}

func (r *rig) status(t *testing.T, id domain.OrderID) string {
	t.Helper()
	var s string
	if err := r.env.DB.QueryRow(`SELECT order_status FROM orders WHERE order_id = ?`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOrderCompletesThroughTheThreeFunctions(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	ids := []domain.OrderID{r.place(t, "Ada"), r.place(t, "Grace")}
	stages := pipeline.Components()
	var invoked []struct {
		stage string
		ev    events.SQSEvent
	}
	done := func() bool {
		for _, id := range ids {
			if r.status(t, id) != "completed" {
				return false
			}
		}
		return true
	}
	for !done() {
		if ctx.Err() != nil {
			t.Fatalf("orders not completed: %v %v", r.eventTypes(t, ids[0]), r.eventTypes(t, ids[1]))
		}
		if _, err := r.relay.RelayOnce(ctx); err != nil {
			t.Fatalf("relay: %v", err)
		}
		for _, st := range stages {
			ev := r.receive(ctx, t, st, 10, 5)
			if len(ev.Records) == 0 {
				continue
			}
			if failed := r.invoke(ctx, t, st, ev); len(failed) > 0 {
				t.Fatalf("%s function failed records %v", st, failed)
			}
			invoked = append(invoked, struct {
				stage string
				ev    events.SQSEvent
			}{st, ev})
		}
	}
	want := []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeEmailSent}
	before := map[domain.OrderID][]string{}
	for _, id := range ids {
		before[id] = r.eventTypes(t, id)
		if !slices.Equal(before[id], want) {
			t.Errorf("order %d: events %v, want %v", id, before[id], want)
		}
	}
	mails, err := r.mail.WaitFor(ctx, "to:"+r.domain, len(ids))
	if err != nil || len(mails) != len(ids) {
		t.Fatalf("emails to %s: %d, want %d (%v)", r.domain, len(mails), len(ids), err)
	}
	t.Logf("2 orders completed through payment, inventory and email functions in %d invocations; events %v; one email each", len(invoked), want)

	// Redelivery: SQS may deliver a batch again (a lost delete, a timeout). Every batch the
	// functions saw, invoked once more, must succeed and change nothing.
	for _, inv := range invoked {
		resp, err := r.fns[inv.stage].Handler.Handle(ctx, inv.ev)
		if err != nil || len(resp.BatchItemFailures) > 0 {
			t.Fatalf("redelivered %s batch: %v %v", inv.stage, err, resp.BatchItemFailures)
		}
	}
	for _, id := range ids {
		if got := r.eventTypes(t, id); !slices.Equal(got, before[id]) {
			t.Errorf("order %d after redelivery: events %v, want %v", id, got, before[id])
		}
	}
	time.Sleep(500 * time.Millisecond) // give a wrongly sent second email time to arrive
	mails, err = r.mail.Search(ctx, "to:"+r.domain)
	if err != nil || len(mails) != len(ids) {
		t.Errorf("after redelivery: %d emails to %s, want %d (%v)", len(mails), r.domain, len(ids), err)
	}
	var stock int
	if err := r.env.DB.QueryRow(`SELECT COUNT(*) FROM events WHERE event_type = ?`, domain.TypeInventoryReserved).Scan(&stock); err != nil || stock != len(ids) {
		t.Errorf("InventoryReserved events: %d (%v), want %d", stock, err, len(ids))
	}
	t.Logf("redelivered all %d batches: no failures, same events, still one email per order", len(invoked))
}

func TestPoisonedRecordFailsAloneAndIsRecorded(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	ids := []domain.OrderID{r.place(t, "Ada"), r.place(t, "Grace")}
	if _, err := r.relay.RelayOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// goaws needs at least one attribute for the SDK to read a message.
	if _, err := r.client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(r.urls[pipeline.Payment]),
		MessageBody: aws.String("not json"), MessageAttributes: map[string]types.MessageAttributeValue{
			outbox.MetaEventType: {DataType: aws.String("String"), StringValue: aws.String("Garbage")}}}); err != nil {
		t.Fatal(err)
	}
	// Gather one batch of all three, as the event source mapping would.
	var ev events.SQSEvent
	for len(ev.Records) < 3 {
		if ctx.Err() != nil {
			t.Fatalf("only %d of 3 messages received", len(ev.Records))
		}
		ev.Records = append(ev.Records, r.receive(ctx, t, pipeline.Payment, 10, 30).Records...)
	}
	var poison string
	for _, m := range ev.Records {
		if m.Body == "not json" {
			poison = m.MessageId
		}
	}
	failed := r.invoke(ctx, t, pipeline.Payment, ev)
	if !slices.Equal(failed, []string{poison}) {
		t.Fatalf("failed records %v, want exactly the poisoned one [%s]", failed, poison)
	}
	for _, id := range ids {
		want := []string{domain.TypeOrderPlaced, domain.TypePaymentCompleted}
		if got := r.eventTypes(t, id); !slices.Equal(got, want) {
			t.Errorf("order %d: events %v, want %v (the good records of the batch commit)", id, got, want)
		}
	}
	var queue, reason string
	if err := r.env.DB.QueryRow(`SELECT queue, reason FROM dead_letters`).Scan(&queue, &reason); err != nil {
		t.Fatalf("dead letter not recorded: %v", err)
	}
	if queue != r.qcfg.Name(pipeline.PaymentQueue) || reason == "" {
		t.Errorf("dead letter: queue %q reason %q", queue, reason)
	}
	// Not deleted: SQS hands it out again (and its RedrivePolicy moves it to the DLQ after
	// maxReceiveCount receives). Make it visible now rather than after 30 s.
	var handle string
	for _, m := range ev.Records {
		if m.MessageId == poison {
			handle = m.ReceiptHandle
		}
	}
	if _, err := r.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(r.urls[pipeline.Payment]),
		ReceiptHandle: aws.String(handle), VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	var again events.SQSEvent
	for len(again.Records) == 0 && ctx.Err() == nil {
		again = r.receive(ctx, t, pipeline.Payment, 10, 30)
	}
	if len(again.Records) != 1 || again.Records[0].Body != "not json" {
		t.Fatalf("after the batch the payment queue holds %d records, want the poisoned one only", len(again.Records))
	}
	t.Logf("batch of 3 with 1 poisoned record: only it failed (%s), the 2 orders were paid, dead letter recorded: %s", poison, reason)
}
