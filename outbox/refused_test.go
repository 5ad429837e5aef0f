package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/strictsqs"
	"orderd/internal/testenv"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
)

// TestRelayDeadLettersWhatSQSRefuses plants, among eight good messages of one batch, rows an
// older release or another producer could have left in the outbox that real SQS refuses — a
// body holding U+FFFF, an empty attribute — and, for another queue, five rows that fit one
// by one but not in one batch. Behind a strict SQS front, one pass must deliver every good
// message, take the refused rows out of the outbox as dead letters with SQS's reason,
// attached to their orders (which then show as stuck), and the next pass relay new rows.
func TestRelayDeadLettersWhatSQSRefuses(t *testing.T) {
	r := newRigAt(t, strictsqs.Start(t, testenv.Require(t, "SQS_ENDPOINT")))
	ctx := ctxFor(t)
	var good []domain.OrderID
	for i := range 4 {
		good = append(good, r.order(t, fmt.Sprintf("good%d", i)))
	}
	badChar, err := r.store.Create(ctx, eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "corr-bad"}},
		[]domain.Event{domain.OrderPlaced{CustomerName: "Ada\uFFFF", Items: []domain.Item{}}})
	if err != nil {
		t.Fatal(err)
	}
	blankAttr := r.order(t, "blank")
	r.env.MustExec(t, `UPDATE outbox SET event_type = '' WHERE event_id = ?`, eventstore.EventID(blankAttr, 1))
	for i := range 4 {
		good = append(good, r.order(t, fmt.Sprintf("good%d", i+4)))
	}
	want := r.expected(t, good...)
	// Five rows of 60 KiB for the email queue: each fits SQS's 256 KiB, five together do not.
	big := strings.Repeat("x", 60<<10)
	for i := range 5 {
		r.env.MustExec(t, `INSERT INTO outbox (position, queue, event_id, event_type, correlation_id, body, created_at)
			VALUES (?, ?, ?, 'InventoryReserved', 'corr-big', ?, NOW(6))`, 1_000_000+i, r.qcfg.Name(pipeline.EmailQueue), fmt.Sprintf("big-%d", i), big)
	}

	batchPub, err := queues.NewBatchPublisher(r.client)
	if err != nil {
		t.Fatal(err)
	}
	rl := r.relay(t, batchPub, outbox.RelayConfig{})
	n, err := rl.RelayOnce(ctx)
	if err != nil || n != 15 {
		t.Fatalf("RelayOnce = %d, %v; want all 15 rows claimed and settled", n, err)
	}
	if rows := r.outboxRows(t); len(rows) != 0 {
		t.Errorf("the outbox still holds %d rows: %+v", len(rows), rows)
	}
	checkMessages(t, r.receive(t, r.qcfg.Name(pipeline.PaymentQueue), len(want)), want)
	// Counted, not received: goaws now and then sends a reply this large cut short.
	attrs, err := r.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: r.queueURL(t, r.qcfg.Name(pipeline.EmailQueue)),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages}})
	if err != nil {
		t.Fatal(err)
	}
	if got := attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)]; got != "5" {
		t.Errorf("%s of the 5 big messages arrived", got)
	}

	dead, err := deadletter.NewLog(r.env.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   domain.OrderID
		want []string
	}{
		{badChar, []string{"refused by SQS", "InvalidMessageContents", "'#xFFFF'"}},
		{blankAttr, []string{"refused by SQS", "InvalidParameterValue", "'event_type' must contain a non-empty value"}},
	} {
		l, err := dead.Stuck(ctx, c.id, 1)
		if err != nil {
			t.Fatal(err)
		}
		if l == nil {
			t.Errorf("order %d is not shown stuck", c.id)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(l.Reason, w) {
				t.Errorf("order %d stuck with reason %q, want it to say %q", c.id, l.Reason, w)
			}
		}
		if l.Queue != r.qcfg.Name(pipeline.PaymentQueue) || l.EventID != eventstore.EventID(c.id, 1) {
			t.Errorf("order %d stuck on %+v", c.id, l)
		}
	}
	if n := r.env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 2 {
		t.Errorf("%d dead letters, want the 2 refused rows", n)
	}

	// The relay is not jammed: a new order's message goes through on the next pass.
	later := r.order(t, "later")
	if n, err := rl.RelayOnce(context.Background()); n != 1 || err != nil {
		t.Fatalf("RelayOnce after the refusals = %d, %v; want 1, nil", n, err)
	}
	laterWant := r.expected(t, later)
	checkMessages(t, r.receive(t, r.qcfg.Name(pipeline.PaymentQueue), 1), laterWant)
}
