package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/go-sql-driver/mysql"

	"orderd/queues"
)

// Components that `orderd serve` can run; by default all of them, in one process.
const (
	componentAPI       = "api"
	componentPayment   = "payment"
	componentInventory = "inventory"
	componentEmail     = "email"
	componentRelay     = "relay"
	componentCustomers = "customers" // keeps the per-customer read model from the log's feed
)

var allComponents = []string{componentAPI, componentPayment, componentInventory, componentEmail, componentRelay, componentCustomers}

// configKeys lists every environment variable orderd reads; nothing else reads the
// environment.
var configKeys = []string{
	"MYSQL_DSN", "SQS_ENDPOINT", "AWS_REGION", "QUEUE_PREFIX", "HTTP_ADDR", "SMTP_ADDR", "MAIL_FROM",
	"CORS_ALLOWED_ORIGINS", "ORDERD_COMPONENTS", "QUEUE_RECEIVERS", "QUEUE_IN_FLIGHT", "PAYMENT_DECLINE_ABOVE_CENTS", "REDRIVE_AFTER",
	"PPROF_ADDR", "MYSQL_MAX_CONNS", "VISIBILITY_TIMEOUT", "REBUILD_ON_VERSION_CHANGE",
	"READY_MAX_LAG", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"GOGC", "GOMEMLIMIT",
}

// The garbage collector's settings for `orderd serve` unless GOGC or GOMEMLIMIT say otherwise.
// orderd's live heap is small (about 10 MiB under full load), and with the runtime's default
// (collect when the heap has doubled) the collector took about a tenth of orderd's CPU;
// collecting at five times the live heap gave 4-5% more orders/s end to end, at about 65 MiB
// peak RSS. The soft limit makes the collector work harder before the heap nears the 150 MiB
// memory budget.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 100 << 20
)

// config is the whole configuration, read once at start.
type config struct {
	MySQLDSN          string
	SQSEndpoint       string // empty: real AWS with the default credential chain
	AWSRegion         string
	QueuePrefix       string
	HTTPAddr          string
	SMTPAddr          string
	MailFrom          string
	AllowedOrigins    []string
	Components        []string
	QueueReceivers    int // receive loops per queue
	QueueInFlight     int // most messages of one queue being handled at once
	DeclineAboveCents int64
	RedriveAfter      time.Duration // an unfinished order unchanged this long is driven again
	PprofAddr         string        // where to serve net/http/pprof; empty (the default) serves none
	MySQLMaxConns     int           // the connection pool's size
	// RebuildOnVersionChange makes `serve` rebuild a projection in the background when its
	// code version differs from the one it was built with.
	RebuildOnVersionChange bool
	// ReadyMaxLag is how far the relay may fall behind the log (the age of the oldest event
	// not yet sent to SQS) before /readyz says the process is not ready.
	ReadyMaxLag time.Duration
	// GCPercent and MemoryLimit are given to the Go runtime when `serve` starts; 0 leaves it
	// alone (GOGC or GOMEMLIMIT is set, and the runtime has read it).
	GCPercent   int
	MemoryLimit int64
	// Tracing is on when an OTEL_* variable names an exporter or an endpoint; the
	// OpenTelemetry SDK reads the rest of its OTEL_* settings itself.
	Tracing bool

	// VisibilityTimeout is how long SQS hides a received message; a message whose handler
	// died comes back after it. HandlerTimeout is derived from it so that every in-process
	// attempt (Retries+1 of them, with back-off) ends before the message can reappear.
	VisibilityTimeout time.Duration
	HandlerTimeout    time.Duration
	Retries           int
	MaxReceiveCount   int
}

// loadConfig reads the configuration from getenv, applying defaults, and validates it. Its
// error is one line naming the offending setting.
func loadConfig(getenv func(string) string) (config, error) {
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	c := config{
		MySQLDSN:        get("MYSQL_DSN", "root@tcp(127.0.0.1:3306)/orderd"),
		SQSEndpoint:     get("SQS_ENDPOINT", ""),
		AWSRegion:       get("AWS_REGION", "us-east-1"),
		QueuePrefix:     get("QUEUE_PREFIX", ""),
		HTTPAddr:        get("HTTP_ADDR", "127.0.0.1:8080"),
		SMTPAddr:        get("SMTP_ADDR", "127.0.0.1:1025"),
		MailFrom:        get("MAIL_FROM", "orders@shop.localhost"),
		AllowedOrigins:  splitList(get("CORS_ALLOWED_ORIGINS", "*")),
		Components:      splitList(get("ORDERD_COMPONENTS", strings.Join(allComponents, ","))),
		PprofAddr:       get("PPROF_ADDR", ""),
		Retries:         3,
		MaxReceiveCount: 5,
	}
	if get("GOGC", "") == "" {
		c.GCPercent = defaultGCPercent
	}
	if get("GOMEMLIMIT", "") == "" {
		c.MemoryLimit = defaultMemoryLimit
	}
	var err error
	if c.QueueReceivers, err = strconv.Atoi(get("QUEUE_RECEIVERS", "4")); err != nil || c.QueueReceivers < 1 || c.QueueReceivers > 16 {
		return config{}, fmt.Errorf("QUEUE_RECEIVERS: must be a whole number from 1 to 16, got %q", getenv("QUEUE_RECEIVERS"))
	}
	if c.QueueInFlight, err = strconv.Atoi(get("QUEUE_IN_FLIGHT", "40")); err != nil || c.QueueInFlight < 10 || c.QueueInFlight > 1000 {
		return config{}, fmt.Errorf("QUEUE_IN_FLIGHT: must be a whole number from 10 to 1000, got %q", getenv("QUEUE_IN_FLIGHT"))
	}
	if c.DeclineAboveCents, err = strconv.ParseInt(get("PAYMENT_DECLINE_ABOVE_CENTS", "100000"), 10, 64); err != nil || c.DeclineAboveCents < 0 {
		return config{}, fmt.Errorf("PAYMENT_DECLINE_ABOVE_CENTS: must be a non-negative whole number of cents, got %q", getenv("PAYMENT_DECLINE_ABOVE_CENTS"))
	}
	if c.MySQLMaxConns, err = strconv.Atoi(get("MYSQL_MAX_CONNS", "32")); err != nil || c.MySQLMaxConns < 4 || c.MySQLMaxConns > 1000 {
		return config{}, fmt.Errorf("MYSQL_MAX_CONNS: must be a whole number from 4 to 1000, got %q", getenv("MYSQL_MAX_CONNS"))
	}
	if c.VisibilityTimeout, err = time.ParseDuration(get("VISIBILITY_TIMEOUT", "30s")); err != nil ||
		c.VisibilityTimeout < 6*time.Second || c.VisibilityTimeout > 12*time.Hour || c.VisibilityTimeout%time.Second != 0 {
		return config{}, fmt.Errorf("VISIBILITY_TIMEOUT: must be whole seconds from 6s to 12h, got %q", getenv("VISIBILITY_TIMEOUT"))
	}
	c.HandlerTimeout = c.VisibilityTimeout / 6
	exporter := get("OTEL_TRACES_EXPORTER", "")
	c.Tracing = (exporter != "" && exporter != "none") ||
		(exporter == "" && (get("OTEL_EXPORTER_OTLP_ENDPOINT", "") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") != ""))
	if c.ReadyMaxLag, err = time.ParseDuration(get("READY_MAX_LAG", "60s")); err != nil || c.ReadyMaxLag < time.Second {
		return config{}, fmt.Errorf("READY_MAX_LAG: must be a duration of at least 1s, got %q", getenv("READY_MAX_LAG"))
	}
	if c.RebuildOnVersionChange, err = strconv.ParseBool(get("REBUILD_ON_VERSION_CHANGE", "true")); err != nil {
		return config{}, fmt.Errorf("REBUILD_ON_VERSION_CHANGE: must be true or false, got %q", getenv("REBUILD_ON_VERSION_CHANGE"))
	}
	if c.RedriveAfter, err = time.ParseDuration(get("REDRIVE_AFTER", "30s")); err != nil || c.RedriveAfter < time.Second {
		return config{}, fmt.Errorf("REDRIVE_AFTER: must be a duration of at least 1s (e.g. 30s, 2m), got %q", getenv("REDRIVE_AFTER"))
	}
	return c, c.validate()
}

// tuneGC applies GCPercent and MemoryLimit to the runtime.
func (c config) tuneGC() {
	if c.GCPercent != 0 {
		debug.SetGCPercent(c.GCPercent)
	}
	if c.MemoryLimit != 0 {
		debug.SetMemoryLimit(c.MemoryLimit)
	}
}

func (c config) validate() error {
	if _, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
		return fmt.Errorf("MYSQL_DSN: %v", err)
	}
	if c.SQSEndpoint != "" {
		if u, err := url.Parse(c.SQSEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("SQS_ENDPOINT: must be an http(s) URL or empty for AWS, got %q", c.SQSEndpoint)
		}
	}
	for _, hp := range []struct{ key, val string }{{"HTTP_ADDR", c.HTTPAddr}, {"SMTP_ADDR", c.SMTPAddr}, {"PPROF_ADDR", c.PprofAddr}} {
		if hp.val == "" && hp.key == "PPROF_ADDR" {
			continue
		}
		if _, port, err := net.SplitHostPort(hp.val); err != nil || port == "" {
			return fmt.Errorf("%s: must be host:port, got %q", hp.key, hp.val)
		}
	}
	if a, err := mail.ParseAddress(c.MailFrom); err != nil || a.Address != c.MailFrom {
		return fmt.Errorf("MAIL_FROM: must be a plain email address, got %q", c.MailFrom)
	}
	for _, p := range c.QueuePrefix {
		if !(p == '-' || p == '_' || (p >= '0' && p <= '9') || (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z')) {
			return fmt.Errorf("QUEUE_PREFIX: may hold only letters, digits, '-' and '_', got %q", c.QueuePrefix)
		}
	}
	if len(c.Components) == 0 {
		return fmt.Errorf("ORDERD_COMPONENTS: name at least one of %s", strings.Join(allComponents, ","))
	}
	for _, comp := range c.Components {
		if !slices.Contains(allComponents, comp) {
			return fmt.Errorf("ORDERD_COMPONENTS: unknown component %q (known: %s)", comp, strings.Join(allComponents, ","))
		}
	}
	return nil
}

// queues returns the SQS side of the configuration.
func (c config) queues() queues.Config {
	return queues.Config{Endpoint: c.SQSEndpoint, Region: c.AWSRegion, Prefix: c.QueuePrefix,
		VisibilityTimeout: c.VisibilityTimeout, MaxReceiveCount: c.MaxReceiveCount}
}

// receiveVisibility is the visibility timeout of each receive (see queues.BatchSubscriberConfig).
const receiveVisibility = 6 * time.Second

// subscriber returns the SQS subscriber the stages' router reads from.
func (c config) subscriber(client *sqs.Client, log *slog.Logger) (*queues.BatchSubscriber, error) {
	return queues.NewBatchSubscriber(client, queues.BatchSubscriberConfig{
		Receivers:   c.QueueReceivers,
		MaxInFlight: c.QueueInFlight,
		// A message that failed its in-process retries comes back after the visibility
		// timeout, as if its handler had died: a dependency that is down (SMTP) gets that long
		// to return before each of the MaxReceiveCount receives that lead to the DLQ.
		NackDelay: c.VisibilityTimeout,
		// A received batch whose reply was lost on the way, or whose process died, comes back
		// after 6 s, not the visibility timeout; a message still being handled is kept hidden
		// by extending it.
		Visibility: receiveVisibility,
	}, log)
}

// runs reports whether component is enabled.
func (c config) runs(component string) bool { return slices.Contains(c.Components, component) }

// mysqlConfig returns the DSN with the options the code relies on: parseTime for DATETIME
// columns, UTC, and client-side interpolation (one round trip per statement, not three).
func (c config) mysqlConfig() (*mysql.Config, error) {
	mc, err := mysql.ParseDSN(c.MySQLDSN)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	mc.ParseTime, mc.Loc, mc.InterpolateParams = true, time.UTC, true
	return mc, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
