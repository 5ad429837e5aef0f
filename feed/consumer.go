package feed

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
	"orderd/eventstore"
)

// Handler applies one event in the consumer's transaction. It must be idempotent by stream
// version: a row comes again if its transaction fails after the handler's writes (they are
// rolled back with it), and several consumers may take events of one stream at once.
type Handler func(ctx context.Context, tx eventstore.Tx, rec eventstore.Record) error

// ConsumerConfig tunes a consumer. Zero values take the defaults.
type ConsumerConfig struct {
	// Topic is the topic consumed; required.
	Topic string
	// Batch is how many rows one transaction takes (default 100): a transaction's cost is
	// shared by its rows, and a failed one is repeated whole.
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
// at a time and commits after the last ack (TxFromContext is that transaction). Watermill-sql
// would commit a failed handler's writes with the batch (a nack only resends the message in
// the same transaction; an ack deadline or Close ends the wait while the handler may still be
// writing). The consumer keeps every message's writes all or nothing instead:
//   - it always acks, after the handler has returned: a message is consumed by the DELETE of
//     its row, run in the transaction right after the handler's writes, not by the ack; a
//     failed message keeps its row and comes again at the next poll;
//   - a handler's first write is preceded by a savepoint; on failure the consumer rolls back
//     to it, undoing the message's writes only;
//   - if that rollback fails, or a statement failed before any write, the transaction may be
//     gone (InnoDB rolls back a deadlock victim's whole transaction, after which the
//     connection runs each statement on its own): the rest of the batch is acked untouched
//     and comes again;
//   - handlers run in the goroutine that reads the subscription, under a timeout shorter
//     than the subscriber's ack deadline, and the subscription is cancelled only between
//     two messages: the subscriber never commits while a handler writes.
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

// worker is one subscription's state, shared by its handler loop and its subscriber's
// backoff (which runs between batches, after every message of the batch was acked).
type worker struct {
	// dead is a transaction that may have ended under the batch: its remaining messages are
	// acked untouched.
	dead *sql.Tx
	// failed and handled say whether the batch so far had a failed and a handled message.
	failed, handled atomic.Bool
	// lastWarn limits failure logs to one per RetryInterval.
	lastWarn time.Time
	muted    int
}

func (c *Consumer) work(ctx context.Context) error {
	w := &worker{}
	sub, err := wsql.NewSubscriber(c.db, wsql.SubscriberConfig{
		ConsumerGroup:  c.cfg.Topic,
		AckDeadline:    ptr(c.cfg.HandlerTimeout + undoTimeout + 5*time.Second),
		PollInterval:   c.cfg.PollInterval,
		RetryInterval:  c.cfg.RetryInterval,
		BackoffManager: &backoff{c: c, w: w},
		SchemaAdapter:  schema{batch: c.cfg.Batch},
		OffsetsAdapter: offsets{},
	}, watermill.NewSlogLogger(c.log))
	if err != nil {
		return fmt.Errorf("feed %s: %w", c.cfg.Topic, err)
	}
	defer sub.Close()
	// The subscription outlives ctx until the loop below has finished its message.
	subCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	msgs, err := sub.Subscribe(subCtx, c.cfg.Topic)
	if err != nil {
		return fmt.Errorf("feed %s: subscribe: %w", c.cfg.Topic, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			c.consume(msg, w)
		}
	}
}

// undoTimeout bounds the rollback to a failed message's savepoint.
const undoTimeout = 5 * time.Second

// consume applies msg and deletes its row, or leaves no trace of it. It always acks.
func (c *Consumer) consume(msg *message.Message, w *worker) {
	defer msg.Ack()
	tx, ok := wsql.TxFromContext(msg.Context())
	if !ok || tx == w.dead {
		return
	}
	ctx, cancel := context.WithTimeout(msg.Context(), c.cfg.HandlerTimeout)
	defer cancel()
	sp := &savepointTx{tx: tx}
	rec, err := eventstore.RecordFromMessage(msg)
	if err == nil {
		err = c.handle(ctx, sp, rec)
	}
	if err == nil {
		// The row's key, not the record's: the record was decoded from it.
		_, err = tx.ExecContext(ctx, `DELETE FROM event_feed WHERE topic = ? AND position = ?`, c.cfg.Topic, rec.Position)
		if err != nil {
			err = fmt.Errorf("delete its row: %w", err)
		}
	}
	if err == nil {
		w.handled.Store(true)
		return
	}
	w.failed.Store(true)
	if !sp.undo(context.WithoutCancel(msg.Context()), err) {
		w.dead = tx
	}
	c.warn(w, "feed message not handled; it stays for the next poll", "position", msg.Metadata[eventstore.MetaPosition],
		"event_id", msg.UUID, "error", err, "rest_of_batch_deferred", w.dead == tx)
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
// by a savepoint, so that a failed message's writes can be undone without the batch's.
type savepointTx struct {
	tx    *sql.Tx
	taken bool
}

func (t *savepointTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if !t.taken {
		if _, err := t.tx.ExecContext(ctx, `SAVEPOINT feed_message`); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		t.taken = true
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *savepointTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

// undo undoes the writes of a message that failed with err and reports whether the
// transaction is known to be alive. Before any write that is so only for a KindInvalid
// error, a verdict on the event: any other may come from a statement, and a locking read can
// be a deadlock's victim (which ends the transaction) even after its first rows arrived.
func (t *savepointTx) undo(ctx context.Context, err error) bool {
	if !t.taken {
		return domain.ErrorKind(err) == domain.KindInvalid
	}
	ctx, cancel := context.WithTimeout(ctx, undoTimeout)
	defer cancel()
	_, rerr := t.tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT feed_message`)
	return rerr == nil
}

// backoff is the subscriber's BackoffManager: it also waits after a batch in which every
// message failed, so that a message that cannot be handled yet (an event type this release
// does not know, during a rolling deploy) is retried at RetryInterval, not in a tight loop.
type backoff struct {
	c *Consumer
	w *worker
}

func (b *backoff) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	failed, handled := b.w.failed.Swap(false), b.w.handled.Swap(false)
	switch {
	case errors.Is(err, context.Canceled):
		return 0 // the subscription is ending
	case err != nil:
		b.c.warn(b.w, "feed poll failed; retrying", "error", err, "retry_in", b.c.cfg.RetryInterval)
		return b.c.cfg.RetryInterval
	case noMsg:
		return b.c.cfg.PollInterval
	case failed && !handled:
		return b.c.cfg.RetryInterval
	}
	return 0
}

func ptr[T any](v T) *T { return &v }
