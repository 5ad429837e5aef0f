package queues

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/semaphore"
)

// deleteHold bounds how long an acknowledged message waits for the rest of its batch before
// it is deleted anyway: one slow handler must not hold back its batch mates' deletes.
const deleteHold = 100 * time.Millisecond

// singleAfterBadBatch is how long a receiver asks for one message per call after a reply it
// could not decode, so that one bad message no longer hides nine good ones with it.
const singleAfterBadBatch = time.Minute

// BatchSubscriberConfig tunes a BatchSubscriber. Zero values take the defaults.
type BatchSubscriberConfig struct {
	// MaxMessages is how many messages one ReceiveMessage asks for, 1 to 10 (SQS's limit).
	// Default 10: the SDK's per-call cost (signing, HTTP, JSON) is what batching saves.
	MaxMessages int32
	// WaitTime is the long-poll wait of one ReceiveMessage, at most 20 s. Default 10 s.
	// Close does not wait for it: it cancels the receives in flight.
	WaitTime time.Duration
	// Receivers is how many receive loops each subscription runs: while one receiver's
	// batch is handled, another is already waiting for the next. Default 2.
	Receivers int
	// MaxInFlight bounds the messages of one subscription handed out and not yet acked or
	// nacked, that is the handlers running at once on its queue. A receiver asks for a batch
	// only when MaxMessages slots are free, so below Receivers×MaxMessages some receivers
	// wait instead of polling. Default Receivers×MaxMessages: with two receivers, one
	// receives while the other's batch is handled. Twice that doubled the throughput of
	// handlers that wait 5 ms, but every handler holds a MySQL connection from a shared pool,
	// and a backlog then takes them from placement.
	MaxInFlight int
	// NackDelay is the visibility timeout a nacked message gets, whole seconds. Default 0:
	// it can be received again at once. A message nacked once its subscription is stopping
	// comes back at once whatever NackDelay says: its handler was most likely cancelled by
	// the stop, not failed by the message.
	NackDelay time.Duration
	// Visibility, when set (whole seconds), is the visibility timeout each receive asks for
	// instead of the queue's, and a message still being handled is kept hidden by extending
	// it every Visibility/2. A handled message is acked long before that, so this costs no
	// calls; what it buys is that a batch whose receive reply was lost on the way (a dropped
	// connection: the SDK retries the call and the first reply's messages are hidden) or
	// whose process died comes back after Visibility, not after the queue's timeout.
	// Default 0: the queue's visibility timeout, no extensions.
	Visibility time.Duration
	// CloseTimeout bounds how long Close waits for handed-out messages to be acked or
	// nacked. Default 30 s. Messages still unacked then are left to their visibility timeout.
	CloseTimeout time.Duration
	// RetryDelay is the pause after a failed ReceiveMessage. Default 1 s.
	RetryDelay time.Duration
	// Emulator names the SQS emulator the client talks to, whose departures from SQS the
	// subscriber works around (see Emulator); empty for SQS and implementations that follow it.
	Emulator Emulator
}

func (c BatchSubscriberConfig) withDefaults() BatchSubscriberConfig {
	if c.MaxMessages == 0 {
		c.MaxMessages = maxBatch
	}
	if c.WaitTime == 0 {
		c.WaitTime = 10 * time.Second
	}
	if c.Receivers == 0 {
		c.Receivers = 2
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = c.Receivers * int(c.MaxMessages)
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	return c
}

// Validate reports a configuration the subscriber cannot run with.
func (c BatchSubscriberConfig) Validate() error {
	switch {
	case c.MaxMessages < 1 || c.MaxMessages > maxBatch:
		return fmt.Errorf("queues: MaxMessages must be 1 to %d, got %d", maxBatch, c.MaxMessages)
	case c.WaitTime < 0 || c.WaitTime > 20*time.Second:
		return fmt.Errorf("queues: WaitTime must be 0 to 20s, got %s", c.WaitTime)
	case c.Receivers < 1:
		return fmt.Errorf("queues: Receivers must be at least 1, got %d", c.Receivers)
	case c.MaxInFlight < int(c.MaxMessages):
		// A receiver could never reserve a whole batch.
		return fmt.Errorf("queues: MaxInFlight (%d) must be at least MaxMessages (%d)", c.MaxInFlight, c.MaxMessages)
	case c.NackDelay < 0 || c.NackDelay > 12*time.Hour:
		return fmt.Errorf("queues: NackDelay must be 0 to 12h, got %s", c.NackDelay)
	case c.Visibility < 0 || c.Visibility > 12*time.Hour || c.Visibility%time.Second != 0 || c.Visibility > 0 && c.Visibility < 2*time.Second:
		return fmt.Errorf("queues: Visibility must be 0 or whole seconds from 2s to 12h, got %s", c.Visibility)
	}
	return nil
}

// BatchSubscriber is a Watermill subscriber over SQS whose topics are queue names. It
// receives up to ten messages per ReceiveMessage and deletes acknowledged ones up to ten per
// DeleteMessageBatch, where watermill-aws's subscriber makes one call of each per message:
// the SDK's per-call cost is the largest single CPU cost of the service under load.
//
// A batch's messages go to the output channel without waiting for one another's ack, so the
// Watermill router, which runs each message in a goroutine of its own, handles them
// concurrently; MaxInFlight bounds how many. Messages are decoded as watermill-aws decodes
// them. Delivery is at least once: a message can arrive twice.
//
// It keeps Watermill's message.Subscriber contract: Ack deletes the message (batched), Nack
// makes it visible again (after NackDelay), a message's context ends when it is acked or
// nacked, when the subscription's context ends and when Close begins; Close stops every
// receive, waits for the messages handed out, closes the channels, and may be called twice;
// Subscribe after Close fails.
type BatchSubscriber struct {
	client *sqs.Client
	cfg    BatchSubscriberConfig
	log    *slog.Logger

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	subs    sync.WaitGroup
}

// NewBatchSubscriber returns a subscriber over client; cfg's zero fields take the defaults.
func NewBatchSubscriber(client *sqs.Client, cfg BatchSubscriberConfig, log *slog.Logger) (*BatchSubscriber, error) {
	if client == nil || log == nil {
		return nil, errors.New("queues: NewBatchSubscriber needs an SQS client and a logger")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &BatchSubscriber{client: client, cfg: cfg, log: log, closing: make(chan struct{})}, nil
}

// Subscribe implements message.Subscriber: it receives from the queue named topic until ctx
// ends or the subscriber closes, then closes the channel. It never creates the queue.
func (s *BatchSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	// Looked up once per subscription, which keeps it for all its calls.
	found, err := s.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(topic)})
	if err != nil {
		return nil, fmt.Errorf("find queue %s: %w", topic, err)
	}
	url := aws.ToString(found.QueueUrl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	// The subscription stops, receives and messages' contexts alike, when ctx ends or Close
	// begins; Close then waits for the messages handed out to be acked or nacked.
	stopCtx, stop := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.closing:
		case <-stopCtx.Done():
		}
		stop()
	}()
	sub := &subscription{
		BatchSubscriber: s,
		queue:           topic,
		queueURL:        url,
		out:             make(chan *message.Message),
		stopCtx:         stopCtx,
		slots:           semaphore.NewWeighted(int64(s.cfg.MaxInFlight)),
		abandon:         make(chan struct{}),
		del: &deleter{client: s.client, url: url, log: s.log.With("queue", topic),
			kick: make(chan struct{}, 1), stop: make(chan struct{})},
	}
	s.subs.Add(1)
	go func() {
		defer s.subs.Done()
		sub.run()
		stop()
	}()
	return sub.out, nil
}

var errClosed = errors.New("queues: subscriber closed")

func (s *BatchSubscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close implements message.Subscriber: it stops receiving, ends the contexts of the messages
// handed out, waits up to CloseTimeout for them to be acked or nacked, deletes the acked ones
// and closes the channels. Calling it again waits for the same.
func (s *BatchSubscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	// No Subscribe adds to subs once closed is set, so every call may wait.
	s.subs.Wait()
	return nil
}

// subscription is one Subscribe call: its receivers, the messages they handed out and the
// deleter of the acked ones.
type subscription struct {
	*BatchSubscriber
	queue    string
	queueURL string
	out      chan *message.Message
	stopCtx  context.Context     // ends when the subscription stops: its receives and its messages' contexts
	slots    *semaphore.Weighted // one per message handed out and not yet acked or nacked
	waiting  sync.WaitGroup      // one per message handed out, until ack, nack or abandon
	abandon  chan struct{}       // closed when Close has waited CloseTimeout
	del      *deleter
}

// run runs the receivers until the subscription stops, then waits for the messages handed
// out, has the acked ones deleted and closes the output.
func (s *subscription) run() {
	flushed := make(chan struct{})
	go func() { s.del.run(); close(flushed) }()
	var receivers sync.WaitGroup
	stagger := s.cfg.Emulator.stagger(s.cfg.Receivers)
	for i := range s.cfg.Receivers {
		receivers.Go(func() { s.receive(s.stopCtx, i, stagger) })
	}
	receivers.Wait()

	handled := make(chan struct{})
	go func() { s.waiting.Wait(); close(handled) }()
	select {
	case <-handled:
	case <-time.After(s.cfg.CloseTimeout):
		s.log.Warn("closing before every message was acked; the rest come back after their visibility timeout", "queue", s.queue)
		close(s.abandon)
		<-handled
	}
	close(s.del.stop) // the deleter deletes what is left and returns
	<-flushed
	close(s.out)
}

// receive is one receive loop: reserve a batch's worth of slots, long-poll, hand out.
// stagger, nil but against goaws, spaces the receivers out over its poll tick.
func (s *subscription) receive(ctx context.Context, receiver int, stagger *receiveStagger) {
	if stagger != nil && !stagger.first(ctx, receiver) {
		return
	}
	var singleUntil time.Time
	for {
		n := s.cfg.MaxMessages
		if time.Now().Before(singleUntil) {
			n = 1
		}
		if err := s.slots.Acquire(ctx, int64(n)); err != nil {
			return // stopping
		}
		out, err := s.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(s.queueURL),
			MaxNumberOfMessages:   n,
			WaitTimeSeconds:       int32(s.cfg.WaitTime / time.Second),
			VisibilityTimeout:     int32(s.cfg.Visibility / time.Second), // 0: the queue's
			MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			s.slots.Release(int64(n))
			if ctx.Err() != nil {
				return
			}
			if undecodable(err) && n > 1 {
				// The messages of the bad reply stay hidden until their visibility timeout
				// and come back one per call.
				singleUntil = time.Now().Add(singleAfterBadBatch)
			}
			s.log.Error("receive messages", "queue", s.queue, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.RetryDelay):
			}
			continue
		}
		s.slots.Release(int64(int(n) - len(out.Messages)))
		s.handOut(ctx, out.Messages)
		// The queue is empty for now: against goaws, wait for this receiver's slot of its
		// poll tick. Under load the batches are full and nobody waits.
		if stagger != nil && len(out.Messages) < int(n) && !stagger.wait(ctx, receiver) {
			return
		}
	}
}

// undecodable reports whether a receive failed on the reply rather than on the way there:
// a body the SDK could not parse, or a message whose MD5 does not match.
func undecodable(err error) bool {
	var de *smithy.DeserializationError
	// The SDK's checksum error type is unexported.
	return errors.As(err, &de) || strings.Contains(err.Error(), "checksum")
}

// handOut sends a batch's messages to the output without waiting for their acks, and has a
// goroutine per message wait for its outcome. Messages it cannot hand out because the
// subscription is stopping go back to the queue.
func (s *subscription) handOut(ctx context.Context, msgs []types.Message) {
	b := &batch{}
	b.left.Store(int32(len(msgs)))
	for i := range msgs {
		msg, err := wsqs.DefaultMarshalerUnmarshaler{}.Unmarshal(&msgs[i])
		if err != nil {
			// It comes back after its visibility timeout, and goes to the DLQ after
			// MaxReceiveCount receives.
			s.log.Error("decode message", "queue", s.queue, "message_id", aws.ToString(msgs[i].MessageId), "err", err)
			s.settled(b)
			continue
		}
		msgCtx, end := context.WithCancel(s.stopCtx)
		msg.SetContext(msgCtx)
		select {
		case s.out <- msg:
		case <-ctx.Done():
			end()
			// Never handed out: back to the queue at once.
			for _, m := range msgs[i:] {
				s.setVisibility(aws.ToString(m.ReceiptHandle), 0, "return unhandled message: it comes back after its visibility timeout instead")
				s.settled(b)
			}
			return
		}
		s.waiting.Add(1)
		go s.await(msg, end, aws.ToString(msgs[i].ReceiptHandle), b)
	}
}

// batch counts the messages of one receive not yet acked or nacked, so that the deletes of a
// batch go out together as soon as its last message is acked.
type batch struct{ left atomic.Int32 }

// await waits for a message's ack (delete it) or nack (make it visible again), then ends
// its context.
func (s *subscription) await(msg *message.Message, end context.CancelFunc, receipt string, b *batch) {
	defer s.waiting.Done()
	defer end()
	var extend <-chan time.Time
	if s.cfg.Visibility > 0 {
		t := time.NewTicker(s.cfg.Visibility / 2)
		defer t.Stop()
		extend = t.C
	}
	for {
		select {
		case <-msg.Acked():
			s.slots.Release(1)
			s.del.add(receipt, b.left.Add(-1) == 0)
			return
		case <-msg.Nacked():
			delay := s.cfg.NackDelay
			if s.stopCtx.Err() != nil {
				delay = 0 // most likely cancelled by the stop: let another consumer have it now
			}
			s.setVisibility(receipt, delay, "nack: message comes back after its visibility timeout instead")
			s.settled(b)
			return
		case <-extend:
			s.setVisibility(receipt, s.cfg.Visibility, "extend visibility: the message may be received again while handled")
		case <-s.abandon:
			// Not acked in time: not deleted, and not made visible while a handler may still
			// be working on it.
			return
		}
	}
}

// settled frees the slot of a message that will not be deleted.
func (s *subscription) settled(b *batch) {
	s.slots.Release(1)
	if b.left.Add(-1) == 0 {
		s.del.flush()
	}
}

// setVisibility makes a message visible again after d, and logs failing with warning. Its
// context outlives the subscription's: a nack cancelled by Close would leave the message
// hidden for its full visibility timeout.
func (s *subscription) setVisibility(receipt string, d time.Duration, warning string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.stopCtx), 10*time.Second)
	defer cancel()
	_, err := s.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(s.queueURL),
		ReceiptHandle:     aws.String(receipt),
		VisibilityTimeout: int32(d / time.Second),
	})
	if err != nil {
		s.log.Warn(warning, "queue", s.queue, "err", err)
	}
}

// deleter collects the receipt handles of acked messages and deletes them up to ten per
// DeleteMessageBatch: when ten are queued, when the last message of a batch is acked, or
// deleteHold after the first of them was queued.
type deleter struct {
	client *sqs.Client
	url    string
	log    *slog.Logger
	kick   chan struct{} // capacity 1: a flush is due
	stop   chan struct{} // closed when no more acks can come

	mu      sync.Mutex
	handles []string
	gen     int // counts takes, so a hold timer of handles already taken does nothing
}

func (d *deleter) add(receipt string, lastOfBatch bool) {
	d.mu.Lock()
	d.handles = append(d.handles, receipt)
	n, gen := len(d.handles), d.gen
	d.mu.Unlock()
	switch {
	case lastOfBatch || n >= maxBatch:
		d.flush()
	case n == 1:
		time.AfterFunc(deleteHold, func() {
			d.mu.Lock()
			due := d.gen == gen && len(d.handles) > 0
			d.mu.Unlock()
			if due {
				d.flush()
			}
		})
	}
}

// flush asks the deleter goroutine to delete what is queued.
func (d *deleter) flush() {
	select {
	case d.kick <- struct{}{}:
	default: // a flush is already due
	}
}

func (d *deleter) run() {
	for {
		select {
		case <-d.kick:
			d.deleteQueued()
		case <-d.stop:
			d.deleteQueued()
			return
		}
	}
}

func (d *deleter) deleteQueued() {
	d.mu.Lock()
	handles := d.handles
	d.handles = nil
	d.gen++
	d.mu.Unlock()
	for start := 0; start < len(handles); start += maxBatch {
		d.delete(handles[start:min(start+maxBatch, len(handles))])
	}
}

// delete deletes up to ten messages, retrying the call and the entries SQS failed on its
// side. Entries refused as the sender's fault (a receipt handle no longer valid because the
// message was received again) are logged and dropped: that message will be handled again.
func (d *deleter) delete(handles []string) {
	const attempts = 3
	for attempt := 1; len(handles) > 0; attempt++ {
		entries := make([]types.DeleteMessageBatchRequestEntry, len(handles))
		for i, h := range handles {
			entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := d.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(d.url), Entries: entries})
		cancel()
		var retry []string
		if err != nil {
			if attempt == attempts {
				d.log.Error("delete acked messages: they will be received again", "count", len(handles), "err", err)
				return
			}
			retry = handles
		} else {
			for _, f := range out.Failed {
				i, _ := strconv.Atoi(aws.ToString(f.Id))
				if f.SenderFault || attempt == attempts || i < 0 || i >= len(handles) {
					d.log.Warn("delete acked message refused: it may be received again", "code", aws.ToString(f.Code), "reason", aws.ToString(f.Message))
					continue
				}
				retry = append(retry, handles[i])
			}
		}
		handles = retry
		if len(handles) > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
	}
}
