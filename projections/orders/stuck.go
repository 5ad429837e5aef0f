package orders

import (
	"context"
	"fmt"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// Unfinished is an order whose path has not ended: its email neither sent nor refused for
// good (the email is every path's last step).
type Unfinished struct {
	OrderID   domain.OrderID
	Version   int
	UpdatedAt time.Time
}

// Unfinished returns up to limit unfinished orders last changed before before, least
// recently changed first, starting after the order after (the last of the previous page;
// the zero value starts at the beginning). The sweeper pages through them to find stuck
// orders. ix_orders_email_sent keeps the read to the unfinished orders (and the few whose
// email was refused), not the table.
func (rd *Reader) Unfinished(ctx context.Context, before time.Time, after Unfinished, limit int) (_ []Unfinished, err error) {
	defer eventstore.Classify(&err)
	query := `SELECT order_id, version, updated_at FROM orders
		WHERE email_sent = 0 AND email_failed = 0 AND updated_at < ?`
	args := []any{before}
	if after.OrderID != 0 {
		query += ` AND (updated_at > ? OR (updated_at = ? AND order_id > ?))`
		args = append(args, after.UpdatedAt, after.UpdatedAt, after.OrderID)
	}
	query += ` ORDER BY updated_at, order_id LIMIT ?`
	rows, err := rd.db.QueryContext(ctx, query, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("read unfinished orders: %w", err)
	}
	defer rows.Close()
	var out []Unfinished
	for rows.Next() {
		var u Unfinished
		if err := rows.Scan(&u.OrderID, &u.Version, &u.UpdatedAt); err != nil {
			return nil, fmt.Errorf("read unfinished orders: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// Head is where an order stands: its current version, and whether its email was sent.
type Head struct {
	Version int
	// EmailSent is false only for an order whose email_sent is 0 (a NULL, which the
	// projection never writes, counts as sent, as it does not match email_sent = 0).
	EmailSent bool
}

// Heads returns the head of each of the given orders that exists, read by key. The
// dashboard and the dead-letter retention use it to tell whether a dead letter still holds
// its order (the order is still at the letter's version).
func (rd *Reader) Heads(ctx context.Context, ids []domain.OrderID) (_ map[domain.OrderID]Head, err error) {
	defer eventstore.Classify(&err)
	out := make(map[domain.OrderID]Head, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := rd.db.QueryContext(ctx, `SELECT order_id, version, COALESCE(email_sent <> 0, TRUE) FROM orders
		WHERE order_id IN (`+eventstore.Placeholders(len(ids))+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("read order versions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id domain.OrderID
		var h Head
		if err := rows.Scan(&id, &h.Version, &h.EmailSent); err != nil {
			return nil, fmt.Errorf("read order versions: %w", err)
		}
		out[id] = h
	}
	return out, rows.Err()
}
