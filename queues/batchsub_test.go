package queues

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/internal/testenv"
)

// recorder is the SQS client's HTTP client: it counts the calls by operation, remembers the
// MaxNumberOfMessages of each receive, and can spoil replies to test how the subscriber
// copes with one it cannot decode.
type recorder struct {
	inner aws.HTTPClient
	mu    sync.Mutex
	calls map[string]int
	asked []int32 // MaxNumberOfMessages of each ReceiveMessage, in order
	// spoil, if set, is called with each reply; it returns the body the SDK gets.
	spoil func(op string, body []byte) []byte
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	op := strings.TrimPrefix(req.Header.Get("X-Amz-Target"), "AmazonSQS.")
	r.mu.Lock()
	r.calls[op]++
	spoil := r.spoil
	r.mu.Unlock()
	if op == "ReceiveMessage" && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var in struct{ MaxNumberOfMessages int32 }
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.asked = append(r.asked, in.MaxNumberOfMessages)
		r.mu.Unlock()
	}
	resp, err := r.inner.Do(req)
	if err != nil || spoil == nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body = spoil(op, body)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func (r *recorder) count(op string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[op]
}

// sqsTest is a private goaws and a client of it whose calls are recorded.
type sqsTest struct {
	t      testing.TB
	awsCfg aws.Config
	cfg    Config
	client *sqs.Client
	rec    *recorder
	log    *slog.Logger
	// logErrors counts the errors logged, such as replies the SDK could not decode.
	logErrors atomic.Int64
}

func newSQSTest(t testing.TB) *sqsTest {
	t.Helper()
	g := testenv.StartGoaws(t)
	cfg := Config{Endpoint: g.URL, Emulator: Goaws, Region: "us-east-1"}
	awsCfg, err := AWSConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{inner: awsCfg.HTTPClient, calls: map[string]int{}}
	awsCfg.HTTPClient = rec
	e := &sqsTest{t: t, awsCfg: awsCfg, cfg: cfg, client: NewClient(awsCfg, cfg), rec: rec}
	e.log = slog.New(slog.NewTextHandler(testWriter{t, &e.logErrors}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return e
}

// testWriter sends log lines to the test's log and counts the errors.
type testWriter struct {
	t      testing.TB
	errors *atomic.Int64
}

func (w testWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("level=ERROR")) {
		w.errors.Add(1)
	}
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// queue creates a queue with the visibility timeout and returns its URL.
func (e *sqsTest) queue(name string, visibility time.Duration) string {
	e.t.Helper()
	out, err := e.client.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name),
		Attributes: map[string]string{"VisibilityTimeout": strconv.Itoa(int(visibility.Seconds()))}})
	if err != nil {
		e.t.Fatal(err)
	}
	return aws.ToString(out.QueueUrl)
}

// publish sends n messages with our BatchPublisher; message i has UUID "<prefix>-i".
func (e *sqsTest) publish(queue, prefix string, n int) map[string]*message.Message {
	e.t.Helper()
	pub, err := NewBatchPublisher(e.client)
	if err != nil {
		e.t.Fatal(err)
	}
	sent := map[string]*message.Message{}
	var msgs []*message.Message
	for i := range n {
		m := message.NewMessage(fmt.Sprintf("%s-%d", prefix, i), fmt.Appendf(nil, `{"stream_id":%d,"type":"OrderPlaced","note":"héllo <&>"}`, i))
		m.Metadata.Set("event_type", "OrderPlaced")
		m.Metadata.Set("seq", strconv.Itoa(i))
		m.Metadata.Set("traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01")
		msgs = append(msgs, m)
		sent[m.UUID] = m
	}
	if err := pub.Publish(queue, msgs...); err != nil {
		e.t.Fatal(err)
	}
	return sent
}

// left returns the messages in the queue (goaws counts hidden ones too) and the hidden ones.
func (e *sqsTest) left(url string) (total, hidden int) {
	e.t.Helper()
	out, err := e.client.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		e.t.Fatal(err)
	}
	total, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	hidden, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return total, hidden
}

// waitEmpty waits until the queue holds no message at all.
func (e *sqsTest) waitEmpty(url string, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		total, hidden := e.left(url)
		if total == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("queue still holds %d messages (%d hidden) after %s", total, hidden, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *sqsTest) subscriber(cfg BatchSubscriberConfig) *BatchSubscriber {
	e.t.Helper()
	cfg.Emulator = e.cfg.Emulator // goaws: its receive stagger, as orderd runs on it
	sub, err := NewBatchSubscriber(e.client, cfg, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sub.Close() })
	return sub
}

func subscribe(t testing.TB, sub *BatchSubscriber, queue string) <-chan *message.Message {
	t.Helper()
	ch, err := sub.Subscribe(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// next returns the next message, or fails the test after within.
func next(t testing.TB, ch <-chan *message.Message, within time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(within):
		t.Fatalf("no message within %s", within)
		return nil
	}
}

func TestBatchSubscriberDeliversEveryMessageAndDeletesThem(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", 30*time.Second)
	const n = 500
	sent := e.publish("orders", "m", n)
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{}), "orders")

	got := map[string]int{}
	for len(got) < n {
		m := next(t, ch, 5*time.Second)
		want, ok := sent[m.UUID]
		if !ok {
			t.Fatalf("unexpected message %q", m.UUID)
		}
		if !bytes.Equal(m.Payload, want.Payload) {
			t.Fatalf("message %s: payload %q, want %q", m.UUID, m.Payload, want.Payload)
		}
		for _, k := range []string{"event_type", "seq", "traceparent"} {
			if m.Metadata.Get(k) != want.Metadata.Get(k) {
				t.Fatalf("message %s: metadata %s = %q, want %q", m.UUID, k, m.Metadata.Get(k), want.Metadata.Get(k))
			}
		}
		if m.Context() == nil || m.Context().Err() != nil {
			t.Fatalf("message %s: context %v", m.UUID, m.Context())
		}
		got[m.UUID]++
		go m.Ack() // as the router does: each message on its own goroutine
	}
	// Deleted while running, not only by Close's final flush.
	e.waitEmpty(url, 3*time.Second)

	receives, deletes := e.rec.count("ReceiveMessage"), e.rec.count("DeleteMessageBatch")
	t.Logf("%d messages: %d ReceiveMessage, %d DeleteMessageBatch, %d duplicates", n, receives, deletes, sum(got)-n)
	if receives > n/5 {
		t.Errorf("%d ReceiveMessage calls for %d messages, want at most %d", receives, n, n/5)
	}
	if deletes > n/5 {
		t.Errorf("%d DeleteMessageBatch calls for %d messages, want at most %d", deletes, n, n/5)
	}
	if single := e.rec.count("DeleteMessage"); single != 0 {
		t.Errorf("%d single DeleteMessage calls, want none", single)
	}
}

func sum(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

func TestBatchSubscriberHandsOutABatchWithoutWaitingForAcks(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", 30*time.Second)
	e.publish("orders", "m", 30)
	// One receiver and room for one batch: ten messages unacked at once, and no more.
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{Receivers: 1, MaxInFlight: 10}), "orders")

	var held []*message.Message
	for range 10 {
		held = append(held, next(t, ch, 5*time.Second))
	}
	select {
	case m := <-ch:
		t.Fatalf("message %s handed out beyond MaxInFlight", m.UUID)
	case <-time.After(500 * time.Millisecond):
	}
	for _, m := range held {
		m.Ack()
	}
	for range 20 {
		next(t, ch, 5*time.Second).Ack()
	}
	e.waitEmpty(url, 3*time.Second)
}

func TestBatchSubscriberNackedMessageComesBackPromptly(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", 30*time.Second)
	e.publish("orders", "m", 1)
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{}), "orders")

	first := next(t, ch, 5*time.Second)
	nacked := time.Now()
	first.Nack()
	// Well under the 30 s visibility timeout: ChangeMessageVisibility made it visible.
	again := next(t, ch, 2*time.Second)
	t.Logf("redelivered %s after the nack", time.Since(nacked))
	if again.UUID != first.UUID {
		t.Fatalf("got %s after nacking %s", again.UUID, first.UUID)
	}
	again.Ack()
	e.waitEmpty(url, 3*time.Second)
}

// TestBatchSubscriberVisibility: with Visibility set, a message held by its handler longer
// than that is kept hidden (extended every Visibility/2), never handed out twice.
func TestBatchSubscriberVisibility(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", 30*time.Second)
	e.publish("orders", "m", 1)
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{Visibility: 2 * time.Second}), "orders")
	held := next(t, ch, 5*time.Second)
	// Held for more than twice the visibility: still hidden, never handed out again.
	select {
	case m := <-ch:
		t.Fatalf("message %s handed out again while its first delivery was being handled", m.UUID)
	case <-time.After(5 * time.Second):
	}
	if total, hidden := e.left(url); total != 1 || hidden != 1 {
		t.Fatalf("queue: %d messages, %d hidden; want the held one, hidden", total, hidden)
	}
	held.Ack()
	e.waitEmpty(url, 3*time.Second)
}

// TestBatchSubscriberLostReplyComesBackAfterVisibility: a receive whose reply is lost on the
// way (spoiled here) hid its messages; with Visibility set they come back after it, well
// before the queue's 30 s visibility timeout.
func TestBatchSubscriberLostReplyComesBackAfterVisibility(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", 30*time.Second)
	e.publish("orders", "m", 3)
	e.spoilFirstBatch()
	start := time.Now()
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{Receivers: 1, RetryDelay: 10 * time.Millisecond, Visibility: 2 * time.Second}), "orders")
	for range 3 {
		next(t, ch, 10*time.Second).Ack()
	}
	t.Logf("the lost batch came back after %s", time.Since(start).Round(100*time.Millisecond))
	e.waitEmpty(url, 3*time.Second)
}

// spoilFirstBatch cuts the first reply that carries messages in half: a reply lost on the way.
func (e *sqsTest) spoilFirstBatch() {
	var once sync.Once
	e.rec.spoil = func(op string, body []byte) []byte {
		if op == "ReceiveMessage" && bytes.Contains(body, []byte("ReceiptHandle")) {
			spoilt := body
			once.Do(func() { spoilt = body[:len(body)/2] })
			return spoilt
		}
		return body
	}
}

func TestBatchSubscriberClose(t *testing.T) {
	t.Run("returns promptly during a long poll", func(t *testing.T) {
		e := newSQSTest(t)
		e.queue("orders", 30*time.Second)
		sub := e.subscriber(BatchSubscriberConfig{WaitTime: 20 * time.Second, Receivers: 3})
		ch := subscribe(t, sub, "orders")
		time.Sleep(300 * time.Millisecond) // the receives are waiting in goaws
		start := time.Now()
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Close took %s", d)
		}
		if _, ok := <-ch; ok {
			t.Fatal("channel still open after Close")
		}
	})
	t.Run("waits for acks and deletes the acked messages", func(t *testing.T) {
		e := newSQSTest(t)
		url := e.queue("orders", 30*time.Second)
		e.publish("orders", "m", 5)
		sub := e.subscriber(BatchSubscriberConfig{WaitTime: 20 * time.Second})
		ch := subscribe(t, sub, "orders")
		var held []*message.Message
		for range 5 {
			held = append(held, next(t, ch, 5*time.Second))
		}
		go func() {
			time.Sleep(300 * time.Millisecond)
			for _, m := range held {
				m.Ack()
			}
		}()
		start := time.Now()
		sub.Close()
		if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
			t.Fatalf("Close returned after %s, want after the acks (300 ms)", d)
		}
		if total, _ := e.left(url); total != 0 {
			t.Fatalf("%d messages left after Close, want the 5 acked ones deleted", total)
		}
	})
	t.Run("gives up on unacked messages without deleting them", func(t *testing.T) {
		e := newSQSTest(t)
		url := e.queue("orders", 30*time.Second)
		e.publish("orders", "m", 3)
		sub := e.subscriber(BatchSubscriberConfig{WaitTime: 20 * time.Second, CloseTimeout: 300 * time.Millisecond})
		ch := subscribe(t, sub, "orders")
		for range 3 {
			next(t, ch, 5*time.Second) // never acked
		}
		start := time.Now()
		sub.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Close took %s with CloseTimeout 300ms", d)
		}
		if total, hidden := e.left(url); total != 3 || hidden != 3 {
			t.Fatalf("after Close: %d messages, %d hidden; want the 3 unacked ones still there, hidden", total, hidden)
		}
	})
}

func TestBatchSubscriberFallsBackToSingleReceivesAfterABadReply(t *testing.T) {
	e := newSQSTest(t)
	url := e.queue("orders", time.Second) // the spoiled batch comes back after a second
	e.publish("orders", "m", 10)
	e.spoilFirstBatch()
	ch := subscribe(t, e.subscriber(BatchSubscriberConfig{Receivers: 1, RetryDelay: 10 * time.Millisecond}), "orders")

	got := map[string]bool{}
	for len(got) < 10 {
		m := next(t, ch, 10*time.Second)
		got[m.UUID] = true
		m.Ack()
	}
	e.waitEmpty(url, 3*time.Second)
	e.rec.mu.Lock()
	asked := append([]int32(nil), e.rec.asked...)
	e.rec.mu.Unlock()
	if asked[0] != 10 || asked[len(asked)-1] != 1 {
		t.Fatalf("MaxNumberOfMessages per receive %v: want 10 first, then 1 after the bad reply", asked)
	}
}

func TestBatchSubscriberNeverCreatesAQueue(t *testing.T) {
	e := newSQSTest(t)
	sub := e.subscriber(BatchSubscriberConfig{})
	if _, err := sub.Subscribe(context.Background(), "missing"); err == nil {
		t.Fatal("subscribed to a queue that does not exist")
	}
	if _, err := e.client.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String("missing")}); err == nil {
		t.Fatal("Subscribe created the queue")
	}
}

func TestBatchSubscriberConfig(t *testing.T) {
	def := BatchSubscriberConfig{}.withDefaults()
	if def.MaxMessages != 10 || def.WaitTime != 10*time.Second || def.Receivers != 2 || def.MaxInFlight != 20 {
		t.Errorf("defaults %+v", def)
	}
	for _, c := range []BatchSubscriberConfig{
		{MaxMessages: 11}, {WaitTime: 21 * time.Second}, {MaxMessages: 10, MaxInFlight: 5}, {NackDelay: -time.Second},
	} {
		if err := c.withDefaults().Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := NewBatchSubscriber(nil, BatchSubscriberConfig{}, slog.Default()); err == nil {
		t.Error("nil client accepted")
	}
}

// TestMeasureBatchSubscriber compares the batch subscriber with watermill-aws's as the
// service runs it (eight router handlers per queue): CPU and time to drain a backlog, and
// the latency of one message on an idle queue. BATCHSUB_MEASURE=1 runs it.
func TestMeasureBatchSubscriber(t *testing.T) {
	if os.Getenv("BATCHSUB_MEASURE") == "" {
		t.Skip("BATCHSUB_MEASURE not set")
	}
	type setup struct {
		name     string
		handlers int
		sub      func(e *sqsTest) message.Subscriber
	}
	watermillAWS := setup{"watermill-aws, 8 handlers", 8, func(e *sqsTest) message.Subscriber {
		s, err := watermillAWSSubscriber(e.awsCfg, e.cfg, e.log)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
	batchSub := func(cfg BatchSubscriberConfig) setup {
		cfg = cfg.withDefaults()
		return setup{fmt.Sprintf("batch, %d receivers, MaxInFlight %d", cfg.Receivers, cfg.MaxInFlight), 1, func(e *sqsTest) message.Subscriber {
			return e.subscriber(cfg)
		}}
	}
	// route runs a router feeding the queue to handle through s; it stops with the test.
	route := func(t *testing.T, e *sqsTest, s setup, handle func(*message.Message)) {
		r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		sub := s.sub(e)
		for i := range s.handlers {
			r.AddNoPublisherHandler(fmt.Sprintf("h%d", i), "orders", sub, func(m *message.Message) error { handle(m); return nil })
		}
		go r.Run(context.Background()) //nolint:errcheck // closed below
		<-r.Running()
		t.Cleanup(func() { r.Close() })
	}

	const backlog = 5000
	// work is how long the handler takes: none, to see the subscriber's own cost, and 5 ms,
	// as a stage waiting on MySQL, to see what MaxInFlight does.
	for _, work := range []time.Duration{0, 5 * time.Millisecond} {
		for _, s := range []setup{watermillAWS, batchSub(BatchSubscriberConfig{Receivers: 1, MaxInFlight: 10}),
			batchSub(BatchSubscriberConfig{Receivers: 1, MaxInFlight: 20}), batchSub(BatchSubscriberConfig{}),
			batchSub(BatchSubscriberConfig{MaxInFlight: 40}), batchSub(BatchSubscriberConfig{Receivers: 4})} {
			t.Run(fmt.Sprintf("backlog/work %s/%s", work, s.name), func(t *testing.T) {
				e := newSQSTest(t)
				url := e.queue("orders", 30*time.Second)
				e.publish("orders", "m", backlog)
				before := e.rec.snapshot()
				var mu sync.Mutex
				seen, deliveries := map[string]bool{}, 0
				done := make(chan struct{})
				cpu0, goaws0 := cpuTime(os.Getpid()), cpuTime(goawsPid(t))
				start := time.Now()
				route(t, e, s, func(m *message.Message) {
					time.Sleep(work)
					mu.Lock()
					defer mu.Unlock()
					deliveries++
					seen[m.UUID] = true
					if len(seen) == backlog && deliveries >= backlog {
						select {
						case <-done:
						default:
							close(done)
						}
					}
				})
				select {
				case <-done:
				case <-time.After(5 * time.Minute):
					t.Fatal("backlog not drained")
				}
				e.waitEmpty(url, 10*time.Second)
				wall := time.Since(start)
				if n := e.logErrors.Load(); n > 0 {
					t.Errorf("%d errors logged (receives that failed?)", n)
				}
				cpu, goaws := cpuTime(os.Getpid())-cpu0, cpuTime(goawsPid(t))-goaws0
				calls := e.rec.snapshot()
				perMsg := func(op string) float64 { return float64(calls[op]-before[op]) / backlog }
				t.Logf("work %s %-40s %5.0f msg/s  orderd-side CPU %4.0f µs/msg  goaws CPU %4.0f µs/msg  per msg: %.2f receives %.2f deletes %.2f batch deletes  %d duplicates",
					work, s.name, backlog/wall.Seconds(), float64(cpu.Microseconds())/backlog, float64(goaws.Microseconds())/backlog,
					perMsg("ReceiveMessage"), perMsg("DeleteMessage"), perMsg("DeleteMessageBatch"), deliveries-backlog)
			})
		}
	}

	for _, s := range []setup{watermillAWS, batchSub(BatchSubscriberConfig{Receivers: 1}), batchSub(BatchSubscriberConfig{Receivers: 2}),
		batchSub(BatchSubscriberConfig{Receivers: 3}), batchSub(BatchSubscriberConfig{Receivers: 4})} {
		t.Run("light load/"+s.name, func(t *testing.T) {
			e := newSQSTest(t)
			e.queue("orders", 30*time.Second)
			arrived := make(chan time.Time, 1)
			route(t, e, s, func(*message.Message) { arrived <- time.Now() })
			pub, err := NewBatchPublisher(e.client)
			if err != nil {
				t.Fatal(err)
			}
			var lat []time.Duration
			for i := range 60 {
				time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
				sent := time.Now()
				m := message.NewMessage(strconv.Itoa(i), []byte("{}"))
				m.Metadata.Set("event_type", "OrderPlaced")
				if err := pub.Publish("orders", m); err != nil {
					t.Fatal(err)
				}
				select {
				case at := <-arrived:
					lat = append(lat, at.Sub(sent))
				case <-time.After(5 * time.Second):
					t.Fatal("message not received")
				}
			}
			slices.Sort(lat)
			t.Logf("%-40s publish→handler p50 %3d ms  p90 %3d ms  max %3d ms", s.name,
				lat[len(lat)/2].Milliseconds(), lat[len(lat)*9/10].Milliseconds(), lat[len(lat)-1].Milliseconds())
		})
	}
}

func (r *recorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.calls)
}

// cpuTime returns the user+system CPU time a process has used.
func cpuTime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and stime are the
	// 12th and 13th, in clock ticks of 10 ms.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// goawsPid finds the newest goaws this test process started.
func goawsPid(t testing.TB) int {
	entries, _ := os.ReadDir("/proc")
	newest := 0
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		if f[1] == strconv.Itoa(os.Getpid()) && pid > newest {
			newest = pid
		}
	}
	if newest == 0 {
		t.Fatal("goaws process not found")
	}
	return newest
}

// watermillAWSSubscriber is the subscriber the service used before BatchSubscriber:
// watermill-aws's, one message per ReceiveMessage.
func watermillAWSSubscriber(awsCfg aws.Config, c Config, log *slog.Logger) (*wsqs.Subscriber, error) {
	sub, err := wsqs.NewSubscriber(wsqs.SubscriberConfig{
		AWSConfig:                   awsCfg,
		OptFns:                      endpointOpts(c),
		DoNotCreateQueueIfNotExists: true,
		ReconnectRetrySleep:         time.Second,
		GenerateReceiveMessageInput: func(ctx context.Context, queueURL wsqs.QueueURL) (*sqs.ReceiveMessageInput, error) {
			return &sqs.ReceiveMessageInput{
				QueueUrl:              aws.String(string(queueURL)),
				MessageAttributeNames: []string{"All"},
				WaitTimeSeconds:       10,
				MaxNumberOfMessages:   1,
			}, nil
		},
	}, watermill.NewSlogLogger(log))
	if err != nil {
		return nil, fmt.Errorf("new SQS subscriber: %w", err)
	}
	return sub, nil
}
