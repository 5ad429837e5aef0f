package queues_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"

	"orderd/internal/strictsqs"
	"orderd/internal/testenv"
	"orderd/queues"
)

// strictQueue creates a queue of its own behind a strict SQS front to the shared goaws and
// returns a client of the front and the queue's name and URL.
func strictQueue(t *testing.T) (*sqs.Client, string, *string) {
	t.Helper()
	cfg := queues.Config{Endpoint: strictsqs.Start(t, testenv.Require(t, "SQS_ENDPOINT")), Region: "us-east-1"}
	awsCfg, err := queues.AWSConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, cfg)
	name := "batch-" + testenv.ID()
	// A visibility timeout of a second: a reply goaws cut short hides its message that long.
	out, err := client.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{"VisibilityTimeout": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}) }) //nolint:errcheck // best effort
	return client, name, out.QueueUrl
}

// drain receives the queue's messages until n have come (or 20 s passed) and returns their
// bodies.
func drain(t *testing.T, client *sqs.Client, url *string, n int) []string {
	t.Helper()
	var bodies []string
	for deadline := time.Now().Add(20 * time.Second); len(bodies) < n && time.Now().Before(deadline); {
		out, err := client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 1, WaitTimeSeconds: 1})
		var cut *smithy.DeserializationError
		if errors.As(err, &cut) {
			continue // goaws now and then cuts a large reply short; its message comes back
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			bodies = append(bodies, aws.ToString(m.Body))
			client.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle}) //nolint:errcheck // received
		}
	}
	return bodies
}

// TestPublishDeliversAroundRefusedMessages publishes twelve messages in one call, four of
// which SQS refuses in each way it has: a character it does not take (failed alone in the
// batch reply), eleven attributes and an empty attribute (the whole batch refused), and a
// message too big (a batch of its own, refused). The eight others must arrive, and the four
// be reported as refused, each with SQS's reason.
func TestPublishDeliversAroundRefusedMessages(t *testing.T) {
	client, queue, url := strictQueue(t)
	pub, err := queues.NewBatchPublisher(client)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 12 {
		body := fmt.Sprintf("message %d", i)
		if i == 9 || i == 10 {
			body += strings.Repeat(" ", 100<<10) // two of these fit a batch; three do not
		}
		m := message.NewMessage(fmt.Sprint("m", i), []byte(body))
		m.Metadata.Set("event_type", "OrderPlaced")
		msgs = append(msgs, m)
	}
	msgs[2].Payload = []byte("Ada\uFFFF")
	for k := range 10 {
		msgs[4].Metadata.Set(fmt.Sprint("k", k), "v")
	}
	msgs[6].Metadata.Set("correlation_id", "")
	msgs[8].Payload = []byte(strings.Repeat("x", 300<<10))
	wantRefused := map[int]string{2: "InvalidMessageContents", 4: "InvalidParameterValue", 6: "InvalidParameterValue", 8: "BatchRequestTooLong"}

	err = pub.Publish(queue, msgs...)
	var pe *queues.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish = %v, want a *PublishError", err)
	}
	refused, failed := pe.Undelivered()
	if len(failed) != 0 {
		t.Errorf("failed (to retry): %v, want none", failed)
	}
	if got, want := slices.Sorted(maps.Keys(refused)), slices.Sorted(maps.Keys(wantRefused)); !slices.Equal(got, want) {
		t.Errorf("refused %v, want %v", refused, want)
	}
	for i, code := range wantRefused {
		if !strings.Contains(refused[i], code) {
			t.Errorf("message %d refused with %q, want SQS's %s", i, refused[i], code)
		}
	}
	var want []string
	for i, m := range msgs {
		if _, ok := wantRefused[i]; !ok {
			want = append(want, string(m.Payload))
		}
	}
	got := drain(t, client, url, len(want))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%d messages arrived, want the %d not refused", len(got), len(want))
	}
	t.Logf("refused: %v", refused)
}

// TestPublishTakesAMissingQueueForAFailure: a refusal that is not about the message (here,
// the queue is gone) must not be taken for the message's fault, or a misconfiguration would
// dead-letter everything; it is a failure to retry.
func TestPublishTakesAMissingQueueForAFailure(t *testing.T) {
	client, queue, url := strictQueue(t)
	pub, err := queues.NewBatchPublisher(client)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(queue, message.NewMessage("a", []byte("first"))); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: url}); err != nil {
		t.Fatal(err)
	}
	err = pub.Publish(queue, message.NewMessage("b", []byte("second")), message.NewMessage("c", []byte("third")))
	var pe *queues.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish to a deleted queue = %v, want a *PublishError", err)
	}
	if refused, failed := pe.Undelivered(); len(refused) != 0 || len(failed) != 2 {
		t.Errorf("refused %v, failed %v; want both messages failed, none refused", refused, failed)
	}
}

// TestPublishRetriesWhatIsNotTheMessagesFault plays replies goaws never gives (so a fake
// server stands in for SQS here): entries SQS failed on its side (SenderFault false) and an
// entry refused as the sender's fault for something other than what it holds (a KMS key the
// queue cannot use). Both are failures to retry, not refusals: sending again can help.
func TestPublishRetriesWhatIsNotTheMessagesFault(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		switch r.Header.Get("X-Amz-Target") {
		case "AmazonSQS.GetQueueUrl":
			fmt.Fprint(w, `{"QueueUrl":"http://sqs.local/000000000000/q"}`)
		case "AmazonSQS.SendMessageBatch":
			fmt.Fprint(w, `{"Successful":[{"Id":"2","MessageId":"m2","MD5OfMessageBody":"4a8a08f09d37b73795649038408b5f33"}],"Failed":[
				{"Id":"0","SenderFault":false,"Code":"InternalError","Message":"We encountered an internal error."},
				{"Id":"1","SenderFault":true,"Code":"KmsAccessDenied","Message":"The ciphertext refers to a customer master key that does not exist."}]}`)
		default:
			http.Error(w, "unexpected", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	cfg := queues.Config{Endpoint: srv.URL, Region: "us-east-1"}
	awsCfg, err := queues.AWSConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := queues.NewBatchPublisher(queues.NewClient(awsCfg, cfg))
	if err != nil {
		t.Fatal(err)
	}
	err = pub.Publish("q", message.NewMessage("a", []byte("a")), message.NewMessage("b", []byte("b")), message.NewMessage("c", []byte("c")))
	var pe *queues.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("Publish = %v, want a *PublishError", err)
	}
	refused, failed := pe.Undelivered()
	if len(refused) != 0 || len(failed) != 2 || failed[0] == "" || failed[1] == "" {
		t.Errorf("refused %v, failed %v; want messages 0 and 1 failed (to retry), none refused, 2 delivered", refused, failed)
	}
}

// TestPublishReadsGoawsRepliesOnlyAsGoaws: goaws lists the entries it enqueued under its own
// name, not SQS's Successful. Read as SQS's (no emulator named), none is listed, so none
// counts as delivered; with the Goaws emulator named they all do. Against SQS or
// local-aws-sqs no such translation runs (TestBatchSubscriberOnEachSQS publishes there).
func TestPublishReadsGoawsRepliesOnlyAsGoaws(t *testing.T) {
	endpoint := testenv.Require(t, "SQS_ENDPOINT")
	if testenv.SQSEndpointEmulator() != string(queues.Goaws) {
		t.Skip("SQS_ENDPOINT is not goaws")
	}
	for _, emu := range []queues.Emulator{queues.NoEmulator, queues.Goaws} {
		cfg := queues.Config{Endpoint: endpoint, Emulator: emu, Region: "us-east-1"}
		awsCfg, err := queues.AWSConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		client := queues.NewClient(awsCfg, cfg)
		name := "t" + testenv.ID() + "-goawsreply"
		out, err := client.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}) })
		pub, err := queues.NewBatchPublisher(client)
		if err != nil {
			t.Fatal(err)
		}
		err = pub.Publish(name, message.NewMessage("a", []byte("a")), message.NewMessage("b", []byte("b")))
		var pe *queues.PublishError
		switch {
		case emu == queues.Goaws && err != nil:
			t.Errorf("as goaws: Publish = %v, want both delivered", err)
		case emu == queues.NoEmulator && (!errors.As(err, &pe) || len(pe.Failed) != 2):
			t.Errorf("as SQS: Publish = %v, want both failed: goaws's reply lists neither as successful", err)
		case emu == queues.NoEmulator && !strings.Contains(err.Error(), "SQS_EMULATOR=goaws"):
			t.Errorf("as SQS: Publish = %v, want the error to name the setting the operator forgot", err)
		}
	}
}
