package projections

import (
	"context"
	"database/sql"
)

// OrdersVersion is the version of the orders projection's code: OrderRow.Apply, the
// columns it fills and how they are encoded. Bump it whenever a change would make a
// rebuilt row differ from one the previous code wrote; RebuildIfStale then rebuilds the
// table once the new code is deployed.
const OrdersVersion = 1

// Name implements Projection: the orders projection is named for its table.
func (Orders) Name() string { return OrdersTable }

// Version implements Projection.
func (Orders) Version() int { return OrdersVersion }

// Rebuild implements Projection (see the package's Rebuild).
func (Orders) Rebuild(ctx context.Context, db *sql.DB, progress Progress) (RebuildStats, error) {
	return Rebuild(ctx, db, progress)
}

// Verify implements Projection (see the package's Verify).
func (Orders) Verify(ctx context.Context, db *sql.DB, opts VerifyOptions) (VerifyStats, error) {
	return Verify(ctx, db, opts)
}

var _ Projection = Orders{}
