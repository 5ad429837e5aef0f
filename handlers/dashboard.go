package handlers

import (
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"orderd/domain"
	"orderd/ordering"
	"orderd/projections/customers"
)

//go:embed web
var webFiles embed.FS

// StallAfter is how long a pending order may stay unchanged before the dashboard flags it
// as slow; it matches the sweeper's default REDRIVE_AFTER, after which the order's next
// step is driven again.
const StallAfter = 30 * time.Second

// dashboardStatuses are the order_status values the orders list filters on ("" is all).
var dashboardStatuses = map[string]bool{"": true, "pending": true, "completed": true, "payment_failed": true, "cancelled": true}

// Dashboard serves the operator's page at / and the small read-only JSON endpoints under
// /api/dashboard/ that it polls. Its queries are its own: they read the projection, the
// outbox, the log's head and the dead letters, and change nothing. Orders are placed by
// the page through the API's own POST /orders, and timelines come from GET /orders/{id}/events.
type Dashboard struct {
	db      *sql.DB
	catalog *ordering.Catalog
	log     *slog.Logger
	page    *template.Template
	static  http.Handler
	now     func() time.Time

	customers *customers.Reader
}

// NewDashboard returns the dashboard over the service's database and stock catalogue.
func NewDashboard(db *sql.DB, catalog *ordering.Catalog, log *slog.Logger) (*Dashboard, error) {
	if db == nil || catalog == nil || log == nil {
		return nil, errors.New("handlers: NewDashboard needs a db, a catalog and a logger")
	}
	page, err := template.ParseFS(webFiles, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("parse dashboard template: %w", err)
	}
	static, err := fs.Sub(webFiles, "web/static")
	if err != nil {
		return nil, err
	}
	cust, err := customers.NewReader(db)
	if err != nil {
		return nil, err
	}
	return &Dashboard{db: db, catalog: catalog, log: log, page: page,
		static: http.StripPrefix("/dashboard/static/", http.FileServerFS(static)), now: time.Now, customers: cust}, nil
}

// Routes registers the page, its assets and its JSON endpoints on r.
func (d *Dashboard) Routes(r *mux.Router) {
	r.HandleFunc("/", d.index).Methods(http.MethodGet)
	r.PathPrefix("/dashboard/static/").Handler(d.static).Methods(http.MethodGet)
	r.HandleFunc("/api/dashboard/orders", d.orders).Methods(http.MethodGet)
	r.HandleFunc("/api/dashboard/stock", d.stock).Methods(http.MethodGet)
	r.HandleFunc("/api/dashboard/dead-letters", d.deadLetters).Methods(http.MethodGet)
	r.HandleFunc("/api/dashboard/lag", d.lag).Methods(http.MethodGet)
	r.HandleFunc("/api/dashboard/customers", d.topCustomers).Methods(http.MethodGet)
}

// topCustomers is GET /api/dashboard/customers?limit=: the customers whose completed orders
// came to most, from the per-customer read model (which the customers component keeps a
// moment behind the log).
func (d *Dashboard) topCustomers(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit", 20, 1, 200)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	list, err := d.customers.Top(r.Context(), limit)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"customers": list})
}

func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	stock, err := d.catalog.Stock(r.Context())
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := d.page.Execute(w, map[string]any{"Stock": stock, "StallAfter": int(StallAfter.Seconds())}); err != nil {
		d.log.WarnContext(r.Context(), "render dashboard", "error", err)
	}
}

// dashboardOrder is one line of the orders list.
type dashboardOrder struct {
	OrderID         domain.OrderID `json:"orderId"`
	CustomerName    string         `json:"customerName"`
	CustomerEmail   string         `json:"customerEmail"`
	OrderStatus     string         `json:"orderStatus"`
	PaymentStatus   string         `json:"paymentStatus"`
	InventoryStatus string         `json:"inventoryStatus"`
	EmailSent       bool           `json:"emailSent"`
	Items           []domain.Item  `json:"items"`
	TotalCents      int64          `json:"totalCents"`
	FailureReason   string         `json:"failureReason,omitempty"`
	Version         int            `json:"version"`
	PlacedAt        time.Time      `json:"placedAt"`
	UpdatedAt       time.Time      `json:"updatedAt"`
	// Stuck is the reason a message about the order's current version was dead-lettered:
	// nothing moves it until a person redrives it.
	Stuck string `json:"stuck,omitempty"`
	// Slow is set on a pending order unchanged for StallAfter or longer.
	Slow bool `json:"slow"`
}

// orders is GET /api/dashboard/orders?status=&limit=&before=: newest first, keyset-paged by
// order id ("before" is the "next" of the previous page), with the count per status.
func (d *Dashboard) orders(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if status == "all" {
		status = ""
	}
	if !dashboardStatuses[status] {
		d.writeError(w, r, domain.Invalid("status", "must be one of all, pending, completed, payment_failed, cancelled"))
		return
	}
	limit, err := intParam(q.Get("limit"), "limit", 25, 1, 200)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	before, err := intParam(q.Get("before"), "before", 0, 1, 1<<31-1)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	query := `SELECT o.order_id, COALESCE(o.customer_name, ''), COALESCE(o.customer_email, ''), COALESCE(o.order_status, ''),
		COALESCE(o.payment_status, ''), COALESCE(o.inventory_status, ''), COALESCE(o.email_sent, FALSE), o.items, o.total_cents,
		COALESCE(o.failure_reason, ''), o.version, o.placed_at, o.updated_at,
		(SELECT dl.reason FROM dead_letters dl WHERE dl.order_id = o.order_id AND dl.version = o.version ORDER BY dl.id DESC LIMIT 1)
		FROM orders o WHERE (? = '' OR o.order_status = ?) AND (? = 0 OR o.order_id < ?) ORDER BY o.order_id DESC LIMIT ?`
	rows, err := d.db.QueryContext(r.Context(), query, status, status, before, before, limit+1)
	if err != nil {
		d.writeError(w, r, fmt.Errorf("list orders: %w", err))
		return
	}
	defer rows.Close()
	list := []dashboardOrder{}
	now := d.now()
	for rows.Next() {
		var o dashboardOrder
		var items []byte
		var stuck sql.NullString
		if err := rows.Scan(&o.OrderID, &o.CustomerName, &o.CustomerEmail, &o.OrderStatus, &o.PaymentStatus, &o.InventoryStatus,
			&o.EmailSent, &items, &o.TotalCents, &o.FailureReason, &o.Version, &o.PlacedAt, &o.UpdatedAt, &stuck); err != nil {
			d.writeError(w, r, fmt.Errorf("list orders: %w", err))
			return
		}
		if err := json.Unmarshal(items, &o.Items); err != nil {
			d.writeError(w, r, fmt.Errorf("decode items of order %d: %w", o.OrderID, err))
			return
		}
		o.Stuck = stuck.String
		o.Slow = o.OrderStatus == domain.StatusPending && now.Sub(o.UpdatedAt) >= StallAfter
		list = append(list, o)
	}
	if err := rows.Err(); err != nil {
		d.writeError(w, r, fmt.Errorf("list orders: %w", err))
		return
	}
	var next *domain.OrderID
	if len(list) > limit {
		list = list[:limit]
		next = &list[limit-1].OrderID
	}
	counts, err := d.statusCounts(r)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"orders": list, "next": next, "counts": counts})
}

// statusCounts counts orders per status (ix_orders_status keeps it an index scan).
func (d *Dashboard) statusCounts(r *http.Request) (map[string]int64, error) {
	rows, err := d.db.QueryContext(r.Context(), `SELECT COALESCE(order_status, ''), COUNT(*) FROM orders GROUP BY order_status`)
	if err != nil {
		return nil, fmt.Errorf("count orders: %w", err)
	}
	defer rows.Close()
	counts := map[string]int64{"all": 0, "pending": 0, "completed": 0, "payment_failed": 0, "cancelled": 0}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count orders: %w", err)
		}
		counts[s] += n
		counts["all"] += n
	}
	return counts, rows.Err()
}

// stock is GET /api/dashboard/stock: the stock table.
func (d *Dashboard) stock(w http.ResponseWriter, r *http.Request) {
	items, err := d.catalog.Stock(r.Context())
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	if items == nil {
		items = []ordering.StockItem{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"stock": items})
}

// dashboardLetter is one row of dead_letters.
type dashboardLetter struct {
	OrderID   *int64    `json:"orderId"`
	Version   *int64    `json:"version"`
	Queue     string    `json:"queue"`
	EventID   string    `json:"eventId"`
	EventType string    `json:"eventType"`
	Reason    string    `json:"reason"`
	DeadAt    time.Time `json:"deadAt"`
	// Holding says the order is still at the version the letter was about, so the letter
	// is what keeps it from moving (false once a redrive moved the order on).
	Holding bool `json:"holding"`
}

// deadLetters is GET /api/dashboard/dead-letters?limit=: the newest dead letters first.
func (d *Dashboard) deadLetters(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit", 20, 1, 200)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	rows, err := d.db.QueryContext(r.Context(), `SELECT dl.order_id, dl.version, dl.queue, dl.event_id, dl.event_type, dl.reason,
		dl.dead_at, COALESCE(o.version = dl.version, FALSE)
		FROM dead_letters dl LEFT JOIN orders o ON o.order_id = dl.order_id ORDER BY dl.id DESC LIMIT ?`, limit)
	if err != nil {
		d.writeError(w, r, fmt.Errorf("list dead letters: %w", err))
		return
	}
	defer rows.Close()
	list := []dashboardLetter{}
	for rows.Next() {
		var l dashboardLetter
		var order, version sql.NullInt64
		if err := rows.Scan(&order, &version, &l.Queue, &l.EventID, &l.EventType, &l.Reason, &l.DeadAt, &l.Holding); err != nil {
			d.writeError(w, r, fmt.Errorf("list dead letters: %w", err))
			return
		}
		if order.Valid {
			l.OrderID = &order.Int64
		}
		if version.Valid {
			l.Version = &version.Int64
		}
		list = append(list, l)
	}
	if err := rows.Err(); err != nil {
		d.writeError(w, r, fmt.Errorf("list dead letters: %w", err))
		return
	}
	var total int64
	if err := d.db.QueryRowContext(r.Context(), `SELECT COUNT(*) FROM dead_letters`).Scan(&total); err != nil {
		d.writeError(w, r, fmt.Errorf("count dead letters: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deadLetters": list, "total": total})
}

// queueLag is what the outbox still holds for one queue.
type queueLag struct {
	Queue            string  `json:"queue"`
	Waiting          int64   `json:"waiting"`
	OldestAgeSeconds float64 `json:"oldestAgeSeconds"`
}

// lag is GET /api/dashboard/lag: how far the relay and the projection are behind the log.
//
// Relay: outbox rows not yet accepted by SQS, per queue, and the age of the oldest.
// Projection: the log's last position against the last position projected into the row of
// that event's order. The live projection is written in the append's transaction, so this
// is 0 unless the table is being rebuilt or was lost; it is read by primary key, so it
// stays cheap however large the log grows.
func (d *Dashboard) lag(w http.ResponseWriter, r *http.Request) {
	rows, err := d.db.QueryContext(r.Context(), `SELECT queue, COUNT(*), MIN(created_at) FROM outbox GROUP BY queue ORDER BY queue`)
	if err != nil {
		d.writeError(w, r, fmt.Errorf("read outbox lag: %w", err))
		return
	}
	defer rows.Close()
	now := d.now()
	queues := []queueLag{}
	var waiting int64
	var oldest float64
	for rows.Next() {
		var q queueLag
		var first time.Time
		if err := rows.Scan(&q.Queue, &q.Waiting, &first); err != nil {
			d.writeError(w, r, fmt.Errorf("read outbox lag: %w", err))
			return
		}
		q.OldestAgeSeconds = max(0, now.Sub(first).Seconds())
		waiting += q.Waiting
		oldest = max(oldest, q.OldestAgeSeconds)
		queues = append(queues, q)
	}
	if err := rows.Err(); err != nil {
		d.writeError(w, r, fmt.Errorf("read outbox lag: %w", err))
		return
	}
	var logPos int64
	var projected sql.NullInt64
	err = d.db.QueryRowContext(r.Context(), `SELECT e.position, o.last_position FROM events e
		LEFT JOIN orders o ON o.order_id = e.stream_id ORDER BY e.position DESC LIMIT 1`).Scan(&logPos, &projected)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		d.writeError(w, r, fmt.Errorf("read projection lag: %w", err))
		return
	}
	projection := map[string]any{"logPosition": logPos, "projectedPosition": nil, "eventsBehind": nil}
	if projected.Valid || logPos == 0 {
		projection["projectedPosition"] = projected.Int64
		projection["eventsBehind"] = max(0, logPos-projected.Int64)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"outbox":     map[string]any{"waiting": waiting, "oldestAgeSeconds": oldest, "queues": queues},
		"projection": projection,
	})
}

// writeError answers with the API's JSON error body and status mapping (errors.go).
func (d *Dashboard) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusOf(err)
	detail := errorDetail{Code: code, Message: err.Error()}
	var de *domain.Error
	if errors.As(err, &de) {
		detail.Field, detail.Message = de.Field, de.Message
	}
	if status >= 500 {
		d.log.ErrorContext(r.Context(), "dashboard request failed", "path", r.URL.Path, "status", status, "error", err)
		detail.Message = "internal error; it has been logged"
		if status == http.StatusServiceUnavailable {
			detail.Message = "the order database is unavailable; try again shortly"
		}
	}
	writeJSON(w, status, errorBody{Error: detail})
}

// intParam parses an optional integer query parameter within [lo, hi]; empty gives def.
func intParam(s, name string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, domain.Invalid(name, "must be an integer from %d to %d", lo, hi)
	}
	return n, nil
}
