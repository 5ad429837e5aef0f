package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when PPROF_ADDR is set
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/go-sql-driver/mysql"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"golang.org/x/net/netutil"

	"orderd/app"
	"orderd/deadletter"
	"orderd/handlers"
	"orderd/metrics"
	"orderd/migrations"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/projections"
	"orderd/projections/orders"
	"orderd/queues"
	"orderd/tracing"
)

// newLogger returns the structured log, every line of it passed through rd (redact.go).
func newLogger(w io.Writer, rd *strings.Replacer) *slog.Logger {
	opts := &slog.HandlerOptions{ReplaceAttr: redactAttr(rd)}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// openDB opens the pool. Sizing matters: appends are short transactions, and MariaDB's
// group commit needs several of them in flight to batch fsyncs.
func openDB(ctx context.Context, cfg config) (*sql.DB, error) {
	mc, err := cfg.mysqlConfig()
	if err != nil {
		return nil, err
	}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(cfg.MySQLMaxConns)
	db.SetMaxIdleConns(cfg.MySQLMaxConns)
	db.SetConnMaxLifetime(30 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to MySQL at %s/%s: %w", mc.Addr, mc.DBName, err)
	}
	return db, nil
}

// migrate creates the database if it is missing, then applies the migrations.
func migrate(ctx context.Context, cfg config, stdout io.Writer) error {
	mc, err := cfg.mysqlConfig()
	if err != nil {
		return err
	}
	if mc.DBName == "" {
		return errors.New("MYSQL_DSN: names no database")
	}
	server := *mc
	server.DBName = ""
	srvCfg := cfg
	srvCfg.MySQLDSN = server.FormatDSN()
	srv, err := openDB(ctx, srvCfg)
	if err != nil {
		return err
	}
	_, err = srv.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+strings.ReplaceAll(mc.DBName, "`", "``")+"`")
	srv.Close()
	if err != nil {
		return fmt.Errorf("create database %s: %w", mc.DBName, err)
	}
	db, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := migrations.Apply(ctx, db)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "database %s is up to date\n", mc.DBName)
	}
	for _, name := range applied {
		fmt.Fprintf(stdout, "applied %s\n", name)
	}
	return nil
}

// service is everything `orderd serve` runs: what package app assembled, and what only a
// long-running process has (the pool, the HTTP server, the operators' login).
type service struct {
	cfg     config
	log     *slog.Logger
	db      *sql.DB
	app     *app.App
	http    *http.Server
	metrics *metrics.Metrics
	// operators guards everything for operators, on the API and on PPROF_ADDR.
	operators *handlers.Operators
	closers   []func() error

	// httpMaxConns caps the API's concurrent connections (config.httpMaxConns).
	httpMaxConns int
}

// newService wires config → DB → SQS → the assembly (store, stages, router, API, relay) →
// the HTTP server.
func newService(ctx context.Context, cfg config, log *slog.Logger) (_ *service, err error) {
	s := &service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.operators, err = handlers.NewOperators(cfg.OperatorPassword.reveal(), log); err != nil {
		return nil, err
	}
	if s.db, err = openDB(ctx, cfg); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.db.Close)
	if err := migrationsApplied(ctx, s.db); err != nil {
		return nil, fmt.Errorf("database migrations: %w: run `orderd migrate` first", err)
	}

	qcfg := cfg.queues()
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	if err != nil {
		return nil, err
	}
	s.metrics = metrics.New()
	sqsClient := queues.NewClient(awsCfg, qcfg, s.countSQS())
	if err := queues.Ensure(ctx, sqsClient, qcfg); err != nil {
		return nil, fmt.Errorf("SQS at %s: %w", endpointName(cfg.SQSEndpoint), err)
	}
	dlqAdmin, err := deadletter.NewAdmin(sqsClient, qcfg)
	if err != nil {
		return nil, err
	}
	state, err := metricsState(s.db, dlqAdmin.Depths)
	if err != nil {
		return nil, err
	}
	if err := s.metrics.WatchState(state, log); err != nil {
		return nil, err
	}

	ac := cfg.app(s.db, log)
	ac.Metrics = s.metrics
	ac.Relay.Recover = func(ctx context.Context) error { return queues.Ensure(ctx, sqsClient, qcfg) }
	ac.API.Operators = s.operators
	ac.API.Health = func(ctx context.Context) map[string]error {
		return map[string]error{"mysql": s.db.PingContext(ctx), "sqs": queues.Ping(ctx, sqsClient, qcfg)}
	}
	ac.API.Ready = func(ctx context.Context) map[string]error {
		return map[string]error{"mysql": s.db.PingContext(ctx), "sqs": queues.Ping(ctx, sqsClient, qcfg),
			"migrations": migrationsApplied(ctx, s.db), "relay_lag": relayLag(ctx, s.db, cfg.ReadyMaxLag)}
	}
	if cfg.runs(app.ComponentRelay) {
		if ac.Relay.Publisher, err = queues.NewBatchPublisher(sqsClient); err != nil {
			return nil, err
		}
	}
	if ac.Router != nil {
		pub, err := queues.NewPublisher(awsCfg, qcfg, log)
		if err != nil {
			return nil, err
		}
		sub, err := cfg.subscriber(queues.NewClient(awsCfg, qcfg, s.countSQS()), log)
		if err != nil {
			return nil, err
		}
		ac.Router.Subscriber, ac.Router.Publisher = sub, pub
	}
	if s.app, err = app.Build(ac); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.app.Close)
	if s.app.Router != nil {
		// Watermill's own metrics: messages received and acked per handler, handler execution time.
		wmetrics.NewPrometheusMetricsBuilder(s.metrics.Registerer(), "orderd", "watermill").AddPrometheusRouterMetrics(s.app.Router)
	}
	if s.app.API != nil {
		if err := s.buildHTTP(s.app.API); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// app maps the configuration onto the assembly's: everything but what exists only once the
// process runs (the SQS clients and publishers, the operators' login, the health checks).
// Router is set when a stage runs.
func (c config) app(db *sql.DB, log *slog.Logger) app.Config {
	ac := app.Config{DB: db, Log: log, Pipeline: pipeline.Default(), Queues: c.queues(), Components: c.Components, Adapters: c.adapters(),
		SigningKey: c.SigningKey, RedriveAfter: c.RedriveAfter,
		Relay: app.RelayConfig{IdempotencyTTL: c.IdempotencyTTL, DeadLetterRetention: c.DeadLetterRetention},
		API: handlers.Config{AllowedOrigins: c.AllowedOrigins,
			PlacementLimit: handlers.RateLimit{PerSecond: c.PlacementRate, TrustedProxies: c.TrustedProxies}},
	}
	if slices.ContainsFunc(ac.Pipeline.Components(), c.runs) {
		ac.Router = &app.RouterConfig{HandlerTimeout: c.HandlerTimeout, Retries: c.Retries}
	}
	return ac
}

// metricsState is what /metrics reads when it is scraped, each part from its table's owner.
func metricsState(db *sql.DB, dlq metrics.QueueDepths) (metrics.State, error) {
	reader, err := orders.NewReader(db)
	if err != nil {
		return metrics.State{}, err
	}
	counter, err := orders.NewStatusCounter(db, 0)
	if err != nil {
		return metrics.State{}, err
	}
	return metrics.State{
		OrderCounts: func(ctx context.Context) (map[string]int64, error) {
			c, err := counter.Counts(ctx)
			delete(c.ByStatus, "all")
			return c.ByStatus, err
		},
		OutboxBacklog: func(ctx context.Context) (int64, time.Duration, error) {
			b, err := outbox.ReadBacklog(ctx, db, 100_000)
			return b.Waiting, b.OldestAge(time.Now()), err
		},
		ProjectionLag: func(ctx context.Context) (int64, float64, error) {
			l, err := reader.Lag(ctx)
			return l.EventsBehind(), l.Seconds, err
		},
		DeadLetterQueues: dlq,
	}, nil
}

// countSQS is the client option that counts SQS requests in the metrics.
func (s *service) countSQS() func(*sqs.Options) {
	return queues.CountRequests(func(op string) { s.metrics.SQSRequests.WithLabelValues(op).Inc() })
}

func (s *service) buildHTTP(api *handlers.API) (err error) {
	// Each request is a span; POST /orders starts the trace its order follows through the stages.
	// The API renames it after its route template once routed; never after the URL, whose
	// query may carry a capability.
	handler := otelhttp.NewHandler(api.Handler(), "http", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		return r.Method
	}))
	if s.httpMaxConns, err = s.cfg.httpMaxConns(openFileLimit()); err != nil {
		return err
	}
	// Short timeouts, so that slow or silent clients give their connection (one of
	// httpMaxConns) back soon: a request is at most 64 KiB of JSON and a few headers, an answer
	// a page of the dashboard.
	s.http = &http.Server{Addr: s.cfg.HTTPAddr, Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second, IdleTimeout: s.cfg.HTTPIdleTimeout,
		MaxHeaderBytes: 32 << 10}
	return nil
}

// serve runs the service until ctx is cancelled, then shuts down in reverse order: stop
// taking requests, let in-flight handlers finish, stop the relay, close the pool.
func serve(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	if cfg.Tracing {
		shutdown, err := tracing.Setup(ctx)
		if err != nil {
			return err
		}
		defer shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // best effort: flush what is left
	}
	s, err := newService(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	if cfg.RebuildOnVersionChange {
		// A deploy whose projection code changed its version rebuilds its tables while serving.
		for _, p := range app.Projections() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rebuilt, err := projections.RebuildIfStale(runCtx, s.db, p, nil)
				switch {
				case err != nil && !errors.Is(err, context.Canceled):
					log.Error("rebuild of a projection failed", "projection", p.Name(), "error", err)
				case rebuilt:
					log.Info("projection rebuilt for its new version", "projection", p.Name(), "version", p.Version())
				}
			}()
		}
	}
	a := s.app
	if a.Relay != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Relay.Run(runCtx) }()
		wg.Add(1)
		go func() { defer wg.Done(); a.Sweeper.Run(runCtx) }()
		wg.Add(1)
		go func() { defer wg.Done(); a.Cleaner.Run(runCtx) }()
	}
	if a.Customers != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Customers.Run(runCtx) }()
	}
	if a.Router != nil {
		go func() { errc <- a.Router.Run(runCtx) }()
		select {
		case <-a.Router.Running():
		case err := <-errc:
			return fmt.Errorf("start router: %w", err)
		}
	}
	if s.http != nil {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("HTTP_ADDR: %w", err)
		}
		// Beyond the cap, connections wait in the kernel's accept queue, holding none of this
		// process's file descriptors.
		ln = netutil.LimitListener(ln, s.httpMaxConns)
		log.Info("HTTP connections capped", "max_conns", s.httpMaxConns, "open_file_limit", openFileLimit(),
			"idle_timeout", cfg.HTTPIdleTimeout.String())
		go func() { errc <- s.http.Serve(ln) }()
		fmt.Fprintf(stdout, "orderd listening on http://%s (components: %s)\n", ln.Addr(), strings.Join(cfg.Components, ","))
	} else {
		fmt.Fprintf(stdout, "orderd running (components: %s)\n", strings.Join(cfg.Components, ","))
	}
	if cfg.OperatorPasswordGenerated && (s.http != nil || cfg.PprofAddr != "") {
		// Once, on stdout, never in the log. Each process makes its own: set OPERATOR_PASSWORD
		// when more than one serves the dashboard.
		fmt.Fprintf(stdout, "operator login for the dashboard and /metrics (OPERATOR_PASSWORD is unset, so this one was made for this process): user %s, password %s\n",
			handlers.OperatorUser, cfg.OperatorPassword.reveal())
	}
	if cfg.PprofAddr != "" {
		// Profiling on its own listener, never on the API's: it is for operators, not customers.
		ops := http.NewServeMux()
		ops.Handle("/debug/pprof/", http.DefaultServeMux)
		ops.Handle("/metrics", s.metrics.Handler()) // for processes that run no API
		pprofSrv := &http.Server{Addr: cfg.PprofAddr, Handler: s.operators.Require(ops), ReadHeaderTimeout: 5 * time.Second}
		go func() { log.Info("pprof listening", "addr", cfg.PprofAddr, "error", pprofSrv.ListenAndServe()) }()
		defer pprofSrv.Close()
	}
	log.Info("orderd started", "components", cfg.Components, "queue_prefix", cfg.QueuePrefix,
		"mysql", cfg.mysqlTarget(), "sqs", endpointName(cfg.SQSEndpoint), "cors_allowed_origins", cfg.AllowedOrigins)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("component stopped", "error", err)
		}
	}
	log.Info("shutting down")
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer done()
	if s.http != nil {
		if err := s.http.Shutdown(shutdownCtx); err != nil {
			log.Warn("HTTP shutdown", "error", err)
		}
	}
	if a.Router != nil {
		if err := a.Router.Close(); err != nil {
			log.Warn("router shutdown", "error", err)
		}
	}
	cancel()
	wg.Wait()
	return nil
}

func (s *service) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			s.log.Warn("close", "error", err)
		}
	}
	s.closers = nil
}

// endpointName names the SQS endpoint in messages, without its userinfo.
func endpointName(e string) string {
	if e == "" {
		return "AWS"
	}
	return redactURL(e)
}

// migrationsApplied fails while the database lacks a migration this binary expects.
func migrationsApplied(ctx context.Context, db *sql.DB) error {
	pending, err := migrations.Pending(ctx, db)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return fmt.Errorf("not applied: %v", pending)
	}
	return nil
}

// relayLag fails when the oldest event waiting to be relayed to SQS is older than limit. It
// reads a bounded part of the outbox, so probes stay cheap while a backlog builds up.
func relayLag(ctx context.Context, db *sql.DB, limit time.Duration) error {
	b, err := outbox.ReadBacklog(ctx, db, 10_000)
	if err != nil {
		return err
	}
	if age := b.OldestAge(time.Now()); age > limit {
		return fmt.Errorf("the oldest unrelayed event is %s old (limit %s)", age.Round(time.Second), limit)
	}
	return nil
}
