package handlers

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"orderd/internal/testenv"
	"orderd/ordering"
)

// TestDashboardSlowFollowsRedriveAfter: a pending order is flagged slow once unchanged for the
// stall time the dashboard is given (the sweeper's REDRIVE_AFTER), in the orders JSON and in
// the page, and not before.
func TestDashboardSlowFollowsRedriveAfter(t *testing.T) {
	env := testenv.New(t)
	env.FillOrders(t, 3, 3)
	env.MustExec(t, `UPDATE orders SET updated_at = UTC_TIMESTAMP(6) - INTERVAL 10 MINUTE`)
	catalog, err := ordering.NewCatalog(env.DB)
	must(t, err)
	for _, tc := range []struct {
		stallAfter time.Duration
		slow       bool
		page       string
	}{
		{time.Minute, true, `data-stall-after="60"`},
		{48 * time.Hour, false, `data-stall-after="172800"`},
	} {
		d, err := NewDashboard(env.DB, catalog, slog.New(slog.NewTextHandler(io.Discard, nil)), tc.stallAfter)
		must(t, err)
		r := mux.NewRouter()
		d.Routes(r)

		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/dashboard/orders?status=pending", nil))
		var body struct{ Orders []dashboardOrder }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK || len(body.Orders) != 3 {
			t.Fatalf("GET /api/dashboard/orders: %d %s", rec.Code, rec.Body)
		}
		for _, o := range body.Orders {
			if o.Slow != tc.slow {
				t.Errorf("stall time %s: order %d unchanged for 10 min has slow=%t, want %t", tc.stallAfter, o.OrderID, o.Slow, tc.slow)
			}
		}

		rec = httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), tc.page) {
			t.Errorf("stall time %s: the page (%d) does not carry %s", tc.stallAfter, rec.Code, tc.page)
		}
	}
}
