package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"orderd/eventstore"
)

// Backlog is what the outbox holds: events committed but not yet accepted by SQS.
type Backlog struct {
	Queues  []QueueBacklog
	Waiting int64
	Oldest  time.Time // when the oldest waiting row was written; zero when none waits
	// Capped says more rows wait than were read: Waiting and the queues' counts are lower
	// bounds, and Oldest the oldest of the rows read.
	Capped bool
}

// QueueBacklog is what the outbox holds for one queue.
type QueueBacklog struct {
	Queue   string
	Waiting int64
	Oldest  time.Time
}

// OldestAge is how long the oldest waiting row has waited at now: how far the relay is
// behind (0 when none waits; never negative, whatever the clocks of the writer and reader).
// The metrics, the readiness check and the dashboard all take the age from here.
func (b Backlog) OldestAge(now time.Time) time.Duration { return age(b.Oldest, now) }

// OldestAge is how long the queue's oldest waiting row has waited at now (see
// Backlog.OldestAge).
func (q QueueBacklog) OldestAge(now time.Time) time.Duration { return age(q.Oldest, now) }

func age(oldest, now time.Time) time.Duration {
	if oldest.IsZero() {
		return 0
	}
	return max(now.Sub(oldest), 0)
}

// ReadBacklog reads the outbox's backlog from at most its scan lowest positions (the rows
// the relay takes first), so that a large backlog during an outage costs a bounded read.
// While the relay keeps up the outbox holds a handful of rows and every figure is exact.
func ReadBacklog(ctx context.Context, db interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, scan int) (_ Backlog, err error) {
	defer eventstore.Classify(&err)
	rows, err := db.QueryContext(ctx, `SELECT queue, COUNT(*), MIN(created_at) FROM
		(SELECT queue, created_at FROM outbox ORDER BY position LIMIT ?) lowest GROUP BY queue ORDER BY queue`, scan+1)
	if err != nil {
		return Backlog{}, fmt.Errorf("read the outbox backlog: %w", err)
	}
	defer rows.Close()
	var b Backlog
	for rows.Next() {
		var q QueueBacklog
		if err := rows.Scan(&q.Queue, &q.Waiting, &q.Oldest); err != nil {
			return Backlog{}, fmt.Errorf("read the outbox backlog: %w", err)
		}
		b.Queues = append(b.Queues, q)
		b.Waiting += q.Waiting
		if b.Oldest.IsZero() || q.Oldest.Before(b.Oldest) {
			b.Oldest = q.Oldest
		}
	}
	b.Capped = b.Waiting > int64(scan)
	return b, rows.Err()
}
