package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// Metadata keys set on every relayed message (they become SQS message attributes).
const (
	MetaEventType = "event_type"
	MetaEventID   = "event_id"
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

// Relay publishes outbox rows to their queues.
type Relay struct {
	db   *sql.DB
	pub  message.Publisher
	log  *slog.Logger
	cfg  RelayConfig
	kick chan struct{}
}

// NewRelay returns a relay that publishes through pub.
func NewRelay(db *sql.DB, pub message.Publisher, log *slog.Logger, cfg RelayConfig) (*Relay, error) {
	if db == nil || pub == nil || log == nil {
		return nil, errors.New("outbox: NewRelay needs a db, a publisher and a logger")
	}
	cfg.setDefaults()
	return &Relay{db: db, pub: pub, log: log, cfg: cfg, kick: make(chan struct{}, 1)}, nil
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
	body          []byte
}

// RelayOnce claims up to Batch rows, publishes them and deletes the ones SQS accepted, and
// returns how many it claimed. Rows are locked with SKIP LOCKED under READ COMMITTED, so
// concurrent relays share the work without waiting on each other or blocking appends.
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
	sent := r.publish(rows)
	// One row per statement: a DELETE ... IN (...) may be planned as a scan of this small
	// table, and a scanning DELETE locks rows that another relay has claimed (InnoDB's
	// semi-consistent read spares UPDATE, not DELETE): two relays then deadlock.
	for _, pos := range sent {
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE position = ?`, pos); err != nil {
			return 0, fmt.Errorf("relay: delete sent row %d: %w", pos, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("relay: commit: %w", err)
	}
	if len(sent) < len(rows) {
		return len(rows), fmt.Errorf("relay: %d of %d messages were not accepted", len(rows)-len(sent), len(rows))
	}
	return len(rows), nil
}

func (r *Relay) claim(ctx context.Context, tx *sql.Tx) ([]row, error) {
	q, err := tx.QueryContext(ctx, `SELECT position, queue, event_id, event_type, correlation_id, body
		FROM outbox ORDER BY position LIMIT ? FOR UPDATE SKIP LOCKED`, r.cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("relay: claim rows: %w", err)
	}
	defer q.Close()
	var rows []row
	for q.Next() {
		var rw row
		if err := q.Scan(&rw.position, &rw.queue, &rw.eventID, &rw.eventType, &rw.correlationID, &rw.body); err != nil {
			return nil, fmt.Errorf("relay: claim rows: %w", err)
		}
		rows = append(rows, rw)
	}
	return rows, q.Err()
}

// publish sends rows concurrently and returns the positions that were accepted.
func (r *Relay) publish(rows []row) []int64 {
	var mu sync.Mutex
	var sent []int64
	sem := make(chan struct{}, r.cfg.Parallel)
	var wg sync.WaitGroup
	for _, rw := range rows {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			msg := message.NewMessage(rw.eventID, rw.body)
			msg.Metadata.Set(MetaEventType, rw.eventType)
			msg.Metadata.Set(MetaEventID, rw.eventID)
			if rw.correlationID != "" {
				middleware.SetCorrelationID(rw.correlationID, msg)
			}
			if err := r.pub.Publish(rw.queue, msg); err != nil {
				r.log.Warn("relay: publish failed", "queue", rw.queue, "event_id", rw.eventID, "error", err)
				return
			}
			mu.Lock()
			sent = append(sent, rw.position)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return sent
}
