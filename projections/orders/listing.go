package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"orderd/domain"
	"orderd/eventstore"
)

// The reads in this file are for operators (the dashboard, the metrics), and stay cheap
// however many orders the table holds: each is an index range of at most one page, or a
// lookup by key, except the count of terminal orders, which StatusCounter caches.

// statusCodes number the statuses as the status_order column does (migration 008): its
// value is code × 2^32 + order_id, so one status's orders are one range of its index, in
// order_id order. Orders in any other status have code 0.
var statusCodes = map[string]int64{domain.StatusPending: 1, domain.StatusCompleted: 2, domain.StatusPaymentFailed: 3, domain.StatusCancelled: 4}

// statusRange returns the status_order values of status's orders with an id below before.
func statusRange(status string, before domain.OrderID) (lo, hi int64, err error) {
	code, ok := statusCodes[status]
	if !ok {
		return 0, 0, domain.Invalid("status", "is not a known order status")
	}
	return code << 32, code<<32 + int64(before) - 1, nil
}

// Page returns up to limit orders, newest first: those with order_status status ("" for
// any) and an order_id below before (0 for no bound). It reads one index range backwards,
// exactly the rows it returns: of the primary key, or of ix_orders_status_order.
func (rd *Reader) Page(ctx context.Context, status string, before domain.OrderID, limit int) (_ []OrderRow, err error) {
	defer eventstore.Classify(&err)
	if before <= 0 {
		before = math.MaxInt32 // order_id is an INT
	}
	query, args := `SELECT `+Columns+` FROM orders WHERE order_id < ? ORDER BY order_id DESC LIMIT ?`, []any{before, limit}
	if status != "" {
		lo, hi, err := statusRange(status, before)
		if err != nil {
			return nil, err
		}
		query = `SELECT ` + Columns + ` FROM orders WHERE status_order BETWEEN ? AND ? ORDER BY status_order DESC LIMIT ?`
		args = []any{lo, hi, limit}
	}
	rows, err := rd.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var page []OrderRow
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		page = append(page, r)
	}
	return page, rows.Err()
}

// Lag is how far the orders projection is behind the log, as the newest event's order shows
// it. The live projection is written in each append's transaction, so it is 0 unless the
// table is being rebuilt or was lost.
type Lag struct {
	// LogPosition is the newest event's position, 0 for an empty log.
	LogPosition int64
	// Projected is the last position applied to that event's order; nil when the order has
	// no row.
	Projected *int64
	// Seconds is how much older the order's row is than the event, 0 when it is caught up.
	Seconds float64
}

// EventsBehind is how many positions the projection is behind (all of them without a row).
func (l Lag) EventsBehind() int64 {
	if l.Projected == nil {
		return l.LogPosition
	}
	return max(0, l.LogPosition-*l.Projected)
}

// Lag reads the newest event (from the log's owner) and its order's row, both by key.
func (rd *Reader) Lag(ctx context.Context) (_ Lag, err error) {
	defer eventstore.Classify(&err)
	newest, err := eventstore.ReadNewest(ctx, rd.db)
	if err != nil {
		return Lag{}, fmt.Errorf("read projection lag: %w", err)
	}
	l := Lag{LogPosition: newest.Position}
	if newest.Position == 0 {
		l.Projected = new(int64)
		return l, nil
	}
	var projected int64
	var updated time.Time
	err = rd.db.QueryRowContext(ctx, `SELECT last_position, updated_at FROM orders WHERE order_id = ?`, newest.StreamID).Scan(&projected, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return l, nil
	}
	if err != nil {
		return Lag{}, fmt.Errorf("read projection lag: %w", err)
	}
	l.Projected = &projected
	if projected < l.LogPosition {
		l.Seconds = max(0, newest.OccurredAt.Sub(updated).Seconds())
	}
	return l, nil
}

// StatusCounts is how many orders there are in each order_status, and in all.
type StatusCounts struct {
	ByStatus map[string]int64
	// TerminalAsOf is when the terminal statuses were counted; pending is counted live.
	TerminalAsOf time.Time
}

// StatusCounter counts orders by status for operators, cheaply at any size. Pending orders,
// the only ones whose status still changes, are counted on every call: a range of
// ix_orders_status_order no larger than the orders in flight. The terminal statuses, whose
// counts only grow, take a range each as large as the status; they are counted at most every
// MaxAge (or fifty times as long as the last count took, if that is longer: at most 2% of a
// connection's time), in the background while callers get the previous count.
type StatusCounter struct {
	db     Queryer
	maxAge time.Duration
	now    func() time.Time
	flight singleflight.Group

	mu        sync.Mutex
	terminal  map[string]int64
	countedAt time.Time
	took      time.Duration
}

// NewStatusCounter returns a counter over db whose terminal counts are at most maxAge old
// (10 s if 0).
func NewStatusCounter(db Queryer, maxAge time.Duration) (*StatusCounter, error) {
	if db == nil {
		return nil, errors.New("projections: nil db")
	}
	if maxAge <= 0 {
		maxAge = 10 * time.Second
	}
	return &StatusCounter{db: db, maxAge: maxAge, now: time.Now}, nil
}

// Counts returns the orders per status (pending, completed, payment_failed, cancelled) and
// in all. The first call waits for the terminal count; later ones never do.
func (c *StatusCounter) Counts(ctx context.Context) (_ StatusCounts, err error) {
	defer eventstore.Classify(&err)
	pending, err := c.countStatus(ctx, domain.StatusPending)
	if err != nil {
		return StatusCounts{}, err
	}
	c.mu.Lock()
	terminal, at, took := c.terminal, c.countedAt, c.took
	c.mu.Unlock()
	switch {
	case terminal == nil:
		if _, err, _ := c.flight.Do("count", c.count); err != nil {
			return StatusCounts{}, err
		}
		c.mu.Lock()
		terminal, at = c.terminal, c.countedAt
		c.mu.Unlock()
	case c.now().Sub(at) >= max(c.maxAge, 50*took):
		c.flight.DoChan("count", c.count) // its answer goes to a buffered channel nobody needs
	}
	out := StatusCounts{TerminalAsOf: at, ByStatus: map[string]int64{"all": pending, domain.StatusPending: pending,
		domain.StatusCompleted: 0, domain.StatusPaymentFailed: 0, domain.StatusCancelled: 0}}
	for s, n := range terminal {
		out.ByStatus[s] += n
		out.ByStatus["all"] += n
	}
	return out, nil
}

// count counts the orders in each terminal status, for every caller that waits on it, so
// on a context of its own.
func (c *StatusCounter) count() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := c.now()
	counts := map[string]int64{}
	for _, s := range []string{domain.StatusCompleted, domain.StatusPaymentFailed, domain.StatusCancelled} {
		n, err := c.countStatus(ctx, s)
		if err != nil {
			return nil, err
		}
		counts[s] = n
	}
	c.mu.Lock()
	c.terminal, c.countedAt, c.took = counts, start, c.now().Sub(start)
	c.mu.Unlock()
	return nil, nil
}

// countStatus counts one status's orders: a range count of ix_orders_status_order.
func (c *StatusCounter) countStatus(ctx context.Context, status string) (int64, error) {
	lo, hi, err := statusRange(status, math.MaxInt32)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := c.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders WHERE status_order BETWEEN ? AND ?`, lo, hi).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s orders: %w", status, err)
	}
	return n, nil
}
