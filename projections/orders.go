// Package projections derives read models from the event log. The orders projection is
// written in the same transaction as each append (so readers see their own writes and the
// projection is exactly-once by construction) and can be rebuilt from the log at any time.
package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/tracing"
)

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

// OrdersTable is the name of the live orders projection.
const OrdersTable = "orders"

// orderColumns lists the table's columns in the order values() writes them.
const orderColumns = `order_id, customer_name, order_status, payment_status, inventory_status, email_sent,
	email_failed, customer_email, items, total_cents, failure_reason, version, last_position, placed_at, updated_at`

const orderPlaceholders = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// orderColumnCount is how many values a row writes.
const orderColumnCount = 15

func (r OrderRow) values() ([]any, error) {
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
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, orderColumns)
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

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// writeRows upserts rows into table in one statement.
func writeRows(ctx context.Context, db execer, table string, rows []OrderRow) error {
	if len(rows) == 0 {
		return nil
	}
	args := make([]any, 0, len(rows)*orderColumnCount)
	for _, r := range rows {
		v, err := r.values()
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

// Orders keeps the orders table up to date as events are appended.
type Orders struct{}

// AfterAppend implements eventstore.Hook: one row per order, folded from its whole stream,
// all written in one statement.
func (Orders) AfterAppend(ctx context.Context, tx *sql.Tx, changes []eventstore.Change) error {
	ctx, span := tracing.Start(ctx, "project orders", trace.SpanKindInternal)
	defer span.End()
	rows := make([]OrderRow, len(changes))
	for i, c := range changes {
		rows[i] = FoldOrder(c.History)
	}
	return writeRows(ctx, tx, OrdersTable, rows)
}

// Queryer is what the readers need of the database: a *sql.DB, or a *sql.Conn (a test that
// counts the rows a query reads runs it on one connection).
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Reader reads the orders projection.
type Reader struct{ db Queryer }

// NewReader returns a reader over db.
func NewReader(db Queryer) (*Reader, error) {
	if db == nil {
		return nil, errors.New("projections: nil db")
	}
	return &Reader{db: db}, nil
}

// Order returns the projected order, or a KindNotFound error.
func (rd *Reader) Order(ctx context.Context, id domain.OrderID) (_ OrderRow, err error) {
	defer eventstore.Classify(&err)
	row := rd.db.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = ?`, id)
	r, err := scanRow(row)
	if errors.Is(err, sql.ErrNoRows) {
		return OrderRow{}, domain.NotFound("order %d does not exist", id)
	}
	if err != nil {
		return OrderRow{}, fmt.Errorf("read order %d: %w", id, err)
	}
	return r, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRow(s scanner) (OrderRow, error) {
	var r OrderRow
	var email, reason sql.NullString
	var items []byte
	err := s.Scan(&r.OrderID, &r.CustomerName, &r.OrderStatus, &r.PaymentStatus, &r.InventoryStatus, &r.EmailSent,
		&r.EmailFailed, &email, &items, &r.TotalCents, &reason, &r.Version, &r.LastPosition, &r.PlacedAt, &r.UpdatedAt)
	if err != nil {
		return OrderRow{}, err
	}
	r.CustomerEmail, r.FailureReason = email.String, reason.String
	if err := json.Unmarshal(items, &r.Items); err != nil {
		return OrderRow{}, fmt.Errorf("decode items of order %d: %w", r.OrderID, err)
	}
	return r, nil
}
