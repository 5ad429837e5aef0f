package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// cleanLock lets one cleaner at a time work on a database, as sweepLock does for sweepers.
const cleanLock = "orderd.cleaner."

// Retention is one kind of record the cleaner removes once it is older than Keep. The
// table's owner writes Remove; the cleaner decides when, how much, and in which transaction.
type Retention struct {
	Name string // for logs, e.g. "dead letters"
	Keep time.Duration
	// Remove removes (or clears) in tx up to limit records made before before, oldest first,
	// and returns how many.
	Remove func(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int64, error)
}

// CleanerConfig tunes the cleaner. Zero values take the defaults.
type CleanerConfig struct {
	// Interval is how often the cleaner looks (default a minute): how long past its
	// retention a record may live.
	Interval time.Duration
	// Batch is how many records one statement removes (default 500), so that each statement
	// is short and holds its row locks only for a moment.
	Batch int
}

// Cleaner removes what has outlived its retention — expired idempotency keys, old dead
// letters and re-drive records — in the background, a batch at a time, so that nothing
// grows without bound. Every process that runs the relay runs one; one at a time works.
type Cleaner struct {
	db    *sql.DB
	log   *slog.Logger
	cfg   CleanerConfig
	tasks []Retention
}

// NewCleaner returns a cleaner that applies tasks to db.
func NewCleaner(db *sql.DB, log *slog.Logger, cfg CleanerConfig, tasks ...Retention) (*Cleaner, error) {
	if db == nil || log == nil {
		return nil, errors.New("outbox: NewCleaner needs a db and a logger")
	}
	for _, t := range tasks {
		if t.Name == "" || t.Keep <= 0 || t.Remove == nil {
			return nil, fmt.Errorf("outbox: retention %q needs a name, a positive Keep and a Remove", t.Name)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	return &Cleaner{db: db, log: log, cfg: cfg, tasks: tasks}, nil
}

// Run cleans every Interval until ctx is cancelled.
func (c *Cleaner) Run(ctx context.Context) {
	every(ctx, c.cfg.Interval, func() {
		removed, _, err := c.Clean(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("retention cleanup failed", "error", err)
		}
		for name, n := range removed {
			if n > 0 {
				c.log.Info("removed records past their retention", "records", name, "count", n)
			}
		}
	})
}

// every calls f every interval until ctx is cancelled.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// Clean removes, task by task, every record older than the task's retention, Batch at a
// time, and returns how many of each it removed. It does nothing, and reports ran false,
// while another cleaner on the database is at work.
func (c *Cleaner) Clean(ctx context.Context) (removed map[string]int64, ran bool, err error) {
	conn, release, ok, err := tryLock(ctx, c.db, cleanLock)
	if err != nil {
		return nil, false, fmt.Errorf("retention: %w", err)
	}
	if !ok {
		return nil, false, nil
	}
	defer release()
	// Microseconds, as the columns hold: a time with nanoseconds, sent as a string of nine
	// fractional digits, keeps MySQL from reading the time column's index as a range.
	now := time.Now().UTC().Truncate(time.Microsecond)
	removed = map[string]int64{}
	for _, task := range c.tasks {
		before := now.Add(-task.Keep)
		for {
			n, err := c.batch(ctx, conn, task, before)
			removed[task.Name] += n
			if err != nil {
				return removed, true, fmt.Errorf("remove %s older than %s: %w", task.Name, task.Keep, err)
			}
			if n < int64(c.cfg.Batch) {
				break
			}
		}
	}
	return removed, true, nil
}

// batch runs one Remove on conn (the one holding the lock) in a transaction of its own at
// READ COMMITTED: its range scan then locks only the rows it removes, not the gaps where new
// rows are being inserted.
func (c *Cleaner) batch(ctx context.Context, conn *sql.Conn, task Retention, before time.Time) (int64, error) {
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	n, err := task.Remove(ctx, tx, before, c.cfg.Batch)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// tryLock takes the MySQL named lock name for this database on a connection of its own,
// without waiting. ok is false when another session holds it. release gives back the lock
// and the connection; the lock also dies with the connection, so a crashed holder never
// keeps it.
func tryLock(ctx context.Context, db *sql.DB, name string) (conn *sql.Conn, release func(), ok bool, err error) {
	conn, err = db.Conn(ctx)
	if err != nil {
		return nil, nil, false, err
	}
	// MySQL's named locks are server-wide, so the name carries a hash of the database's name
	// (MySQL 8 caps lock names at 64 characters).
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT(?, SHA1(DATABASE())), 0)`, name).Scan(&got); err != nil {
		conn.Close()
		return nil, nil, false, err
	}
	if got.Int64 != 1 {
		conn.Close()
		return nil, nil, false, nil
	}
	return conn, func() {
		conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(CONCAT(?, SHA1(DATABASE())))`, name) //nolint:errcheck // released on close too
		conn.Close()
	}, true, nil
}
