package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// OrdersVersion is the version of the orders projection's code: OrderRow.Apply, the
// columns it fills and how they are encoded. Bump it whenever a change would make a
// rebuilt row differ from one the previous code wrote; RebuildIfStale then rebuilds the
// table once the new code is deployed.
const OrdersVersion = 1

// StoredOrdersVersion returns the version the orders table was last built with, as
// recorded in the projections table (0 if nothing is recorded).
func StoredOrdersVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM projections WHERE name = ?`, OrdersTable).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the orders projection's version: %w", err)
	}
	return v, nil
}

// recordVersion records, in the swap's transaction, that the orders table now holds what
// this code's version builds.
func recordVersion(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO projections (name, version, rebuilt_at) VALUES (?, ?, UTC_TIMESTAMP(6))
		ON DUPLICATE KEY UPDATE version = VALUES(version), rebuilt_at = VALUES(rebuilt_at)`, OrdersTable, OrdersVersion)
	if err != nil {
		return fmt.Errorf("record the orders projection's version: %w", err)
	}
	return nil
}

// staleRetry is how long RebuildIfStale waits before looking again when another replay
// or verify holds the lock.
var staleRetry = 5 * time.Second

// RebuildIfStale rebuilds the orders table (see Rebuild) when the version recorded for it
// differs from OrdersVersion, and reports whether it did. It is meant for `orderd serve` at
// start-up, run in a goroutine of its own: the service keeps serving from the old table
// while the new one is built and swaps to it once caught up. A rollback to older code
// rebuilds too, since the version differs.
//
// When several instances start at once, one rebuilds and the others wait for the replay
// lock, look again, find the version current and return false; a manual `orderd replay` or
// `--verify` in progress is waited for the same way. It returns when ctx is cancelled.
//
// In a rolling deploy, instances still on the old code keep writing rows with the old fold
// until they stop. Each row is a whole fold of its stream, so the next event of such an order
// corrects it; to be sure of the rest, run `orderd replay` once no old instance is left.
func RebuildIfStale(ctx context.Context, db *sql.DB, progress Progress) (rebuilt bool, err error) {
	for {
		v, err := StoredOrdersVersion(ctx, db)
		if err != nil {
			return false, err
		}
		if v == OrdersVersion {
			return false, nil
		}
		_, err = Rebuild(ctx, db, progress)
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
