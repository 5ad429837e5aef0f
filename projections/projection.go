package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"orderd/eventstore"
)

// Projection is a read model derived from the event log, as `orderd replay`, `--verify` and
// the version-triggered rebuild see it. How it is kept live is its own business: the orders
// projection is an eventstore.Hook (in the append's transaction), the customers projection a
// feed.Handler (after the append, from the log's feed). Every event type it does not act on
// must still leave it consistent (a fold that ignores the event but counts its version), so
// that a new event type needs no edit of any projection.
type Projection interface {
	// Name identifies the projection: its row in the projections table, its replay lock, the
	// value of `orderd replay --projection`. It never changes once shipped.
	Name() string
	// Version is the version of the projection's code. Bump it whenever a rebuilt table would
	// differ from one the previous code wrote; RebuildIfStale then rebuilds it on deploy.
	Version() int
	// Rebuild folds the log into shadow tables and swaps them in atomically while the service
	// runs, recording Version in the swap; on failure the live tables stay as they were. It
	// holds the projection's replay lock (TakeLock) and returns ErrReplayRunning without it.
	Rebuild(ctx context.Context, db *sql.DB, progress Progress) (RebuildStats, error)
	// Verify compares the live tables with a fold of the log and reports every difference,
	// writing nothing. It holds the replay lock too.
	Verify(ctx context.Context, db *sql.DB, opts VerifyOptions) (VerifyStats, error)
}

// Registry is the list of projections the service keeps; the assembly owns it.
type Registry []Projection

// Names returns the projections' names, in order.
func (r Registry) Names() []string {
	names := make([]string, len(r))
	for i, p := range r {
		names[i] = p.Name()
	}
	return names
}

// Pick returns the projections named (all of them for ""), or an error naming the known ones.
func (r Registry) Pick(name string) (Registry, error) {
	if name == "" {
		return r, nil
	}
	i := slices.IndexFunc(r, func(p Projection) bool { return p.Name() == name })
	if i < 0 {
		return nil, fmt.Errorf("no projection %q; there are: %s", name, strings.Join(r.Names(), ", "))
	}
	return r[i : i+1], nil
}

// lockName is the name of the MySQL lock (GET_LOCK) that keeps two replays, or a replay and
// a verify, of one projection of one database from running at once. Lock names are
// server-wide, so it carries the database's name; MySQL caps it at 64 characters.
func lockName(projection, database string) string {
	name := "orderd.replay." + projection + "." + database
	return name[:min(len(name), 64)]
}

// ReplayLockName is the orders projection's replay lock for database (see lockName).
func ReplayLockName(database string) string { return lockName(OrdersTable, database) }

// ErrReplayRunning is returned when another replay or verify of the projection holds its lock.
var ErrReplayRunning = errors.New("another replay or verify of the projection is running on this database; try again when it has finished")

// Lock is a connection holding a projection's replay lock.
type Lock struct {
	conn *sql.Conn
	name string
}

// Conn returns the connection that holds the lock; a rebuild pauses appends through it.
func (l *Lock) Conn() *sql.Conn { return l.conn }

// TakeLock takes projection's replay lock without waiting, or returns ErrReplayRunning.
func TakeLock(ctx context.Context, db *sql.DB, projection string) (*Lock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	var database sql.NullString
	var got sql.NullInt64
	err = conn.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&database)
	name := lockName(projection, database.String)
	if err == nil {
		err = conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, name).Scan(&got)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("replay: take lock: %w", err)
	}
	if got.Int64 != 1 {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", projection, ErrReplayRunning)
	}
	return &Lock{conn: conn, name: name}, nil
}

// Release releases the lock and returns its connection to the pool.
func (l *Lock) Release(ctx context.Context) {
	l.conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, l.name) //nolint:errcheck // released on close too
	l.conn.Close()
}

// StoredVersion returns the version projection's tables were last built with, as recorded
// in the projections table (0 if nothing is recorded).
func StoredVersion(ctx context.Context, db *sql.DB, projection string) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM projections WHERE name = ?`, projection).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the %s projection's version: %w", projection, err)
	}
	return v, nil
}

// RecordVersion records, in a rebuild's swap transaction, that projection's tables now hold
// what version builds.
func RecordVersion(ctx context.Context, tx *sql.Tx, projection string, version int) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO projections (name, version, rebuilt_at) VALUES (?, ?, UTC_TIMESTAMP(6))
		ON DUPLICATE KEY UPDATE version = VALUES(version), rebuilt_at = VALUES(rebuilt_at)`, projection, version)
	if err != nil {
		return fmt.Errorf("record the %s projection's version: %w", projection, err)
	}
	return nil
}

// staleRetry is how long RebuildIfStale waits before looking again when another replay
// or verify holds the lock.
var staleRetry = 5 * time.Second

// ShareConsumerLock takes, in an asynchronous consumer's transaction and before it reads
// the projection's tables, the projection's consumer lock in share mode: consumers share it,
// and a rebuild's swap, which holds it exclusively (HoldConsumers), waits for every
// consumer's transaction to end and holds off the next ones. The lock is the projection's
// row in the projections table; under READ COMMITTED the read locks that row only.
func ShareConsumerLock(ctx context.Context, tx eventstore.Tx, projection string) error {
	rows, err := tx.QueryContext(ctx, `SELECT version FROM projections WHERE name = ? LOCK IN SHARE MODE`, projection)
	if err != nil {
		return fmt.Errorf("%s: take the consumer lock: %w", projection, err)
	}
	return rows.Close()
}

// HoldConsumers takes projection's consumer lock exclusively in tx, writing the projection's
// row if it is missing: once it returns, no consumer is applying events, and none starts
// until tx ends.
func HoldConsumers(ctx context.Context, tx *sql.Tx, projection string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO projections (name, version) VALUES (?, 0) ON DUPLICATE KEY UPDATE name = name`, projection)
	if err != nil {
		return fmt.Errorf("%s: hold off the consumers: %w", projection, err)
	}
	return nil
}

// RebuildIfStale rebuilds p (see Projection.Rebuild) when the version recorded for it
// differs from p.Version(), and reports whether it did. It is meant for `orderd serve` at
// start-up, run in a goroutine of its own: the service keeps serving from the old tables
// while the new ones are built and swaps to them once caught up. A rollback to older code
// rebuilds too, since the version differs.
//
// When several instances start at once, one rebuilds and the others wait for the replay
// lock, look again, find the version current and return false; a manual `orderd replay` or
// `--verify` in progress is waited for the same way. It returns when ctx is cancelled.
//
// In a rolling deploy, instances still on the old code keep writing rows with the old fold
// until they stop. Each row is a whole fold of its stream, so the next event of such an order
// corrects it; to be sure of the rest, run `orderd replay` once no old instance is left.
func RebuildIfStale(ctx context.Context, db *sql.DB, p Projection, progress Progress) (rebuilt bool, err error) {
	for {
		v, err := StoredVersion(ctx, db, p.Name())
		if err != nil {
			return false, err
		}
		if v == p.Version() {
			return false, nil
		}
		_, err = p.Rebuild(ctx, db, progress)
		if !errors.Is(err, ErrReplayRunning) {
			return err == nil, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(staleRetry):
		}
	}
}
