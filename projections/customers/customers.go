// Package customers is the read model of orders and totals per customer: customer_orders
// (each order's customer, total, status and the stream version they were folded from) and
// customers (per customer: orders placed, orders completed, and what the completed ones came
// to). A customer is the name and email address an order was placed with.
//
// Unlike the orders table it is not written in the append's transaction: it is kept by a
// consumer of the log's feed (package feed) that runs apart from the appends, so that it adds
// no work to placing an order. Each row is the domain's own fold of the order's stream, read
// from the log when the row is behind; a row is written only for a newer stream version, so a
// message handled twice, or late, changes nothing.
package customers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
)

// Topic is the feed this projection consumes. It skips the events that change neither an
// order's customer, its total nor its status (TestSkippedEventsChangeNothing keeps the list
// honest as the domain grows); an event type added later is delivered until listed here.
var Topic = feed.Topic{Name: "customers", Skip: []string{
	domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeInventoryReservationFailed,
}}

// order is an order's row of customer_orders.
type order struct {
	name, email string
	status      string
	totalCents  int64
	version     int // 0: no row
}

// contribution is what an order adds to its customer's totals.
type contribution struct {
	placed, completed int
	completedCents    int64
}

func (o order) contribution() contribution {
	var c contribution
	if o.version > 0 {
		c.placed = 1
	}
	if o.status == domain.StatusCompleted {
		c.completed, c.completedCents = 1, o.totalCents
	}
	return c
}

func rowOf(o *domain.Order) order {
	return order{name: o.CustomerName(), email: o.CustomerEmail(), status: o.Status(), totalCents: o.TotalCents(), version: o.Version()}
}

// Apply is the feed.Handler that brings rec's order up to at least rec's version. It locks the
// order's row, folds the order's stream as committed now (from rec alone when rec opens it),
// and writes the row and the change to its customer's totals.
func Apply(ctx context.Context, tx eventstore.Tx, rec eventstore.Record) error {
	prev, err := current(ctx, tx, rec.StreamID)
	if err != nil || prev.version >= rec.Version {
		return err
	}
	var o *domain.Order
	if prev.version == 0 && rec.Version == 1 {
		o = domain.Rehydrate(rec.StreamID, []domain.Event{rec.Event})
	} else {
		var events []domain.Event
		err := eventstore.ScanStreamsOf(ctx, tx, []domain.OrderID{rec.StreamID}, func(r eventstore.Record) error {
			events = append(events, r.Event)
			return nil
		})
		if err != nil {
			return fmt.Errorf("customers: order %d: %w", rec.StreamID, err)
		}
		o = domain.Rehydrate(rec.StreamID, events)
		if o.Version() < rec.Version {
			return fmt.Errorf("customers: order %d: the log has version %d, the feed %d", rec.StreamID, o.Version(), rec.Version)
		}
	}
	return write(ctx, tx, rec.StreamID, prev, rowOf(o))
}

// current returns id's row, locked; its version is 0 when there is none.
func current(ctx context.Context, tx eventstore.Tx, id domain.OrderID) (order, error) {
	rows, err := tx.QueryContext(ctx, `SELECT customer_name, customer_email, order_status, total_cents, version
		FROM customer_orders WHERE order_id = ? FOR UPDATE`, id)
	if err != nil {
		return order{}, fmt.Errorf("customers: lock order %d: %w", id, err)
	}
	defer rows.Close()
	var o order
	if rows.Next() {
		if err := rows.Scan(&o.name, &o.email, &o.status, &o.totalCents, &o.version); err != nil {
			return order{}, fmt.Errorf("customers: lock order %d: %w", id, err)
		}
	}
	if err := rows.Err(); err != nil {
		return order{}, fmt.Errorf("customers: lock order %d: %w", id, err)
	}
	return o, nil
}

// write replaces prev (locked, or missing) with next and adds the difference to the
// customer's totals. A missing row is inserted, not upserted: a consumer that raced this one
// to the same new order fails on the key instead of counting the order twice.
func write(ctx context.Context, tx eventstore.Tx, id domain.OrderID, prev, next order) error {
	var err error
	if prev.version == 0 {
		_, err = tx.ExecContext(ctx, `INSERT INTO customer_orders (order_id, customer_name, customer_email, order_status, total_cents, version)
			VALUES (?, ?, ?, ?, ?, ?)`, id, next.name, next.email, next.status, next.totalCents, next.version)
	} else {
		if prev.name != next.name || prev.email != next.email {
			return fmt.Errorf("customers: order %d changed customer", id) // OrderPlaced is its stream's first event, and only one
		}
		_, err = tx.ExecContext(ctx, `UPDATE customer_orders SET order_status = ?, total_cents = ?, version = ? WHERE order_id = ?`,
			next.status, next.totalCents, next.version, id)
	}
	if err != nil {
		return fmt.Errorf("customers: write order %d: %w", id, err)
	}
	p, n := prev.contribution(), next.contribution()
	d := contribution{placed: n.placed - p.placed, completed: n.completed - p.completed, completedCents: n.completedCents - p.completedCents}
	if d == (contribution{}) {
		return nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO customers (customer_name, customer_email, orders_placed, orders_completed, completed_cents)
		VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE orders_placed = orders_placed + VALUES(orders_placed),
		orders_completed = orders_completed + VALUES(orders_completed), completed_cents = completed_cents + VALUES(completed_cents)`,
		next.name, next.email, d.placed, d.completed, d.completedCents)
	if err != nil {
		return fmt.Errorf("customers: add order %d to its customer: %w", id, err)
	}
	return nil
}

// Customer is a customer's totals.
type Customer struct {
	Name            string `json:"name"`
	Email           string `json:"email,omitempty"`
	OrdersPlaced    int    `json:"ordersPlaced"`
	OrdersCompleted int    `json:"ordersCompleted"`
	CompletedCents  int64  `json:"completedCents"`
}

// Reader reads the projection.
type Reader struct{ db *sql.DB }

// NewReader returns a reader over db.
func NewReader(db *sql.DB) (*Reader, error) {
	if db == nil {
		return nil, errors.New("customers: nil db")
	}
	return &Reader{db: db}, nil
}

// Top returns up to limit customers, those whose completed orders came to most first.
func (r *Reader) Top(ctx context.Context, limit int) ([]Customer, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT customer_name, customer_email, orders_placed, orders_completed, completed_cents
		FROM customers ORDER BY completed_cents DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("customers: %w", err)
	}
	defer rows.Close()
	out := []Customer{}
	for rows.Next() {
		var c Customer
		if err := rows.Scan(&c.Name, &c.Email, &c.OrdersPlaced, &c.OrdersCompleted, &c.CompletedCents); err != nil {
			return nil, fmt.Errorf("customers: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
