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

// Column is one column of the orders table: its name and the OrderRow field it holds.
// TableColumns is the one list of them: the column names in SQL (Columns), the placeholders,
// Values, the readers' scan and the rebuild's LOAD DATA writer (package projections) all walk
// it, so a column is added by adding a line there.
type Column struct {
	Name string
	// Field returns a pointer to the row's field: a *domain.OrderID, *int, *int64, *bool,
	// *string, *[]domain.Item (stored as JSON) or *time.Time.
	Field func(r *OrderRow) any
	// Nullable stores an empty string as NULL, and reads NULL as "".
	Nullable bool
}

// TableColumns are the orders table's columns, in the order every read and write uses. The
// first is the key.
var TableColumns = []Column{
	{Name: "order_id", Field: func(r *OrderRow) any { return &r.OrderID }},
	{Name: "customer_name", Field: func(r *OrderRow) any { return &r.CustomerName }},
	{Name: "order_status", Field: func(r *OrderRow) any { return &r.OrderStatus }},
	{Name: "payment_status", Field: func(r *OrderRow) any { return &r.PaymentStatus }},
	{Name: "inventory_status", Field: func(r *OrderRow) any { return &r.InventoryStatus }},
	{Name: "email_sent", Field: func(r *OrderRow) any { return &r.EmailSent }},
	{Name: "email_failed", Field: func(r *OrderRow) any { return &r.EmailFailed }},
	{Name: "customer_email", Field: func(r *OrderRow) any { return &r.CustomerEmail }, Nullable: true},
	{Name: "items", Field: func(r *OrderRow) any { return &r.Items }},
	{Name: "total_cents", Field: func(r *OrderRow) any { return &r.TotalCents }},
	{Name: "failure_reason", Field: func(r *OrderRow) any { return &r.FailureReason }, Nullable: true},
	{Name: "version", Field: func(r *OrderRow) any { return &r.Version }},
	{Name: "last_position", Field: func(r *OrderRow) any { return &r.LastPosition }},
	{Name: "placed_at", Field: func(r *OrderRow) any { return &r.PlacedAt }},
	{Name: "updated_at", Field: func(r *OrderRow) any { return &r.UpdatedAt }},
}

// Columns lists the table's columns, comma-separated, in TableColumns order.
var Columns = columnList("%s")

// ColumnCount is how many values a row writes.
var ColumnCount = len(TableColumns)

// orderPlaceholders are one row's placeholders in an INSERT.
var orderPlaceholders = "(" + strings.TrimSuffix(strings.Repeat("?, ", len(TableColumns)), ", ") + ")"

// upsertUpdates sets every column but the key from the row inserted.
var upsertUpdates = strings.TrimPrefix(columnList("%[1]s = VALUES(%[1]s)"), TableColumns[0].Name+" = VALUES("+TableColumns[0].Name+"), ")

// columnList formats each column's name with format, comma-separated.
func columnList(format string) string {
	parts := make([]string, len(TableColumns))
	for i, c := range TableColumns {
		parts[i] = fmt.Sprintf(format, c.Name)
	}
	return strings.Join(parts, ", ")
}

// Values returns the values the row is written with, in Columns order: every write of the
// table, and a verification's comparison, go through it.
func (r *OrderRow) Values() ([]any, error) {
	out := make([]any, len(TableColumns))
	for i, c := range TableColumns {
		switch p := c.Field(r).(type) {
		case *domain.OrderID:
			out[i] = *p
		case *int:
			out[i] = *p
		case *int64:
			out[i] = *p
		case *bool:
			out[i] = *p
		case *string:
			if !c.Nullable || *p != "" {
				out[i] = *p
			}
		case *[]domain.Item:
			items := *p
			if items == nil {
				items = []domain.Item{}
			}
			b, err := json.Marshal(items)
			if err != nil {
				return nil, fmt.Errorf("encode items of order %d: %w", r.OrderID, err)
			}
			out[i] = string(b)
		case *time.Time:
			out[i] = *p
		default:
			return nil, fmt.Errorf("orders: column %s holds a %T", c.Name, p)
		}
	}
	return out, nil
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
	b.WriteString(" ON DUPLICATE KEY UPDATE ")
	b.WriteString(upsertUpdates)
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
	for i := range rows {
		v, err := rows[i].Values()
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
