package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/internal/mailpit"
	"orderd/internal/testenv"
	"orderd/queues"
)

// TestNothingLostWhenOrderdIsKilled runs `orderd serve` as a child process and kills it
// with SIGKILL at random moments while clients place orders and the stages work, restarting
// it each time. Every order that was answered 2xx must end in its path's terminal state,
// each event once, stock moved by exactly what was reserved, the customer emailed (a crash
// between SMTP and the EmailSent append may send the same email again, with the same
// Message-ID, and nothing else), and `orderd replay` must give back the same orders table.
func TestNothingLostWhenOrderdIsKilled(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	bin := testenv.BuildOrderd(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proc := testenv.StartProcess(t, "orderd", []string{bin, "serve"}, childEnviron(env, map[string]string{
		"HTTP_ADDR": addr, "MAIL_FROM": "orders@" + mailDomain, "REDRIVE_AFTER": "2s", "VISIBILITY_TIMEOUT": "6s",
	}), addr)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0x6f72646572))

	stockBefore := stock(t, env)
	conns := sampleConnections(t, env)
	// Clients keep placing orders until every kill has happened and at least minOrders were
	// accepted, so that each kill hits a process under load.
	const clients, minOrders, maxOrders, kills = 8, 1000, 4000, 5
	var killsDone atomic.Bool
	client := newRetryingClient(t, env.ID, mailDomain)
	start := time.Now()
	ld := startLoad(t, client, clients, func(int) string { return "http://" + addr }, func(i, accepted int) bool {
		return i < maxOrders && (!killsDone.Load() || accepted < minOrders)
	})

	var moments []string
	var unfinishedAtKills int
	var lastKill time.Time
	for k := 1; k <= kills; k++ {
		time.Sleep(time.Duration(300+rng.IntN(601)) * time.Millisecond) // a random moment: the point of the test
		if proc.Exited() {
			t.Fatalf("orderd exited by itself before kill %d", k)
		}
		proc.Kill()
		lastKill = time.Now()
		// Measured while it is down: what the kill interrupted.
		unfinished := env.Count(t, `SELECT COUNT(*) FROM orders WHERE NOT (email_sent = 1 AND order_status IN ('completed','payment_failed','cancelled'))`)
		outboxRows := env.Count(t, `SELECT COUNT(*) FROM outbox`)
		unfinishedAtKills += unfinished
		moments = append(moments, fmt.Sprintf("%.1fs (%d accepted, %d unfinished, %d in outbox)",
			time.Since(start).Seconds(), ld.accepted(), unfinished, outboxRows))
		proc.Start()
	}
	killsDone.Store(true)
	orders := ld.wait()
	loadTime := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	if len(orders) < minOrders {
		t.Fatalf("only %d orders were accepted, want at least %d", len(orders), minOrders)
	}
	t.Logf("orders: %d accepted (2xx) from %d clients in %.1fs (%s)", len(orders), clients, loadTime.Seconds(), pathCounts(orders))
	t.Logf("kills: %d × SIGKILL, random 300–900 ms apart (seed %d), at %s; %d restarts",
		kills, seed, strings.Join(moments, "; "), proc.Starts()-1)
	t.Logf("clients: %d requests failed for want of a connection and were retried with the same Idempotency-Key; %d answers were idempotent replays (accepted before a kill, answer lost)",
		client.connErrors.Load(), client.replayed.Load())
	if unfinishedAtKills == 0 {
		t.Errorf("no kill interrupted any unfinished order: the test proved nothing (kills at %s)", strings.Join(moments, ", "))
	}

	waitFinished(t, env, len(orders), 2*time.Minute)
	finishTime := time.Since(start)
	peakConns := conns()
	// Messages the killed processes had received stay invisible until their visibility
	// timeout (30 s) and then come again: wait for those late duplicates to be absorbed, so
	// that a second email they might cause is seen below.
	waitQueuesDrained(t, env, 75*time.Second)
	drained := time.Since(lastKill)
	events := checkLog(t, env, orders, stockBefore)
	emails, resent := checkEmails(t, env, orders, mailDomain, true)
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}
	replayed := checkReplay(t, env, len(orders))
	if err := proc.Stop(40 * time.Second); err != nil {
		t.Errorf("graceful stop after the test: %v", err)
	}

	t.Logf("checked: all %d orders terminal %.1fs after the start; %d events (each stream exactly its path, versions 1..n, causation chain), %d orders rows exactly-once, stock, %d emails of which %d duplicates by crash (same Message-ID); %d orders re-driven by the sweeper; queues drained %.1fs after the last kill",
		len(orders), finishTime.Seconds(), events, len(orders), emails, resent, env.Count(t, `SELECT COUNT(*) FROM order_redrives`), drained.Seconds())
	t.Logf("MySQL connections to the test database: at most %d at once (orderd and the test)", peakConns)
	t.Logf("replay: %s", replayed)
}

// childEnviron is orderd's configuration for env, with overrides, as a child process's
// environment: every key orderd reads (configKeys) and nothing else from the test's own.
func childEnviron(env *testenv.Env, overrides map[string]string) []string {
	get := env.Getenv(overrides)
	out := testenv.MinimalEnviron()
	for _, k := range configKeys {
		if v := get(k); v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// retryingClient places orders as a careful shop front end does against a service that may
// be away for a moment: every order carries an Idempotency-Key, and a request that got no
// answer (connection refused or cut: the process is down) or a 503 (a dependency is down) is
// sent again with the same key until it is answered, so an order accepted just before a
// crash is not placed twice. Any other answer than the expected 2xx or a well-formed 503 is
// an error.
type retryingClient struct {
	t          *testing.T
	http       *http.Client
	keyPrefix  string
	mailDomain string
	giveUp     time.Duration

	connErrors  atomic.Int64 // requests that got no answer
	unavailable atomic.Int64 // 503 answers
	replayed    atomic.Int64 // 2xx answers marked Idempotent-Replayed
}

func newRetryingClient(t *testing.T, keyPrefix, mailDomain string) *retryingClient {
	return &retryingClient{t: t, http: &http.Client{Timeout: 20 * time.Second}, keyPrefix: keyPrefix,
		mailDomain: mailDomain, giveUp: 90 * time.Second}
}

// place places order i (of kind pipelineCases[i%len]) at baseURL and returns it once it got
// a 2xx; false if it got an unexpected answer (reported) or ctx ended.
func (c *retryingClient) place(ctx context.Context, baseURL string, i int) (placed, bool) {
	pc := pipelineCases[i%len(pipelineCases)]
	name := fmt.Sprintf("Customer %d", i)
	path, body, email, want := "/orders", "", fmt.Sprintf("customer-%d@%s", i, c.mailDomain), http.StatusAccepted
	if pc.seed {
		path, body, email, want = "/place-order", fmt.Sprintf(`{"customerName":%q}`, name), "orders@"+c.mailDomain, http.StatusOK
	} else {
		body = fmt.Sprintf(`{"customerName":%q,"customerEmail":%q,"items":%s}`, name, email, pc.items)
	}
	key := fmt.Sprintf("%s-%d", c.keyPrefix, i)
	deadline := time.Now().Add(c.giveUp)
	var last string
	for {
		code, got, hdr, err := c.post(ctx, baseURL+path, key, body)
		switch {
		case ctx.Err() != nil:
			return placed{}, false
		case err != nil:
			c.connErrors.Add(1)
			last = err.Error()
		case code == http.StatusServiceUnavailable:
			c.unavailable.Add(1)
			last = fmt.Sprintf("503 %s", got)
			if msg := unavailableProblem(got); msg != "" {
				c.t.Errorf("POST %s (order %d): 503 without a clear JSON error: %s", path, i, msg)
				return placed{}, false
			}
		case code == want:
			var ans struct {
				Message string `json:"message"`
				OrderID int    `json:"orderId"`
			}
			if err := json.Unmarshal(got, &ans); err != nil || ans.OrderID <= 0 || (pc.seed && ans.Message != "Order placed successfully") {
				c.t.Errorf("POST %s (order %d): %d %s", path, i, code, got)
				return placed{}, false
			}
			if hdr.Get("Idempotent-Replayed") == "true" {
				c.replayed.Add(1)
			}
			return placed{id: ans.OrderID, c: pc, email: email}, true
		default:
			c.t.Errorf("POST %s (order %d, key %s): %d %s", path, i, key, code, got)
			return placed{}, false
		}
		if time.Now().After(deadline) {
			c.t.Errorf("POST %s (order %d): no 2xx after retrying for %s; last: %s", path, i, c.giveUp, last)
			return placed{}, false
		}
		select { // polling a service that is down; the retry itself is the synchronisation
		case <-ctx.Done():
			return placed{}, false
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (c *retryingClient) post(ctx context.Context, url, key, body string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, b, resp.Header, nil
}

// unavailableProblem returns "" if b is the JSON error a 503 must carry
// ({"error": {"code": "unavailable", "message": "..."}}), else what is wrong with it.
func unavailableProblem(b []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Sprintf("not JSON (%v): %s", err, b)
	}
	if e.Error.Code != "unavailable" || e.Error.Message == "" {
		return fmt.Sprintf("want error code \"unavailable\" and a message: %s", b)
	}
	return ""
}

// load is a set of clients placing orders concurrently.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	orders []placed
	next   atomic.Int64
	n      atomic.Int64
}

// startLoad starts clients goroutines that place orders 0, 1, 2, … through c, order i at
// url(i), while more(i, accepted so far) holds. When the test ends, unfinished clients are
// stopped and waited for.
func startLoad(t *testing.T, c *retryingClient, clients int, url func(i int) string, more func(i, accepted int) bool) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for w := 0; w < clients; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				i := int(l.next.Add(1) - 1)
				if !more(i, l.accepted()) {
					return
				}
				p, ok := c.place(ctx, url(i), i)
				if !ok {
					continue
				}
				l.mu.Lock()
				l.orders = append(l.orders, p)
				l.mu.Unlock()
				l.n.Add(1)
			}
		}()
	}
	t.Cleanup(func() { cancel(); l.wg.Wait() })
	return l
}

func (l *load) accepted() int { return int(l.n.Load()) }

// wait waits until every client has stopped and returns the accepted orders.
func (l *load) wait() []placed {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.orders
}

func pathCounts(orders []placed) string {
	n := map[string]int{}
	for _, o := range orders {
		n[o.c.name]++
	}
	var parts []string
	for _, c := range pipelineCases {
		parts = append(parts, fmt.Sprintf("%s %d", c.name, n[c.name]))
	}
	return strings.Join(parts, ", ")
}

// checkLog checks the log and the projection against the accepted orders: the log holds
// exactly their streams, each exactly its path's events (versions 1..n without a gap, each
// event caused by the one before and sharing the first one's correlation id); each orders
// row is the path's end state and was projected exactly once (its version is the stream's
// length, its last_position the stream's last event); and stock moved by exactly what the
// completed orders reserved; and nothing was dead-lettered. It returns the number of events
// checked.
func checkLog(t *testing.T, env *testenv.Env, orders []placed, stockBefore map[string][2]int) int {
	t.Helper()
	type stream struct {
		types              []string
		lastPos            int64
		gap, badCause      string
		correlation, cause string
	}
	streams := map[int]*stream{}
	rows, err := env.DB.Query(`SELECT stream_id, version, event_type, position, metadata FROM events ORDER BY stream_id, version`)
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for rows.Next() {
		var id, version int
		var typ string
		var pos int64
		var meta []byte
		if err := rows.Scan(&id, &version, &typ, &pos, &meta); err != nil {
			t.Fatal(err)
		}
		events++
		s := streams[id]
		if s == nil {
			s = &stream{}
			streams[id] = s
		}
		var md struct {
			CorrelationID string `json:"correlationId"`
			CausationID   string `json:"causationId"`
		}
		if err := json.Unmarshal(meta, &md); err != nil {
			t.Errorf("order %d v%d: metadata %s: %v", id, version, meta, err)
		}
		if version != len(s.types)+1 && s.gap == "" {
			s.gap = fmt.Sprintf("version %d after %d events", version, len(s.types))
		}
		if version == 1 {
			s.correlation = md.CorrelationID
		} else if want := fmt.Sprintf("%d-%d", id, version-1); (md.CausationID != want || md.CorrelationID != s.correlation) && s.badCause == "" {
			s.badCause = fmt.Sprintf("v%d %s has causation %q correlation %q, want %q and %q", version, typ, md.CausationID, md.CorrelationID, want, s.correlation)
		}
		s.types = append(s.types, typ)
		s.lastPos = pos
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	type row struct {
		status, pay, inv string
		emailSent        bool
		version          int
		lastPos          int64
	}
	projected := map[int]row{}
	rows, err = env.DB.Query(`SELECT order_id, order_status, payment_status, inventory_status, email_sent, version, last_position FROM orders`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var r row
		if err := rows.Scan(&id, &r.status, &r.pay, &r.inv, &r.emailSent, &r.version, &r.lastPos); err != nil {
			t.Fatal(err)
		}
		projected[id] = r
	}
	rows.Close()

	if len(streams) != len(orders) || len(projected) != len(orders) {
		t.Errorf("log holds %d streams and the orders table %d rows, want %d (one per accepted order)", len(streams), len(projected), len(orders))
	}
	wantReserved := map[string]int{}
	seen := map[int]bool{}
	bad := 0
	var badCauses []string
	for _, o := range orders {
		if seen[o.id] {
			t.Errorf("order id %d was answered for two different placements", o.id)
		}
		seen[o.id] = true
		s, r, ok := streams[o.id], projected[o.id], true
		switch {
		case s == nil:
			t.Errorf("order %d (%s): no events in the log", o.id, o.c.name)
			ok = false
		case strings.Join(s.types, ",") != o.c.events || s.gap != "":
			t.Errorf("order %d (%s): events %s (%s), want %s", o.id, o.c.name, strings.Join(s.types, ","), s.gap, o.c.events)
			ok = false
		case r.status != o.c.status || r.pay != o.c.payment || r.inv != o.c.inventory || !r.emailSent:
			t.Errorf("order %d (%s): row %s/%s/%s/email_sent=%v, want %s/%s/%s/true", o.id, o.c.name, r.status, r.pay, r.inv, r.emailSent, o.c.status, o.c.payment, o.c.inventory)
			ok = false
		case r.version != len(s.types) || r.lastPos != s.lastPos:
			t.Errorf("order %d: row at version %d position %d, but its stream has %d events, the last at %d: not projected exactly once", o.id, r.version, r.lastPos, len(s.types), s.lastPos)
			ok = false
		}
		if s != nil && s.badCause != "" {
			badCauses = append(badCauses, fmt.Sprintf("order %d (%s): %s", o.id, o.c.name, s.badCause))
		}
		if !ok {
			if bad++; bad > 20 {
				t.Fatalf("too many wrong orders; stopping")
			}
		}
		for sku, q := range o.c.reserved {
			wantReserved[sku] += q
		}
	}
	if dead := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); dead != 0 {
		t.Errorf("%d messages were dead-lettered", dead)
	}
	if len(badCauses) > 0 {
		// The event sequence is right, but an event names the wrong cause: a stage acted on
		// the order's next step when handed a stale copy of an older trigger.
		t.Errorf("%d of %d orders hold an event not caused by the event before it: %s", len(badCauses), len(orders), firstFew(badCauses))
	}
	stockAfter := stock(t, env)
	for sku, before := range stockBefore {
		after := stockAfter[sku]
		if moved := before[0] - after[0]; moved != wantReserved[sku] || after[1]-before[1] != wantReserved[sku] {
			t.Errorf("stock %s: available %d→%d, reserved %d→%d; want exactly %d moved", sku, before[0], after[0], before[1], after[1], wantReserved[sku])
		}
	}
	return events
}

// checkEmails checks Mailpit for the emails of this test's shop (Message-IDs @mailDomain):
// each order got its path's email (subject naming the order and its outcome, to the
// customer's address) with the Message-ID of its decision (order-N-vV, V the version before
// EmailSent), and nothing else. With resendAllowed, an email may have been sent more than
// once (a crash between SMTP and the EmailSent append), but every copy carries the same
// Message-ID; without it, exactly one email per order. It returns the emails and how many
// of them were repeats.
func checkEmails(t *testing.T, env *testenv.Env, orders []placed, mailDomain string, resendAllowed bool) (emails, repeats int) {
	t.Helper()
	msgs, err := mailpit.New(env.MailpitURL).Search(context.Background(), "message-id:@"+mailDomain)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]placed{}
	for _, o := range orders {
		want[fmt.Sprintf("order-%d-v%d@%s", o.id, strings.Count(o.c.events, ","), mailDomain)] = o
	}
	outcome := map[string]string{"completed": "confirmed", "payment_failed": "payment declined", "cancelled": "cancelled"}
	copies := map[string]int{}
	bad := 0
	for _, m := range msgs {
		id := strings.Trim(m.MessageID, "<>")
		copies[id]++
		o, ok := want[id]
		switch {
		case !ok:
			t.Errorf("unexpected email %s to %v: %q (no order decided that email)", m.MessageID, m.To, m.Subject)
		case len(m.To) != 1 || m.To[0].Address != o.email || !strings.Contains(m.Subject, fmt.Sprintf("Order %d", o.id)) || !strings.Contains(m.Subject, outcome[o.c.status]):
			t.Errorf("email %s: to %v subject %q, want to %s about order %d being %s", m.MessageID, m.To, m.Subject, o.email, o.id, outcome[o.c.status])
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatalf("too many wrong emails; stopping")
		}
	}
	var missing, multi []string
	for id, o := range want {
		switch n := copies[id]; {
		case n == 0:
			missing = append(missing, fmt.Sprintf("%d (%s)", o.id, o.c.name))
		case n > 1:
			repeats += n - 1
			multi = append(multi, fmt.Sprintf("%s ×%d", id, n))
		}
	}
	sort.Strings(missing)
	sort.Strings(multi)
	if len(missing) > 0 {
		t.Errorf("%d of %d orders got no email: %s", len(missing), len(orders), firstFew(missing))
	}
	if !resendAllowed && len(multi) > 0 {
		t.Errorf("%d orders got their email more than once: %s", len(multi), firstFew(multi))
	}
	return len(msgs), repeats
}

func firstFew(s []string) string {
	if len(s) > 10 {
		return strings.Join(s[:10], ", ") + fmt.Sprintf(", … (%d more)", len(s)-10)
	}
	return strings.Join(s, ", ")
}

// waitQueuesDrained waits until none of the three stage queues holds a message, visible or
// in flight (so every copy of every message was received and handled), and checks that the
// dead-letter queues are empty. It returns how long it waited.
func waitQueuesDrained(t *testing.T, env *testenv.Env, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	qcfg := queues.Config{Endpoint: env.SQSEndpoint, Emulator: queues.Emulator(env.SQSEmulator), Region: "us-east-1", Prefix: env.QueuePrefix}
	awsCfg, err := queues.AWSConfig(context.Background(), qcfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, qcfg)
	depth := func(name string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		u, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			return 0, err
		}
		out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: u.QueueUrl,
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages}})
		if err != nil {
			return 0, err
		}
		var n int
		_, err = fmt.Sscan(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)], &n)
		return n, err
	}
	waitFor(t, timeout, "the stage queues to drain", func() (bool, string) {
		var state []string
		total := 0
		for _, q := range qcfg.All() {
			n, err := depth(q)
			if err != nil {
				return false, err.Error()
			}
			total += n
			state = append(state, fmt.Sprintf("%s %d", strings.TrimPrefix(q, env.QueuePrefix), n))
		}
		return total == 0, strings.Join(state, ", ")
	})
	for _, q := range qcfg.All() {
		if n, err := depth(q + queues.DLQSuffix); err != nil || n != 0 {
			t.Errorf("dead-letter queue %s holds %d messages (%v)", q+queues.DLQSuffix, n, err)
		}
	}
	return time.Since(start)
}

// checkReplay runs `orderd replay` and checks that the rebuilt orders table equals the live
// one, byte for byte; it returns replay's report.
func checkReplay(t *testing.T, env *testenv.Env, n int) string {
	t.Helper()
	before := dumpTable(t, env, "orders")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"replay"}, env.Getenv(nil), &out, &errOut); err != nil {
		t.Fatalf("orderd replay: %v\n%s", err, errOut.String())
	}
	after := dumpTable(t, env, "orders")
	if len(before) != n || len(after) != n {
		t.Fatalf("replay: %d rows before, %d after, want %d", len(before), len(after), n)
	}
	changed := 0
	for i := range before {
		if before[i] != after[i] {
			if changed++; changed <= 5 {
				t.Errorf("replay changed a row:\n before %s\n after  %s", before[i], after[i])
			}
		}
	}
	if changed > 0 {
		t.Errorf("replay changed %d of %d rows", changed, n)
	}
	return strings.TrimSpace(out.String())
}
