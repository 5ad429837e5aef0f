// Package handlers is the HTTP API: one routes function lists it, each handler decodes,
// calls the use case, and encodes; errors.go maps errors to statuses in one place.
package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	ghandlers "github.com/gorilla/handlers"
	"github.com/gorilla/mux"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/metrics"
	"orderd/ordering"
	"orderd/projections"
)

// MaxBodyBytes bounds a request body; a real order is a few hundred bytes.
const MaxBodyBytes = 64 << 10

// HealthCheck reports, per dependency, whether it answers (nil) or why not.
type HealthCheck func(ctx context.Context) map[string]error

// API serves the HTTP API.
type API struct {
	dash    *Dashboard
	metrics *metrics.Metrics
	ready   HealthCheck
	placer  *ordering.Placer
	dead    *deadletter.Log
	orders  *projections.Reader
	store   *eventstore.Store
	health  HealthCheck
	origins []string
	limiter *clientLimiter // nil: placement is not rate-limited
	log     *slog.Logger
}

// Config lists the API's dependencies.
type Config struct {
	Placer         *ordering.Placer
	Orders         *projections.Reader
	Store          *eventstore.Store
	DeadLetters    *deadletter.Log
	Health         HealthCheck // /healthz: the dependencies answer
	Ready          HealthCheck // /readyz: ready for traffic (dependencies, migrations, lag)
	Metrics        *metrics.Metrics
	Dashboard      *Dashboard // the operator's page at /
	AllowedOrigins []string   // CORS; "*" allows any origin
	PlacementLimit RateLimit  // per-client limit on placing orders; the zero value places none
	Log            *slog.Logger
}

// New returns the API.
func New(c Config) (*API, error) {
	if c.Placer == nil || c.Orders == nil || c.Store == nil || c.DeadLetters == nil || c.Health == nil || c.Ready == nil ||
		c.Metrics == nil || c.Dashboard == nil || c.Log == nil {
		return nil, errors.New("handlers: New needs a placer, an orders reader, a store, a dead-letter log, health and readiness checks, metrics, a dashboard and a logger")
	}
	return &API{placer: c.Placer, orders: c.Orders, store: c.Store, dead: c.DeadLetters, health: c.Health, ready: c.Ready,
		metrics: c.Metrics, dash: c.Dashboard, origins: c.AllowedOrigins, limiter: newClientLimiter(c.PlacementLimit), log: c.Log}, nil
}

// Handler returns the whole HTTP API.
func (a *API) Handler() http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/orders", a.limitPlacement(a.postOrder)).Methods(http.MethodPost)
	r.HandleFunc("/place-order", a.limitPlacement(a.placeOrderSeed)).Methods(http.MethodPost)
	r.HandleFunc("/orders/{id}", a.getOrder).Methods(http.MethodGet)
	r.HandleFunc("/orders/{id}/events", a.getEvents).Methods(http.MethodGet)
	r.HandleFunc("/healthz", a.checks(a.health)).Methods(http.MethodGet)
	r.HandleFunc("/readyz", a.checks(a.ready)).Methods(http.MethodGet)
	r.Handle("/metrics", a.metrics.Handler()).Methods(http.MethodGet)
	a.dash.Routes(r)
	r.Use(a.instrument)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, &httpError{status: http.StatusNotFound, code: "not_found", message: "no such endpoint: " + req.URL.Path})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, &httpError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", message: req.Method + " is not allowed on " + req.URL.Path})
	})
	// The seed's shop front end is served from another origin, so the API answers CORS
	// preflights for the configured origins.
	cors := ghandlers.CORS(
		ghandlers.AllowedOrigins(a.origins),
		ghandlers.AllowedMethods([]string{http.MethodGet, http.MethodPost, http.MethodOptions}),
		ghandlers.AllowedHeaders([]string{"Content-Type", "Idempotency-Key", "X-Request-ID"}),
		ghandlers.ExposedHeaders([]string{"Location", "X-Request-ID"}),
	)
	return cors(r)
}

// orderRequest is the body of POST /orders.
type orderRequest struct {
	CustomerName  *string       `json:"customerName"`
	CustomerEmail *string       `json:"customerEmail"`
	Items         []itemRequest `json:"items"`
}

type itemRequest struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// orderAccepted is the answer to POST /orders.
type orderAccepted struct {
	OrderID domain.OrderID    `json:"orderId"`
	Status  string            `json:"status"`
	Links   map[string]string `json:"links"`
}

func (a *API) postOrder(w http.ResponseWriter, r *http.Request) {
	var req orderRequest
	body, err := decodeRequest(r, &req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p, err := req.placement()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id, created, err := a.place(r, p, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	self := fmt.Sprintf("/orders/%d", id)
	w.Header().Set("Location", self)
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, orderAccepted{OrderID: id, Status: domain.StatusPending,
		Links: map[string]string{"self": self, "events": self + "/events"}})
}

func (req orderRequest) placement() (domain.Placement, error) {
	switch {
	case req.CustomerName == nil:
		return domain.Placement{}, domain.Invalid("customerName", "is required")
	case req.CustomerEmail == nil || *req.CustomerEmail == "":
		return domain.Placement{}, domain.Invalid("customerEmail", "is required")
	case len(req.Items) == 0:
		return domain.Placement{}, domain.Invalid("items", "must list at least one item")
	}
	items := make([]domain.Item, len(req.Items))
	for i, it := range req.Items {
		items[i] = domain.Item{SKU: it.SKU, Quantity: it.Quantity}
	}
	return domain.Placement{CustomerName: *req.CustomerName, CustomerEmail: *req.CustomerEmail, Items: items}, nil
}

// seedRequest is the body of the seed's POST /place-order.
type seedRequest struct {
	CustomerName *string `json:"customerName"`
}

func (a *API) placeOrderSeed(w http.ResponseWriter, r *http.Request) {
	var req seedRequest
	body, err := decodeRequest(r, &req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if req.CustomerName == nil {
		a.writeError(w, r, domain.Invalid("customerName", "is required"))
		return
	}
	id, _, err := a.place(r, domain.Placement{CustomerName: *req.CustomerName}, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"message": "Order placed successfully", "orderId": id})
}

func (a *API) place(r *http.Request, p domain.Placement, body []byte) (domain.OrderID, bool, error) {
	key := strings.TrimSpace(r.Header.Get("Idempotency-Key"))
	if len(key) > 255 {
		return 0, false, domain.Invalid("Idempotency-Key", "is longer than 255 characters")
	}
	sum := sha256.Sum256(append([]byte(r.URL.Path+"\n"), body...))
	return a.placer.Place(r.Context(), ordering.PlaceRequest{
		Placement: p, IdempotencyKey: key, RequestHash: hex.EncodeToString(sum[:]), CorrelationID: correlationID(r),
	})
}

func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	id, err := orderID(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	row, err := a.orders.Order(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	stuck, err := a.dead.Stuck(r.Context(), id, row.Version)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, orderView(row, stuck))
}

// orderView is GET /orders/{id}: the seed's columns under their own names, then the rest,
// and what holds the order if a message about it was dead-lettered.
func orderView(r projections.OrderRow, stuck *deadletter.Letter) map[string]any {
	v := map[string]any{
		"order_id": r.OrderID, "customer_name": r.CustomerName, "order_status": r.OrderStatus,
		"payment_status": r.PaymentStatus, "inventory_status": r.InventoryStatus, "email_sent": r.EmailSent,
		"customer_email": r.CustomerEmail, "items": r.Items, "total_cents": r.TotalCents,
		"failure_reason": r.FailureReason, "version": r.Version,
		"placed_at": r.PlacedAt, "updated_at": r.UpdatedAt,
		"links": map[string]string{"events": fmt.Sprintf("/orders/%d/events", r.OrderID)},
	}
	if stuck != nil {
		v["stuck"] = map[string]any{"queue": stuck.Queue, "event": stuck.EventType, "eventId": stuck.EventID,
			"reason": stuck.Reason, "since": stuck.DeadAt, "fix": "fix the cause, then run `orderd dlq redrive`"}
	}
	return v
}

func (a *API) getEvents(w http.ResponseWriter, r *http.Request) {
	id, err := orderID(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	recs, _, err := a.store.Load(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(recs) == 0 {
		a.writeError(w, r, domain.NotFound("order %d does not exist", id))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"orderId": id, "events": recs})
}

// checks answers 200 when every check passes and 503 otherwise, naming each check's result.
func (a *API) checks(check HealthCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		results := map[string]string{}
		status := http.StatusOK
		for name, err := range check(ctx) {
			results[name] = "ok"
			if err != nil {
				results[name], status = err.Error(), http.StatusServiceUnavailable
			}
		}
		writeJSON(w, status, map[string]any{"status": map[bool]string{true: "ok", false: "unavailable"}[status == http.StatusOK], "checks": results})
	}
}

// instrument counts and times every routed request by its route template, so that
// /orders/42 and /orders/43 are one series.
func (a *API) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "unknown"
		if cur := mux.CurrentRoute(r); cur != nil {
			if tpl, err := cur.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		a.metrics.HTTPDuration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		a.metrics.HTTPRequests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func orderID(r *http.Request) (domain.OrderID, error) {
	n, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 32)
	if err != nil || n <= 0 {
		return 0, domain.Invalid("id", "must be a positive integer order id")
	}
	return domain.OrderID(n), nil
}

// correlationID takes the caller's request id, so their logs and ours line up, or makes one.
func correlationID(r *http.Request) string {
	if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= 100 {
		return id
	}
	return rand.Text()
}

// decodeRequest reads a JSON request body into v and returns the raw body too (it keys
// idempotent replays).
func decodeRequest(r *http.Request, v any) ([]byte, error) {
	body, err := readJSONBody(r)
	if err != nil {
		return nil, err
	}
	return body, decodeStrict(body, v)
}

// readJSONBody checks the content type and reads a bounded body.
func readJSONBody(r *http.Request) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, &httpError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", field: "Content-Type", message: "must be application/json"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, code: "invalid", field: "body", message: "could not be read: " + err.Error()}
	}
	if len(body) > MaxBodyBytes {
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, code: "too_large", field: "body", message: fmt.Sprintf("is larger than %d bytes", MaxBodyBytes)}
	}
	return body, nil
}

// decodeStrict decodes exactly one JSON object, refusing unknown fields and anything after
// the object, and names the offending field in its error where it can ("body" otherwise).
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			return domain.Invalid("body", "must be a JSON object")
		case errors.As(err, &te):
			return domain.Invalid(te.Field, "must be a JSON %s", te.Type.Kind())
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json has no typed error for this; the field name is all we take from the text.
			if name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`); name != "" {
				return domain.Invalid(name, "is not a known field")
			}
			return domain.Invalid("body", "holds a field with an empty name")
		case errors.Is(err, io.EOF):
			return domain.Invalid("body", "is empty")
		}
		return domain.Invalid("body", "is not valid JSON: %v", err)
	}
	// More() would miss a stray ']' or '}': ask for the next token, which must be the end.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Invalid("body", "must hold a single JSON object and nothing after it")
	}
	return nil
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
