package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/pipeline"
	"orderd/projections/orders"
)

// fakeOrders plays the orders read model.
type fakeOrders struct {
	rows  []orders.OrderRow
	heads map[domain.OrderID]orders.Head
}

func (f fakeOrders) Page(context.Context, string, domain.OrderID, int) ([]orders.OrderRow, error) {
	return f.rows, nil
}

func (f fakeOrders) Lag(context.Context) (orders.Lag, error) { return orders.Lag{}, nil }

func (f fakeOrders) Heads(_ context.Context, ids []domain.OrderID) (map[domain.OrderID]orders.Head, error) {
	out := map[domain.OrderID]orders.Head{}
	for _, id := range ids {
		if h, ok := f.heads[id]; ok {
			out[id] = h
		}
	}
	return out, nil
}

// fakeLetters plays the dead-letter log.
type fakeLetters struct {
	letters []deadletter.Letter
	stuck   map[domain.OrderID]string
}

func (f fakeLetters) StuckReasons(_ context.Context, versions map[domain.OrderID]int) (map[domain.OrderID]string, error) {
	out := map[domain.OrderID]string{}
	for id := range versions {
		if r, ok := f.stuck[id]; ok {
			out[id] = r
		}
	}
	return out, nil
}

func (f fakeLetters) Newest(context.Context, int) ([]deadletter.Letter, int64, error) {
	return f.letters, int64(len(f.letters)) + 10, nil
}

type fakeCounts struct{}

func (fakeCounts) Counts(context.Context) (orders.StatusCounts, error) {
	return orders.StatusCounts{ByStatus: map[string]int64{"all": 2}}, nil
}

func getJSON(t *testing.T, h http.HandlerFunc, path string, into any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardOrdersWithFakes: the orders list carries the pipeline's stages, in the
// table's order, and each order's outcome per stage, with its stuck reason and slow flag;
// the dead-letter list marks a letter holding while its order is still at its version.
func TestDashboardOrdersWithFakes(t *testing.T) {
	now := time.Now()
	orders := fakeOrders{
		rows: []orders.OrderRow{
			{OrderID: 2, OrderStatus: domain.StatusPending, PaymentStatus: "completed", InventoryStatus: "pending", Version: 2, UpdatedAt: now.Add(-time.Hour)},
			{OrderID: 1, OrderStatus: domain.StatusCompleted, PaymentStatus: "completed", InventoryStatus: "reserved", EmailSent: true, Version: 4, UpdatedAt: now},
		},
		heads: map[domain.OrderID]orders.Head{2: {Version: 2}, 1: {Version: 4, EmailSent: true}},
	}
	letters := fakeLetters{
		stuck: map[domain.OrderID]string{2: "invalid: items"},
		letters: []deadletter.Letter{
			{OrderID: 2, Version: 2, Queue: "InventoryStatusQueue", EventID: "2-2", Reason: "invalid: items"},
			{OrderID: 1, Version: 2, Queue: "InventoryStatusQueue", EventID: "1-2", Reason: "timeout"},
			{Queue: "PaymentStatusQueue", EventID: "9-1", Reason: "forged"},
		},
	}
	d := &Dashboard{reader: orders, dead: letters, counts: fakeCounts{}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), stallAfter: time.Minute, stages: pipeline.Components()}

	var list struct {
		Stages []dashboardStage `json:"stages"`
		Orders []dashboardOrder `json:"orders"`
	}
	getJSON(t, d.orders, "/api/dashboard/orders", &list)
	var components []string
	for _, st := range list.Stages {
		components = append(components, st.Component)
	}
	if want := pipeline.Components(); !reflect.DeepEqual(components, want) {
		t.Errorf("stages %v, want the pipeline's %v", components, want)
	}
	want := []map[string]string{
		{pipeline.Payment: "completed", pipeline.Inventory: "pending", pipeline.Email: "pending"},
		{pipeline.Payment: "completed", pipeline.Inventory: "reserved", pipeline.Email: "sent"},
	}
	for i, o := range list.Orders {
		if !reflect.DeepEqual(o.Stages, want[i]) {
			t.Errorf("order %d stages %v, want %v", o.OrderID, o.Stages, want[i])
		}
	}
	if o := list.Orders[0]; o.Stuck != "invalid: items" || !o.Slow {
		t.Errorf("order 2: stuck %q slow %v, want its letter's reason and slow", o.Stuck, o.Slow)
	}
	if o := list.Orders[1]; o.Stuck != "" || o.Slow {
		t.Errorf("order 1: stuck %q slow %v, want neither", o.Stuck, o.Slow)
	}

	var dead struct {
		DeadLetters []dashboardLetter `json:"deadLetters"`
		Total       int64             `json:"total"`
	}
	getJSON(t, d.deadLetters, "/api/dashboard/dead-letters", &dead)
	if len(dead.DeadLetters) != 3 || dead.Total != 13 {
		t.Fatalf("dead letters %+v, total %d", dead.DeadLetters, dead.Total)
	}
	for i, want := range []struct {
		order   any
		holding bool
	}{{int64(2), true}, {int64(1), false}, {nil, false}} {
		l := dead.DeadLetters[i]
		var order any
		if l.OrderID != nil {
			order = *l.OrderID
		}
		if order != want.order || l.Holding != want.holding {
			t.Errorf("letter %s: order %v holding %v, want %v %v", l.EventID, order, l.Holding, want.order, want.holding)
		}
	}
}

// TestStagesHeader: the stage column's heading names the pipeline's stages in order.
func TestStagesHeader(t *testing.T) {
	if got := (&Dashboard{stages: pipeline.Components()}).stagesHeader(); got != "Payment · inventory · email" {
		t.Errorf("stagesHeader() = %q", got)
	}
}
