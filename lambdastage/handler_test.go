package lambdastage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	_ "github.com/go-sql-driver/mysql"

	"orderd/app"
	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/mail"
	"orderd/ordering"
	"orderd/outbox"
	"orderd/pipeline"
)

type fakeDead struct {
	mu      sync.Mutex
	letters []deadletter.Letter
}

func (f *fakeDead) Record(_ context.Context, l deadletter.Letter) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.letters = append(f.letters, l)
	return nil
}

// body is a valid event message for order id at version v.
func body(t *testing.T, id domain.OrderID, v int) string {
	t.Helper()
	b, err := eventstore.Record{StreamID: id, Version: v, Type: domain.TypeOrderPlaced, SchemaVersion: 2,
		Event: domain.OrderPlaced{CustomerName: "Ada"}}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandleReportsOnlyFailedRecords(t *testing.T) {
	// The stage's verdict by order id: 1 succeeds, 2 is transient, 3 can never succeed, 4 panics,
	// 5 is not its order's trigger (stale or forged).
	run := func(_ context.Context, rec eventstore.Record) error {
		switch rec.StreamID {
		case 5:
			return fmt.Errorf("%w: %w", domain.ErrNotTrigger, domain.Invalid("version", "beyond the stream"))
		case 2:
			return domain.Unavailable("mysql down")
		case 3:
			return domain.Invalid("type", "not for this stage")
		case 4:
			panic("bug")
		}
		return nil
	}
	dead := &fakeDead{}
	h, err := NewHandler("PaymentStatusQueue", run, dead, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]string{"ApproximateReceiveCount": "1"}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		{MessageId: "ok", Body: body(t, 1, 1), Attributes: first},
		{MessageId: "transient", Body: body(t, 2, 1), Attributes: first},
		{MessageId: "invalid", Body: body(t, 3, 1), Attributes: first},
		{MessageId: "panics", Body: body(t, 4, 1), Attributes: first},
		{MessageId: "malformed", Body: "not json", Attributes: first},
		{MessageId: "forged", Body: body(t, 5, 1), Attributes: first},
		{MessageId: "invalid-again", Body: body(t, 3, 1), Attributes: map[string]string{"ApproximateReceiveCount": "2"}},
	}}
	resp, err := h.Handle(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	if want := []string{"transient", "invalid", "panics", "malformed", "forged", "invalid-again"}; !slices.Equal(failed, want) {
		t.Errorf("failed %v, want %v", failed, want)
	}
	// Permanent failures are recorded once, on their first receive; transient ones never. A
	// message that is not its order's trigger is recorded against no order.
	var got []string
	for _, l := range dead.letters {
		got = append(got, l.EventID)
		if l.Queue != "PaymentStatusQueue" || l.Reason == "" {
			t.Errorf("letter %+v", l)
		}
		if attached := l.OrderID != 0; attached != (l.EventID == "3-1" || l.EventID == "4-1") {
			t.Errorf("letter %s attached to order %d", l.EventID, l.OrderID)
		}
	}
	slices.Sort(got)
	if want := []string{"3-1", "4-1", "5-1", "sqs:malformed"}; !slices.Equal(got, want) {
		t.Errorf("dead letters %v, want %v", got, want)
	}
}

func TestBuildRefusesUnknownStage(t *testing.T) {
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/none") // never connected
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Build(db, Config{Stage: "shipping", Adapters: app.Adapters{SMTP: mail.SMTPConfig{Addr: "127.0.0.1:1"}, MailFrom: "a@b.c"}}, slog.Default()); !errors.Is(err, errUnknownStage) {
		t.Errorf("Build with STAGE=shipping: %v, want an unknown-stage error", err)
	}

	// A pipeline with a shipping stage makes STAGE=shipping a function of its own, built
	// from that stage's entry.
	stages := pipeline.Default().Stages()
	shipping := stages[1]
	shipping.Name, shipping.Component, shipping.Queue, shipping.Steps = "shipping", "shipping", "ShippingQueue", nil
	shipping.Triggers, shipping.Produces = []string{domain.TypeEmailSent}, []string{domain.TypeEmailFailed} // known types no default stage uses
	ran := 0
	shipping.Run = func(*ordering.Stages, context.Context, ordering.StageSpec, eventstore.Record) error {
		ran++
		return nil
	}
	p, err := pipeline.New(append(stages, shipping)...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Stage: "shipping", Pipeline: p, Adapters: app.Adapters{SMTP: mail.SMTPConfig{Addr: "127.0.0.1:1"}, MailFrom: "a@b.c"}}
	fn, err := Build(db, cfg, slog.Default())
	if err != nil {
		t.Fatalf("Build with STAGE=shipping in a pipeline that has it: %v", err)
	}
	defer fn.Close()
	if fn.Handler.queue != "ShippingQueue" {
		t.Errorf("the shipping function consumes %q", fn.Handler.queue)
	}
	if err := fn.Handler.run(context.Background(), eventstore.Record{}); err != nil || ran != 1 {
		t.Errorf("the function ran the entry's Run %d times (%v), want once", ran, err)
	}
}

// TestHandleRefusesUnsignedRecords: with a signing key, a record the relay did not sign
// never reaches the stage; it is failed (left for the dead-letter queue) and recorded against
// no order, while a signed one runs.
func TestHandleRefusesUnsignedRecords(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	var ran []domain.OrderID
	var mu sync.Mutex
	run := func(_ context.Context, rec eventstore.Record) error {
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, rec.StreamID)
		return nil
	}
	dead := &fakeDead{}
	h, err := NewHandler("PaymentStatusQueue", run, dead, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h.key = key
	signed := func(id domain.OrderID, k []byte) events.SQSMessage {
		b := body(t, id, 1)
		sig := outbox.Signature(k, eventstore.EventID(id, 1), domain.TypeOrderPlaced, []byte(b))
		return events.SQSMessage{MessageId: fmt.Sprint("m", id), Body: b, Attributes: map[string]string{"ApproximateReceiveCount": "1"},
			MessageAttributes: map[string]events.SQSMessageAttribute{
				outbox.MetaEventID:   {DataType: "String", StringValue: strp(eventstore.EventID(id, 1))},
				outbox.MetaEventType: {DataType: "String", StringValue: strp(domain.TypeOrderPlaced)},
				outbox.MetaSignature: {DataType: "String", StringValue: strp(sig)},
			}}
	}
	unsigned := signed(2, key)
	delete(unsigned.MessageAttributes, outbox.MetaSignature)
	resp, err := h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{signed(1, key), unsigned, signed(3, []byte(strings.Repeat("x", 32)))}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.BatchItemFailures) != 2 || !slices.Equal(ran, []domain.OrderID{1}) {
		t.Errorf("failed %v, ran %v; want m2 and m3 failed, only order 1 run", resp.BatchItemFailures, ran)
	}
	if len(dead.letters) != 2 {
		t.Errorf("%d dead letters, want 2", len(dead.letters))
	}
	for _, l := range dead.letters {
		if l.OrderID != 0 || !strings.Contains(l.Reason, "signature") {
			t.Errorf("letter %+v: want it attached to no order, with the signature as the reason", l)
		}
	}
}

func strp(s string) *string { return &s }
