package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// TestNothingLostWhenMySQLRestarts kills MySQL (a private MariaDB server: the shared one
// must never be stopped) with SIGKILL in the middle of a load and starts it again on the
// same data directory about two seconds later. While it is down, POST /orders must answer
// 503 with a JSON error (never a 500, never a 2xx) and /healthz 503 naming mysql; clients
// retry with their Idempotency-Key. Once it is back, every order that was answered 2xx, before,
// during or after the outage, must finish exactly as if nothing had happened.
func TestNothingLostWhenMySQLRestarts(t *testing.T) {
	testenv.Require(t, "TEST_MYSQL_DSN") // skip under -short before building a server
	mysqld := testenv.StartMariaDB(t)
	t.Setenv("TEST_MYSQL_DSN", mysqld.DSN)
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "REDRIVE_AFTER": "2s", "VISIBILITY_TIMEOUT": "6s"})

	stockBefore := stock(t, env)
	const clients, n, killAt, outage = 8, 600, 300, 2 * time.Second
	client := newRetryingClient(t, env.ID, mailDomain)
	start := time.Now()
	ld := startLoad(t, client, clients, func(int) string { return srv.URL }, func(i, _ int) bool {
		return i < n
	})
	waitFor(t, time.Minute, fmt.Sprintf("%d orders accepted", killAt), func() (bool, string) {
		return ld.accepted() >= killAt, fmt.Sprintf("%d accepted", ld.accepted())
	})
	unfinished := env.Count(t, `SELECT COUNT(*) FROM orders WHERE NOT (email_sent = 1 AND order_status IN ('completed','payment_failed','cancelled'))`)
	acceptedBefore := ld.accepted()
	unavailableBefore := client.unavailable.Load()
	mysqld.Kill()
	killedAt := time.Now()

	// While it is down: the API says so, clearly.
	postStatus, postBody := 0, ""
	healthStatus, healthBody := 0, ""
	waitFor(t, 10*time.Second, "POST /orders and /healthz to answer 503", func() (bool, string) {
		if postStatus != http.StatusServiceUnavailable {
			postStatus, postBody = probe(t, http.MethodPost, srv.URL+"/orders", env.ID+"-probe",
				fmt.Sprintf(`{"customerName":"Probe","customerEmail":"probe@%s","items":[{"sku":"SKU-BOOK","quantity":1}]}`, mailDomain))
			if postStatus/100 == 2 || postStatus == http.StatusInternalServerError {
				t.Fatalf("POST /orders while MySQL is down: %d %s", postStatus, postBody)
			}
		}
		if healthStatus != http.StatusServiceUnavailable {
			healthStatus, healthBody = probe(t, http.MethodGet, srv.URL+"/healthz", "", "")
		}
		return postStatus == http.StatusServiceUnavailable && healthStatus == http.StatusServiceUnavailable,
			fmt.Sprintf("POST /orders %d %s; /healthz %d %s", postStatus, postBody, healthStatus, healthBody)
	})
	if msg := unavailableProblem([]byte(postBody)); msg != "" {
		t.Errorf("POST /orders while MySQL is down: %s", msg)
	}
	var health struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	// Anonymous, so it names the failing check and nothing more (the log says why).
	if err := json.Unmarshal([]byte(healthBody), &health); err != nil || health.Status == "ok" ||
		health.Checks["mysql"] != "unavailable" || strings.Contains(healthBody, "127.0.0.1") {
		t.Errorf("/healthz while MySQL is down: %s, want 503 with checks.mysql \"unavailable\" and no address", healthBody)
	}
	before := ld.accepted()
	time.Sleep(time.Until(killedAt.Add(outage))) // the outage: its length is the point
	acceptedWhileDown := ld.accepted() - before
	mysqld.Start()
	mysqld.WaitReady(t, 30*time.Second)
	upAt := time.Now()
	unavailableDuring := client.unavailable.Load() - unavailableBefore

	orders := ld.wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(orders) != n {
		t.Fatalf("%d of %d orders were accepted", len(orders), n)
	}
	t.Logf("orders: %d accepted from %d clients (%s); MySQL (private MariaDB) SIGKILLed after %d accepted (%.1fs), %d of them unfinished, restarted %.1fs later",
		n, clients, pathCounts(orders), acceptedBefore, killedAt.Sub(start).Seconds(), unfinished, upAt.Sub(killedAt).Seconds())
	t.Logf("while down: POST /orders %d %s; /healthz %d %s; clients got %d × 503 (JSON, code unavailable) and retried with the same key; %d requests got no answer; %d orders accepted during the outage",
		postStatus, strings.TrimSpace(postBody), healthStatus, strings.TrimSpace(healthBody), unavailableDuring, client.connErrors.Load(), acceptedWhileDown)
	if code, body := probe(t, http.MethodGet, srv.URL+"/healthz", "", ""); code != http.StatusOK {
		t.Errorf("/healthz after MySQL came back: %d %s", code, body)
	}
	waitFinished(t, env, n, 2*time.Minute)
	finished := time.Since(upAt)
	// Messages that failed while MySQL was down were nacked and come back after the
	// visibility timeout (30 s): wait until they are absorbed too.
	waitQueuesDrained(t, env, 75*time.Second)
	events := checkLog(t, env, orders, stockBefore)
	emails, resent := checkEmails(t, env, orders, mailDomain, true)
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}
	replayed := checkReplay(t, env, n)

	t.Logf("checked: all terminal %.1fs after MySQL came back; %d events (each path exactly, causation chain), exactly-once projection, stock, %d emails of which %d resent (same Message-ID); %d orders re-driven by the sweeper",
		finished.Seconds(), events, emails, resent, env.Count(t, `SELECT COUNT(*) FROM order_redrives`))
	t.Logf("replay: %s", replayed)
}

// probe sends one request and returns its status and body; a request that gets no answer
// fails the test (the API itself must stay up while MySQL is away).
func probe(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
