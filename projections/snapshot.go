package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"orderd/domain"
	"orderd/eventstore"
)

// snapshot is a set of read-only REPEATABLE READ transactions that all see one gap-free
// state of the log and of the live projection: they are all started while appends are
// paused (eventstore.Pause), when every append has either committed (its events and its
// orders row together, in one transaction) or not yet begun, and nothing that writes either
// table can commit. Several transactions let several connections read it in parallel.
type snapshot struct {
	txs                      []*sql.Tx
	minPosition, maxPosition int64          // of the events it holds; 0 when the log is empty
	minStream, maxStream     domain.OrderID // likewise
}

// takeSnapshot pauses appends through conn, starts n snapshot transactions and resumes
// appends. The pause lasts as long as n BEGINs and a few index dives.
func takeSnapshot(ctx context.Context, db *sql.DB, conn *sql.Conn, n int) (_ *snapshot, err error) {
	pause, err := eventstore.Pause(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer pause.Rollback() //nolint:errcheck // only releases the barrier
	s := &snapshot{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	for i := 0; i < n; i++ {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		s.txs = append(s.txs, tx)
		// The first read fixes the transaction's view; every later read sees the log as of here.
		// It reads only the log: a read of the live table would hold it (a metadata lock)
		// until the transaction ends, and a replay's swap must not wait for that.
		var minPos, maxPos, minID, maxID sql.NullInt64
		err = tx.QueryRowContext(ctx, `SELECT (SELECT MIN(position) FROM events), (SELECT MAX(position) FROM events),
			(SELECT MIN(stream_id) FROM events), (SELECT MAX(stream_id) FROM events)`).Scan(&minPos, &maxPos, &minID, &maxID)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if i == 0 {
			s.minPosition, s.maxPosition = minPos.Int64, maxPos.Int64
			s.minStream, s.maxStream = domain.OrderID(minID.Int64), domain.OrderID(maxID.Int64)
		} else if maxPos.Int64 != s.maxPosition {
			return nil, errors.New("snapshot: the log moved while appends were paused") // a bug in the barrier, not bad luck
		}
	}
	return s, nil
}

func (s *snapshot) close() {
	for _, tx := range s.txs {
		tx.Rollback() //nolint:errcheck // read-only
	}
	s.txs = nil
}
