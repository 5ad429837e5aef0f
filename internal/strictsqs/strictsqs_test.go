package strictsqs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"orderd/internal/strictsqs"
	"orderd/internal/testenv"
	"orderd/queues"
)

// TestFrontAnswersAsSQS sends what SQS refuses through the front to goaws with the AWS SDK,
// and checks that the SDK sees what it sees from real SQS: per-entry failures with
// SenderFault in a batch reply, request errors with SQS's code and the client's fault; and
// that what passes reaches the queue.
func TestFrontAnswersAsSQS(t *testing.T) {
	upstream := testenv.Require(t, "SQS_ENDPOINT")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := queues.Config{Endpoint: strictsqs.Start(t, upstream), Region: "us-east-1"}
	awsCfg, err := queues.AWSConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, cfg)
	created, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("strict-" + testenv.ID())})
	if err != nil {
		t.Fatal(err)
	}
	url := created.QueueUrl
	t.Cleanup(func() { client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: url}) }) //nolint:errcheck // best effort

	attr := map[string]types.MessageAttributeValue{"k": {DataType: aws.String("String"), StringValue: aws.String("v")}}
	var entries []types.SendMessageBatchRequestEntry
	for i := range 9 {
		entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), MessageBody: aws.String(fmt.Sprintf("good %d", i)), MessageAttributes: attr})
	}
	entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String("bad"), MessageBody: aws.String("Ada\uFFFF"), MessageAttributes: attr})
	out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: url, Entries: entries})
	if err != nil {
		t.Fatalf("SendMessageBatch with one bad entry: %v", err)
	}
	if len(out.Successful) != 9 || len(out.Failed) != 1 {
		t.Fatalf("batch reply: %d successful, %d failed; want 9 and 1", len(out.Successful), len(out.Failed))
	}
	if f := out.Failed[0]; aws.ToString(f.Id) != "bad" || !f.SenderFault || aws.ToString(f.Code) != "InvalidMessageContents" ||
		!strings.Contains(aws.ToString(f.Message), "'#xFFFF'") {
		t.Errorf("failed entry: id %s, sender fault %v, %s: %s", aws.ToString(f.Id), f.SenderFault, aws.ToString(f.Code), aws.ToString(f.Message))
	}
	got := 0
	for deadline := time.Now().Add(20 * time.Second); got < 9 && time.Now().Before(deadline); {
		rec, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 1, WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range rec.Messages {
			if !strings.HasPrefix(aws.ToString(m.Body), "good ") {
				t.Errorf("received %q", aws.ToString(m.Body))
			}
			got++
			client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle}) //nolint:errcheck // counted already
		}
	}
	if got != 9 {
		t.Errorf("%d of the 9 good messages reached the queue", got)
	}

	for _, tc := range []struct {
		name string
		send func() error
		code string
		typ  any
	}{
		{"SendMessage with U+FFFF", func() error {
			_, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String("\uFFFF")})
			return err
		}, "InvalidMessageContents", new(*types.InvalidMessageContents)},
		{"SendMessage with an empty attribute", func() error {
			_, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String("b"),
				MessageAttributes: map[string]types.MessageAttributeValue{"k": {DataType: aws.String("String"), StringValue: aws.String("")}}})
			return err
		}, "InvalidParameterValue", nil},
		{"SendMessageBatch with an entry of 11 attributes", func() error {
			many := map[string]types.MessageAttributeValue{}
			for i := range 11 {
				many[fmt.Sprint("a", i)] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String("v")}
			}
			_, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{
				{Id: aws.String("0"), MessageBody: aws.String("good")}, {Id: aws.String("1"), MessageBody: aws.String("b"), MessageAttributes: many}}})
			return err
		}, "InvalidParameterValue", nil},
		{"SendMessageBatch over 256 KiB", func() error {
			big := strings.Repeat("x", 100<<10)
			var es []types.SendMessageBatchRequestEntry
			for i := range 3 {
				es = append(es, types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), MessageBody: aws.String(big)})
			}
			_, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: url, Entries: es})
			return err
		}, "AWS.SimpleQueueService.BatchRequestTooLong", new(*types.BatchRequestTooLong)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.send()
			var ae smithy.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an API error", err)
			}
			if ae.ErrorCode() != tc.code || ae.ErrorFault() != smithy.FaultClient {
				t.Errorf("code %q fault %v, want %q, client's fault", ae.ErrorCode(), ae.ErrorFault(), tc.code)
			}
			if tc.typ != nil && !errors.As(err, tc.typ) {
				t.Errorf("error %T is not the SDK's modelled %T", ae, tc.typ)
			}
		})
	}
}
