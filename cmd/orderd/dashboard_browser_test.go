package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"orderd/internal/testenv"
	"orderd/ordering"
)

// TestDashboardInBrowser drives the dashboard at / in headless Chromium against the real
// service: it places an order through the form, watches the page until the order is
// completed (list row, detail badge and a four-event timeline), checks the stock and lag
// panels, and takes a screenshot (docs/dashboard.png with UPDATE_SCREENSHOT=1).
func TestDashboardInBrowser(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	chromium := ensureChromium(t)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain})
	base := dashboardBase(t, env, srv.URL)

	// A few orders down the other paths first, so the page shows more than one status.
	for _, body := range []string{
		`{"customerName":"Grace","customerEmail":"grace@` + mailDomain + `","items":[{"sku":"SKU-TSHIRT","quantity":60}]}`,
		`{"customerName":"Linus","customerEmail":"linus@` + mailDomain + `","items":[{"sku":"SKU-POSTER","quantity":11}]}`,
		`{"customerName":"Ken","customerEmail":"ken@` + mailDomain + `","items":[{"sku":"SKU-TSHIRT","quantity":1}]}`,
	} {
		if code, b := postJSON(t, srv.URL+"/orders", body); code != http.StatusAccepted {
			t.Fatalf("POST /orders: %d %s", code, b)
		}
	}

	ctx := newBrowser(t, chromium)
	var jsErrors []string
	var mu sync.Mutex
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			jsErrors = append(jsErrors, e.ExceptionDetails.Error())
		case *cdplog.EventEntryAdded:
			// The page must work under its Content-Security-Policy: a blocked script,
			// style or connection is reported here.
			if e.Entry.Source == cdplog.SourceSecurity || strings.Contains(e.Entry.Text, "Content Security Policy") {
				jsErrors = append(jsErrors, "blocked: "+e.Entry.Text)
			}
		}
	})
	// The operator's login, sent with every request the page makes (as a browser does once
	// its user has answered the Basic challenge).
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	testenv.AsOperator(req)
	if err := chromedp.Run(ctx, network.Enable(), network.SetExtraHTTPHeaders(network.Headers{"Authorization": req.Header.Get("Authorization")})); err != nil {
		t.Fatalf("give the browser the operator's login: %v", err)
	}

	start := time.Now()
	run := func(what string, timeout time.Duration, actions ...chromedp.Action) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := chromedp.Run(c, actions...); err != nil {
			var html string
			_ = chromedp.Run(ctx, chromedp.OuterHTML("main", &html, chromedp.ByQuery))
			t.Fatalf("%s: %v\npage:\n%s", what, err, html)
		}
	}

	run("open the dashboard", 30*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#place-form", chromedp.ByQuery),
		chromedp.WaitVisible(`#stock tr[data-sku="SKU-BOOK"]`, chromedp.ByQuery),
	)
	run("fill in the order form", 10*time.Second,
		chromedp.SendKeys("#customer-name", "Ada Lovelace", chromedp.ByQuery),
		chromedp.SendKeys("#customer-email", "ada@"+mailDomain, chromedp.ByQuery),
		chromedp.SetValue("#item-lines .item-line:nth-child(1) .item-sku", "SKU-BOOK", chromedp.ByQuery),
		chromedp.SetValue("#item-lines .item-line:nth-child(1) .item-qty", "2", chromedp.ByQuery),
		chromedp.Click("#add-line", chromedp.ByQuery),
		chromedp.WaitVisible("#item-lines .item-line:nth-child(2)", chromedp.ByQuery),
		chromedp.SetValue("#item-lines .item-line:nth-child(2) .item-sku", "SKU-MUG", chromedp.ByQuery),
		chromedp.SetValue("#item-lines .item-line:nth-child(2) .item-qty", "1", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector("#item-lines").dispatchEvent(new Event("input", {bubbles: true}))`, nil),
	)
	var total string
	run("read the form total", 5*time.Second, chromedp.Text("#form-total", &total, chromedp.ByQuery))
	if !strings.Contains(total, "34.97") { // 2 × 12.99 + 8.99
		t.Errorf("form total = %q, want 34.97", total)
	}

	var id int
	run("place the order through the form", 15*time.Second,
		chromedp.Click("#place-submit", chromedp.ByQuery),
		chromedp.Poll(`(() => { const m = document.querySelector("#form-message").textContent.match(/Order #(\d+) placed/); return m ? Number(m[1]) : 0; })()`,
			&id, chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	placedAt := time.Now()
	t.Logf("order %d placed through the form", id)

	// The page polls every second; the order must walk to completed on the page itself.
	var steps []string
	run("watch the order reach completed on the page", 60*time.Second,
		chromedp.Poll(fmt.Sprintf(`(() => {
			const row = document.querySelector('#orders tr[data-id="%d"] td:nth-child(5) .badge');
			const detail = document.querySelector("#detail-status");
			const events = [...document.querySelectorAll("#timeline li")].map((li) => li.dataset.type);
			return row && row.dataset.status === "completed" && detail.dataset.status === "completed" && events.includes("EmailSent") ? events : false;
		})()`, id), &steps, chromedp.WithPollingInterval(100*time.Millisecond)),
	)
	t.Logf("order %d shown completed %s after placing; timeline: %s", id, time.Since(placedAt).Round(time.Millisecond), strings.Join(steps, " → "))
	if got, want := strings.Join(steps, ","), "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent"; got != want {
		t.Errorf("timeline = %s, want %s", got, want)
	}
	// The stage cell is drawn from the pipeline table the API sends: one badge per stage, in
	// the table's order, under a heading that names them.
	var badges []string
	var heading string
	run("read the order's stage badges", 5*time.Second,
		chromedp.Poll(fmt.Sprintf(`(() => {
			const b = [...document.querySelectorAll('#orders tr[data-id="%d"] .stage')].map((b) => b.dataset.stage + "=" + b.dataset.status);
			return b.length ? b : false;
		})()`, id), &badges, chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.Evaluate(`document.querySelector("#orders-table thead th:nth-child(6)").textContent`, &heading))
	if got, want := strings.Join(badges, ","), "payment=completed,inventory=completed,email=sent"; got != want {
		t.Errorf("stage badges = %s, want %s", got, want)
	}
	if heading != "Payment · inventory · email" {
		t.Errorf("stage column heading = %q", heading)
	}
	if status := env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id = ? AND order_status = 'completed'`, id); status != 1 {
		t.Errorf("order %d is not completed in the orders table", id)
	}

	// Every order settled, the relay caught up: the page says so.
	waitFinished(t, env, 4, 60*time.Second)
	var correlation, outboxWaiting string
	run("check timeline ids, stock and lag panels", 20*time.Second,
		chromedp.Poll(`document.querySelector('#stock tr[data-sku="SKU-BOOK"] td:nth-child(4)').textContent === "2"`, nil),
		chromedp.Poll(`document.querySelector("#lag-outbox").textContent === "0" && document.querySelector("#lag-projection").textContent === "0 events"`, nil),
		chromedp.Poll(`document.querySelector('#filters button[data-status="completed"] .count').textContent === "2" &&
			document.querySelector('#filters button[data-status="cancelled"] .count').textContent === "1" &&
			document.querySelector('#filters button[data-status="payment_failed"] .count').textContent === "1"`, nil),
		// Read in the page, in one step: the page re-renders its panels every second, and a
		// node looked up first and read after ("chromedp.Text") can be gone in between.
		chromedp.Poll(`(() => { const c = document.querySelector("#timeline li:first-child .ev-ids code"); return c ? c.textContent : false; })()`, &correlation),
		chromedp.Poll(`(() => { const c = document.querySelector("#lag-outbox"); return c ? c.textContent : false; })()`, &outboxWaiting),
	)
	if correlation == "" || correlation == "—" {
		t.Errorf("timeline shows no correlation id for OrderPlaced")
	}

	// The status filter narrows the list.
	var ids []int
	run("filter the list to cancelled orders", 10*time.Second,
		chromedp.Click(`#filters button[data-status="cancelled"]`, chromedp.ByQuery),
		chromedp.Poll(`(() => { const rows = [...document.querySelectorAll("#orders tr[data-id]")];
			return rows.length > 0 && rows.every((r) => r.querySelector("td:nth-child(5) .badge").dataset.status === "cancelled") ? rows.map((r) => Number(r.dataset.id)) : false; })()`,
			&ids, chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.Click(`#filters button[data-status="all"]`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelectorAll("#orders tr[data-id]").length === 4`, nil),
	)
	if len(ids) != 1 {
		t.Errorf("cancelled filter shows orders %v, want one", ids)
	}

	var png []byte
	run("take a screenshot", 15*time.Second,
		chromedp.Evaluate(`document.activeElement && document.activeElement.blur()`, nil),
		chromedp.FullScreenshot(&png, 100),
	)
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		_, file, _, _ := runtime.Caller(0)
		shot = filepath.Join(filepath.Dir(file), "..", "..", "docs", "dashboard.png")
		if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("the page threw: %s", strings.Join(jsErrors, "; "))
	}
	t.Logf("browser part took %s; screenshot (%d KiB) at %s", time.Since(start).Round(time.Millisecond), len(png)>>10, shot)
}

// TestDashboardAPI checks the dashboard's JSON endpoints directly: filters, paging,
// validation errors in the API's error shape, stock, dead letters and lag.
func TestDashboardAPI(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + env.ID + ".example"})
	base := dashboardBase(t, env, srv.URL)
	for i := 0; i < 3; i++ {
		if code, b := postJSON(t, srv.URL+"/orders", `{"customerName":"P","customerEmail":"p@`+env.ID+`.example","items":[{"sku":"SKU-MUG","quantity":1}]}`); code != http.StatusAccepted {
			t.Fatalf("POST /orders: %d %s", code, b)
		}
	}
	waitFinished(t, env, 3, 60*time.Second)
	env.MustExec(t, `INSERT INTO dead_letters (order_id, version, queue, event_id, event_type, reason, dead_at)
		SELECT order_id, version, 'EmailNotificationQueue', CONCAT(order_id, '-', version), 'EmailSent', 'test: poisoned', NOW(6) FROM orders ORDER BY order_id LIMIT 1`)

	get := func(path string, wantStatus int, v any) {
		t.Helper()
		resp, err := testenv.OperatorGet(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %s %s, want %d JSON", path, resp.StatusCode, resp.Header.Get("Content-Type"), b, wantStatus)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, b)
		}
	}

	var page struct {
		Orders []struct {
			OrderID     int    `json:"orderId"`
			OrderStatus string `json:"orderStatus"`
			Stuck       string `json:"stuck"`
		} `json:"orders"`
		Next   *int             `json:"next"`
		Counts map[string]int64 `json:"counts"`
	}
	get("/api/dashboard/orders?status=completed&limit=2", http.StatusOK, &page)
	if len(page.Orders) != 2 || page.Next == nil || page.Orders[0].OrderID <= page.Orders[1].OrderID || page.Counts["completed"] != 3 {
		t.Errorf("first page: %+v", page)
	}
	next := *page.Next
	page.Next = nil
	get(fmt.Sprintf("/api/dashboard/orders?status=completed&limit=2&before=%d", next), http.StatusOK, &page)
	if len(page.Orders) != 1 || page.Next != nil || page.Orders[0].OrderID != 1 || page.Orders[0].Stuck != "test: poisoned" {
		t.Errorf("second page: %+v", page)
	}
	get("/api/dashboard/orders?status=pending", http.StatusOK, &page)
	if len(page.Orders) != 0 {
		t.Errorf("pending: %+v", page.Orders)
	}

	var e struct {
		Error struct{ Code, Field, Message string } `json:"error"`
	}
	for path, field := range map[string]string{
		"/api/dashboard/orders?status=lost": "status", "/api/dashboard/orders?limit=0": "limit",
		"/api/dashboard/orders?before=x": "before", "/api/dashboard/dead-letters?limit=1000": "limit",
	} {
		get(path, http.StatusBadRequest, &e)
		if e.Error.Code != "invalid" || e.Error.Field != field || e.Error.Message == "" {
			t.Errorf("GET %s: error %+v, want invalid %s", path, e.Error, field)
		}
	}

	var stock struct{ Stock []ordering.StockItem }
	get("/api/dashboard/stock", http.StatusOK, &stock)
	for _, s := range stock.Stock {
		if s.SKU == "SKU-MUG" && s.Reserved != 3 {
			t.Errorf("SKU-MUG reserved %d, want 3", s.Reserved)
		}
	}
	var dead struct {
		DeadLetters []struct {
			OrderID *int   `json:"orderId"`
			Reason  string `json:"reason"`
			Holding bool   `json:"holding"`
		} `json:"deadLetters"`
		Total int `json:"total"`
	}
	get("/api/dashboard/dead-letters", http.StatusOK, &dead)
	if dead.Total != 1 || len(dead.DeadLetters) != 1 || !dead.DeadLetters[0].Holding || dead.DeadLetters[0].Reason != "test: poisoned" {
		t.Errorf("dead letters: %+v", dead)
	}
	var lag struct {
		Outbox struct {
			Waiting int64 `json:"waiting"`
		} `json:"outbox"`
		Projection struct {
			LogPosition  int64  `json:"logPosition"`
			EventsBehind *int64 `json:"eventsBehind"`
		} `json:"projection"`
	}
	get("/api/dashboard/lag", http.StatusOK, &lag)
	if lag.Outbox.Waiting != 0 || lag.Projection.LogPosition != 12 || lag.Projection.EventsBehind == nil || *lag.Projection.EventsBehind != 0 {
		t.Errorf("lag: %+v", lag)
	}
	t.Logf("orders paged newest first with counts; stuck flag from dead_letters; 4 invalid queries answered 400 with the field; stock, dead letters, lag (log position %d, 0 behind)", lag.Projection.LogPosition)
}

// dashboardBase checks that orderd serves the dashboard at / and returns its base URL.
func dashboardBase(t *testing.T, env *testenv.Env, orderdURL string) string {
	t.Helper()
	resp, err := testenv.OperatorGet(orderdURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s, want the dashboard page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return orderdURL
}

// newBrowser starts headless Chromium with a fresh profile and returns a tab's context,
// closed when the test ends.
func newBrowser(t *testing.T, execPath string) context.Context {
	t.Helper()
	// A fresh profile, removed after the browser is gone (its helper processes may still
	// be writing for a moment after it exits, which t.TempDir's cleanup would fail on).
	profile, err := os.MkdirTemp("", "orderd-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(execPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // root in a container has no user namespace for the sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 1000),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		for i := 0; i < 50 && os.RemoveAll(profile) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	// The first Run starts the browser and binds it to the context it is given, so it must
	// be ctx itself: a derived context with a timeout would close the browser when done.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", execPath, err)
	}
	return ctx
}

// ensureChromium returns the path of a Chromium, installing Debian's package with apt-get
// when it is missing and the test runs as root; it skips the test, saying why, only where
// Chromium cannot be had.
func ensureChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	find := func() string {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("Chromium is not installed and this test is not root, so it cannot apt-get it: run scripts/install-chromium.sh as root (or set CHROMIUM to a Chrome binary)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("Chromium is not installed and there is no apt-get to install it: set CHROMIUM to a Chrome binary")
	}
	t.Log("installing Debian's chromium with apt-get (once per machine, about a minute)")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("Chromium could not be installed (apt-get: %v); the browser test needs it:\n%s", err, tail(out, 2000))
	}
	if p := find(); p != "" {
		return p
	}
	t.Skip("apt-get installed chromium but no chromium binary is on PATH")
	return ""
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
