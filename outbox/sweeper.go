package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// sweepLock lets one sweeper at a time work on a database, however many processes run one
// (tryLock).
const sweepLock = "orderd.sweeper."

// SweeperConfig tunes the sweeper. Zero values take the defaults.
type SweeperConfig struct {
	// StuckAfter is how long an unfinished order may stay unchanged before its next step is
	// driven again (default 30 s: longer than a message's visibility timeout, so a message
	// that is merely being retried is not duplicated needlessly).
	StuckAfter time.Duration
	// Interval is how often the sweeper looks (default a quarter of StuckAfter, 1 s to 5 s).
	Interval time.Duration
	// Batch bounds how many orders one sweep re-drives (default 500).
	Batch int
}

func (c *SweeperConfig) setDefaults() {
	if c.StuckAfter <= 0 {
		c.StuckAfter = 30 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = min(max(c.StuckAfter/4, time.Second), 5*time.Second)
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
}

// Sweeper finds orders that have stopped moving — their message was lost with a restarted
// queue, dead-lettered while a dependency was down, or never relayed — and drives their next
// step again from the log: it puts the order's latest event back into the outbox, and the
// relay publishes it. Stages are idempotent, so a re-drive of an order that was merely slow
// changes nothing.
type Sweeper struct {
	db     *sql.DB
	store  *eventstore.Store
	writer *Writer
	log    *slog.Logger
	cfg    SweeperConfig
	now    func() time.Time
}

// NewSweeper returns a sweeper that reads orders through store and routes re-driven events
// through writer.
func NewSweeper(db *sql.DB, store *eventstore.Store, writer *Writer, log *slog.Logger, cfg SweeperConfig) (*Sweeper, error) {
	if db == nil || store == nil || writer == nil || log == nil {
		return nil, errors.New("outbox: NewSweeper needs a db, a store, a writer and a logger")
	}
	cfg.setDefaults()
	return &Sweeper{db: db, store: store, writer: writer, log: log, cfg: cfg, now: time.Now}, nil
}

// Run sweeps every Interval until ctx is cancelled.
func (s *Sweeper) Run(ctx context.Context) {
	every(ctx, s.cfg.Interval, func() {
		n, err := s.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("sweep failed", "error", err)
		}
		if n > 0 {
			s.log.Info("re-drove stuck orders", "orders", n)
		}
	})
}

// Sweep re-drives the orders that are unfinished and unchanged for StuckAfter, and returns
// how many. Orders held by a dead-lettered message are left alone: retrying cannot fix what
// put them there, and `orderd dlq redrive` sends them on once the cause is fixed. It does
// nothing while another sweeper holds the sweep lock.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	conn, release, ok, err := tryLock(ctx, s.db, sweepLock)
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	if !ok {
		return 0, nil
	}
	defer release()

	// Unfinished is email_sent = 0 and email_failed = 0: the email is every path's last step
	// (sent, or refused for good by the mail server, which ends the order too), so a pending
	// order has done neither. ix_orders_email_sent keeps this to the unfinished orders (and the
	// few refused ones), not the table.
	cutoff := s.now().UTC().Add(-s.cfg.StuckAfter)
	rows, err := conn.QueryContext(ctx, `SELECT o.order_id FROM orders o
		LEFT JOIN order_redrives r ON r.order_id = o.order_id
		WHERE o.email_sent = 0 AND o.email_failed = 0 AND o.updated_at < ? AND (r.redriven_at IS NULL OR r.redriven_at < ?)
		  AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.order_id = o.order_id AND d.version = o.version)
		ORDER BY o.updated_at LIMIT ?`,
		cutoff, cutoff, s.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("sweep: find stuck orders: %w", err)
	}
	var ids []domain.OrderID
	for rows.Next() {
		var id domain.OrderID
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sweep: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	n := 0
	for _, id := range ids {
		ok, err := s.Redrive(ctx, id)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// Redrive puts the order's latest event back into the outbox if the order still has a step
// due, and reports whether it did. It records the re-drive so that the next sweep waits
// StuckAfter again before repeating itself.
func (s *Sweeper) Redrive(ctx context.Context, id domain.OrderID) (bool, error) {
	history, order, err := s.store.Load(ctx, id)
	if err != nil {
		return false, fmt.Errorf("re-drive order %d: %w", id, err)
	}
	if order.NextStep() == domain.StepNone {
		return false, nil
	}
	last := history[len(history)-1]
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("re-drive order %d: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := s.writer.AfterAppend(ctx, tx, []eventstore.Change{{History: history, Appended: []eventstore.Record{last}}}); err != nil {
		return false, fmt.Errorf("re-drive order %d: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO order_redrives (order_id, redriven_at) VALUES (?, ?)
		ON DUPLICATE KEY UPDATE redriven_at = VALUES(redriven_at), redrives = redrives + 1`, id, s.now().UTC()); err != nil {
		return false, fmt.Errorf("re-drive order %d: %w", id, err)
	}
	return true, tx.Commit()
}

// RemoveRecords deletes, in tx, up to limit re-drive records made before before, oldest
// first, and returns how many. A record only spaces re-drives StuckAfter apart, so one older
// than that has done its work; they are kept longer only to show what was re-driven. Run it
// at READ COMMITTED, so that its range scan locks no gap that new records go into.
func (s *Sweeper) RemoveRecords(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM order_redrives WHERE redriven_at < ? ORDER BY redriven_at LIMIT ?`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("remove old re-drive records: %w", err)
	}
	return res.RowsAffected()
}
