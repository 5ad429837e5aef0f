package main

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// TestThreeInstances runs three `orderd serve` processes, every component in each, against
// the same database and the same queues, and spreads clients over their three APIs. Their
// stages compete for every queue (goaws hands one message to several receivers at once, and
// each relay and sweeper works the same outbox), yet every order must follow its path once:
// each event once, one reservation, exactly one email, and an orders projection written
// exactly once per event that replay reproduces.
//
// The stages keep the default visibility timeout (30 s, so 5 s per handler attempt): with 6 s
// an attempt had 1 s, and on a loaded machine an email step cut off between its SMTP send and
// its append sent the email again (at least once by design, with the same Message-ID), which
// this test's "exactly one email" cannot tell from a bug.
//
// It runs on a private MariaDB server with the default max_connections (151), as a user's
// server would be, rather than on the shared one, whose connections other tests use up.
func TestThreeInstances(t *testing.T) {
	testenv.Require(t, "TEST_MYSQL_DSN") // skip under -short before building a server
	db := testenv.StartMariaDB(t)
	t.Setenv("TEST_MYSQL_DSN", db.DSN)
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	bin := testenv.BuildOrderd(t)
	const instances = 3
	var procs []*testenv.Process
	var urls []string
	for i := 1; i <= instances; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		procs = append(procs, testenv.StartProcess(t, fmt.Sprintf("orderd-%d", i), []string{bin, "serve"}, childEnviron(env, map[string]string{
			"HTTP_ADDR": addr, "MAIL_FROM": "orders@" + mailDomain, "REDRIVE_AFTER": "2s",
		}), addr))
		urls = append(urls, "http://"+addr)
	}

	stockBefore := stock(t, env)
	conns := sampleConnections(t, env)
	const perCase, clients = 120, 12 // 5 paths × 120 = 600 orders
	n := perCase * len(pipelineCases)
	start := time.Now()
	var mu sync.Mutex
	var orders []placed
	perInstance := make([]int, instances)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				p, ok := placeOne(t, urls[i%instances], mailDomain, i)
				if !ok {
					continue
				}
				mu.Lock()
				orders = append(orders, p)
				perInstance[i%instances]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	placedIn := time.Since(start)
	waitFinished(t, env, n, 2*time.Minute)
	finished := time.Since(start)
	waitQueuesDrained(t, env, time.Minute)
	peakConns := conns()
	for _, p := range procs {
		if p.Exited() {
			t.Errorf("%s exited by itself during the test", p.Name)
		}
	}

	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain) // exactly one email per order
	checkLog(t, env, orders, stockBefore)                                  // exactly-once projection, causation chain
	checkCustomers(t, env)                                                 // three consumers of the feed, each order once
	if left := env.Count(t, `SELECT COUNT(*) FROM outbox`); left != 0 {
		t.Errorf("outbox still holds %d rows", left)
	}
	replayed := checkReplay(t, env, n)
	var stops []string
	for _, p := range procs {
		if err := p.Stop(40 * time.Second); err != nil {
			t.Errorf("graceful stop: %v", err)
			continue
		}
		stops = append(stops, p.Name+" ok")
	}

	t.Logf("orders: %d (%d per path) from %d clients over %d instances (%v accepted each) in %.1fs; all terminal after %.1fs",
		n, perCase, clients, instances, perInstance, placedIn.Seconds(), finished.Seconds())
	t.Logf("MySQL connections of the three instances: at most %d open at once (max_connections %d)", peakConns, env.Count(t, `SELECT @@max_connections`))
	t.Logf("checked: %d events (each path exactly, versions 1..n, causation chain), %d orders rows with version = stream length, stock, %d emails (exactly one per order); %d orders re-driven by the sweepers; SIGTERM: %s",
		events, n, emails, env.Count(t, `SELECT COUNT(*) FROM order_redrives`), strings.Join(stops, ", "))
	t.Logf("replay: %s", replayed)
}

// sampleConnections counts, every 50 ms, the connections the server has open to the test's
// database, until the returned function is called; that returns the highest count seen.
func sampleConnections(t *testing.T, env *testenv.Env) func() int {
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		peak := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int
			if err := env.DB.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ?`, env.DBName).Scan(&n); err == nil && n > peak {
				peak = n
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	peak := 0
	return func() int {
		once.Do(func() { close(stop); peak = <-done })
		return peak
	}
}
