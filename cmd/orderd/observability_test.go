package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"orderd/internal/testenv"
	"orderd/pipeline"
)

// scrape returns the service's metrics as "name{labels}" → value text.
func scrape(t *testing.T, baseURL string) map[string]string {
	t.Helper()
	resp, err := testenv.OperatorGet(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

// TestMetricsAndReadiness follows orders through the pipeline and reads what /metrics and
// /readyz say about them.
func TestMetricsAndReadiness(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain})
	const n = 20
	for i := 0; i < n; i++ {
		if code, body := postJSON(t, srv.URL+"/place-order", fmt.Sprintf(`{"customerName":"Metric %d"}`, i)); code != 200 {
			t.Fatalf("place: %d %s", code, body)
		}
	}
	waitFinished(t, env, n, 60*time.Second)

	want := map[string]string{
		`orderd_events_appended_total{type="OrderPlaced"}`:                                              fmt.Sprint(n),
		`orderd_events_appended_total{type="EmailSent"}`:                                                fmt.Sprint(n),
		`orderd_orders{status="completed"}`:                                                             fmt.Sprint(n),
		`orderd_http_requests_total{method="POST",route="/place-order",status="200"}`:                   fmt.Sprint(n),
		`orderd_outbox_pending_events`:                                                                  "0",
		`orderd_commit_orders_sum`:                                                                      fmt.Sprint(4 * n), // four appends per order, whatever the commits' sizes
		`orderd_projection_lag_events`:                                                                  "0",
		fmt.Sprintf(`orderd_dead_letter_queue_messages{queue="%sPaymentStatusQueue"}`, env.QueuePrefix): "0",
	}
	var got map[string]string
	waitFor(t, 10*time.Second, "the metrics to account for every order", func() (bool, string) {
		got = scrape(t, srv.URL)
		for k, v := range want {
			if got[k] != v {
				return false, fmt.Sprintf("%s = %q, want %q", k, got[k], v)
			}
		}
		return true, ""
	})
	for _, op := range []string{"ReceiveMessage", "DeleteMessageBatch", "SendMessageBatch"} {
		if got[fmt.Sprintf(`orderd_sqs_requests_total{operation="%s"}`, op)] == "" {
			t.Errorf("no count of SQS %s requests", op)
		}
	}
	for _, stage := range pipeline.Queues() {
		key := fmt.Sprintf(`orderd_stage_messages_total{outcome="handled",stage="%s"}`, stage)
		if got[key] == "" || got[key] == "0" {
			t.Errorf("%s = %q, want at least %d (every trigger, plus duplicates)", key, got[key], n)
		}
		if got[fmt.Sprintf(`orderd_stage_handling_seconds_count{stage="%s"}`, stage)] == "" {
			t.Errorf("no handling-time histogram for %s", stage)
		}
	}

	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready struct {
		Status string
		Checks map[string]string
	}
	json.NewDecoder(resp.Body).Decode(&ready) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != 200 || ready.Status != "ok" || len(ready.Checks) != 4 ||
		ready.Checks["mysql"] != "ok" || ready.Checks["sqs"] != "ok" || ready.Checks["migrations"] != "ok" || ready.Checks["relay_lag"] != "ok" {
		t.Errorf("GET /readyz: %d %+v", resp.StatusCode, ready)
	}

	// Readiness fails, naming the check, when the relay falls behind: an event for a queue
	// that does not exist can never be sent, and it has waited an hour.
	env.MustExec(t, `INSERT INTO outbox (position, queue, event_id, event_type, correlation_id, body, created_at)
		VALUES (999999, 'nowhere', 'x', 'x', '', '{}', UTC_TIMESTAMP(6) - INTERVAL 1 HOUR)`)
	resp, err = http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var notReady struct {
		Status string
		Checks map[string]string
	}
	json.NewDecoder(resp.Body).Decode(&notReady) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || notReady.Checks["relay_lag"] != "unavailable" || notReady.Checks["mysql"] != "ok" {
		t.Errorf("GET /readyz with a stuck relay: %d %+v", resp.StatusCode, notReady)
	}
	// The body names the check; the log says why.
	if b, _ := os.ReadFile(srv.logs); !strings.Contains(string(b), "oldest unrelayed event") {
		t.Errorf("the log does not say why relay_lag failed")
	}
	t.Logf("metrics counted %d orders through every stage; /readyz: %v, then with a stuck relay: %v", n, ready.Checks, notReady.Checks)
}
