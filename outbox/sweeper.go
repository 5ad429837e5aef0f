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
	"orderd/projections/orders"
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
	reads  SweepReads
	log    *slog.Logger
	cfg    SweeperConfig
}

// UnfinishedOrders is what the sweeper needs of the orders read model (orders.Reader):
// the unfinished orders unchanged since a moment, least recently changed first, a page at a
// time.
type UnfinishedOrders interface {
	Unfinished(ctx context.Context, before time.Time, after orders.Unfinished, limit int) ([]orders.Unfinished, error)
}

// HeldOrders is what the sweeper needs of the dead-letter log (deadletter.Log): which of the
// given orders (id → current version) a dead letter holds at that version.
type HeldOrders interface {
	StuckReasons(ctx context.Context, versions map[domain.OrderID]int) (map[domain.OrderID]string, error)
}

// SweepReads returns, over conn (the connection that holds the sweep lock, so that a sweep
// holds one connection, not two), the reads the sweeper needs of tables other packages own:
// typically a orders.Reader and a deadletter.Log over conn.
type SweepReads func(conn *sql.Conn) (UnfinishedOrders, HeldOrders, error)

// NewSweeper returns a sweeper that finds unfinished orders, and those of them that a dead
// letter holds, through reads; reads orders through store; and routes re-driven events
// through writer.
func NewSweeper(db *sql.DB, store *eventstore.Store, writer *Writer, reads SweepReads, log *slog.Logger, cfg SweeperConfig) (*Sweeper, error) {
	if db == nil || store == nil || writer == nil || reads == nil || log == nil {
		return nil, errors.New("outbox: NewSweeper needs a db, a store, a writer, its reads and a logger")
	}
	cfg.setDefaults()
	return &Sweeper{db: db, store: store, writer: writer, reads: reads, log: log, cfg: cfg}, nil
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

	cutoff := time.Now().UTC().Add(-s.cfg.StuckAfter)
	ids, err := s.stuck(ctx, conn, cutoff)
	if err != nil {
		return 0, fmt.Errorf("sweep: find stuck orders: %w", err)
	}
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

// stuck returns up to Batch orders, least recently changed first, that are unfinished and
// unchanged since cutoff, not re-driven since cutoff, and not held by a dead letter. Each
// table is read through its owner: the candidates come a page at a time from the orders
// read model, and a page's orders that were re-driven lately (order_redrives, this
// package's) or are held (deadletter) are passed over, so however many orders are held the
// sweep still reaches the others behind them.
func (s *Sweeper) stuck(ctx context.Context, conn *sql.Conn, cutoff time.Time) ([]domain.OrderID, error) {
	unfinished, held, err := s.reads(conn)
	if err != nil {
		return nil, err
	}
	var ids []domain.OrderID
	var after orders.Unfinished
	for len(ids) < s.cfg.Batch {
		page, err := unfinished.Unfinished(ctx, cutoff, after, s.cfg.Batch)
		if err != nil || len(page) == 0 {
			return ids, err
		}
		after = page[len(page)-1]
		recent, err := redrivenSince(ctx, conn, page, cutoff)
		if err != nil {
			return nil, err
		}
		versions := make(map[domain.OrderID]int, len(page))
		for _, u := range page {
			if !recent[u.OrderID] {
				versions[u.OrderID] = u.Version
			}
		}
		holding, err := held.StuckReasons(ctx, versions)
		if err != nil {
			return nil, err
		}
		for _, u := range page {
			if _, ok := holding[u.OrderID]; ok || recent[u.OrderID] || len(ids) == s.cfg.Batch {
				continue
			}
			ids = append(ids, u.OrderID)
		}
		if len(page) < s.cfg.Batch {
			break
		}
	}
	return ids, nil
}

// redrivenSince returns which of the orders were re-driven at or after since.
func redrivenSince(ctx context.Context, conn *sql.Conn, page []orders.Unfinished, since time.Time) (map[domain.OrderID]bool, error) {
	args := make([]any, 0, len(page)+1)
	args = append(args, since)
	for _, u := range page {
		args = append(args, u.OrderID)
	}
	rows, err := conn.QueryContext(ctx, `SELECT order_id FROM order_redrives WHERE redriven_at >= ? AND order_id IN (`+
		eventstore.Placeholders(len(page))+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[domain.OrderID]bool{}
	for rows.Next() {
		var id domain.OrderID
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
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
		ON DUPLICATE KEY UPDATE redriven_at = VALUES(redriven_at), redrives = redrives + 1`, id, time.Now().UTC()); err != nil {
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
