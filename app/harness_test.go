package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"orderd/app"
	"orderd/domain"
	"orderd/handlers"
	"orderd/internal/mailpit"
	"orderd/internal/testenv"
	"orderd/pipeline"
	"orderd/queues"
)

// service is a whole orderd assembled by app.Build on real MariaDB, SQS and Mailpit, with
// its API on a real socket: what `orderd serve` runs, around a pipeline and adapters of the
// test's choosing.
type service struct {
	env    *testenv.Env
	app    *app.App
	qcfg   queues.Config
	client *sqs.Client
	url    string
	mail   *mailpit.Client
	domain string // the shop's mail domain, unique to the test
}

// startService assembles every component of p with adapters (MailFrom and, unless set, SMTP
// are filled in) on the SQS implementation impl, and runs them until the test ends.
func startService(t *testing.T, impl testenv.SQS, p *pipeline.Pipeline, adapters app.Adapters) *service {
	t.Helper()
	env := testenv.New(t).WithMessagingOn(t, impl)
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{env: env, mail: mailpit.New(env.MailpitURL), domain: env.ID + ".example"}
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.qcfg = queues.Config{Endpoint: env.SQSEndpoint, Emulator: queues.Emulator(env.SQSEmulator), Region: "us-east-1", Prefix: env.QueuePrefix,
		VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5, Pipeline: p}
	awsCfg, err := queues.AWSConfig(ctx, s.qcfg)
	must(t, err)
	client := queues.NewClient(awsCfg, s.qcfg)
	s.client = client
	must(t, queues.Ensure(ctx, client, s.qcfg))
	batchPub, err := queues.NewBatchPublisher(client)
	must(t, err)
	pub, err := queues.NewPublisher(awsCfg, s.qcfg, log)
	must(t, err)
	sub, err := queues.NewBatchSubscriber(client, queues.BatchSubscriberConfig{Receivers: 2, MaxInFlight: 20, Visibility: 6 * time.Second, Emulator: s.qcfg.Emulator}, log)
	must(t, err)
	operators, err := handlers.NewOperators(testenv.OperatorPassword, log)
	must(t, err)
	adapters.MailFrom = "shop@" + s.domain
	if adapters.Mailer == nil && adapters.SMTP.Addr == "" {
		adapters.SMTP.Addr = env.SMTPAddr
	}
	ok := func(ctx context.Context) map[string]error { return map[string]error{"mysql": env.DB.PingContext(ctx)} }
	s.app, err = app.Build(app.Config{DB: env.DB, Log: log, Pipeline: p, Queues: s.qcfg, Components: app.Components(p),
		Adapters: adapters, RedriveAfter: 30 * time.Second,
		Router: &app.RouterConfig{Subscriber: sub, Publisher: pub, HandlerTimeout: 5 * time.Second, Retries: 3},
		Relay:  app.RelayConfig{Publisher: batchPub},
		API:    handlers.Config{Operators: operators, Health: ok, Ready: ok},
	})
	must(t, err)

	var wg sync.WaitGroup
	for _, run := range []func(context.Context){
		func(ctx context.Context) { _ = s.app.Relay.Run(ctx) },
		s.app.Sweeper.Run,
		func(ctx context.Context) { _ = s.app.Customers.Run(ctx) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	routerErr := make(chan error, 1)
	go func() { routerErr <- s.app.Router.Run(ctx) }()
	select {
	case <-s.app.Router.Running():
	case err := <-routerErr:
		t.Fatalf("router: %v", err)
	}
	srv := httptest.NewServer(s.app.API.Handler())
	s.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		s.app.Router.Close() //nolint:errcheck // shutting down
		cancel()
		wg.Wait()
		s.app.Close() //nolint:errcheck // shutting down
	})
	return s
}

// place places an order over HTTP and returns its id.
func (s *service) place(t *testing.T, name string, items ...domain.Item) domain.OrderID {
	t.Helper()
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	req := struct {
		CustomerName  string `json:"customerName"`
		CustomerEmail string `json:"customerEmail"`
		Items         []item `json:"items"`
	}{CustomerName: name, CustomerEmail: name + "@" + s.domain}
	for _, it := range items {
		req.Items = append(req.Items, item{it.SKU, it.Quantity})
	}
	body, err := json.Marshal(req)
	must(t, err)
	resp, err := http.Post(s.url+"/orders", "application/json", bytes.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	var out struct {
		OrderID domain.OrderID `json:"orderId"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted || out.OrderID == 0 {
		t.Fatalf("POST /orders for %s: %s, %v", name, resp.Status, err)
	}
	return out.OrderID
}

// order reads an order as an operator over HTTP.
func (s *service) order(t *testing.T, id domain.OrderID) (status string, events []string) {
	t.Helper()
	resp, err := testenv.OperatorGet(fmt.Sprintf("%s/orders/%d", s.url, id))
	must(t, err)
	defer resp.Body.Close()
	var o struct {
		Status string `json:"order_status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /orders/%d: %s, %v", id, resp.Status, err)
	}
	return o.Status, s.env.Strings(t, `SELECT event_type FROM events WHERE stream_id = ? ORDER BY version`, id)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	defer func(start time.Time) { t.Logf("waited %s for %s", time.Since(start).Round(time.Millisecond), what) }(time.Now())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testLog writes the service's warnings into the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	if os.Getenv("ORDERD_TEST_VERBOSE") != "" {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return io.Discard.Write(p)
}
