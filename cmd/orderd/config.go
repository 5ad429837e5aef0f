package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/go-sql-driver/mysql"

	"orderd/app"
	"orderd/eventstore"
	"orderd/mail"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
)

// allComponents are the components `orderd serve` can run (the API, the default pipeline's
// stages, the relay, the customers consumer); by default all of them, in one process.
var allComponents = app.Components(pipeline.Default())

// configKeys lists every environment variable orderd reads; nothing else reads the
// environment.
var configKeys = []string{
	"MYSQL_DSN", "SQS_ENDPOINT", "SQS_EMULATOR", "AWS_REGION", "QUEUE_PREFIX", "HTTP_ADDR", "SMTP_ADDR", "MAIL_FROM",
	"SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_TLS",
	"CORS_ALLOWED_ORIGINS", "ORDERD_COMPONENTS", "QUEUE_RECEIVERS", "QUEUE_IN_FLIGHT", "PAYMENT_GATEWAY", "PAYMENT_DECLINE_ABOVE_CENTS", "REDRIVE_AFTER",
	"PPROF_ADDR", "MYSQL_MAX_CONNS", "VISIBILITY_TIMEOUT", "REBUILD_ON_VERSION_CHANGE",
	"READY_MAX_LAG", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"GOGC", "GOMEMLIMIT", "OPERATOR_PASSWORD", "MESSAGE_SIGNING_KEY",
	"PLACEMENT_RATE_LIMIT", "TRUSTED_PROXIES", "HTTP_MAX_CONNS", "HTTP_IDLE_TIMEOUT",
	"IDEMPOTENCY_TTL", "DEAD_LETTER_RETENTION",
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
	SQSEndpoint       string          // empty: real AWS with the default credential chain
	SQSEmulator       queues.Emulator // the emulator at SQSEndpoint whose quirks are worked around
	AWSRegion         string
	QueuePrefix       string
	HTTPAddr          string
	SMTPAddr          string
	MailFrom          string
	AllowedOrigins    []string
	Components        []string
	QueueReceivers    int    // receive loops per queue
	QueueInFlight     int    // most messages of one queue being handled at once
	PaymentGateway    string // PAYMENT_GATEWAY: which gateway charges (app.PaymentGateways)
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
	// PlacementRate is how many orders per second one client may place (burst twice that);
	// 0 turns the limit off. TrustedProxies are the reverse proxies whose X-Forwarded-For
	// names the client.
	PlacementRate  float64
	TrustedProxies []netip.Prefix
	// HTTPMaxConns caps the API's concurrent connections; 0 derives the cap from the
	// process's open-file limit at start (httpMaxConns). HTTPIdleTimeout closes a keep-alive
	// connection that has been idle this long.
	HTTPMaxConns    int
	HTTPIdleTimeout time.Duration
	// IdempotencyTTL is how long an Idempotency-Key stays bound to its order;
	// DeadLetterRetention how long dead letters (those no longer holding an order) and
	// re-drive records are kept.
	IdempotencyTTL      time.Duration
	DeadLetterRetention time.Duration
	// Tracing is on when an OTEL_* variable names an exporter or an endpoint; the
	// OpenTelemetry SDK reads the rest of its OTEL_* settings itself.
	Tracing bool
	// OperatorPassword is the HTTP Basic password of user "operator" (the dashboard, /metrics,
	// any order by id). Unset, a random one is made at start (OperatorPasswordGenerated), so
	// that nothing is ever served open; `serve` prints it once on stdout.
	OperatorPassword          secret
	OperatorPasswordGenerated bool
	// SigningKey, when set, signs every message the relay sends and makes the stages refuse
	// messages without a valid signature; nil signs and checks nothing.
	SigningKey []byte

	// VisibilityTimeout is how long SQS hides a received message; a message whose handler
	// died comes back after it. HandlerTimeout is derived from it so that every in-process
	// attempt (Retries+1 of them, with back-off) ends before the message can reappear.
	VisibilityTimeout time.Duration
	HandlerTimeout    time.Duration
	Retries           int
	MaxReceiveCount   int

	// SMTPUsername and SMTPPassword log in to the mail server, only ever over TLS; SMTPTLS
	// says how the connection is protected (empty: required with credentials, else
	// opportunistic). See mail.SMTPConfig.
	SMTPUsername, SMTPPassword secret
	SMTPTLS                    mail.TLSMode
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
		AllowedOrigins:  splitList(get("CORS_ALLOWED_ORIGINS", "")),
		Components:      splitList(get("ORDERD_COMPONENTS", strings.Join(allComponents, ","))),
		PprofAddr:       get("PPROF_ADDR", ""),
		PaymentGateway:  get("PAYMENT_GATEWAY", app.GatewaySimulated),
		Retries:         3,
		MaxReceiveCount: 5,
		SMTPUsername:    secret(get("SMTP_USERNAME", "")),
		SMTPPassword:    secret(getenv("SMTP_PASSWORD")), // as given: spaces may be part of it
		SMTPTLS:         mail.TLSMode(get("SMTP_TLS", "")),
	}
	// Read as is, not trimmed: a password may begin or end with a space.
	if c.OperatorPassword = secret(getenv("OPERATOR_PASSWORD")); c.OperatorPassword == "" {
		c.OperatorPassword, c.OperatorPasswordGenerated = secret(rand.Text()), true
	}
	if get("GOGC", "") == "" {
		c.GCPercent = defaultGCPercent
	}
	if get("GOMEMLIMIT", "") == "" {
		c.MemoryLimit = defaultMemoryLimit
	}
	var err error
	if c.SQSEmulator, err = queues.ParseEmulator(get("SQS_EMULATOR", "")); err != nil {
		return config{}, fmt.Errorf("SQS_EMULATOR: %v", err)
	}
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
	if c.SigningKey, err = outbox.SigningKey(getenv("MESSAGE_SIGNING_KEY")); err != nil {
		return config{}, fmt.Errorf("MESSAGE_SIGNING_KEY: %w", err) // the key itself is never repeated
	}
	// 5 per second, burst 10: a person places an order every few seconds at the most, so even
	// a busy office or a carrier's NAT sharing one address stays far below it, while one
	// client alone cannot take more than about 1% of what the pipeline finishes per second.
	if c.PlacementRate, err = strconv.ParseFloat(get("PLACEMENT_RATE_LIMIT", "5"), 64); err != nil ||
		c.PlacementRate < 0 || c.PlacementRate > 1e6 || math.IsNaN(c.PlacementRate) {
		return config{}, fmt.Errorf("PLACEMENT_RATE_LIMIT: must be orders per second per client (0 turns it off), got %q", getenv("PLACEMENT_RATE_LIMIT"))
	}
	if c.TrustedProxies, err = parsePrefixes(get("TRUSTED_PROXIES", "")); err != nil {
		return config{}, fmt.Errorf("TRUSTED_PROXIES: %v", err)
	}
	if c.HTTPMaxConns, err = strconv.Atoi(get("HTTP_MAX_CONNS", "0")); err != nil || c.HTTPMaxConns < 0 || c.HTTPMaxConns > 1_000_000 {
		return config{}, fmt.Errorf("HTTP_MAX_CONNS: must be a whole number of connections (0: derived from the open-file limit), got %q", getenv("HTTP_MAX_CONNS"))
	}
	if c.IdempotencyTTL, err = parseRetention(get("IDEMPOTENCY_TTL", "24h")); err != nil || c.IdempotencyTTL < time.Minute {
		return config{}, fmt.Errorf("IDEMPOTENCY_TTL: must be a duration of at least 1m (e.g. 24h, 7d), got %q", getenv("IDEMPOTENCY_TTL"))
	}
	if c.DeadLetterRetention, err = parseRetention(get("DEAD_LETTER_RETENTION", "30d")); err != nil || c.DeadLetterRetention < time.Hour {
		return config{}, fmt.Errorf("DEAD_LETTER_RETENTION: must be a duration of at least 1h (e.g. 30d, 720h), got %q", getenv("DEAD_LETTER_RETENTION"))
	}
	if c.HTTPIdleTimeout, err = time.ParseDuration(get("HTTP_IDLE_TIMEOUT", "30s")); err != nil || c.HTTPIdleTimeout < time.Second || c.HTTPIdleTimeout > time.Hour {
		return config{}, fmt.Errorf("HTTP_IDLE_TIMEOUT: must be a duration from 1s to 1h, got %q", getenv("HTTP_IDLE_TIMEOUT"))
	}
	return c, c.validate()
}

// HTTP connections: at most maxHTTPConns by default (each costs about 20 KiB of memory while
// open), and never fewer than minHTTPConns.
const (
	maxHTTPConns = 1024
	minHTTPConns = 16
)

// descriptorsBesidesHTTP is how many file descriptors the process may need for everything
// but HTTP connections, at the most: the MySQL pool; SQS (every long-polling receive, plus
// deletes, visibility changes, relay sends and the keep-alive connections the AWS client
// keeps); SMTP (the sender keeps up to 64 idle connections and sends at most
// QUEUE_IN_FLIGHT at once); and its own (standard streams, logs, epoll, listeners, DNS,
// /proc reads, the trace exporter).
func (c config) descriptorsBesidesHTTP() int {
	mysql := c.MySQLMaxConns
	sqs := 3*c.QueueReceivers + 64
	smtp := max(64, c.QueueInFlight)
	return mysql + sqs + smtp + 64
}

// httpMaxConns returns the cap on concurrent HTTP connections for a process whose open-file
// limit is nofile (0: unknown): HTTP_MAX_CONNS, or what the limit leaves after
// descriptorsBesidesHTTP (at most maxHTTPConns). Either way idle or slow HTTP clients can
// never take the descriptors the queue receivers, the database pool and the mail sender
// need. It fails, naming what to change, when the limit leaves too little.
func (c config) httpMaxConns(nofile uint64) (int, error) {
	reserve := c.descriptorsBesidesHTTP()
	room := math.MaxInt32 // no known limit
	if nofile > 0 && nofile < math.MaxInt32 {
		room = int(nofile) - reserve
	}
	switch {
	case c.HTTPMaxConns > 0 && c.HTTPMaxConns > room:
		return 0, fmt.Errorf("HTTP_MAX_CONNS: %d connections do not fit in the open-file limit of %d beside the %d descriptors MySQL, SQS, SMTP and the process need: raise `ulimit -n` or set at most %d",
			c.HTTPMaxConns, nofile, reserve, max(room, 0))
	case c.HTTPMaxConns > 0:
		return c.HTTPMaxConns, nil
	case room < minHTTPConns:
		return 0, fmt.Errorf("HTTP_MAX_CONNS: the open-file limit of %d leaves %d descriptors for HTTP connections beside the %d MySQL, SQS, SMTP and the process need: raise `ulimit -n` to at least %d, or lower MYSQL_MAX_CONNS or QUEUE_IN_FLIGHT",
			nofile, max(room, 0), reserve, reserve+minHTTPConns)
	}
	return min(room, maxHTTPConns), nil
}

// parseRetention reads a Go duration, or a whole number of days ("30d").
func parseRetention(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// parsePrefixes reads a comma-separated list of CIDRs and single addresses.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range splitList(s) {
		if strings.Contains(p, "/") {
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8): %v", p, err)
			}
			out = append(out, pfx.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", p)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
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
			return fmt.Errorf("SQS_ENDPOINT: must be an http(s) URL or empty for AWS, got %q", redactURL(c.SQSEndpoint))
		}
	} else if c.SQSEmulator != queues.NoEmulator {
		return fmt.Errorf("SQS_EMULATOR: %s names an emulator, but SQS_ENDPOINT is empty (real AWS)", c.SQSEmulator)
	}
	if n := utf8.RuneCountInString(c.OperatorPassword.reveal()); n < minOperatorPassword {
		return fmt.Errorf("OPERATOR_PASSWORD: must be at least %d characters (got %d), or unset to have a random one made at start", minOperatorPassword, n)
	}
	for _, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			return fmt.Errorf("CORS_ALLOWED_ORIGINS: %q %v", o, err)
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
	if err := c.adapters().Validate(); err != nil {
		return err
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

// adapters returns the payment gateway and mail server side of the configuration.
func (c config) adapters() app.Adapters {
	return app.Adapters{PaymentGateway: c.PaymentGateway, DeclineAboveCents: c.DeclineAboveCents, MailFrom: c.MailFrom,
		SMTP: mail.SMTPConfig{Addr: c.SMTPAddr, Username: c.SMTPUsername.reveal(), Password: c.SMTPPassword.reveal(), TLS: c.SMTPTLS}}
}

// minOperatorPassword is the shortest OPERATOR_PASSWORD accepted: the operator's login guards
// every customer's personal data.
const minOperatorPassword = 12

// checkOrigin accepts a browser origin as CORS compares it: scheme://host[:port], nothing
// more. "*" is refused: every answer of the API carries personal data or a capability (the
// placement answers carry their order's links), so no wildcard is safe on any of them.
func checkOrigin(o string) error {
	if o == "*" {
		return errors.New(`is refused: any web site could read customers' orders; list the shop front end's origins, e.g. https://shop.example.com`)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return errors.New("is not an origin: write scheme://host[:port], e.g. https://shop.example.com")
	}
	return nil
}

// queues returns the SQS side of the configuration.
func (c config) queues() queues.Config {
	return queues.Config{Endpoint: c.SQSEndpoint, Emulator: c.SQSEmulator, Region: c.AWSRegion, Prefix: c.QueuePrefix,
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
		Emulator:   c.SQSEmulator,
	}, log)
}

// runs reports whether component is enabled.
func (c config) runs(component string) bool { return slices.Contains(c.Components, component) }

// mysqlConfig returns the DSN with the driver options every pool uses
// (eventstore.WithDriverOptions).
func (c config) mysqlConfig() (*mysql.Config, error) {
	mc, err := mysql.ParseDSN(c.MySQLDSN)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	return eventstore.WithDriverOptions(mc), nil
}

// mysqlTarget names the database in messages: address and name, no credentials.
func (c config) mysqlTarget() string {
	mc, err := mysql.ParseDSN(c.MySQLDSN)
	if err != nil {
		return "(invalid DSN)"
	}
	return mc.Addr + "/" + mc.DBName
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
