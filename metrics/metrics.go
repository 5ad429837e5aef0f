// Package metrics defines orderd's Prometheus metrics in one place: what the HTTP API, the
// stages and the event log count as they work, and what is read from MySQL and SQS when
// /metrics is scraped (orders by status, outbox backlog, dead-letter queue depth).
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "orderd"

// Metrics holds the counters and histograms the code updates, on a registry of its own.
type Metrics struct {
	registry *prometheus.Registry

	// HTTPRequests counts requests by route template, method and status code.
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration observes request latency by route template and method.
	HTTPDuration *prometheus.HistogramVec
	// StageMessages counts messages a stage finished with, by outcome: "handled",
	// "failed" (transient: SQS will deliver it again) or "dead_lettered".
	StageMessages *prometheus.CounterVec
	// StageRetries counts in-process retries of a failed message, by stage.
	StageRetries *prometheus.CounterVec
	// StageDuration observes one attempt's handling time, by stage.
	StageDuration *prometheus.HistogramVec
	// EventsAppended counts events committed to the log, by type.
	EventsAppended *prometheus.CounterVec
	// SQSRequests counts HTTP requests to SQS, by operation.
	SQSRequests *prometheus.CounterVec
	// CommitOrders observes how many orders each event-log commit appended to: the size of
	// the store's commit groups.
	CommitOrders prometheus.Histogram
	// RelayRefused counts the messages SQS refused for what they hold, which the relay turned
	// into dead letters, by queue. Each is an order waiting for a person.
	RelayRefused *prometheus.CounterVec
}

// New returns the metrics with Go runtime and process metrics registered too.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by route, method and status code."}, []string{"route", "method", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help: "HTTP request latency by route and method.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"route", "method"}),
		StageMessages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "stage_messages_total",
			Help: "Messages each stage finished with, by outcome (handled, failed, dead_lettered)."}, []string{"stage", "outcome"}),
		StageRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "stage_retries_total",
			Help: "In-process retries of failed messages, by stage."}, []string{"stage"}),
		StageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "stage_handling_seconds",
			Help: "Time one attempt at a message takes, by stage.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"stage"}),
		EventsAppended: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "events_appended_total",
			Help: "Events committed to the event log, by type."}, []string{"type"}),
		SQSRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "sqs_requests_total",
			Help: "HTTP requests to SQS, by operation (each retry counts)."}, []string{"operation"}),
		CommitOrders: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "commit_orders",
			Help: "Orders appended to per event-log commit (concurrent appends share a commit).", Buckets: prometheus.ExponentialBuckets(1, 2, 7)}),
		RelayRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "relay_refused_total",
			Help: "Messages SQS refused for what they hold, dead-lettered by the relay, by queue."}, []string{"queue"}),
	}
	m.registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.StageMessages, m.StageRetries, m.StageDuration, m.EventsAppended, m.CommitOrders, m.SQSRequests, m.RelayRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registerer is where other components (Watermill's metrics) register their collectors.
func (m *Metrics) Registerer() prometheus.Registerer { return m.registry }

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// QueueDepths reports the number of messages waiting in each dead-letter queue.
type QueueDepths func(ctx context.Context) (map[string]int, error)

// State reads what is reported at scrape time. Each reader belongs to the package that owns
// what it reads, and each is cheap at any size (a scrape reads no table whole).
type State struct {
	// OrderCounts returns the orders per order_status.
	OrderCounts func(ctx context.Context) (map[string]int64, error)
	// OutboxBacklog returns how many events wait to be relayed to SQS and how long the
	// oldest has waited (zero when none wait).
	OutboxBacklog func(ctx context.Context) (waiting int64, oldestAge time.Duration, err error)
	// ProjectionLag returns how many events, and how many seconds, the orders projection is
	// behind the log.
	ProjectionLag func(ctx context.Context) (events int64, seconds float64, err error)
	// DeadLetterQueues returns the depth of each dead-letter queue.
	DeadLetterQueues QueueDepths
}

// WatchState registers gauges read at scrape time: orders by status, the outbox backlog
// and its age (how far the relay is behind the log), the projection's lag behind the log, and
// the depth of each dead-letter queue. A scrape that cannot read them logs why and reports
// what it could.
func (m *Metrics) WatchState(s State, log *slog.Logger) error {
	if s.OrderCounts == nil || s.OutboxBacklog == nil || s.ProjectionLag == nil || s.DeadLetterQueues == nil || log == nil {
		return errors.New("metrics: WatchState needs every reader of State and a logger")
	}
	return m.registry.Register(&stateCollector{state: s, log: log})
}

var (
	ordersDesc = prometheus.NewDesc(namespace+"_orders", "Orders by order_status, from the orders projection.", []string{"status"}, nil)
	outboxDesc = prometheus.NewDesc(namespace+"_outbox_pending_events",
		"Events committed but not yet relayed to SQS (counted up to 100,000).", nil, nil)
	outboxAgeDesc = prometheus.NewDesc(namespace+"_outbox_oldest_age_seconds",
		"Age of the oldest event waiting in the outbox (0 when empty): how far the relay is behind.", nil, nil)
	lagDesc = prometheus.NewDesc(namespace+"_projection_lag_events",
		"Log positions between the newest event and the last one the orders projection applied to that event's order. The projection is written in each append's transaction, so anything but 0 means a rebuild is in progress or a bug.", nil, nil)
	lagSecondsDesc = prometheus.NewDesc(namespace+"_projection_lag_seconds",
		"Time between the newest event in the log and the last one the orders projection applied to that event's order.", nil, nil)
	dlqDesc = prometheus.NewDesc(namespace+"_dead_letter_queue_messages",
		"Messages waiting in a stage queue's dead-letter queue.", []string{"queue"}, nil)
)

type stateCollector struct {
	state State
	log   *slog.Logger
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{ordersDesc, outboxDesc, outboxAgeDesc, lagDesc, lagSecondsDesc, dlqDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.state.OrderCounts(ctx); err != nil {
		c.log.Warn("metrics: read orders by status", "error", err)
	} else {
		for status, n := range counts {
			ch <- prometheus.MustNewConstMetric(ordersDesc, prometheus.GaugeValue, float64(n), status)
		}
	}
	if pending, age, err := c.state.OutboxBacklog(ctx); err != nil {
		c.log.Warn("metrics: read outbox", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(pending))
		ch <- prometheus.MustNewConstMetric(outboxAgeDesc, prometheus.GaugeValue, age.Seconds())
	}
	if lag, lagSeconds, err := c.state.ProjectionLag(ctx); err != nil {
		c.log.Warn("metrics: read projection lag", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag))
		ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, max(lagSeconds, 0))
	}
	depths, err := c.state.DeadLetterQueues(ctx)
	if err != nil {
		c.log.Warn("metrics: read dead-letter queue depths", "error", err)
	}
	for q, n := range depths {
		ch <- prometheus.MustNewConstMetric(dlqDesc, prometheus.GaugeValue, float64(n), q)
	}
}
