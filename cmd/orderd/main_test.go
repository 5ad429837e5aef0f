package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/internal/mailpit"
	"orderd/internal/testenv"
)

// orderd is a running `orderd serve`, started through run() exactly as main starts it.
type orderd struct {
	URL    string
	cancel context.CancelFunc
	done   chan error
	logs   string
	stdout *testenv.Buffer // what it printed on stdout after its first line
}

// startOrderd runs `orderd serve` against env until the test ends (or Stop is called) and
// waits until it listens. Its log goes to a file that the test prints if it fails.
func startOrderd(t *testing.T, env *testenv.Env, overrides map[string]string) *orderd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logPath := filepath.Join(t.TempDir(), "orderd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	o := &orderd{cancel: cancel, done: make(chan error, 1), logs: logPath, stdout: &testenv.Buffer{}}
	go func() {
		err := run(ctx, []string{"serve"}, env.Getenv(overrides), pw, logFile)
		pw.CloseWithError(fmt.Errorf("orderd exited: %v", err))
		logFile.Close()
		o.done <- err
	}()
	br := bufio.NewReader(pr)
	line, err := br.ReadString('\n')
	go io.Copy(o.stdout, br) //nolint:errcheck // keep the rest
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("orderd did not start: %v\n%s", err, b)
	}
	_, rest, ok := strings.Cut(line, "listening on ")
	if !ok {
		t.Fatalf("unexpected first line from orderd: %q", line)
	}
	o.URL = strings.Fields(rest)[0]
	t.Cleanup(func() {
		o.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("orderd log (tail):\n%s", b)
		}
	})
	return o
}

// Stop shuts orderd down gracefully and checks that it exited cleanly.
func (o *orderd) Stop(t *testing.T) {
	t.Helper()
	if o.cancel == nil {
		return
	}
	o.cancel()
	o.cancel = nil
	select {
	case err := <-o.done:
		if err != nil {
			t.Errorf("orderd serve returned %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("orderd did not shut down within 40 s")
	}
}

func postJSON(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	return postJSONWith(t, http.DefaultClient, url, body)
}

// postJSONWith is postJSON over client.
func postJSONWith(t *testing.T, client *http.Client, url, body string) (int, []byte) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpTable returns every row of table, every column rendered as text, ordered by order_id.
func dumpTable(t *testing.T, env *testenv.Env, table string) []string {
	t.Helper()
	return env.Strings(t, `SELECT CONCAT_WS('|', order_id, HEX(customer_name), order_status, payment_status, inventory_status,
		email_sent, email_failed, HEX(COALESCE(customer_email, '~')), HEX(items), total_cents, HEX(COALESCE(failure_reason, '~')), version,
		last_position, placed_at, updated_at) FROM `+table+` ORDER BY order_id`)
}

func TestRunRejectsBadConfig(t *testing.T) {
	for key, val := range map[string]string{
		"MYSQL_DSN": "not a dsn", "SQS_ENDPOINT": "ftp://x", "HTTP_ADDR": "8080", "QUEUE_IN_FLIGHT": "5", "QUEUE_RECEIVERS": "0",
		"ORDERD_COMPONENTS": "api,billing", "MAIL_FROM": "not-an-address", "QUEUE_PREFIX": "a b",
		"CORS_ALLOWED_ORIGINS": "*", "OPERATOR_PASSWORD": "short", "MESSAGE_SIGNING_KEY": "short-secret",
		"PLACEMENT_RATE_LIMIT": "-1", "TRUSTED_PROXIES": "10.0.0.0/33", "PAYMENT_GATEWAY": "stripe",
		"SQS_EMULATOR": "goaws", // with SQS_ENDPOINT empty: real AWS is no emulator
	} {
		err := run(context.Background(), []string{"serve"}, func(k string) string {
			if k == key {
				return val
			}
			return ""
		}, io.Discard, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), key+":") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%q: want one line naming %s, got %v", key, val, key, err)
		}
		if key == "MESSAGE_SIGNING_KEY" && err != nil && strings.Contains(err.Error(), val) {
			t.Errorf("the error repeats the secret: %v", err)
		}
	}
}

func TestGCDefaults(t *testing.T) {
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	prevPercent, prevLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer func() { debug.SetGCPercent(prevPercent); debug.SetMemoryLimit(prevLimit) }()
	cfg.tuneGC()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GC percent %d with GOGC unset, want %d", got, defaultGCPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Errorf("memory limit %d with GOMEMLIMIT unset, want %d", got, defaultMemoryLimit)
	}

	// When GOGC and GOMEMLIMIT are set the runtime has read them: orderd leaves them alone.
	set := map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}
	cfg, err = loadConfig(func(k string) string { return set[k] })
	if err != nil {
		t.Fatal(err)
	}
	debug.SetGCPercent(50)
	debug.SetMemoryLimit(1 << 30)
	cfg.tuneGC()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GC percent %d with GOGC=50, want it left at 50", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("memory limit %d with GOMEMLIMIT=1GiB, want it left at 1 GiB", got)
	}
}

// pipelineCase is one kind of order the end-to-end test places, and what must follow.
type pipelineCase struct {
	name      string
	seed      bool   // placed through the seed's POST /place-order
	items     string // JSON items for POST /orders
	reserved  map[string]int
	events    string // the whole stream, in order
	status    string
	payment   string
	inventory string
}

var pipelineCases = []pipelineCase{
	{name: "seed", seed: true, events: "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent",
		status: "completed", payment: "completed", inventory: "completed"},
	{name: "books", items: `[{"sku":"SKU-BOOK","quantity":2},{"sku":"SKU-MUG","quantity":1}]`, reserved: map[string]int{"SKU-BOOK": 2, "SKU-MUG": 1},
		events: "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent", status: "completed", payment: "completed", inventory: "completed"},
	{name: "tshirt", items: `[{"sku":"SKU-TSHIRT","quantity":3}]`, reserved: map[string]int{"SKU-TSHIRT": 3},
		events: "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent", status: "completed", payment: "completed", inventory: "completed"},
	// 60 × 19.99 = 1199.40, over the gateway's 1000.00 limit: declined, nothing reserved.
	{name: "declined", items: `[{"sku":"SKU-TSHIRT","quantity":60}]`,
		events: "OrderPlaced,PaymentFailed,EmailSent", status: "payment_failed", payment: "failed", inventory: "pending"},
	// Only 10 posters exist: paid, reservation fails, refunded, cancelled.
	{name: "out-of-stock", items: `[{"sku":"SKU-POSTER","quantity":11}]`,
		events: "OrderPlaced,PaymentCompleted,InventoryReservationFailed,PaymentRefunded,EmailSent", status: "cancelled", payment: "refunded", inventory: "failed"},
}

// placed is an order the tests placed, and what it must become.
type placed struct {
	id    int
	c     pipelineCase
	email string
}

// placeOrders places n orders over HTTP from 8 clients, cycling through pipelineCases, and
// calls progress after each (with the count so far) so a test can break something mid-load.
func placeOrders(t *testing.T, baseURL, mailDomain string, n int, progress func(done int)) []placed {
	t.Helper()
	var mu sync.Mutex
	var orders []placed
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p, ok := placeOne(t, baseURL, mailDomain, i)
				if !ok {
					continue
				}
				mu.Lock()
				orders = append(orders, p)
				done := len(orders)
				mu.Unlock()
				if progress != nil {
					progress(done)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return orders
}

func placeOne(t *testing.T, baseURL, mailDomain string, i int) (placed, bool) {
	return placeOneWith(t, http.DefaultClient, baseURL, mailDomain, i)
}

// placeOneWith is placeOne over client.
func placeOneWith(t *testing.T, client *http.Client, baseURL, mailDomain string, i int) (placed, bool) {
	c := pipelineCases[i%len(pipelineCases)]
	name := fmt.Sprintf("Customer %d", i)
	if c.seed {
		code, body := postJSONWith(t, client, baseURL+"/place-order", fmt.Sprintf(`{"customerName":%q}`, name))
		var got struct {
			Message string `json:"message"`
			OrderID int    `json:"orderId"`
		}
		if err := json.Unmarshal(body, &got); code != 200 || err != nil || got.Message != "Order placed successfully" || got.OrderID <= 0 {
			t.Errorf("POST /place-order: %d %s", code, body)
			return placed{}, false
		}
		return placed{id: got.OrderID, c: c, email: "orders@" + mailDomain}, true
	}
	email := fmt.Sprintf("customer-%d@%s", i, mailDomain)
	code, body := postJSONWith(t, client, baseURL+"/orders", fmt.Sprintf(`{"customerName":%q,"customerEmail":%q,"items":%s}`, name, email, c.items))
	var got struct {
		OrderID int               `json:"orderId"`
		Links   map[string]string `json:"links"`
	}
	if err := json.Unmarshal(body, &got); code != 202 || err != nil || !strings.HasPrefix(got.Links["self"], fmt.Sprintf("/orders/%d?access=", got.OrderID)) {
		t.Errorf("POST /orders: %d %s", code, body)
		return placed{}, false
	}
	return placed{id: got.OrderID, c: c, email: email}, true
}

// waitFinished waits until every order has reached its end state and sent its email.
func waitFinished(t *testing.T, env *testenv.Env, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d orders to finish", n), func() (bool, string) {
		done := env.Count(t, `SELECT COUNT(*) FROM orders WHERE email_sent = 1 AND order_status IN ('completed','payment_failed','cancelled')`)
		return done == n, fmt.Sprintf("%d of %d finished", done, n)
	})
}

// checkOrders checks every order's whole stream (each event once, in order), its projected
// row, the stock moved by exactly what was reserved, and exactly one email per order to the
// right address. It returns the number of events and emails it checked.
func checkOrders(t *testing.T, env *testenv.Env, orders []placed, stockBefore map[string][2]int, mailDomain string) (events, emails int) {
	t.Helper()
	n := len(orders)
	streams := map[int]string{}
	rows, err := env.DB.Query(`SELECT stream_id, GROUP_CONCAT(event_type ORDER BY version SEPARATOR ',') FROM events GROUP BY stream_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		streams[id] = s
	}
	rows.Close()
	if len(streams) != n {
		t.Errorf("log holds %d streams, want %d", len(streams), n)
	}
	wantReserved := map[string]int{}
	for _, o := range orders {
		if got := streams[o.id]; got != o.c.events {
			t.Errorf("order %d (%s): events %s, want %s", o.id, o.c.name, got, o.c.events)
		}
		var status, pay, inv string
		var emailSent bool
		err := env.DB.QueryRow(`SELECT order_status, payment_status, inventory_status, email_sent FROM orders WHERE order_id = ?`, o.id).
			Scan(&status, &pay, &inv, &emailSent)
		if err != nil || status != o.c.status || pay != o.c.payment || inv != o.c.inventory || !emailSent {
			t.Errorf("order %d (%s): row %s/%s/%s/%v (%v), want %s/%s/%s/true", o.id, o.c.name, status, pay, inv, emailSent, err, o.c.status, o.c.payment, o.c.inventory)
		}
		for sku, q := range o.c.reserved {
			wantReserved[sku] += q
		}
	}

	// Stock moved by exactly what was reserved, and nothing for declined or cancelled orders.
	stockAfter := stock(t, env)
	for sku, before := range stockBefore {
		after := stockAfter[sku]
		if moved := before[0] - after[0]; moved != wantReserved[sku] || after[1]-before[1] != wantReserved[sku] {
			t.Errorf("stock %s: available %d→%d, reserved %d→%d; want %d moved", sku, before[0], after[0], before[1], after[1], wantReserved[sku])
		}
	}

	// One email per order, to the right address, naming the order.
	msgs, err := mailpit.New(env.MailpitURL).Search(context.Background(), "message-id:@"+mailDomain)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]int{}
	for _, m := range msgs {
		byID[m.MessageID]++
	}
	if len(msgs) != n || len(byID) != n {
		t.Errorf("Mailpit has %d emails with %d distinct Message-IDs, want %d", len(msgs), len(byID), n)
	}
	want := map[string]placed{}
	for _, o := range orders {
		// The email is decided at the version before EmailSent: one less than the event count.
		want[fmt.Sprintf("order-%d-v%d@%s", o.id, strings.Count(o.c.events, ","), mailDomain)] = o
	}
	for _, m := range msgs {
		o, ok := want[strings.Trim(m.MessageID, "<>")]
		if !ok {
			t.Errorf("unexpected email %s to %v: %s", m.MessageID, m.To, m.Subject)
			continue
		}
		if len(m.To) != 1 || m.To[0].Address != o.email || !strings.Contains(m.Subject, fmt.Sprintf("Order %d", o.id)) {
			t.Errorf("email %s: to %v subject %q, want to %s about order %d", m.MessageID, m.To, m.Subject, o.email, o.id)
		}
	}
	return env.Count(t, `SELECT COUNT(*) FROM events`), len(msgs)
}

// TestPipelineEndToEnd places orders over HTTP through both endpoints and follows every one
// through payment, inventory and email over SQS, MariaDB and SMTP (Mailpit), then rebuilds
// the projection with `orderd replay` and checks it is unchanged. It runs on each SQS
// implementation (goaws, local-aws-sqs).
func TestPipelineEndToEnd(t *testing.T) {
	testenv.EachSQS(t, testPipelineEndToEnd)
}

func testPipelineEndToEnd(t *testing.T, sqs testenv.SQS) {
	env := testenv.New(t).WithMessagingOn(t, sqs)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "PAYMENT_DECLINE_ABOVE_CENTS": "100000"})

	stockBefore := stock(t, env)
	const perCase = 44 // 5 cases × 44 = 220 orders
	orders := placeOrders(t, srv.URL, mailDomain, perCase*len(pipelineCases), nil)
	n := len(orders)
	waitFinished(t, env, n, 90*time.Second)
	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain)
	checkCustomers(t, env)

	// Everything relayed: the outbox is empty.
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}

	// The API shows the projected order and its history.
	first := orders[0]
	resp, err := testenv.OperatorGet(fmt.Sprintf("%s/orders/%d", srv.URL, first.id))
	if err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	json.NewDecoder(resp.Body).Decode(&view) //nolint:errcheck // checked below
	resp.Body.Close()
	if view["order_status"] != first.c.status || view["order_id"] != float64(first.id) {
		t.Errorf("GET /orders/%d = %v", first.id, view)
	}

	// Replay rebuilds exactly the same table, while the service is still running.
	before := dumpTable(t, env, "orders")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"replay"}, env.Getenv(nil), &out, io.Discard); err != nil {
		t.Fatalf("orderd replay: %v", err)
	}
	after := dumpTable(t, env, "orders")
	if len(after) != len(before) || len(before) != n {
		t.Fatalf("replay: %d rows before, %d after, want %d", len(before), len(after), n)
	}
	for i := range before {
		if before[i] != after[i] {
			t.Errorf("replay changed a row:\n before %s\n after  %s", before[i], after[i])
		}
	}
	t.Logf("checked %d orders (%d per path: seed, two paid paths, declined, out of stock), %d events, %d emails; %s",
		n, perCase, events, emails, strings.TrimSpace(out.String()))
}

// stock returns available and reserved per SKU.
func stock(t *testing.T, env *testenv.Env) map[string][2]int {
	t.Helper()
	rows, err := env.DB.Query(`SELECT sku, available, reserved FROM stock`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][2]int{}
	for rows.Next() {
		var sku string
		var a, r int
		if err := rows.Scan(&sku, &a, &r); err != nil {
			t.Fatal(err)
		}
		out[sku] = [2]int{a, r}
	}
	return out
}
