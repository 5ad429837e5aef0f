package queues

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// maxBatch is SQS's limit of entries in one SendMessageBatch.
const maxBatch = 10

// BatchPublisher is a Watermill publisher that sends up to ten messages per SendMessageBatch
// call instead of one SendMessage each: the AWS SDK's per-call cost (signing, JSON, HTTP) is a
// large share of the relay's CPU. Messages are encoded exactly as watermill-aws encodes them,
// so watermill-aws subscribers read them unchanged.
type BatchPublisher struct {
	client *sqs.Client
	enc    wsqs.DefaultMarshalerUnmarshaler
	mu     sync.Mutex
	urls   map[string]string
}

// NewBatchPublisher returns a batch publisher whose topics are queue names.
func NewBatchPublisher(client *sqs.Client) (*BatchPublisher, error) {
	if client == nil {
		return nil, errors.New("queues: nil SQS client")
	}
	return &BatchPublisher{client: client, urls: map[string]string{}}, nil
}

// Publish implements message.Publisher. It returns an error if any message may not have been
// accepted; the caller then sends all of them again (at least once), which consumers absorb.
// Only the entries a reply lists as failed count as failed: goaws enqueues every entry but
// answers with neither list.
func (p *BatchPublisher) Publish(topic string, msgs ...*message.Message) error {
	ctx := context.Background()
	url, err := p.url(ctx, topic)
	if err != nil {
		return err
	}
	for start := 0; start < len(msgs); start += maxBatch {
		chunk := msgs[start:min(start+maxBatch, len(msgs))]
		entries := make([]types.SendMessageBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			enc, err := p.enc.Marshal(m)
			if err != nil {
				return fmt.Errorf("encode message %s: %w", m.UUID, err)
			}
			entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: enc.Body, MessageAttributes: enc.MessageAttributes}
		}
		out, err := p.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries})
		if err != nil {
			return fmt.Errorf("send %d messages to %s: %w", len(entries), topic, err)
		}
		if len(out.Failed) > 0 {
			var why []string
			for _, f := range out.Failed {
				why = append(why, aws.ToString(f.Code)+": "+aws.ToString(f.Message))
			}
			return fmt.Errorf("send to %s: %d of %d messages refused: %s", topic, len(out.Failed), len(entries), strings.Join(why, "; "))
		}
	}
	return nil
}

func (p *BatchPublisher) url(ctx context.Context, queue string) (string, error) {
	p.mu.Lock()
	url, ok := p.urls[queue]
	p.mu.Unlock()
	if ok {
		return url, nil
	}
	out, err := p.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
	if err != nil {
		return "", fmt.Errorf("find queue %s: %w", queue, err)
	}
	url = aws.ToString(out.QueueUrl)
	p.mu.Lock()
	p.urls[queue] = url
	p.mu.Unlock()
	return url, nil
}

// Close implements message.Publisher.
func (p *BatchPublisher) Close() error { return nil }
