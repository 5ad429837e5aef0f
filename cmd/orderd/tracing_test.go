package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"orderd/internal/testenv"
)

// TestOneTracePerOrder records the spans of one order placed over HTTP and checks that the
// request, every stage (in other goroutines, after SQS) and every projection write belong to
// one trace: the trace context travels through the event log and the SQS message attributes.
func TestOneTracePerOrder(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { tp.Shutdown(t.Context()) }) //nolint:errcheck // test teardown

	env := testenv.New(t).WithMessaging(t)
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + env.ID + ".example"})
	code, body := postJSON(t, srv.URL+"/orders", `{"customerName":"Tracy","customerEmail":"tracy@`+env.ID+`.example","items":[{"sku":"SKU-MUG","quantity":1}]}`)
	var placed struct {
		OrderID int64
		Links   map[string]string
	}
	if err := json.Unmarshal(body, &placed); code != 202 || err != nil {
		t.Fatalf("place: %d %s", code, body)
	}
	waitFinished(t, env, 1, 30*time.Second)
	// The customer reads it with the capability in the link's query: spans are named after
	// the route, and nothing in them holds the capability.
	resp, err := http.Get(srv.URL + placed.Links["self"])
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", placed.Links["self"], resp, err)
	}
	resp.Body.Close()
	_, token, _ := strings.Cut(placed.Links["self"], "access=")

	var spans map[string][]sdktrace.ReadOnlySpan
	waitFor(t, 10*time.Second, "the spans of the request and the three stages", func() (bool, string) {
		spans = map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			name := s.Name()
			for _, a := range s.Attributes() {
				if a.Key == "order.id" && a.Value.AsInt64() != placed.OrderID {
					name = "" // another order's stage
				}
			}
			if name != "" {
				spans[name] = append(spans[name], s)
			}
		}
		stage := func(q string) int { return len(spans["stage "+q]) }
		ok := len(spans["POST /orders"]) == 1 && len(spans["GET /orders/{id}"]) == 1 && stage("PaymentStatusQueue") >= 1 && stage("InventoryStatusQueue") >= 1 && stage("EmailNotificationQueue") >= 1
		names := []string{}
		for k, v := range spans {
			names = append(names, fmt.Sprintf("%s×%d", k, len(v)))
		}
		return ok, fmt.Sprint(names)
	})
	trace := spans["POST /orders"][0].SpanContext().TraceID()
	checked := 0
	for name, list := range spans {
		for _, s := range list {
			if name == "POST /orders" || name == "project orders" || len(name) > 6 && name[:6] == "stage " {
				if s.SpanContext().TraceID() != trace {
					t.Errorf("span %q is in trace %s, want the order's %s", name, s.SpanContext().TraceID(), trace)
				}
				checked++
			}
		}
	}
	for _, s := range rec.Ended() {
		if strings.Contains(s.Name(), token) || strings.Contains(fmt.Sprint(s.Attributes()), token) {
			t.Errorf("span %q holds the capability: %v", s.Name(), s.Attributes())
		}
	}
	if n := len(spans["project orders"]); n != 4 {
		t.Errorf("%d projection spans, want 4 (one per event)", n)
	}
	t.Logf("order %d: %d spans in trace %s (request, 3 stages, 4 projection writes)", placed.OrderID, checked, trace)
}
