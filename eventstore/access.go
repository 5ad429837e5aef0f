package eventstore

import (
	"context"
	"fmt"

	"orderd/domain"
)

// An order's capabilities are stored as SHA-256 hashes of their tokens: the one issued at
// creation in the order's order_ids row (CreateRequest.AccessHash, written by the statement
// that allocates the id, so placing costs no extra statement), any later one in order_access.
// Making and hashing tokens is the caller's (ordering.Placer); the store only keeps hashes.

// GrantAccess stores one more capability hash for order id (an idempotent replay cannot
// return the first token, which exists only as its hash, so it is given a new one).
func (s *Store) GrantAccess(ctx context.Context, id domain.OrderID, hash []byte) (err error) {
	defer Classify(&err)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO order_access (token_hash, order_id, created_at) VALUES (?, ?, ?)`,
		hash, id, s.now()); err != nil {
		return fmt.Errorf("grant access to order %d: %w", id, err)
	}
	return nil
}

// HasAccess reports whether hash is the hash of a capability of order id. Both reads are
// by primary key; a hash of another order's capability does not match.
func (s *Store) HasAccess(ctx context.Context, id domain.OrderID, hash []byte) (_ bool, err error) {
	defer Classify(&err)
	var ok bool
	err = s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM order_ids WHERE order_id = ? AND access_hash = ?)
		OR EXISTS (SELECT 1 FROM order_access WHERE token_hash = ? AND order_id = ?)`, id, hash, hash, id).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check access to order %d: %w", id, err)
	}
	return ok, nil
}
