package projections

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"orderd/domain"
	"orderd/eventstore"
)

// Snapshot is a set of read-only REPEATABLE READ transactions that all see one gap-free
// state of the log and of the live projection: they are all started while appends are
// paused (eventstore.Pause), when every append has either committed (its events and its
// orders row together, in one transaction) or not yet begun, and nothing that writes either
// table can commit. Several transactions let several connections read it in parallel.
//
// Each transaction is begun with SQL on a connection of its own rather than with BeginTx,
// so that a reader can reach the driver's connection (sql.Conn.Raw; see readRaw) while it
// is in the transaction; close ends them and returns the connections to the pool.
type Snapshot struct {
	conns                    []*sql.Conn
	minPosition, maxPosition int64          // of the events it holds; 0 when the log is empty
	minStream, maxStream     domain.OrderID // likewise
}

// TakeSnapshot pauses appends through conn, starts n snapshot transactions and resumes
// appends. The pause lasts as long as n BEGINs and a few index dives.
func TakeSnapshot(ctx context.Context, db *sql.DB, conn *sql.Conn, n int) (_ *Snapshot, err error) {
	pause, err := eventstore.Pause(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer pause.Rollback() //nolint:errcheck // only releases the barrier
	s := &Snapshot{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		s.conns = append(s.conns, c)
		// As BeginTx(LevelRepeatableRead, ReadOnly) would begin it.
		for _, stmt := range []string{`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`, `START TRANSACTION READ ONLY`} {
			if _, err := c.ExecContext(ctx, stmt); err != nil {
				return nil, fmt.Errorf("snapshot: %w", err)
			}
		}
		// The first read fixes the transaction's view; every later read sees the log as of here.
		// It reads only the log: a read of the live table would hold it (a metadata lock)
		// until the transaction ends, and a replay's swap must not wait for that.
		b, err := eventstore.ReadBounds(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if i == 0 {
			s.minPosition, s.maxPosition = b.MinPosition, b.MaxPosition
			s.minStream, s.maxStream = b.MinStream, b.MaxStream
		} else if b.MaxPosition != s.maxPosition {
			return nil, errors.New("snapshot: the log moved while appends were paused") // a bug in the barrier, not bad luck
		}
	}
	return s, nil
}

// Close ends the transactions and returns their connections to the pool; one whose
// transaction might still be open (its ROLLBACK failed) is closed instead.
func (s *Snapshot) Close() {
	for _, c := range s.conns {
		if _, err := c.ExecContext(context.Background(), `ROLLBACK`); err != nil {
			c.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // the error is the point: the pool drops the connection
		}
		c.Close()
	}
	s.conns = nil
}

// Conn returns the snapshot's first connection, in its read-only transaction.
func (s *Snapshot) Conn() *sql.Conn { return s.conns[0] }

// Position returns the highest log position the snapshot holds, 0 for an empty log: every
// event up to it is in the snapshot, and no event after it.
func (s *Snapshot) Position() int64 { return s.maxPosition }

// Conns returns the snapshot's connections, each in its read-only transaction: one can read
// the log while another reads a live table, both as of the snapshot.
func (s *Snapshot) Conns() []*sql.Conn { return s.conns }
