// Package orders is the orders read model: a row per order (OrderRow, folded by Apply), the
// eventstore.Hook that writes it in each append's transaction (so readers see their own
// writes and the table is exactly-once by construction), and its readers for the API, the
// dashboard and the metrics. Package projections rebuilds and verifies it from the log.
package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"orderd/domain"
	"orderd/eventstore"
)

// Version is the version of the orders read model's code: OrderRow.Apply, the columns it
// fills and how they are encoded. Bump it whenever a change would make a rebuilt row differ
// from one the previous code wrote; the version-triggered rebuild (projections.RebuildIfStale)
// then rebuilds the table once the new code is deployed.
const Version = 1

// OrderRow is one row of the orders table. Apply is the only code that computes it, for
// live appends and for replay alike, so a rebuilt table equals the live one.
type OrderRow struct {
	OrderID         domain.OrderID `json:"orderId"`
	CustomerName    string         `json:"customerName"`
	OrderStatus     string         `json:"orderStatus"`
	PaymentStatus   string         `json:"paymentStatus"`
	InventoryStatus string         `json:"inventoryStatus"`
	EmailSent       bool           `json:"emailSent"`
	EmailFailed     bool           `json:"emailFailed"` // the mail server refused the notification for good
	CustomerEmail   string         `json:"customerEmail,omitempty"`
	Items           []domain.Item  `json:"items"`
	TotalCents      int64          `json:"totalCents"`
	FailureReason   string         `json:"failureReason,omitempty"`
	Version         int            `json:"version"`
	LastPosition    int64          `json:"lastPosition"`
	PlacedAt        time.Time      `json:"placedAt"`
	UpdatedAt       time.Time      `json:"updatedAt"`
}

// Apply folds one record into the row.
func (r *OrderRow) Apply(rec eventstore.Record) {
	r.OrderID, r.Version, r.LastPosition, r.UpdatedAt = rec.StreamID, rec.Version, rec.Position, rec.OccurredAt
	switch e := rec.Event.(type) {
	case domain.OrderPlaced:
		r.CustomerName, r.CustomerEmail = e.CustomerName, e.CustomerEmail
		r.Items, r.TotalCents = e.Items, e.TotalCents
		r.OrderStatus, r.PaymentStatus, r.InventoryStatus = domain.StatusPending, domain.StatusPending, domain.StatusPending
		r.PlacedAt = rec.OccurredAt
	case domain.PaymentCompleted:
		r.PaymentStatus = domain.StatusCompleted
	case domain.PaymentFailed:
		r.PaymentStatus, r.OrderStatus, r.FailureReason = domain.StatusFailed, domain.StatusPaymentFailed, e.Reason
	case domain.InventoryReserved:
		r.InventoryStatus = domain.StatusCompleted
	case domain.InventoryReservationFailed:
		r.InventoryStatus, r.FailureReason = domain.StatusFailed, e.Reason
	case domain.PaymentRefunded:
		r.PaymentStatus, r.OrderStatus = domain.StatusRefunded, domain.StatusCancelled
	case domain.EmailSent:
		r.EmailSent = true
		if r.OrderStatus == domain.StatusPending {
			r.OrderStatus = domain.StatusCompleted
		}
	case domain.EmailFailed:
		// The order keeps its outcome (a pending one here is paid and reserved); the reason
		// says what the customer was not told and why, after the outcome's own reason.
		r.EmailFailed = true
		if r.OrderStatus == domain.StatusPending {
			r.OrderStatus = domain.StatusCompleted
		}
		reason := "email not delivered: " + e.Reply
		if r.FailureReason != "" {
			reason = r.FailureReason + "; " + reason
		}
		r.FailureReason = reason
	}
}

// FoldOrder computes the row of one order from its whole stream.
func FoldOrder(history []eventstore.Record) OrderRow {
	var r OrderRow
	for _, rec := range history {
		r.Apply(rec)
	}
	return r
}

// Table is the name of the live orders table.
const Table = "orders"

// Columns lists the table's columns in the order Values writes them.
const Columns = `order_id, customer_name, order_status, payment_status, inventory_status, email_sent,
	email_failed, customer_email, items, total_cents, failure_reason, version, last_position, placed_at, updated_at`

const orderPlaceholders = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// ColumnCount is how many values a row writes.
const ColumnCount = 15

// Values returns the values the row is written with, in Columns order: every write of the
// table, and a verification's comparison, go through it.
func (r OrderRow) Values() ([]any, error) {
	items := r.Items
	if items == nil {
		items = []domain.Item{}
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("encode items of order %d: %w", r.OrderID, err)
	}
	return []any{r.OrderID, r.CustomerName, r.OrderStatus, r.PaymentStatus, r.InventoryStatus, r.EmailSent,
		r.EmailFailed, nullable(r.CustomerEmail), string(b), r.TotalCents, nullable(r.FailureReason), r.Version, r.LastPosition,
		r.PlacedAt, r.UpdatedAt}, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// upsertSQL writes whole rows: each one is a fold of its order's full stream, so the newest
// write is always the right one and nothing is applied incrementally twice.
func upsertSQL(table string, rows int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, Columns)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(orderPlaceholders)
	}
	b.WriteString(` ON DUPLICATE KEY UPDATE customer_name = VALUES(customer_name), order_status = VALUES(order_status),
		payment_status = VALUES(payment_status), inventory_status = VALUES(inventory_status), email_sent = VALUES(email_sent),
		email_failed = VALUES(email_failed), customer_email = VALUES(customer_email), items = VALUES(items), total_cents = VALUES(total_cents),
		failure_reason = VALUES(failure_reason), version = VALUES(version), last_position = VALUES(last_position),
		placed_at = VALUES(placed_at), updated_at = VALUES(updated_at)`)
	return b.String()
}

// Execer is a pool, connection or transaction that rows are written through.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// WriteRows upserts rows into table (the live one, or a rebuild's) in one statement.
func WriteRows(ctx context.Context, db Execer, table string, rows []OrderRow) error {
	if len(rows) == 0 {
		return nil
	}
	args := make([]any, 0, len(rows)*ColumnCount)
	for _, r := range rows {
		v, err := r.Values()
		if err != nil {
			return err
		}
		args = append(args, v...)
	}
	if _, err := db.ExecContext(ctx, upsertSQL(table, len(rows)), args...); err != nil {
		return fmt.Errorf("write %d rows to %s: %w", len(rows), table, err)
	}
	return nil
}

// Settled reports whether the order has reached the end of its path in the domain, after
// which no event follows. It only decides when a row leaves memory.
func (r *OrderRow) Settled() bool {
	switch r.OrderStatus {
	case domain.StatusCompleted, domain.StatusPaymentFailed, domain.StatusCancelled:
		return r.EmailSent || r.EmailFailed
	}
	return false
}

// PayloadFree lists the event types whose payload OrderRow.Apply does not read: a replay
// folds them as the zero value of their type, and does not even read their payload. Apply reading a field of one of these types
// must remove it from here (TestFastDecodeMatchesEventstore fails until it does).
var PayloadFree = map[string]domain.Event{
	domain.TypePaymentCompleted:  domain.PaymentCompleted{},
	domain.TypeInventoryReserved: domain.InventoryReserved{},
	domain.TypePaymentRefunded:   domain.PaymentRefunded{},
	domain.TypeEmailSent:         domain.EmailSent{},
}
