package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// Metadata keys set on every relayed message (they become SQS message attributes).
const (
	MetaEventType = "event_type"
	MetaEventID   = "event_id"
	// MetaTraceParent carries the W3C trace context (see package tracing).
	MetaTraceParent = "traceparent"
)

// RelayConfig tunes the relay. Zero values take the defaults.
type RelayConfig struct {
	// Batch is how many outbox rows one pass claims (default 100).
	Batch int
	// Workers is how many passes run at once in this process (default 1: a pass already
	// publishes in parallel). Several processes may run relays too: rows are claimed with
	// SKIP LOCKED, so each row goes to one relay.
	Workers int
	// PollInterval is how often an idle worker looks for rows written by other processes
	// (default 200 ms); appends in this process wake it at once through Kick.
	PollInterval time.Duration
	// Parallel bounds the concurrent publishes within one pass (default 8).
	Parallel int
	// Recover, if set, runs after a failed pass before the next try: e.g. re-creating queues
	// that a restarted SQS emulator lost.
	Recover func(context.Context) error
	// OnRefused, if set, is called for each message a queue refused once its dead letter is
	// recorded (to count them).
	OnRefused func(queue string)
	// SigningKey, if set, signs every message (MetaSignature), for stages that require it.
	SigningKey []byte
}

func (c *RelayConfig) setDefaults() {
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.Parallel <= 0 {
		c.Parallel = 8
	}
}

// Refusal is an outbox row whose queue refused its message for what it holds (a character
// SQS does not take, its size, its attributes), with the queue's reason: sending it again
// cannot help.
type Refusal struct {
	Queue     string
	EventID   string
	EventType string
	Body      []byte
	Reason    string
}

// DeadLetters records the rows the queues refuse, so that the order concerned says what holds
// it and why. It writes in the relay's transaction: a refused row leaves the outbox exactly
// when its dead letter is recorded.
type DeadLetters interface {
	RecordRefused(ctx context.Context, tx *sql.Tx, r Refusal) error
}

// undelivered is what a publisher's error says when only some messages were not delivered
// (queues.PublishError): by index into the published messages, those refused for what they
// hold and those that failed for now.
type undelivered interface {
	error
	Undelivered() (refused, failed map[int]string)
}

// Relay publishes outbox rows to their queues.
type Relay struct {
	db   *sql.DB
	pub  message.Publisher
	dead DeadLetters
	log  *slog.Logger
	cfg  RelayConfig
	kick chan struct{}
}

// NewRelay returns a relay that publishes through pub and records in dead the rows whose
// messages a queue refuses. A refused message never holds up the others: it leaves the
// outbox as a dead letter, and every other message is delivered.
func NewRelay(db *sql.DB, pub message.Publisher, dead DeadLetters, log *slog.Logger, cfg RelayConfig) (*Relay, error) {
	if db == nil || pub == nil || dead == nil || log == nil {
		return nil, errors.New("outbox: NewRelay needs a db, a publisher, a dead-letter log and a logger")
	}
	cfg.setDefaults()
	return &Relay{db: db, pub: pub, dead: dead, log: log, cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Kick wakes an idle worker; it never blocks.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run relays until ctx is cancelled. A failing pass is logged and retried after a pause:
// the rows stay in the outbox, so nothing is lost while SQS or MySQL is away.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < r.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (r *Relay) work(ctx context.Context) {
	backoff := r.cfg.PollInterval
	for ctx.Err() == nil {
		n, err := r.RelayOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("relay pass failed; retrying", "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			if r.cfg.Recover != nil {
				if err := r.cfg.Recover(ctx); err != nil && ctx.Err() == nil {
					r.log.Warn("relay recovery failed", "error", err)
				}
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		case n == r.cfg.Batch:
			backoff = r.cfg.PollInterval
			continue // more is waiting
		}
		backoff = r.cfg.PollInterval
		select {
		case <-ctx.Done():
		case <-r.kick:
		case <-time.After(r.cfg.PollInterval):
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

type row struct {
	position      int64
	queue         string
	eventID       string
	eventType     string
	correlationID string
	traceParent   string
	body          []byte
}

// RelayOnce claims up to Batch rows, publishes them, deletes the ones SQS accepted and turns
// the ones it refused into dead letters, and returns how many it claimed. Rows are locked
// with SKIP LOCKED under READ COMMITTED, so concurrent relays share the work without waiting
// on each other or blocking appends.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	rows, err := r.claim(ctx, tx)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	sent, refused := r.publish(rows)
	done := append([]int64(nil), sent...)
	for _, rf := range refused {
		if err := r.dead.RecordRefused(ctx, tx, rf.Refusal); err != nil {
			return 0, fmt.Errorf("relay: %w", err)
		}
		done = append(done, rf.position)
	}
	if len(done) > 0 {
		// Not "WHERE position IN (...)": on a small table that may be planned as a scan, and a
		// scanning DELETE locks rows another relay has claimed (InnoDB's semi-consistent read
		// spares UPDATE, not DELETE), so two relays deadlock. STRAIGHT_JOIN makes the list of
		// positions drive the join, so each row is looked up by its key and only those locked.
		sel := strings.TrimSuffix(strings.Repeat("SELECT ? AS position UNION ALL ", len(done)), " UNION ALL ")
		args := make([]any, len(done))
		for i, p := range done {
			args[i] = p
		}
		if _, err := tx.ExecContext(ctx, `DELETE o FROM (`+sel+`) d STRAIGHT_JOIN outbox o ON o.position = d.position`, args...); err != nil {
			return 0, fmt.Errorf("relay: delete sent rows: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("relay: commit: %w", err)
	}
	for _, rf := range refused {
		r.log.Error("relay: the queue refused a message for what it holds; it is dead-lettered and its order waits for a person",
			"queue", rf.Queue, "event_id", rf.EventID, "event_type", rf.EventType, "reason", rf.Reason)
		if r.cfg.OnRefused != nil {
			r.cfg.OnRefused(rf.Queue)
		}
	}
	if len(done) < len(rows) {
		return len(rows), fmt.Errorf("relay: %d of %d messages were not accepted", len(rows)-len(done), len(rows))
	}
	return len(rows), nil
}

func (r *Relay) claim(ctx context.Context, tx *sql.Tx) ([]row, error) {
	q, err := tx.QueryContext(ctx, `SELECT position, queue, event_id, event_type, correlation_id, traceparent, body
		FROM outbox ORDER BY position LIMIT ? FOR UPDATE SKIP LOCKED`, r.cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("relay: claim rows: %w", err)
	}
	defer q.Close()
	var rows []row
	for q.Next() {
		var rw row
		if err := q.Scan(&rw.position, &rw.queue, &rw.eventID, &rw.eventType, &rw.correlationID, &rw.traceParent, &rw.body); err != nil {
			return nil, fmt.Errorf("relay: claim rows: %w", err)
		}
		rows = append(rows, rw)
	}
	return rows, q.Err()
}

// publishBatch is how many messages one Publish call carries: a batching publisher sends
// them in one request (SQS takes ten per SendMessageBatch).
const publishBatch = 10

// refusal is a claimed row the queue refused.
type refusal struct {
	Refusal
	position int64
}

// publish sends rows concurrently, grouped by queue into batches, and returns the positions
// that were accepted and the rows that were refused. A batch that fails otherwise is left for
// the next pass: all of it, or, when the publisher says which messages failed, those.
func (r *Relay) publish(rows []row) (sent []int64, refused []refusal) {
	byQueue := map[string][]row{}
	var order []string
	for _, rw := range rows {
		if _, ok := byQueue[rw.queue]; !ok {
			order = append(order, rw.queue)
		}
		byQueue[rw.queue] = append(byQueue[rw.queue], rw)
	}
	var mu sync.Mutex
	sem := make(chan struct{}, r.cfg.Parallel)
	var wg sync.WaitGroup
	for _, queue := range order {
		group := byQueue[queue]
		for start := 0; start < len(group); start += publishBatch {
			batch := group[start:min(start+publishBatch, len(group))]
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ok, no := r.publishBatch(queue, batch)
				mu.Lock()
				sent, refused = append(sent, ok...), append(refused, no...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return sent, refused
}

// publishBatch publishes one batch of rows for queue and sorts them as publish reports them.
func (r *Relay) publishBatch(queue string, batch []row) (sent []int64, refused []refusal) {
	msgs := make([]*message.Message, len(batch))
	for i, rw := range batch {
		msgs[i] = message.NewMessage(rw.eventID, rw.body)
		msgs[i].Metadata.Set(MetaEventType, rw.eventType)
		msgs[i].Metadata.Set(MetaEventID, rw.eventID)
		if rw.correlationID != "" {
			middleware.SetCorrelationID(rw.correlationID, msgs[i])
		}
		if rw.traceParent != "" {
			msgs[i].Metadata.Set(MetaTraceParent, rw.traceParent)
		}
		if r.cfg.SigningKey != nil {
			msgs[i].Metadata.Set(MetaSignature, Signature(r.cfg.SigningKey, rw.eventID, rw.eventType, rw.body))
		}
	}
	err := r.pub.Publish(queue, msgs...)
	var partly undelivered
	switch {
	case err == nil:
	case errors.As(err, &partly):
		no, failed := partly.Undelivered()
		if len(failed) > 0 {
			r.log.Warn("relay: publish failed; retrying", "queue", queue, "messages", len(failed), "error", err)
		}
		for i, rw := range batch {
			if reason, ok := no[i]; ok {
				refused = append(refused, refusal{position: rw.position,
					Refusal: Refusal{Queue: queue, EventID: rw.eventID, EventType: rw.eventType, Body: rw.body, Reason: reason}})
			} else if _, ok := failed[i]; !ok {
				sent = append(sent, rw.position)
			}
		}
		return sent, refused
	default:
		r.log.Warn("relay: publish failed", "queue", queue, "messages", len(msgs), "error", err)
		return nil, nil
	}
	for _, rw := range batch {
		sent = append(sent, rw.position)
	}
	return sent, nil
}
