package router

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/metrics"
	"orderd/pipeline"
	"orderd/queues"
)

// TestShutdownLetsAStartedStepFinish closes the router, on goaws, while a stage is half-way
// through a step that takes 500 ms: the subscriber ends the message's context as soon as
// shutdown begins, but the step runs under its own deadline, finishes, and its message is
// acknowledged and deleted, not cut short and delivered again to another instance.
func TestShutdownLetsAStartedStepFinish(t *testing.T) {
	endpoint := testenv.Require(t, "SQS_ENDPOINT")
	ctx := context.Background()
	qcfg := queues.Config{Endpoint: endpoint, Emulator: queues.Emulator(testenv.SQSEndpointEmulator()), Region: "us-east-1",
		Prefix: "drain" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-", VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5}
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, qcfg)
	if err := queues.Ensure(ctx, client, qcfg); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sub, err := queues.NewBatchSubscriber(client, queues.BatchSubscriberConfig{Receivers: 1, MaxInFlight: 10,
		Visibility: 30 * time.Second, CloseTimeout: 10 * time.Second, Emulator: qcfg.Emulator}, log)
	if err != nil {
		t.Fatal(err)
	}
	started, finished := make(chan struct{}, 1), make(chan error, 1)
	step := Stage{Name: "drain-test", Queue: pipeline.PaymentQueue, Run: func(ctx context.Context, _ eventstore.Record) error {
		started <- struct{}{}
		select {
		case <-ctx.Done(): // a database call, an SMTP send or a gateway call would fail here
			finished <- ctx.Err()
			return ctx.Err()
		case <-time.After(500 * time.Millisecond): // the step's own work
			finished <- nil
			return nil
		}
	}}
	r, err := New(Config{Queues: qcfg, HandlerTimeout: 5 * time.Second, Retries: 1}, sub, &letters{}, metrics.New(), log, step)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.Run(ctx) }()
	<-r.Running()

	body, err := json.Marshal(eventstore.Record{StreamID: 7, Version: 1, Type: domain.TypeOrderPlaced,
		Event: domain.OrderPlaced{CustomerName: "Ann", Items: []domain.Item{}}})
	if err != nil {
		t.Fatal(err)
	}
	url, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(qcfg.Name(pipeline.PaymentQueue))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url.QueueUrl, MessageBody: aws.String(string(body))}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the message never reached the stage")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-finished; err != nil {
		t.Fatalf("the step was cut short by shutdown: %v", err)
	}
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: url.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range attrs.Attributes {
		if n != "0" {
			t.Errorf("after shutdown the queue holds %s=%s: the finished step's message was not deleted", name, n)
		}
	}
}
