package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/outbox"
	"orderd/queues"
)

// Message is a message waiting in a dead-letter queue.
type Message struct {
	Queue     string `json:"queue"` // the stage queue it came from
	MessageID string `json:"messageId"`
	EventID   string `json:"eventId,omitempty"`
	EventType string `json:"eventType,omitempty"`
	Reason    string `json:"reason"`
	Body      string `json:"body"`
}

// Admin lists and redrives the stage queues' dead-letter queues.
type Admin struct {
	client *sqs.Client
	cfg    queues.Config
}

// NewAdmin returns an admin for the queues of cfg.
func NewAdmin(client *sqs.Client, cfg queues.Config) (*Admin, error) {
	if client == nil {
		return nil, errors.New("deadletter: nil SQS client")
	}
	return &Admin{client: client, cfg: cfg}, nil
}

// listVisibility hides listed messages briefly, so that one listing does not see the same
// message twice; they become visible again by themselves.
const listVisibility = 5

// List returns every message in the dead-letter queues without removing any.
func (a *Admin) List(ctx context.Context) ([]Message, error) {
	var out []Message
	for _, q := range a.cfg.All() {
		err := a.drain(ctx, q, listVisibility, func(m types.Message) (bool, error) {
			out = append(out, describe(q, m))
			return true, nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Redrive sends the messages that are in the dead-letter queues when it starts back to the
// queues they came from (without the poison attributes) and deletes them from the
// dead-letter queues, for use once the cause is fixed. A message that is still poisonous comes
// back to the dead-letter queue at once; it is left there for the next redrive, not sent round
// again. Stages are idempotent, so redriving a message whose order has moved on is harmless.
// It returns how many messages it moved.
func (a *Admin) Redrive(ctx context.Context) (int, error) {
	n := 0
	for _, q := range a.cfg.All() {
		src, err := a.url(ctx, q)
		if err != nil {
			return n, err
		}
		dlq, err := a.url(ctx, q+queues.DLQSuffix)
		if err != nil {
			return n, err
		}
		attrs, err := a.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &dlq,
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages}})
		if err != nil {
			return n, fmt.Errorf("count %s: %w", q+queues.DLQSuffix, err)
		}
		budget, _ := strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
		if budget <= 0 {
			continue
		}
		err = a.drain(ctx, q, 30, func(m types.Message) (bool, error) {
			if _, err := a.client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &src, MessageBody: m.Body, MessageAttributes: redriven(m)}); err != nil {
				return false, fmt.Errorf("redrive to %s: %w", q, err)
			}
			if _, err := a.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &dlq, ReceiptHandle: m.ReceiptHandle}); err != nil {
				return false, fmt.Errorf("delete from %s: %w", q+queues.DLQSuffix, err)
			}
			n++
			budget--
			return budget > 0, nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// drain receives the dead-letter queue of q one message at a time, until it is empty or fn
// says to stop.
func (a *Admin) drain(ctx context.Context, q string, visibility int32, fn func(types.Message) (more bool, err error)) error {
	url, err := a.url(ctx, q+queues.DLQSuffix)
	if err != nil {
		return err
	}
	for {
		out, err := a.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &url, MaxNumberOfMessages: 1, VisibilityTimeout: visibility,
			MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{"All"},
		})
		if err != nil {
			return fmt.Errorf("read %s: %w", q+queues.DLQSuffix, err)
		}
		if len(out.Messages) == 0 {
			return nil
		}
		for _, m := range out.Messages {
			more, err := fn(m)
			if err != nil || !more {
				return err
			}
		}
	}
}

func (a *Admin) url(ctx context.Context, name string) (string, error) {
	out, err := a.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("find queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

func describe(q string, m types.Message) Message {
	attr := func(k string) string {
		if v, ok := m.MessageAttributes[k]; ok {
			return aws.ToString(v.StringValue)
		}
		return ""
	}
	reason := attr(middleware.ReasonForPoisonedKey)
	if reason == "" {
		reason = "moved by SQS after too many failed receives (RedrivePolicy)"
	}
	return Message{Queue: q, MessageID: aws.ToString(m.MessageId), EventID: attr(outbox.MetaEventID),
		EventType: attr(outbox.MetaEventType), Reason: reason, Body: aws.ToString(m.Body)}
}

// redriven returns the attributes m goes back to its stage with: all but what the poisoning
// added, so the stage sees the message as the relay sent it (signature included).
func redriven(m types.Message) map[string]types.MessageAttributeValue {
	attrs := map[string]types.MessageAttributeValue{}
	for k, v := range m.MessageAttributes {
		if !isPoisonKey(k) {
			attrs[k] = v
		}
	}
	return attrs
}

func isPoisonKey(k string) bool {
	return strings.HasSuffix(k, "_poisoned")
}

// Depths returns how many messages wait in each dead-letter queue, by stage queue name.
func (a *Admin) Depths(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, q := range a.cfg.All() {
		url, err := a.url(ctx, q+queues.DLQSuffix)
		if err != nil {
			return out, err
		}
		attrs, err := a.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &url,
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages}})
		if err != nil {
			return out, fmt.Errorf("count %s: %w", q+queues.DLQSuffix, err)
		}
		out[q], _ = strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	}
	return out, nil
}
