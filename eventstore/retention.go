package eventstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ExpireIdempotencyKeys forgets, in tx, the idempotency keys (and request hashes) of up to
// limit orders placed before before, oldest first, and returns how many it forgot: a client
// may then use such a key again for a new order. The orders themselves are untouched.
//
// ix_order_ids_key_created_at holds only the rows that still have a key, so the statement
// reads the expired keys and nothing else. Run it at READ COMMITTED: at REPEATABLE READ its
// range scan would lock the gap new orders are inserted into.
func (s *Store) ExpireIdempotencyKeys(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int64, error) {
	res, err := tx.ExecContext(ctx, `UPDATE order_ids SET idempotency_key = NULL, request_hash = NULL
		WHERE key_created_at < ? ORDER BY key_created_at LIMIT ?`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("expire idempotency keys: %w", err)
	}
	return res.RowsAffected()
}
