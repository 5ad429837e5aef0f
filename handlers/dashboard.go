package handlers

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/ordering"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/projections/customers"
	"orderd/projections/orders"
)

//go:embed web
var webFiles embed.FS

// dashboardStatuses are the order_status values the orders list filters on ("" is all).
var dashboardStatuses = map[string]bool{"": true, "pending": true, "completed": true, "payment_failed": true, "cancelled": true}

// Dashboard serves the operator's page at / and the small read-only JSON endpoints under
// /api/dashboard/ that it polls. It reads the projection, the outbox, the log's head and the
// dead letters through their owners, each read cheap at any size (the page polls every
// second), and changes nothing. Orders are placed by the page through the API's own POST
// /orders, and timelines come from GET /orders/{id}/events.
type Dashboard struct {
	db      *sql.DB
	catalog *ordering.Catalog
	reader  orderReader
	counts  statusCounter
	dead    letterReader
	log     *slog.Logger
	page    *template.Template
	static  http.Handler
	// stallAfter is how long a pending order may stay unchanged before it is flagged as
	// slow: the sweeper's REDRIVE_AFTER, after which the order's next step is driven again.
	stallAfter time.Duration

	customers *customers.Reader
	// stages are the component names of the stages the orders list shows, in order.
	stages []string
}

// orderReader is what the dashboard needs of the orders read model (orders.Reader).
type orderReader interface {
	Page(ctx context.Context, status string, before domain.OrderID, limit int) ([]orders.OrderRow, error)
	Lag(ctx context.Context) (orders.Lag, error)
	Heads(ctx context.Context, ids []domain.OrderID) (map[domain.OrderID]orders.Head, error)
}

// statusCounter is what the dashboard needs of the orders per status
// (orders.StatusCounter).
type statusCounter interface {
	Counts(ctx context.Context) (orders.StatusCounts, error)
}

// letterReader is what the dashboard needs of the dead-letter log (deadletter.Log).
type letterReader interface {
	StuckReasons(ctx context.Context, versions map[domain.OrderID]int) (map[domain.OrderID]string, error)
	Newest(ctx context.Context, limit int) ([]deadletter.Letter, int64, error)
}

// lagScan bounds how much of the outbox one look at the lag reads (outbox.ReadBacklog).
const lagScan = 10_000

// NewDashboard returns the dashboard over the service's database and stock catalogue. A
// pending order unchanged for stallAfter (the sweeper's REDRIVE_AFTER) is shown as slow.
func NewDashboard(db *sql.DB, catalog *ordering.Catalog, log *slog.Logger, stallAfter time.Duration) (*Dashboard, error) {
	if db == nil || catalog == nil || log == nil || stallAfter <= 0 {
		return nil, errors.New("handlers: NewDashboard needs a db, a catalog, a logger and a positive stall time")
	}
	page, err := template.ParseFS(webFiles, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("parse dashboard template: %w", err)
	}
	static, err := fs.Sub(webFiles, "web/static")
	if err != nil {
		return nil, err
	}
	reader, err := orders.NewReader(db)
	if err != nil {
		return nil, err
	}
	counts, err := orders.NewStatusCounter(db, 0)
	if err != nil {
		return nil, err
	}
	dead, err := deadletter.NewLog(db)
	if err != nil {
		return nil, err
	}
	cust, err := customers.NewReader(db)
	if err != nil {
		return nil, err
	}
	return &Dashboard{db: db, catalog: catalog, reader: reader, counts: counts, dead: dead, log: log, page: page,
		static: http.StripPrefix("/dashboard/static/", http.FileServerFS(static)), customers: cust, stallAfter: stallAfter,
		stages: pipeline.Components()}, nil
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
	if err := d.page.Execute(w, map[string]any{"Stock": stock, "StallAfter": int(d.stallAfter.Seconds()), "StagesHeader": d.stagesHeader()}); err != nil {
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
	EmailFailed     bool           `json:"emailFailed"` // the mail server refused the email for good
	Items           []domain.Item  `json:"items"`
	TotalCents      int64          `json:"totalCents"`
	FailureReason   string         `json:"failureReason,omitempty"`
	Version         int            `json:"version"`
	PlacedAt        time.Time      `json:"placedAt"`
	UpdatedAt       time.Time      `json:"updatedAt"`
	// Stuck is the reason a message about the order's current version was dead-lettered:
	// nothing moves it until a person redrives it.
	Stuck string `json:"stuck,omitempty"`
	// Slow is set on a pending order unchanged for the dashboard's stall time (REDRIVE_AFTER) or longer.
	Slow bool `json:"slow"`
	// Stages is how each stage of the pipeline went for the order, by component name.
	Stages map[string]string `json:"stages"`
}

// dashboardStage is one column of the orders list's stage cell: a stage of the pipeline.
type dashboardStage struct {
	Component string `json:"component"`
	Label     string `json:"label"`
}

// dashboardStages lists the pipeline's stages, in order, as the page shows them: the page
// draws the stage cell of every order from this list, not from names of its own.
func (d *Dashboard) dashboardStages() []dashboardStage {
	var out []dashboardStage
	for _, c := range d.stages {
		out = append(out, dashboardStage{Component: c, Label: c})
	}
	return out
}

// ShowStages sets the stages the orders list shows, by component name, in order: those of
// the pipeline the service runs (the default pipeline's unless this is called).
func (d *Dashboard) ShowStages(components []string) { d.stages = slices.Clone(components) }

// stagesHeader is the heading of the orders list's stage column: "Payment · inventory · email".
func (d *Dashboard) stagesHeader() string {
	var labels []string
	for _, st := range d.dashboardStages() {
		labels = append(labels, st.Label)
	}
	h := strings.Join(labels, " · ")
	r, n := utf8.DecodeRuneInString(h)
	return string(unicode.ToUpper(r)) + h[n:]
}

// stageStatus is how the stage component went for the order, as the orders read model
// records it: a stage whose outcome the read model has no column for shows "unknown".
func stageStatus(o orders.OrderRow, component string) string {
	switch component {
	case pipeline.Payment:
		return o.PaymentStatus
	case pipeline.Inventory:
		return o.InventoryStatus
	case pipeline.Email:
		switch {
		case o.EmailSent:
			return "sent"
		case o.EmailFailed:
			return "failed"
		}
		return "pending"
	}
	return "unknown"
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
	rows, err := d.reader.Page(r.Context(), status, domain.OrderID(before), limit+1)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	var next *domain.OrderID
	if len(rows) > limit {
		rows = rows[:limit]
		next = &rows[limit-1].OrderID
	}
	versions := make(map[domain.OrderID]int, len(rows))
	for _, o := range rows {
		versions[o.OrderID] = o.Version
	}
	stuck, err := d.dead.StuckReasons(r.Context(), versions)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	list := make([]dashboardOrder, len(rows))
	now := time.Now()
	stages := d.dashboardStages()
	for i, o := range rows {
		list[i] = dashboardOrder{OrderID: o.OrderID, CustomerName: o.CustomerName, CustomerEmail: o.CustomerEmail,
			OrderStatus: o.OrderStatus, PaymentStatus: o.PaymentStatus, InventoryStatus: o.InventoryStatus, EmailSent: o.EmailSent, EmailFailed: o.EmailFailed,
			Items: o.Items, TotalCents: o.TotalCents, FailureReason: o.FailureReason, Version: o.Version,
			PlacedAt: o.PlacedAt, UpdatedAt: o.UpdatedAt, Stuck: stuck[o.OrderID],
			Slow: o.OrderStatus == domain.StatusPending && now.Sub(o.UpdatedAt) >= d.stallAfter, Stages: map[string]string{}}
		for _, st := range stages {
			list[i].Stages[st.Component] = stageStatus(o, st.Component)
		}
	}
	counts, err := d.counts.Counts(r.Context())
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"orders": list, "next": next, "counts": counts.ByStatus, "countsAsOf": counts.TerminalAsOf, "stages": stages})
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
	list, total, err := d.readDeadLetters(r.Context(), limit)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deadLetters": list, "total": total})
}

// readDeadLetters reads the newest limit dead letters and how many there are in all, each
// marked with whether it still holds its order (the order is still at the letter's version).
func (d *Dashboard) readDeadLetters(ctx context.Context, limit int) ([]dashboardLetter, int64, error) {
	letters, total, err := d.dead.Newest(ctx, limit)
	if err != nil {
		return nil, 0, err
	}
	var ids []domain.OrderID
	for _, l := range letters {
		if l.OrderID != 0 {
			ids = append(ids, l.OrderID)
		}
	}
	heads, err := d.reader.Heads(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	list := make([]dashboardLetter, len(letters))
	for i, l := range letters {
		list[i] = dashboardLetter{Queue: l.Queue, EventID: l.EventID, EventType: l.EventType, Reason: l.Reason, DeadAt: l.DeadAt}
		if l.OrderID != 0 {
			order, version := int64(l.OrderID), int64(l.Version)
			list[i].OrderID, list[i].Version = &order, &version
			h, ok := heads[domain.OrderID(order)]
			list[i].Holding = ok && h.Version == int(version)
		}
	}
	return list, total, nil
}

// queueLag is what the outbox still holds for one queue.
type queueLag struct {
	Queue            string  `json:"queue"`
	Waiting          int64   `json:"waiting"`
	OldestAgeSeconds float64 `json:"oldestAgeSeconds"`
}

// lag is GET /api/dashboard/lag: how far the relay and the projection are behind the log.
//
// Relay: outbox rows not yet accepted by SQS, per queue, and the age of the oldest, read
// from at most the lagScan lowest positions ("capped" says more wait). Projection: the log's
// last position against the last position projected into the row of that event's order
// (orders.Lag): read by key, so cheap however large the log grows.
func (d *Dashboard) lag(w http.ResponseWriter, r *http.Request) {
	backlog, err := outbox.ReadBacklog(r.Context(), d.db, lagScan)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	now := time.Now()
	queues := make([]queueLag, len(backlog.Queues))
	for i, q := range backlog.Queues {
		queues[i] = queueLag{Queue: q.Queue, Waiting: q.Waiting, OldestAgeSeconds: q.OldestAge(now).Seconds()}
	}
	lag, err := d.reader.Lag(r.Context())
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	projection := map[string]any{"logPosition": lag.LogPosition, "projectedPosition": nil, "eventsBehind": nil}
	if lag.Projected != nil {
		projection["projectedPosition"] = *lag.Projected
		projection["eventsBehind"] = lag.EventsBehind()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"outbox":     map[string]any{"waiting": backlog.Waiting, "capped": backlog.Capped, "oldestAgeSeconds": backlog.OldestAge(now).Seconds(), "queues": queues},
		"projection": projection,
	})
}

// writeError answers r with err as the API does (respondError in errors.go): the same
// statuses, body and logging for the page's reads as for every other endpoint.
func (d *Dashboard) writeError(w http.ResponseWriter, r *http.Request, err error) {
	respondError(w, r, d.log, err)
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
