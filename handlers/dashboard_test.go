package handlers

import (
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"orderd/ordering"
)

// newTestDashboard returns a dashboard over a pool that is never connected: enough for
// everything answered before a query (assets, refused parameters).
func newTestDashboard(t *testing.T) http.Handler {
	t.Helper()
	db, err := sql.Open("mysql", "nobody@tcp(127.0.0.1:1)/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	catalog, err := ordering.NewCatalog(db)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDashboard(db, catalog, slog.New(slog.NewTextHandler(io.Discard, nil)), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := mux.NewRouter()
	d.Routes(r)
	return r
}

func TestNewDashboardRefusesMissingDependencies(t *testing.T) {
	if _, err := NewDashboard(nil, nil, nil, 0); err == nil {
		t.Fatal("NewDashboard accepted nil dependencies")
	}
}

func TestDashboardServesItsAssets(t *testing.T) {
	h := newTestDashboard(t)
	for path, ctype := range map[string]string{
		"/dashboard/static/dashboard.js": "text/javascript", "/dashboard/static/dashboard.css": "text/css",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q (%d bytes), want 200 %s", path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len(), ctype)
		}
	}
}

func TestDashboardRefusesBadQueries(t *testing.T) {
	h := newTestDashboard(t)
	for path, field := range map[string]string{
		"/api/dashboard/orders?status=lost":        "status",
		"/api/dashboard/orders?limit=201":          "limit",
		"/api/dashboard/orders?limit=x":            "limit",
		"/api/dashboard/orders?before=-1":          "before",
		"/api/dashboard/dead-letters?limit=0":      "limit",
		"/api/dashboard/orders?status=all&limit=0": "limit",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusBadRequest ||
			body.Error.Code != "invalid" || body.Error.Field != field {
			t.Errorf("GET %s: %d %s, want 400 invalid %s", path, rec.Code, rec.Body, field)
		}
	}
}

// TestDashboardAnswers503WhileTheDatabaseIsDown: every read of the dashboard over a database
// that refuses connections answers 503 with the JSON error, naming no address.
func TestDashboardAnswers503WhileTheDatabaseIsDown(t *testing.T) {
	h := newTestDashboard(t)
	for _, path := range []string{"/", "/api/dashboard/orders", "/api/dashboard/stock", "/api/dashboard/dead-letters",
		"/api/dashboard/lag", "/api/dashboard/customers"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusServiceUnavailable ||
			body.Error.Code != "unavailable" || strings.Contains(rec.Body.String(), "127.0.0.1") {
			t.Errorf("GET %s = %d %s, want 503 with an unavailable JSON error naming no address", path, rec.Code, rec.Body)
		}
	}
}

// TestDashboardErrorsAreTheAPIs: the dashboard has no error writer of its own; a failed read
// answers exactly what the API's (respondError) answers for the same error.
func TestDashboardErrorsAreTheAPIs(t *testing.T) {
	db, err := sql.Open("mysql", "nobody@tcp(127.0.0.1:1)/none") // nothing listens on port 1
	must(t, err)
	t.Cleanup(func() { db.Close() })
	catalog, err := ordering.NewCatalog(db)
	must(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := NewDashboard(db, catalog, log, 30*time.Second)
	must(t, err)
	r := mux.NewRouter()
	d.Routes(r)
	req := httptest.NewRequest(http.MethodGet, "/api/dashboard/stock", nil)
	got := httptest.NewRecorder()
	r.ServeHTTP(got, req)

	_, stockErr := catalog.Stock(req.Context())
	want := httptest.NewRecorder()
	respondError(want, req, log, stockErr)
	if got.Code != want.Code || got.Body.String() != want.Body.String() {
		t.Errorf("dashboard answered %d %s, the API's writer %d %s", got.Code, got.Body, want.Code, want.Body)
	}
}
