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
//
// Projection makes it one of the registered projections: `orderd replay` rebuilds it into
// shadow tables and swaps them in while the consumers run (rebuild.go), `--verify` compares
// it with a fold of the log (verify.go), and a change of Version rebuilds it on deploy.
package customers

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/projections"
)

// Topic is the feed this projection consumes. It skips the events that change neither an
// order's customer, its total nor its status (TestSkippedEventsChangeNothing keeps the list
// honest as the domain grows); an event type added later is delivered until listed here.
var Topic = feed.Topic{Name: "customers", Skip: []string{
	domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeInventoryReservationFailed,
}}

// tables names the projection's two tables: the live ones, or a rebuild's.
type tables struct{ orders, customers string }

var (
	ordersTable    = projections.ShadowOf("customer_orders")
	customersTable = projections.ShadowOf("customers")

	live    = tables{orders: ordersTable.Live, customers: customersTable.Live}
	rebuilt = tables{orders: ordersTable.New, customers: customersTable.New}
)

// order is an order's row of customer_orders; the zero value is no row.
type order struct {
	name, email string
	status      string
	totalCents  int64
	version     int
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

// Apply is the feed.Handler that brings the orders of recs up to at least their versions in
// recs. It first takes the projection's consumer lock in share mode (see projections.HoldConsumers:
// a rebuild's swap takes it exclusively), then applies recs to the live tables.
func Apply(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
	if err := projections.ShareConsumerLock(ctx, tx, Name); err != nil {
		return err
	}
	return live.apply(ctx, tx, recs)
}

// apply brings the orders of recs up to at least their versions in recs, in t's tables. It
// locks their rows (in id order, as every consumer does), folds the orders that are behind
// (from the event alone when it opens its stream, else their streams as committed now, read
// from the log in one query), and writes the rows and the change to each customer's totals:
// at most five statements for the batch. A record without an event (a rebuild's catch-up
// names only the stream and version) always folds its stream from the log.
func (t tables) apply(ctx context.Context, tx eventstore.Tx, recs []eventstore.Record) error {
	latest := map[domain.OrderID]eventstore.Record{} // each order's newest event in recs
	var ids []domain.OrderID
	for _, r := range recs {
		cur, ok := latest[r.StreamID]
		if !ok {
			ids = append(ids, r.StreamID)
		}
		if !ok || r.Version > cur.Version {
			latest[r.StreamID] = r
		}
	}
	slices.Sort(ids)
	prev, err := t.lock(ctx, tx, ids)
	if err != nil {
		return err
	}
	next := map[domain.OrderID]order{}
	var behind []domain.OrderID
	for _, id := range ids {
		switch r, p := latest[id], prev[id]; {
		case p.version >= r.Version:
		case p.version == 0 && r.Version == 1 && r.Event != nil:
			next[id] = rowOf(domain.Rehydrate(id, []domain.Event{r.Event}))
		default:
			behind = append(behind, id)
		}
	}
	if err := fold(ctx, tx, behind, next); err != nil {
		return err
	}
	for _, id := range behind {
		if next[id].version < latest[id].Version {
			return fmt.Errorf("customers: order %d: the log has version %d, the feed %d", id, next[id].version, latest[id].Version)
		}
	}
	return t.write(ctx, tx, ids, prev, next)
}

// lock returns the rows of ids, locked; an order without one is missing from the map.
func (t tables) lock(ctx context.Context, tx eventstore.Tx, ids []domain.OrderID) (map[domain.OrderID]order, error) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.QueryContext(ctx, `SELECT order_id, customer_name, customer_email, order_status, total_cents, version
		FROM `+t.orders+` WHERE order_id IN (`+eventstore.Placeholders(len(ids))+`) ORDER BY order_id FOR UPDATE`, args...)
	if err != nil {
		return nil, fmt.Errorf("customers: lock orders: %w", err)
	}
	defer rows.Close()
	out := map[domain.OrderID]order{}
	for rows.Next() {
		var id domain.OrderID
		var o order
		if err := rows.Scan(&id, &o.name, &o.email, &o.status, &o.totalCents, &o.version); err != nil {
			return nil, fmt.Errorf("customers: lock orders: %w", err)
		}
		out[id] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("customers: lock orders: %w", err)
	}
	return out, nil
}

// fold sets next[id] to the fold of each stream of ids as the log has it now.
func fold(ctx context.Context, tx eventstore.Tx, ids []domain.OrderID, next map[domain.OrderID]order) error {
	if len(ids) == 0 {
		return nil
	}
	var events []domain.Event
	flush := func(id domain.OrderID) {
		if len(events) > 0 {
			next[id] = rowOf(domain.Rehydrate(id, events))
		}
		events = events[:0]
	}
	var cur domain.OrderID
	err := eventstore.ScanStreamsOf(ctx, tx, ids, func(r eventstore.Record) error {
		if r.StreamID != cur {
			flush(cur)
			cur = r.StreamID
		}
		events = append(events, r.Event)
		return nil
	})
	if err != nil {
		return fmt.Errorf("customers: read orders from the log: %w", err)
	}
	flush(cur)
	return nil
}

// write writes next over prev (rows locked, or missing) and adds the differences to the
// customers' totals, in one statement each for new rows, changed rows and customers. New
// rows are inserted, not upserted: a consumer that raced this one to the same new order
// fails on the key instead of counting the order twice.
func (t tables) write(ctx context.Context, tx eventstore.Tx, ids []domain.OrderID, prev, next map[domain.OrderID]order) error {
	var ins, upd []any
	type key struct{ name, email string }
	deltas := map[key]contribution{}
	var keys []key
	for _, id := range ids {
		n, ok := next[id]
		if !ok {
			continue
		}
		p, had := prev[id]
		if had && (p.name != n.name || p.email != n.email) {
			return fmt.Errorf("customers: order %d changed customer", id) // OrderPlaced opens its stream, and only it
		}
		row := []any{id, n.name, n.email, n.status, n.totalCents, n.version}
		if had {
			upd = append(upd, row...)
		} else {
			ins = append(ins, row...)
		}
		pc, nc := p.contribution(), n.contribution()
		k := key{n.name, n.email}
		d, seen := deltas[k]
		if !seen {
			keys = append(keys, k)
		}
		deltas[k] = contribution{placed: d.placed + nc.placed - pc.placed, completed: d.completed + nc.completed - pc.completed,
			completedCents: d.completedCents + nc.completedCents - pc.completedCents}
	}
	cols := `INSERT INTO ` + t.orders + ` (order_id, customer_name, customer_email, order_status, total_cents, version) VALUES `
	if len(ins) > 0 {
		if _, err := tx.ExecContext(ctx, cols+eventstore.PlaceholderRows(6, len(ins)/6), ins...); err != nil {
			return fmt.Errorf("customers: insert orders: %w", err)
		}
	}
	if len(upd) > 0 {
		if _, err := tx.ExecContext(ctx, cols+eventstore.PlaceholderRows(6, len(upd)/6)+` ON DUPLICATE KEY UPDATE order_status = VALUES(order_status),
			total_cents = VALUES(total_cents), version = VALUES(version)`, upd...); err != nil {
			return fmt.Errorf("customers: update orders: %w", err)
		}
	}
	// In key order, as every consumer does, so that they lock customers in one order.
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.email, b.email)) })
	var args []any
	for _, k := range keys {
		if d := deltas[k]; d != (contribution{}) {
			args = append(args, k.name, k.email, d.placed, d.completed, d.completedCents)
		}
	}
	if len(args) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+t.customers+` (customer_name, customer_email, orders_placed, orders_completed, completed_cents)
		VALUES `+eventstore.PlaceholderRows(5, len(args)/5)+` ON DUPLICATE KEY UPDATE orders_placed = orders_placed + VALUES(orders_placed),
		orders_completed = orders_completed + VALUES(orders_completed), completed_cents = completed_cents + VALUES(completed_cents)`, args...)
	if err != nil {
		return fmt.Errorf("customers: add orders to their customers: %w", err)
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
func (r *Reader) Top(ctx context.Context, limit int) (_ []Customer, err error) {
	defer eventstore.Classify(&err)
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
