package handlers

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"orderd/internal/testenv"
	"orderd/ordering"
)

// TestDashboardReadsNoTableWhole: over 20,000 orders, each call the dashboard polls reads
// about a page's worth of rows, not the table: a COUNT … GROUP BY per request, a filter no
// index serves, or paging that walks from the newest order down to the page reads thousands
// and fails here. (The terminal statuses' counts are a scan of their index range, made once
// and then at most every 10 s in the background: the first call is left out.)
func TestDashboardReadsNoTableWhole(t *testing.T) {
	env := testenv.New(t)
	const orders, pending = 20_000, 20
	env.FillOrders(t, orders, pending)
	// Dead letters: one for every 100th order, those of pending ones holding them.
	env.MustExec(t, `INSERT INTO dead_letters (order_id, version, queue, event_id, event_type, reason, dead_at)
		SELECT order_id, 1, 'PaymentStatusQueue', CONCAT(order_id, '-1'), 'OrderPlaced', 'test', UTC_TIMESTAMP(6) FROM orders WHERE order_id % 100 = 0`)
	env.MustExec(t, `INSERT INTO outbox (position, queue, event_id, event_type, correlation_id, body, created_at)
		SELECT last_position, 'PaymentStatusQueue', CONCAT(order_id, '-1'), 'OrderPlaced', 'c', '{}', UTC_TIMESTAMP(6) FROM orders WHERE order_status = 'pending'`)
	db := env.OneConnection(t)
	catalog, err := ordering.NewCatalog(db)
	must(t, err)
	dash, err := NewDashboard(db, catalog, slog.New(slog.NewTextHandler(io.Discard, nil)), 30*time.Second)
	must(t, err)
	r := mux.NewRouter()
	dash.Routes(r)
	get := func(path string) {
		t.Helper()
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	get("/api/dashboard/orders") // counts the terminal statuses once

	// A page of 25 reads 26 rows, the pending count 20 entries, the stuck letters of the
	// page a few; 100 leaves room and is far below a scan.
	for path, most := range map[string]int64{
		"/api/dashboard/orders":                                    100,
		"/api/dashboard/orders?status=all&before=10000":            100,
		"/api/dashboard/orders?status=completed":                   100,
		"/api/dashboard/orders?status=completed&before=10000":      100,
		"/api/dashboard/orders?status=cancelled&before=300":        100,
		"/api/dashboard/orders?status=payment_failed&before=15000": 100,
		"/api/dashboard/orders?status=pending":                     100,
		"/api/dashboard/orders?status=pending&before=19990":        100,
		"/api/dashboard/orders?limit=200&before=5000":              500,
		"/api/dashboard/lag":                                       100,
		"/api/dashboard/stock":                                     100,
		// The total of dead letters is a count of the table, which retention keeps small
		// (DEAD_LETTER_RETENTION): 200 here.
		"/api/dashboard/dead-letters": 100 + orders/100,
	} {
		if n := testenv.RowsRead(t, db, func() { get(path) }); n > most {
			t.Errorf("GET %s read %d rows of a %d-order database, want at most %d", path, n, orders, most)
		} else {
			t.Logf("GET %s: %d rows read", path, n)
		}
	}
}
