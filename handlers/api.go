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
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	ghandlers "github.com/gorilla/handlers"
	"github.com/gorilla/mux"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/metrics"
	"orderd/ordering"
	"orderd/projections/orders"
	"orderd/tracing"
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
	orders  *orders.Reader
	store   *eventstore.Store
	health  HealthCheck
	origins []string
	limiter *clientLimiter // nil: placement is not rate-limited
	log     *slog.Logger
	// operators may read everything; see access.go for who may see what.
	operators *Operators
}

// Config lists the API's dependencies.
type Config struct {
	Placer         *ordering.Placer
	Orders         *orders.Reader
	Store          *eventstore.Store
	DeadLetters    *deadletter.Log
	Health         HealthCheck // /healthz: the dependencies answer
	Ready          HealthCheck // /readyz: ready for traffic (dependencies, migrations, lag)
	Metrics        *metrics.Metrics
	Dashboard      *Dashboard // the operator's page at /
	AllowedOrigins []string   // CORS: origins (scheme://host[:port]) that may call the API from a browser; none by default
	Operators      *Operators // who may read the dashboard, /metrics and any order
	PlacementLimit RateLimit  // per-client limit on placing orders; the zero value places none
	Log            *slog.Logger
}

// New returns the API.
func New(c Config) (*API, error) {
	if c.Placer == nil || c.Orders == nil || c.Store == nil || c.DeadLetters == nil || c.Health == nil || c.Ready == nil ||
		c.Metrics == nil || c.Dashboard == nil || c.Operators == nil || c.Log == nil {
		return nil, errors.New("handlers: New needs a placer, an orders reader, a store, a dead-letter log, health and readiness checks, metrics, a dashboard, operators and a logger")
	}
	if slices.Contains(c.AllowedOrigins, "*") {
		return nil, errors.New(`handlers: "*" may not be an allowed origin: any web site could read the answers`)
	}
	return &API{placer: c.Placer, orders: c.Orders, store: c.Store, dead: c.DeadLetters, health: c.Health, ready: c.Ready,
		metrics: c.Metrics, dash: c.Dashboard, origins: c.AllowedOrigins, limiter: newClientLimiter(c.PlacementLimit), log: c.Log, operators: c.Operators}, nil
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
	// Everything registered on ops is for operators only.
	ops := r.NewRoute().Subrouter()
	ops.Use(a.operators.Require)
	ops.Handle("/metrics", a.metrics.Handler()).Methods(http.MethodGet)
	a.dash.Routes(ops)
	r.Use(a.instrument)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, &httpError{status: http.StatusNotFound, code: "not_found", message: "no such endpoint: " + req.URL.Path})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, &httpError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", message: req.Method + " is not allowed on " + req.URL.Path})
	})
	if len(a.origins) == 0 {
		// No origin may read anything cross-origin. (gorilla's CORS with no origins would
		// allow every one.)
		return withSecurityHeaders(r)
	}
	// The seed's shop front end is served from another origin, so the API answers CORS
	// preflights for the configured origins. Credentials are never allowed cross-origin: a
	// listed origin reads an order only with its capability, never with an operator's login.
	cors := ghandlers.CORS(
		ghandlers.AllowedOrigins(a.origins),
		ghandlers.AllowedMethods([]string{http.MethodGet, http.MethodPost, http.MethodOptions}),
		ghandlers.AllowedHeaders([]string{"Content-Type", "Idempotency-Key", "X-Request-ID"}),
		ghandlers.ExposedHeaders([]string{"Location", "X-Request-ID"}),
	)
	return withSecurityHeaders(cors(r))
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
	placed, err := a.place(r, p, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	links := orderLinks(placed.ID, accessQuery(placed.Access))
	w.Header().Set("Location", links["self"])
	if !placed.Created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, orderAccepted{OrderID: placed.ID, Status: domain.StatusPending, Links: links})
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
	placed, err := a.place(r, domain.Placement{CustomerName: *req.CustomerName}, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// The seed's answer, as it was, plus the capability links.
	writeJSON(w, http.StatusOK, map[string]any{"message": "Order placed successfully", "orderId": placed.ID,
		"links": orderLinks(placed.ID, accessQuery(placed.Access))})
}

func (a *API) place(r *http.Request, p domain.Placement, body []byte) (ordering.Placed, error) {
	key, err := headerValue(r, "Idempotency-Key", maxIdempotencyKeyLen)
	if err != nil {
		return ordering.Placed{}, err
	}
	corr, err := correlationID(r)
	if err != nil {
		return ordering.Placed{}, err
	}
	sum := sha256.Sum256(append([]byte(r.URL.Path+"\n"), body...))
	return a.placer.Place(r.Context(), ordering.PlaceRequest{
		Placement: p, IdempotencyKey: key, RequestHash: hex.EncodeToString(sum[:]), CorrelationID: corr,
	})
}

func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	id, err := orderID(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	query, err := a.orderAccess(r, id)
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
	writeJSON(w, http.StatusOK, orderView(row, stuck, query))
}

// orderView is GET /orders/{id}: the seed's columns under their own names, then the rest,
// and what holds the order if a message about it was dead-lettered. linkQuery keeps its link
// working for the same reader (see orderAccess).
func orderView(r orders.OrderRow, stuck *deadletter.Letter, linkQuery string) map[string]any {
	v := map[string]any{
		"order_id": r.OrderID, "customer_name": r.CustomerName, "order_status": r.OrderStatus,
		"payment_status": r.PaymentStatus, "inventory_status": r.InventoryStatus, "email_sent": r.EmailSent,
		"email_failed": r.EmailFailed, "customer_email": r.CustomerEmail, "items": r.Items, "total_cents": r.TotalCents,
		"failure_reason": r.FailureReason, "version": r.Version,
		"placed_at": r.PlacedAt, "updated_at": r.UpdatedAt,
		"links": map[string]string{"events": orderLinks(r.OrderID, linkQuery)["events"]},
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
	if _, err := a.orderAccess(r, id); err != nil {
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

// checks answers 200 when every check passes and 503 otherwise, naming each check "ok" or
// "unavailable". It is anonymous (for load balancers), so why a check failed (an address, a
// driver's error) goes to the log only.
func (a *API) checks(check HealthCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		results := map[string]string{}
		status := http.StatusOK
		for name, err := range check(ctx) {
			results[name] = "ok"
			if err != nil {
				results[name], status = "unavailable", http.StatusServiceUnavailable
				a.log.WarnContext(ctx, "health check failed", "path", r.URL.Path, "check", name, "error", err)
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
		tracing.NameRequest(r.Context(), r.Method, route)
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

// Limits of the request headers the service keeps: the widths of the columns they are
// stored in (order_ids.idempotency_key, outbox.correlation_id).
const (
	maxIdempotencyKeyLen = 255
	maxRequestIDLen      = 100
)

// correlationID takes the caller's request id, so their logs and ours line up, or makes one.
// An id that cannot travel is refused rather than replaced: the caller would otherwise look
// for it in our logs in vain.
func correlationID(r *http.Request) (string, error) {
	id, err := headerValue(r, "X-Request-ID", maxRequestIDLen)
	if id == "" && err == nil {
		id = rand.Text()
	}
	return id, err
}

// headerValue returns the value of the request's header called name, trimmed, or "" when it
// is absent or blank. It must be printable ASCII (U+0020–U+007E) of at most max characters:
// it is stored in a utf8mb4 column of that width, the request id travels as an SQS message
// attribute, and what the IETF's Idempotency-Key draft allows (a structured-field string) is
// printable ASCII too. HTTP lets obs-text (bytes 0x80–0xFF) through, which need not be UTF-8.
func headerValue(r *http.Request, name string, max int) (string, error) {
	if len(r.Header.Values(name)) > 1 {
		return "", domain.Invalid(name, "is sent more than once")
	}
	v := strings.Trim(r.Header.Get(name), " \t")
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", domain.Invalid(name, "must be printable ASCII (byte 0x%02x at %d is not)", v[i], i)
		}
	}
	if len(v) > max {
		return "", domain.Invalid(name, "is longer than %d characters", max)
	}
	return v, nil
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

// decodeStrict decodes exactly one JSON value into v and names the offending field in its
// error where it can ("body" otherwise). It is stricter than encoding/json, which matches
// names case-insensitively, keeps the last of duplicate names and replaces invalid UTF-8 with
// U+FFFD: a body that means one thing to us and another to a proxy or a log reader is
// refused. go-json-experiment/json (the proposed encoding/json/v2, which Go 1.26 ships only
// under GOEXPERIMENT=jsonv2) refuses duplicate names and invalid UTF-8 (raw bytes and lone
// surrogate escapes) by default and matches names exactly; unknown names are refused too.
func decodeStrict(body []byte, v any) error {
	err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	var se *jsonv2.SemanticError
	var sy *jsontext.SyntacticError
	switch {
	case errors.As(err, &se):
		field := fieldOf(se.JSONPointer)
		switch {
		case errors.Is(err, jsonv2.ErrUnknownName) && se.JSONPointer == "/":
			return domain.Invalid("body", "holds a field with an empty name")
		case errors.Is(err, jsonv2.ErrUnknownName):
			return domain.Invalid(field, "is not a known field (names are case-sensitive)")
		case field == "body":
			return domain.Invalid("body", "must be a JSON object")
		case se.GoType != nil:
			return domain.Invalid(field, "must be %s", jsonKind(se.GoType))
		}
		return domain.Invalid(field, "is not valid: %v", se.Err)
	case errors.As(err, &sy):
		field := fieldOf(sy.JSONPointer)
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			return domain.Invalid(field, "appears more than once in its object")
		case errors.Is(err, io.ErrUnexpectedEOF) && len(bytes.TrimSpace(body)) == 0:
			return domain.Invalid("body", "is empty")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return domain.Invalid("body", "is not valid JSON: it ends too soon")
		}
		// Invalid UTF-8 and bad escapes are reported within the string that holds them.
		return domain.Invalid(field, "is not valid JSON: %s", strings.TrimPrefix(sy.Error(), "jsontext: "))
	}
	return domain.Invalid("body", "is not valid JSON: %v", err)
}

// fieldOf turns a JSON pointer into the field name errors use: "/items/0/sku" is
// "items[0].sku", the empty pointer "body". A name from the request is cut short.
func fieldOf(p jsontext.Pointer) string {
	var b strings.Builder
	first := true
	for tok := range p.Tokens() {
		switch {
		case !first && tok != "" && strings.Trim(tok, "0123456789") == "":
			b.WriteString("[" + tok + "]")
		case first:
			b.WriteString(tok)
		default:
			b.WriteString("." + tok)
		}
		first = false
	}
	if b.Len() == 0 {
		return "body"
	}
	if f := b.String(); utf8.RuneCountInString(f) > 64 {
		return string([]rune(f)[:64]) + "…"
	}
	return b.String()
}

// jsonKind says which JSON value a field of Go type t takes.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonKind(t.Elem())
	case reflect.String:
		return "a JSON string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number within range"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	}
	return "a JSON " + t.Kind().String()
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
