// Package projections derives read models from the event log: the framework every
// projection plugs into (Projection, Registry, the replay lock, the version row, the
// snapshot and the shadow tables' swap) and the bulk-rebuild engine of the orders table (a
// parallel scan of the log in position order, a fast decoder, a fold that keeps only the
// unsettled orders in memory, LOAD DATA writers), which Orders uses.
package projections

import (
	"context"
	"database/sql"

	"orderd/projections/orders"
)

// OrdersTable is the name of the live orders table.
const OrdersTable = orders.Table

// Orders is the orders projection: its eventstore.Hook (orders.Hook) keeps the table live
// in each append's transaction, and its Rebuild and Verify are the package's, the bulk
// engine's.
type Orders struct{ orders.Hook }

var _ Projection = Orders{}

// Name implements Projection: the orders projection is named for its table.
func (Orders) Name() string { return OrdersTable }

// Version implements Projection.
func (Orders) Version() int { return orders.Version }

// Rebuild implements Projection (see the package's Rebuild).
func (Orders) Rebuild(ctx context.Context, db *sql.DB, progress Progress) (RebuildStats, error) {
	return Rebuild(ctx, db, progress)
}

// Verify implements Projection (see the package's Verify).
func (Orders) Verify(ctx context.Context, db *sql.DB, opts VerifyOptions) (VerifyStats, error) {
	return Verify(ctx, db, opts)
}
