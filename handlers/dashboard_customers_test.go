package handlers

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"orderd/internal/testenv"
	"orderd/ordering"
	"orderd/projections/customers"
)

func TestDashboardListsTopCustomers(t *testing.T) {
	env := testenv.New(t)
	env.MustExec(t, `INSERT INTO customers (customer_name, customer_email, orders_placed, orders_completed, completed_cents) VALUES
		('Ann', 'ann@example.com', 3, 2, 2598), ('Bob', '', 1, 0, 0), ('Cy', 'cy@example.com', 5, 5, 9995)`)
	catalog, err := ordering.NewCatalog(env.DB)
	must(t, err)
	d, err := NewDashboard(env.DB, catalog, slog.New(slog.NewTextHandler(io.Discard, nil)), 30*time.Second)
	must(t, err)
	r := mux.NewRouter()
	d.Routes(r)

	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/dashboard/customers?limit=2", nil))
	var body struct{ Customers []customers.Customer }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("GET /api/dashboard/customers: %d %s", rec.Code, rec.Body)
	}
	want := []customers.Customer{{Name: "Cy", Email: "cy@example.com", OrdersPlaced: 5, OrdersCompleted: 5, CompletedCents: 9995},
		{Name: "Ann", Email: "ann@example.com", OrdersPlaced: 3, OrdersCompleted: 2, CompletedCents: 2598}}
	if len(body.Customers) != len(want) || body.Customers[0] != want[0] || body.Customers[1] != want[1] {
		t.Errorf("customers %+v, want %+v", body.Customers, want)
	}

	rec = httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/dashboard/customers?limit=0", nil))
	var bad errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &bad); err != nil || rec.Code != http.StatusBadRequest || bad.Error.Field != "limit" {
		t.Errorf("GET /api/dashboard/customers?limit=0: %d %s, want 400 naming limit", rec.Code, rec.Body)
	}
}
