// Package app assembles the order service from its parts, in one place: the event store with
// its hooks (the orders projection, the outbox rows routed by the pipeline, the feed), the
// catalogue, the adapters (payment gateway, mailer) chosen by configuration, the stages, and
// — as the components ask — the stages' Watermill router, the HTTP API, the outbox relay,
// sweeper and cleaner, and the per-customer feed consumer. `orderd serve`, the Lambda
// functions (package lambdastage) and the tests all build through Build, so that what runs
// in one is what runs in the others.
//
// Build only assembles: it opens no database (the caller owns the pool), creates no queue
// and runs nothing; the caller starts what it got and decides the shutdown order.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/deadletter"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/handlers"
	"orderd/metrics"
	"orderd/ordering"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/projections"
	"orderd/projections/customers"
	"orderd/projections/orders"
	"orderd/queues"
	"orderd/router"
)

// The components besides the pipeline's stages (whose names come from the pipeline).
const (
	ComponentAPI       = "api"       // the HTTP API and the dashboard
	ComponentRelay     = "relay"     // the outbox relay, sweeper and cleaner
	ComponentCustomers = "customers" // keeps the per-customer read model from the log's feed
)

// Components returns every component name a process running p can be asked for: the API,
// p's stages in order, the relay and the customers consumer.
func Components(p *pipeline.Pipeline) []string {
	return slices.Concat([]string{ComponentAPI}, p.Components(), []string{ComponentRelay, ComponentCustomers})
}

// Config is what Build assembles from.
type Config struct {
	DB  *sql.DB
	Log *slog.Logger
	// Pipeline is the stage table everything is derived from; nil is pipeline.Default(). It
	// is set on Queues too, so that routes and queue lists agree with it.
	Pipeline *pipeline.Pipeline
	Queues   queues.Config
	// Components are the parts to build (Components lists the names); a stage's function is
	// built when its component is listed.
	Components []string
	Adapters   Adapters
	// SigningKey, if set, signs what the relay sends and makes the stages refuse what it did
	// not sign.
	SigningKey []byte
	// Metrics counts appends, stage messages and relay refusals; nil makes a registry of its
	// own.
	Metrics *metrics.Metrics

	// Router, when set and a stage is among Components, builds the stages' Watermill
	// router. A Lambda function leaves it nil: the SQS event source is its router.
	Router *RouterConfig
	// Relay configures the relay, sweeper and cleaner (ComponentRelay).
	Relay RelayConfig
	// API is the HTTP side's own part of the API's configuration (ComponentAPI): health
	// checks, operators, CORS, the placement limit. Build fills in the use cases, the
	// readers, the dashboard, the metrics and the logger.
	API handlers.Config
	// RedriveAfter is how long an unfinished order may stay unchanged before the sweeper
	// drives it again and the dashboard flags it slow.
	RedriveAfter time.Duration
}

// RouterConfig is what the stages' Watermill router needs besides the stages.
type RouterConfig struct {
	Subscriber message.Subscriber // reads the stage queues
	// Publisher sends poisoned messages to the dead-letter queues (each recorded in the
	// dead_letters table first).
	Publisher      message.Publisher
	HandlerTimeout time.Duration
	Retries        int
}

// RelayConfig is what the relay, sweeper and cleaner need.
type RelayConfig struct {
	Publisher message.Publisher // sends outbox rows to SQS (queues.BatchPublisher)
	// Recover runs after a failed pass: re-creating queues a restarted emulator lost.
	Recover func(context.Context) error
	// PollInterval is how often an idle relay looks for rows other processes wrote
	// (0: outbox's default); this process's appends wake it at once.
	PollInterval time.Duration
	// IdempotencyTTL is how long an Idempotency-Key stays bound to its order (0: 24 h);
	// DeadLetterRetention how long dead letters no longer holding an order and re-drive
	// records are kept (0: 30 days). The defaults are orderd's.
	IdempotencyTTL      time.Duration
	DeadLetterRetention time.Duration
}

// App is what Build assembled. A part a component did not ask for is nil.
type App struct {
	Pipeline *pipeline.Pipeline
	Store    *eventstore.Store
	Catalog  *ordering.Catalog
	Metrics  *metrics.Metrics
	// Stages holds the use cases of the stages, and Funcs each listed stage's function by
	// component name (what a Lambda handler or a router handler calls).
	Stages *ordering.Stages
	Funcs  map[string]pipeline.Func
	Placer *ordering.Placer
	Router *message.Router
	API    *handlers.API
	// The relay's side (ComponentRelay).
	Relay   *outbox.Relay
	Sweeper *outbox.Sweeper
	Cleaner *outbox.Cleaner
	// Customers keeps the per-customer read model (ComponentCustomers).
	Customers *feed.Consumer

	closers []func() error
}

// Close releases what the assembly opened (the SMTP sender's connections); the pool is the
// caller's.
func (a *App) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// Build assembles the parts cfg.Components ask for: store → hooks → stages → router, and
// the API, relay and customers consumer.
func Build(cfg Config) (_ *App, err error) {
	if cfg.DB == nil || cfg.Log == nil {
		return nil, errors.New("app: Build needs a database and a logger")
	}
	p := cfg.Pipeline
	if p == nil {
		p = pipeline.Default()
	}
	cfg.Queues.Pipeline = p
	if err := checkPipeline(p); err != nil {
		return nil, err
	}
	known := Components(p)
	for _, c := range cfg.Components {
		if !slices.Contains(known, c) {
			return nil, fmt.Errorf("app: unknown component %q (known: %s)", c, strings.Join(known, ","))
		}
	}
	runs := func(c string) bool { return slices.Contains(cfg.Components, c) }
	a := &App{Pipeline: p, Metrics: cfg.Metrics, Funcs: map[string]pipeline.Func{}}
	if a.Metrics == nil {
		a.Metrics = metrics.New()
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()

	writer, err := outbox.NewWriter(router.Route(cfg.Queues))
	if err != nil {
		return nil, err
	}
	feedWriter, err := feed.NewWriter(customers.Topic)
	if err != nil {
		return nil, err
	}
	if a.Store, err = eventstore.New(cfg.DB, projections.Orders{}, writer, feedWriter); err != nil {
		return nil, err
	}
	a.Store.OnCommit(func(appended []eventstore.Record) {
		orders := 0
		for i, r := range appended {
			a.Metrics.EventsAppended.WithLabelValues(r.Type).Inc()
			if i == 0 || r.StreamID != appended[i-1].StreamID { // a commit's records come stream by stream
				orders++
			}
		}
		a.Metrics.CommitOrders.Observe(float64(orders))
	})
	if a.Catalog, err = ordering.NewCatalog(cfg.DB); err != nil {
		return nil, err
	}
	deadLog, err := deadletter.NewLog(cfg.DB)
	if err != nil {
		return nil, err
	}

	if slices.ContainsFunc(p.Components(), runs) {
		if err := a.buildStages(cfg, runs, deadLog); err != nil {
			return nil, err
		}
	}
	if runs(ComponentRelay) {
		if err := a.buildRelay(cfg, writer, deadLog); err != nil {
			return nil, err
		}
	}
	if runs(ComponentCustomers) {
		if a.Customers, err = feed.NewConsumer(cfg.DB, customers.Apply, cfg.Log, feed.ConsumerConfig{
			Topic: customers.Topic.Name, Reject: feedRejections(deadLog),
		}); err != nil {
			return nil, err
		}
	}
	if runs(ComponentAPI) {
		if err := a.buildAPI(cfg, deadLog); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// checkPipeline refuses what pipeline.New cannot see: a stage named like one of the
// assembly's own components, and an event type, triggered or produced, that the event
// store does not know (a misspelt trigger would leave the event before it without a route,
// and its orders stuck).
func checkPipeline(p *pipeline.Pipeline) error {
	types := eventstore.SchemaVersions()
	for _, st := range p.Stages() {
		if slices.Contains([]string{ComponentAPI, ComponentRelay, ComponentCustomers}, st.Component) {
			return fmt.Errorf("app: stage component %q is the name of one of the service's own components", st.Component)
		}
		for _, t := range slices.Concat(st.Triggers, st.Produces) {
			if _, ok := types[t]; !ok {
				return fmt.Errorf("app: stage %s names event type %q, which the event store does not know (eventstore.Register)", st.Component, t)
			}
		}
	}
	return nil
}

// Projections lists the read models `orderd replay`, `--verify` and the version-triggered
// rebuild go through, in the order they run.
func Projections() projections.Registry {
	return projections.Registry{projections.Orders{}, customers.Projection{}}
}

// feedRejections records the feed's undecodable events as dead letters, attached to no
// order: the order's pipeline is not held up by a read model's refusal.
func feedRejections(lg *deadletter.Log) func(context.Context, eventstore.Tx, feed.Rejection) error {
	return func(ctx context.Context, tx eventstore.Tx, r feed.Rejection) error {
		return lg.RecordIn(ctx, tx, deadletter.Letter{Queue: "feed " + r.Topic, EventID: r.EventID, EventType: r.EventType,
			Reason: "cannot be decoded: " + r.Reason, DeadAt: time.Now().UTC()})
	}
}

// buildStages builds the adapters, the stages and their functions, and the router over them.
func (a *App) buildStages(cfg Config, runs func(string) bool, deadLog *deadletter.Log) error {
	gateway, err := cfg.Adapters.gateway()
	if err != nil {
		return err
	}
	mailer, closeMailer, err := cfg.Adapters.mailer()
	if err != nil {
		return err
	}
	a.closers = append(a.closers, closeMailer)
	if a.Stages, err = ordering.NewStages(ordering.StagesConfig{
		Store: a.Store, Catalog: a.Catalog, Gateway: gateway, Mailer: mailer, MailFrom: cfg.Adapters.MailFrom, Log: cfg.Log,
	}); err != nil {
		return err
	}
	var enabled []router.Stage
	for _, st := range a.Pipeline.Stages() {
		if runs(st.Component) {
			a.Funcs[st.Component] = st.Func(a.Stages)
			enabled = append(enabled, router.Stage{Name: st.Name, Queue: st.Queue, Run: a.Funcs[st.Component]})
		}
	}
	if cfg.Router == nil {
		return nil
	}
	dlqPub, err := deadletter.NewPublisher(deadLog, cfg.Router.Publisher)
	if err != nil {
		return err
	}
	a.Router, err = router.New(router.Config{Queues: cfg.Queues, HandlerTimeout: cfg.Router.HandlerTimeout,
		Retries: cfg.Router.Retries, SigningKey: cfg.SigningKey}, cfg.Router.Subscriber, dlqPub, a.Metrics, cfg.Log, enabled...)
	return err
}

// buildRelay builds the relay, and the sweeper and cleaner that run beside it.
func (a *App) buildRelay(cfg Config, writer *outbox.Writer, deadLog *deadletter.Log) (err error) {
	keys, letters := cfg.Relay.IdempotencyTTL, cfg.Relay.DeadLetterRetention
	if keys == 0 {
		keys = 24 * time.Hour
	}
	if letters == 0 {
		letters = 30 * 24 * time.Hour
	}
	countRefused := func(queue string) { a.Metrics.RelayRefused.WithLabelValues(queue).Inc() }
	if a.Relay, err = outbox.NewRelay(cfg.DB, cfg.Relay.Publisher, deadLog, cfg.Log, outbox.RelayConfig{
		Recover: cfg.Relay.Recover, OnRefused: countRefused, SigningKey: cfg.SigningKey, PollInterval: cfg.Relay.PollInterval}); err != nil {
		return err
	}
	a.Store.OnCommit(func([]eventstore.Record) { a.Relay.Kick() })
	if a.Sweeper, err = outbox.NewSweeper(cfg.DB, a.Store, writer, SweepReads, cfg.Log, outbox.SweeperConfig{StuckAfter: cfg.RedriveAfter}); err != nil {
		return err
	}
	reader, err := orders.NewReader(cfg.DB)
	if err != nil {
		return err
	}
	// The cleaner keeps the tables from growing without bound: it forgets idempotency keys
	// after IdempotencyTTL, and removes dead letters that no longer hold an order and
	// re-drive records after DeadLetterRetention.
	a.Cleaner, err = outbox.NewCleaner(cfg.DB, cfg.Log, outbox.CleanerConfig{},
		outbox.Retention{Name: "idempotency keys", Keep: keys, Remove: a.Store.ExpireIdempotencyKeys},
		outbox.Retention{Name: "dead letters", Keep: letters, Remove: deadLog.RemoveOlder(reader)},
		outbox.Retention{Name: "re-drive records", Keep: letters, Remove: a.Sweeper.RemoveRecords},
	)
	return err
}

// SweepReads gives the sweeper the orders read model and the dead-letter log over the
// connection that holds its lock.
func SweepReads(conn *sql.Conn) (outbox.UnfinishedOrders, outbox.HeldOrders, error) {
	reader, err := orders.NewReader(conn)
	if err != nil {
		return nil, nil, err
	}
	held, err := deadletter.NewLog(conn)
	return reader, held, err
}

// buildAPI builds the placer and the HTTP API over it.
func (a *App) buildAPI(cfg Config, deadLog *deadletter.Log) (err error) {
	if a.Placer, err = ordering.NewPlacer(a.Store, a.Catalog); err != nil {
		return err
	}
	reader, err := orders.NewReader(cfg.DB)
	if err != nil {
		return err
	}
	dash, err := handlers.NewDashboard(cfg.DB, a.Catalog, cfg.Log, cfg.RedriveAfter)
	if err != nil {
		return err
	}
	dash.ShowStages(a.Pipeline.Components())
	api := cfg.API
	api.Placer, api.Orders, api.Store, api.DeadLetters, api.Dashboard = a.Placer, reader, a.Store, deadLog, dash
	api.Metrics, api.Log = a.Metrics, cfg.Log
	a.API, err = handlers.New(api)
	return err
}
