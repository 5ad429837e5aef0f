// Package tracing gives orderd one trace per order: the HTTP request that places it, each
// stage that moves it on and each append that records it. The trace context crosses the
// event log (in each event's metadata) and SQS (as the W3C traceparent message attribute), so
// a stage's span is a child of the span that appended the event it handles.
package tracing

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer is orderd's tracer. It goes through the global provider, which is a no-op until
// Setup (or a test) installs a real one.
var Tracer = otel.Tracer("orderd")

// Attribute is the metadata key (and SQS message attribute) that carries the trace context.
const Attribute = "traceparent"

var w3c = propagation.TraceContext{}

// Parent returns the W3C traceparent of the span in ctx, or "" when there is none.
func Parent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c[Attribute]
}

// FromParent returns ctx carrying the remote span named by traceparent (ctx unchanged when
// it is empty or malformed).
func FromParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.MapCarrier{Attribute: traceparent})
}

// Start starts a span of kind with Tracer.
func Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	return Tracer.Start(ctx, name, trace.WithSpanKind(kind))
}

// Setup installs a tracer provider whose exporter is configured by the standard OTEL_*
// environment variables (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, ...), read by the
// OpenTelemetry SDK itself. It returns the function that flushes and stops it.
func Setup(ctx context.Context) (shutdown func(context.Context) error, err error) {
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter from OTEL_* settings: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("orderd")))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(w3c)
	return tp.Shutdown, nil
}

// NameRequest names the HTTP request's span after its route template ("GET /orders/{id}")
// and records the route: the URL itself (ids, and a capability in its query) stays out of
// span names.
func NameRequest(ctx context.Context, method, route string) {
	span := trace.SpanFromContext(ctx)
	span.SetName(method + " " + route)
	span.SetAttributes(semconv.HTTPRoute(route))
}
