package queues

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// maxBatch is SQS's limit of entries in one SendMessageBatch.
const maxBatch = 10

// MaxBatchBytes is the most one SendMessageBatch may carry in all (bodies, attribute names,
// types and values): 256 KiB, SQS's limit for the batch of a queue whose messages are limited
// to 256 KiB (the limit orderd promises; newer queues allow 1 MiB).
const MaxBatchBytes = 256 << 10

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

// PublishError says, message by message, what a Publish could not deliver; every message it
// does not name was accepted by SQS. Keys are indexes into the Publish call's messages.
type PublishError struct {
	Topic string
	// Refused holds the messages SQS refused for what they are (a character it does not
	// take, their size, their attributes), with its reason: sending them again cannot help.
	Refused map[int]string
	// Failed holds the messages that did not go through for any other reason (SQS or the
	// network failing, throttling, a queue missing): sending them again later may help.
	Failed map[int]string
}

func (e *PublishError) Error() string {
	msg := fmt.Sprintf("send to %s: %d message(s) refused, %d failed", e.Topic, len(e.Refused), len(e.Failed))
	if len(e.Failed) > 0 {
		first := slices.Min(slices.Collect(maps.Keys(e.Failed)))
		msg += fmt.Sprintf(" (message %d: %s)", first, e.Failed[first])
	}
	return msg
}

// Undelivered returns the messages that were not delivered, by index: refused for good, or
// failed for now.
func (e *PublishError) Undelivered() (refused, failed map[int]string) { return e.Refused, e.Failed }

// Publish implements message.Publisher. Messages are packed into batches of up to ten that
// fit SQS's size limit. It returns nil if SQS accepted every message, a *PublishError naming
// each one it did not accept, or another error if none could be sent. A message that SQS
// refuses never keeps the others of its batch from going through: SQS names it in the
// batch reply, and a batch refused as a whole for what one of its messages holds is split
// until the message is alone. A message counts as delivered only if the reply lists it as
// successful, as SQS lists every entry either there or as failed; an entry it lists in
// neither counts as failed, so that sending it again errs on the side of a duplicate.
func (p *BatchPublisher) Publish(topic string, msgs ...*message.Message) error {
	ctx := context.Background()
	url, err := p.url(ctx, topic)
	if err != nil {
		return err
	}
	entries := make([]types.SendMessageBatchRequestEntry, len(msgs))
	sizes := make([]int, len(msgs))
	for i, m := range msgs {
		enc, err := p.enc.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode message %s: %w", m.UUID, err)
		}
		// The entry's Id is the message's index in msgs, so that a reply maps back to it.
		entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: enc.Body, MessageAttributes: enc.MessageAttributes}
		sizes[i] = entrySize(entries[i])
	}
	res := &PublishError{Topic: topic, Refused: map[int]string{}, Failed: map[int]string{}}
	for start := 0; start < len(entries); {
		end, total := start, 0
		for end < len(entries) && end-start < maxBatch && (end == start || total+sizes[end] <= MaxBatchBytes) {
			total += sizes[end]
			end++
		}
		p.send(ctx, url, entries[start:end], res)
		start = end
	}
	if len(res.Refused) == 0 && len(res.Failed) == 0 {
		return nil
	}
	return res
}

// send sends one batch and records in res what was not delivered.
func (p *BatchPublisher) send(ctx context.Context, url string, entries []types.SendMessageBatchRequestEntry, res *PublishError) {
	out, err := p.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries})
	if err != nil {
		if reason, ok := refusedContent(err); ok {
			if len(entries) == 1 {
				res.Refused[entryIndex(entries[0].Id)] = reason
				return
			}
			// One of them made SQS refuse them all: split until it is alone.
			half := len(entries) / 2
			p.send(ctx, url, entries[:half], res)
			p.send(ctx, url, entries[half:], res)
			return
		}
		for _, e := range entries {
			res.Failed[entryIndex(e.Id)] = err.Error()
		}
		return
	}
	inBatch := func(i int) bool {
		return slices.ContainsFunc(entries, func(e types.SendMessageBatchRequestEntry) bool { return entryIndex(e.Id) == i })
	}
	listed := make(map[int]bool, len(entries))
	for _, ok := range out.Successful {
		listed[entryIndex(ok.Id)] = true
	}
	for _, f := range out.Failed {
		i := entryIndex(f.Id)
		if !inBatch(i) {
			continue // not an entry of this batch
		}
		listed[i] = true
		reason := aws.ToString(f.Code) + ": " + aws.ToString(f.Message)
		if f.SenderFault && contentCodes[normalizeCode(aws.ToString(f.Code))] {
			res.Refused[i] = reason
		} else {
			res.Failed[i] = reason
		}
	}
	unlisted := "not in SQS's reply, neither successful nor failed"
	if len(listed) == 0 {
		// goaws answers so to every batch: the relay would send each message again at every
		// pass, so the log must say what the operator forgot.
		unlisted = "SQS's reply lists none of the batch's entries, as goaws's does: if SQS_ENDPOINT is goaws, set SQS_EMULATOR=goaws"
	}
	for _, e := range entries {
		if i := entryIndex(e.Id); !listed[i] {
			res.Failed[i] = unlisted
		}
	}
}

func entryIndex(id *string) int {
	i, err := strconv.Atoi(aws.ToString(id))
	if err != nil {
		return -1
	}
	return i
}

// contentCodes are the SQS error codes that refuse a message for what it holds, so that
// sending it again cannot help. A refusal for anything else that is the sender's fault (a
// missing queue, a permission, a KMS key) is a matter of configuration: every message would
// meet it, and it is retried until fixed rather than taken for the message's fault.
var contentCodes = map[string]bool{
	"InvalidMessageContents": true, // a character SQS does not take
	"InvalidParameterValue":  true, // size, attribute count, an empty or invalid attribute
	"MissingParameter":       true, // an empty body
	"BatchRequestTooLong":    true, // the batch's size: split, and a lone message too big is refused
	"InvalidAttributeName":   true,
	"InvalidAttributeValue":  true,
}

// normalizeCode turns the forms one error takes (AWS.SimpleQueueService.BatchRequestTooLong
// in the query protocol's header, InvalidParameterValueException as a JSON __type) into one.
func normalizeCode(code string) string {
	return strings.TrimSuffix(strings.TrimPrefix(code, "AWS.SimpleQueueService."), "Exception")
}

// refusedContent reports whether a request failed because of what its messages hold, with
// SQS's reason.
func refusedContent(err error) (string, bool) {
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorFault() == smithy.FaultServer || !contentCodes[normalizeCode(ae.ErrorCode())] {
		return "", false
	}
	return ae.ErrorCode() + ": " + ae.ErrorMessage(), true
}

// entrySize is what SQS counts of an entry against the batch's size limit.
func entrySize(e types.SendMessageBatchRequestEntry) int {
	n := len(aws.ToString(e.MessageBody))
	for k, v := range e.MessageAttributes {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
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
