package main

import (
	"sync"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// TestNothingLostWhenQueueRestarts kills the SQS emulator (SIGKILL: every queue and every
// queued message is gone) in the middle of a load and restarts it. Orders accepted before,
// during and after must all finish, each exactly once: the relay re-creates the queues and
// resends what it had not delivered, and the sweeper re-drives, from the log, the orders
// whose messages died with the emulator.
func TestNothingLostWhenQueueRestarts(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	goaws := testenv.StartGoaws(t)
	env.SQSEndpoint = goaws.URL
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "REDRIVE_AFTER": "2s"})

	stockBefore := stock(t, env)
	const n, restartAt = 300, 120
	var once sync.Once
	orders := placeOrders(t, srv.URL, mailDomain, n, func(done int) {
		if done >= restartAt {
			once.Do(goaws.Restart)
		}
	})
	waitFinished(t, env, n, 90*time.Second)
	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain)
	redriven := env.Count(t, `SELECT COUNT(*) FROM order_redrives`)
	t.Logf("SQS emulator restarted after %d of %d orders; %d orders re-driven by the sweeper; checked %d events, %d emails",
		restartAt, n, redriven, events, emails)
}
