package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/app"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/mail"
	"orderd/ordering"
	"orderd/payment"
	"orderd/pipeline"
	"orderd/queues"
)

// TestEveryMessageDeliveredTwice delivers every queue message twice, for real, through SQS
// (each implementation: goaws, local-aws-sqs): the relay publishes each outbox row two times. The outcome must be the one of a
// single delivery: one charge (counted at the payment gateway), one refund where due, one
// reservation (stock), one email (Mailpit), and exactly each path's events.
//
// The service under test is `orderd serve` with its API, inventory and email stages, wired
// by run() as in production. The relay and the payment stage run in the test, assembled by
// app.Build with a duplicating publisher and a recording gateway (see duplicatesSeam below).
func TestEveryMessageDeliveredTwice(t *testing.T) {
	testenv.EachSQS(t, testEveryMessageDeliveredTwice)
}

func testEveryMessageDeliveredTwice(t *testing.T, sqs testenv.SQS) {
	env := testenv.New(t).WithMessagingOn(t, sqs)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{
		"MAIL_FROM": "orders@" + mailDomain, "ORDERD_COMPONENTS": "api,inventory,email",
	})
	dup := duplicatesSeam(t, env, mailDomain)

	stockBefore := stock(t, env)
	const perCase = 80 // 5 paths × 80 = 400 orders
	start := time.Now()
	orders := placeOrders(t, srv.URL, mailDomain, perCase*len(pipelineCases), nil)
	n := len(orders)
	waitFinished(t, env, n, 2*time.Minute)
	// Every copy must have been handled before the outcome is judged: a second copy that
	// arrives after the first finished the order must change nothing either.
	waitQueuesDrained(t, env, time.Minute)
	took := time.Since(start)

	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain) // exactly one email each
	checkLog(t, env, orders, stockBefore)                                  // causation chain, exactly-once projection
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}

	// The relay sent every routed event twice.
	routed := 0
	for _, o := range orders {
		routed += len(strings.Split(o.c.events, ",")) - 1 // every event but EmailSent goes to a queue
	}
	if sent := dup.published.Load(); sent < int64(2*routed) {
		t.Errorf("the relay published %d messages, want at least %d (2 × %d routed events)", sent, 2*routed, routed)
	}

	// One charge per order, one refund per cancelled order, at the gateway itself; and each
	// of the payment stage's triggers did reach it at least twice.
	charges, refunds := dup.gateway.calls()
	deliveries := dup.deliveries()
	triggers, handled := 0, 0
	for _, o := range orders {
		wantRefunds := 0
		if o.c.status == "cancelled" {
			wantRefunds = 1
		}
		if got := charges[o.id]; len(got) != 1 {
			t.Errorf("order %d (%s): %d charges at the gateway %v, want 1", o.id, o.c.name, len(got), got)
		}
		if got := refunds[o.id]; len(got) != wantRefunds {
			t.Errorf("order %d (%s): %d refunds at the gateway %v, want %d", o.id, o.c.name, len(got), got, wantRefunds)
		}
		for v, typ := range strings.Split(o.c.events, ",") {
			if typ != "OrderPlaced" && typ != "InventoryReservationFailed" {
				continue
			}
			triggers++
			id := eventstore.EventID(domain.OrderID(o.id), v+1)
			handled += deliveries[id]
			if deliveries[id] < 2 {
				t.Errorf("payment trigger %s (%s) reached the payment stage %d times, want at least 2", id, typ, deliveries[id])
			}
		}
	}
	t.Logf("orders: %d (%d per path: seed, two paid paths, declined, out of stock), all terminal and every queue drained in %.1fs", n, perCase, took.Seconds())
	t.Logf("duplicates injected: the relay published %d messages for %d routed events (each twice); the payment stage was handed %d deliveries for %d triggers",
		dup.published.Load(), routed, handled, triggers)
	t.Logf("checked: %d charges and %d refunds at the gateway (one per order / cancelled order), stock moved once per completed order, %d events (each path exactly, causation chain), %d emails (one per order, distinct Message-IDs)",
		countCalls(charges), countCalls(refunds), events, emails)
}

// duplicates is what the duplicating seam records.
type duplicates struct {
	published atomic.Int64
	gateway   *recordingGateway
	mu        sync.Mutex
	delivered map[string]int // payment-stage deliveries per trigger event id
}

func (d *duplicates) deliveries() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.delivered))
	for k, v := range d.delivered {
		out[k] = v
	}
	return out
}

// duplicatesSeam runs, for env, the two components the test instruments: the outbox relay,
// publishing every message twice, and the payment stage, charging through a recording
// gateway and counting what reaches it. They are assembled by app.Build from the
// configuration orderd itself reads, with the relay's publisher and the gateway given as
// the assembly allows, and the payment stage's entry wrapped in a pipeline of the test's.
func duplicatesSeam(t *testing.T, env *testenv.Env, mailDomain string) *duplicates {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logPath := filepath.Join(t.TempDir(), "seam.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(logFile, nil))
	db, err := sql.Open("mysql", env.DSN)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(32)

	// The configuration orderd itself would run with, so queues and router are tuned alike.
	cfg, err := loadConfig(env.Getenv(map[string]string{"MAIL_FROM": "orders@" + mailDomain, "ORDERD_COMPONENTS": "payment,relay"}))
	must(t, err)
	qcfg := cfg.queues()
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	must(t, err)
	pub, err := queues.NewPublisher(awsCfg, qcfg, log)
	must(t, err)
	sub, err := cfg.subscriber(queues.NewClient(awsCfg, qcfg), log)
	must(t, err)

	d := &duplicates{gateway: &recordingGateway{inner: payment.Simulated{DeclineAboveCents: cfg.DeclineAboveCents}}, delivered: map[string]int{}}
	stages := pipeline.Default().Stages()
	for i, st := range stages {
		if st.Component != pipeline.Payment {
			continue
		}
		charge := st.Run
		stages[i].Run = func(s *ordering.Stages, ctx context.Context, spec ordering.StageSpec, rec eventstore.Record) error {
			d.mu.Lock()
			d.delivered[rec.EventID()]++
			d.mu.Unlock()
			return charge(s, ctx, spec, rec)
		}
	}
	p, err := pipeline.New(stages...)
	must(t, err)
	ac := cfg.app(db, log)
	ac.Pipeline = p
	ac.Adapters.Gateway, ac.Adapters.Mailer = d.gateway, noMail{}
	ac.Router.Subscriber, ac.Router.Publisher = sub, pub
	ac.Relay.Publisher = &publishTwice{Publisher: pub, sent: &d.published}
	ac.Relay.PollInterval = 20 * time.Millisecond // the API's appends are in another process: no kick reaches this relay
	a, err := app.Build(ac)
	must(t, err)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.Relay.Run(ctx) }() //nolint:errcheck // returns nil
	routerErr := make(chan error, 1)
	go func() { defer wg.Done(); routerErr <- a.Router.Run(ctx) }()
	select {
	case <-a.Router.Running():
	case err := <-routerErr:
		t.Fatalf("payment router: %v", err)
	}
	t.Cleanup(func() {
		a.Router.Close() //nolint:errcheck // shutting down
		cancel()
		wg.Wait()
		a.Close() //nolint:errcheck // shutting down
		db.Close()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("relay and payment stage log (tail):\n%s", b)
		}
	})
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// publishTwice publishes every message two times: the duplicate delivery SQS is allowed to
// make, made certain.
type publishTwice struct {
	message.Publisher
	sent *atomic.Int64
}

func (p *publishTwice) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		for range 2 {
			if err := p.Publisher.Publish(topic, m.Copy()); err != nil {
				return err
			}
			p.sent.Add(1)
		}
	}
	return nil
}

// recordingGateway is the simulated gateway, recording every call's idempotency key per
// order: a real gateway would charge once per call it did not recognise.
type recordingGateway struct {
	inner   payment.Gateway
	mu      sync.Mutex
	charges map[int][]string
	refunds map[int][]string
}

func (g *recordingGateway) Charge(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
	g.record(&g.charges, int(req.OrderID), req.IdempotencyKey)
	return g.inner.Charge(ctx, req)
}

func (g *recordingGateway) Refund(ctx context.Context, req payment.RefundRequest) (string, error) {
	g.record(&g.refunds, int(req.OrderID), req.IdempotencyKey)
	return g.inner.Refund(ctx, req)
}

func (g *recordingGateway) record(m *map[int][]string, id int, key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if *m == nil {
		*m = map[int][]string{}
	}
	(*m)[id] = append((*m)[id], key)
}

func (g *recordingGateway) calls() (charges, refunds map[int][]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return copyCalls(g.charges), copyCalls(g.refunds)
}

func copyCalls(m map[int][]string) map[int][]string {
	out := make(map[int][]string, len(m))
	for k, v := range m {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func countCalls(m map[int][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// noMail is the mailer of a process that runs only the payment stage, which sends none.
type noMail struct{}

func (noMail) Send(context.Context, mail.Message) error {
	return errors.New("the payment stage sends no email")
}
