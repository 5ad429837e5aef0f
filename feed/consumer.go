package feed

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
	"orderd/eventstore"
)

// Handler applies a batch of events, oldest first, in the consumer's transaction. It must be
// idempotent by stream version: an event comes again if its transaction fails after the
// handler's writes (they are rolled back with it), and several consumers may hold events of
// one stream at once. A batch that fails is handed over again event by event, so that one
// event that cannot be applied fails alone.
type Handler func(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error

// ConsumerConfig tunes a consumer. Zero values take the defaults.
type ConsumerConfig struct {
	// Topic is the topic consumed; required.
	Topic string
	// Batch is how many rows one transaction takes and one handler call applies (default
	// 100): the statements and the commit are shared by the batch.
	Batch int
	// Workers is how many transactions run at once in this process (default 1).
	Workers int
	// PollInterval is how long an idle worker waits before looking again (default 200 ms).
	PollInterval time.Duration
	// RetryInterval is how long a worker waits after a transaction that failed or made no
	// progress (default 1 s).
	RetryInterval time.Duration
	// HandlerTimeout bounds one handler call (default 10 s).
	HandlerTimeout time.Duration
	// Reject records, in the consumer's transaction, an event that cannot be decoded (a
	// payload its type's decoder refuses, metadata that does not parse), which is then
	// consumed so that the events after it go on. Nil: such an event is logged as an error
	// and consumed all the same.
	Reject func(ctx context.Context, tx eventstore.Tx, r Rejection) error
}

// Rejection is an event of the feed that cannot be decoded, and why.
type Rejection struct {
	Topic     string
	EventID   string
	EventType string
	OrderID   domain.OrderID // 0 if the message does not say
	Version   int
	Reason    string

	position int64 // of its row
}

func (c *ConsumerConfig) setDefaults() {
	c.Batch = cmp.Or(c.Batch, 100)
	c.Workers = cmp.Or(c.Workers, 1)
	c.PollInterval = cmp.Or(c.PollInterval, 200*time.Millisecond)
	c.RetryInterval = cmp.Or(c.RetryInterval, time.Second)
	c.HandlerTimeout = cmp.Or(c.HandlerTimeout, 10*time.Second)
}

// Consumer runs a Handler over a topic's rows with watermill-sql's Subscriber.
//
// The subscriber reads a batch in one READ COMMITTED transaction, hands its messages out one
// at a time, waiting for each ack, and commits after the last (TxFromContext is that
// transaction). The consumer collects the batch's messages and, at the last one, applies them
// with one handler call and deletes their rows with one statement, in that transaction: a
// batch costs a handful of statements and one commit, not a few per event. (Which message is
// the last the subscription's schema adapter knows: it has read every row of the poll before
// the first message is handed out.)
//
// Watermill-sql would commit a failed handler's writes with the batch (a nack only resends
// the message in the same transaction; an ack deadline or Close ends the wait while the
// handler may still be writing). The consumer keeps a batch's writes all or nothing instead:
//   - it always acks: an event is consumed by the DELETE of its row, not by the ack; an event
//     not applied keeps its row and comes again at the next poll;
//   - the handler's first write is preceded by a savepoint; on failure the consumer rolls
//     back to it, then applies the batch's events one by one, each after its own savepoint;
//   - if a rollback fails, or a statement failed before any write, the transaction may be
//     gone (InnoDB rolls back a deadlock victim's whole transaction, after which the
//     connection runs each statement on its own): nothing more is run in it, and the batch
//     comes again;
//   - the handler runs in the goroutine that reads the subscription, under a timeout shorter
//     than the subscriber's ack deadline, and the subscription is cancelled only between
//     messages: the subscriber never commits while the handler writes.
type Consumer struct {
	db     *sql.DB
	handle Handler
	log    *slog.Logger
	cfg    ConsumerConfig
}

// NewConsumer returns a consumer of cfg.Topic that applies handle.
func NewConsumer(db *sql.DB, handle Handler, log *slog.Logger, cfg ConsumerConfig) (*Consumer, error) {
	if db == nil || handle == nil || log == nil || cfg.Topic == "" {
		return nil, errors.New("feed: NewConsumer needs a db, a handler, a logger and a topic")
	}
	cfg.setDefaults()
	return &Consumer{db: db, handle: handle, log: log.With("feed", cfg.Topic), cfg: cfg}, nil
}

// Run consumes until ctx is cancelled. Failures are logged and retried: rows stay in the
// feed until handled, so nothing is lost while MySQL is away.
func (c *Consumer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, c.cfg.Workers)
	for i := range c.cfg.Workers {
		wg.Go(func() { errs[i] = c.work(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// worker is one subscription's state, shared by its loop and its subscriber's schema adapter
// and backoff, which run in the subscriber's goroutine (before a batch's first message and
// after its last ack).
type worker struct {
	// rows is how many rows the current poll read: its batch's last message is the rows-th.
	rows atomic.Int64
	// failed and applied say whether the batch had an event that failed and one applied.
	failed, applied atomic.Bool
	// lastWarn limits failure logs to one per RetryInterval.
	lastWarn time.Time
	muted    int
}

func (c *Consumer) work(ctx context.Context) error {
	w := &worker{}
	sub, err := wsql.NewSubscriber(c.db, wsql.SubscriberConfig{
		ConsumerGroup:  c.cfg.Topic,
		AckDeadline:    ptr(c.cfg.HandlerTimeout + 2*undoTimeout + 5*time.Second),
		PollInterval:   c.cfg.PollInterval,
		RetryInterval:  c.cfg.RetryInterval,
		BackoffManager: &backoff{c: c, w: w},
		SchemaAdapter:  subscription{schema: schema{batch: c.cfg.Batch}, w: w},
		OffsetsAdapter: offsets{},
	}, watermill.NewSlogLogger(c.log))
	if err != nil {
		return fmt.Errorf("feed %s: %w", c.cfg.Topic, err)
	}
	defer sub.Close()
	// The subscription outlives ctx until the loop below is between two messages.
	subCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	msgs, err := sub.Subscribe(subCtx, c.cfg.Topic)
	if err != nil {
		return fmt.Errorf("feed %s: subscribe: %w", c.cfg.Topic, err)
	}
	var batch []*message.Message
	var batchTx *sql.Tx
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			tx, _ := wsql.TxFromContext(msg.Context())
			if tx != batchTx { // a new poll; one cut short (by an error) left its rows for the next
				batch, batchTx = batch[:0], tx
			}
			batch = append(batch, msg)
			if int64(len(batch)) >= w.rows.Load() && tx != nil {
				c.consume(msg.Context(), tx, batch, w)
				batch, batchTx = batch[:0], nil
			}
			msg.Ack()
		}
	}
}

// undoTimeout bounds the rollback to a savepoint.
const undoTimeout = 5 * time.Second

// consume applies a batch and deletes its rows, or leaves no trace of the events it could
// not apply.
func (c *Consumer) consume(msgCtx context.Context, tx *sql.Tx, batch []*message.Message, w *worker) {
	ctx, cancel := context.WithTimeout(msgCtx, c.cfg.HandlerTimeout)
	defer cancel()
	recs := make([]eventstore.Record, 0, len(batch))
	var unknown []*message.Message
	var rejected []Rejection
	for _, msg := range batch {
		rec, err := eventstore.RecordFromMessage(msg)
		switch {
		case err == nil:
			recs = append(recs, rec)
		case !knownType(msg.Metadata[eventstore.MetaEventType]):
			unknown = append(unknown, msg)
		default:
			r := Rejection{Topic: c.cfg.Topic, EventID: msg.UUID, EventType: msg.Metadata[eventstore.MetaEventType], Reason: err.Error()}
			r.OrderID, r.Version = domain.OrderID(atoi(msg.Metadata[eventstore.MetaStreamID])), atoi(msg.Metadata[eventstore.MetaVersion])
			r.position, _ = strconv.ParseInt(msg.Metadata[eventstore.MetaPosition], 10, 64)
			rejected = append(rejected, r)
		}
	}
	if len(unknown) > 0 {
		// A later release wrote them (a rolling deploy): they stay in the feed for an
		// instance that knows their type; consuming them here would lose them for good.
		w.failed.Store(true)
		c.warn(w, "feed events of a type this release does not know; they stay for an instance that knows it",
			"events", len(unknown), "type", unknown[0].Metadata[eventstore.MetaEventType])
	}
	if len(rejected) > 0 {
		if !c.discard(ctx, tx, rejected, w) {
			return // the transaction may be gone: the whole batch comes again
		}
	}
	if len(recs) == 0 {
		return
	}
	alive, err := c.apply(ctx, tx, recs)
	if err == nil {
		w.applied.Store(true)
		return
	}
	if !alive || len(recs) == 1 {
		w.failed.Store(true)
		c.warn(w, "feed events not applied; they stay for the next poll", "events", len(recs), "error", err, "transaction_lost", !alive)
		return
	}
	// One event may be the cause: apply them one by one.
	for i, rec := range recs {
		alive, err := c.apply(ctx, tx, recs[i:i+1])
		switch {
		case err == nil:
			w.applied.Store(true)
			continue
		case !alive:
			w.failed.Store(true)
			c.warn(w, "feed events not applied; they stay for the next poll", "events", len(recs)-i, "error", err, "transaction_lost", true)
			return
		}
		w.failed.Store(true)
		c.warn(w, "feed event not applied; it stays for the next poll", "event_id", rec.EventID(), "position", rec.Position, "error", err)
	}
}

// knownType reports whether this release knows the event type: one it does not know was
// written by a later release, and waits for an instance of it.
func knownType(typ string) bool {
	_, ok := eventstore.SchemaVersions()[typ]
	return ok
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// discard consumes the events this release knows but cannot decode, each recorded with its
// reason (Reject). It reports whether the transaction is known to be alive.
func (c *Consumer) discard(ctx context.Context, tx *sql.Tx, rejected []Rejection, w *worker) bool {
	sp := &savepointTx{tx: tx}
	var positions []eventstore.Record
	var err error
	for _, r := range rejected {
		positions = append(positions, eventstore.Record{Position: r.position})
		if c.cfg.Reject == nil {
			c.log.Error("feed event cannot be decoded; consumed without being applied", "event_id", r.EventID, "reason", r.Reason)
		} else if err = c.cfg.Reject(ctx, sp, r); err != nil {
			break
		}
	}
	if err == nil {
		err = deleteRows(ctx, sp, c.cfg.Topic, positions)
	}
	if err == nil {
		return true
	}
	w.failed.Store(true)
	alive := sp.undo(context.WithoutCancel(ctx), err)
	c.warn(w, "feed events not discarded; they stay for the next poll", "events", len(positions), "error", err, "transaction_lost", !alive)
	return alive
}

// apply runs the handler on recs and deletes their rows. On failure it undoes both and
// reports whether the transaction is known to be alive.
func (c *Consumer) apply(ctx context.Context, tx *sql.Tx, recs []eventstore.Record) (alive bool, err error) {
	sp := &savepointTx{tx: tx}
	err = c.handle(ctx, sp, recs)
	if err == nil {
		if err = deleteRows(ctx, sp, c.cfg.Topic, recs); err == nil {
			return true, nil
		}
	}
	return sp.undo(context.WithoutCancel(ctx), err), err
}

// deleteRows deletes the rows of recs. Each row is looked up by its key (the list drives the
// join), so that only rows this consumer holds are locked: see outbox.Relay's delete.
func deleteRows(ctx context.Context, tx eventstore.Tx, topic string, recs []eventstore.Record) error {
	args := make([]any, 0, len(recs)+1)
	for _, r := range recs {
		args = append(args, r.Position)
	}
	sel := strings.TrimSuffix(strings.Repeat("SELECT ? AS position UNION ALL ", len(recs)), " UNION ALL ")
	_, err := tx.ExecContext(ctx, `DELETE f FROM (`+sel+`) d STRAIGHT_JOIN event_feed f ON f.topic = ? AND f.position = d.position`,
		append(args, topic)...)
	if err != nil {
		return fmt.Errorf("delete the applied rows: %w", err)
	}
	return nil
}

func (c *Consumer) warn(w *worker, text string, args ...any) {
	if time.Since(w.lastWarn) < c.cfg.RetryInterval {
		w.muted++
		return
	}
	if w.muted > 0 {
		args = append(args, "failures_not_logged", w.muted)
	}
	w.lastWarn, w.muted = time.Now(), 0
	c.log.Warn(text, args...)
}

// savepointTx is the batch's transaction as a handler sees it: its first write is preceded
// by a savepoint, so that a failed call's writes can be undone without the rest.
type savepointTx struct {
	tx    *sql.Tx
	taken bool
}

func (t *savepointTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if !t.taken {
		if _, err := t.tx.ExecContext(ctx, `SAVEPOINT feed_apply`); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		t.taken = true
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *savepointTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

// undo undoes the writes of a call that failed with err and reports whether the transaction
// is known to be alive. Before any write that is so only for a KindInvalid error, a verdict
// on an event: any other may come from a statement, and a locking read can be a deadlock's
// victim (which ends the transaction) even after its first rows arrived.
func (t *savepointTx) undo(ctx context.Context, err error) bool {
	if !t.taken {
		return domain.ErrorKind(err) == domain.KindInvalid
	}
	ctx, cancel := context.WithTimeout(ctx, undoTimeout)
	defer cancel()
	_, rerr := t.tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT feed_apply`)
	return rerr == nil
}

// subscription is the schema adapter of one worker's subscription: the feed's, counting the
// rows each poll reads.
type subscription struct {
	schema
	w *worker
}

// SelectQuery implements wsql.SchemaAdapter; the subscriber calls it at the start of a poll.
func (s subscription) SelectQuery(topic, group string, o wsql.OffsetsAdapter) wsql.Query {
	s.w.rows.Store(0)
	return s.schema.SelectQuery(topic, group, o)
}

// UnmarshalMessage implements wsql.SchemaAdapter; the subscriber calls it for every row of
// the poll before it hands out the first message.
func (s subscription) UnmarshalMessage(row wsql.Scanner) (wsql.Row, error) {
	r, err := s.schema.UnmarshalMessage(row)
	if err == nil {
		s.w.rows.Add(1)
	}
	return r, err
}

// backoff is the subscriber's BackoffManager. It polls again at once only after a full
// batch: after a partial one it waits PollInterval, so that under load the feed gathers
// batches that share their statements and commit (polling at once after every batch took a
// few rows each time, and cost MariaDB a third more CPU per order than the appends alone).
// It also waits RetryInterval after a batch in which nothing could be applied, so that an
// event that cannot be applied yet (a type this release does not know, during a rolling
// deploy) is not retried in a tight loop.
type backoff struct {
	c *Consumer
	w *worker
}

func (b *backoff) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	failed, applied := b.w.failed.Swap(false), b.w.applied.Swap(false)
	switch {
	case errors.Is(err, context.Canceled):
		return 0 // the subscription is ending
	case err != nil:
		b.c.warn(b.w, "feed poll failed; retrying", "error", err, "retry_in", b.c.cfg.RetryInterval)
		return b.c.cfg.RetryInterval
	case failed && !applied:
		return b.c.cfg.RetryInterval
	case noMsg || b.w.rows.Load() < int64(b.c.cfg.Batch):
		return b.c.cfg.PollInterval
	}
	return 0
}

func ptr[T any](v T) *T { return &v }
