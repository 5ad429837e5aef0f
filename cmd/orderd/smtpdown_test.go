package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// smtpGate is a TCP front for the real SMTP server that refuses every connection until it
// is opened: the mail server is "down", then comes back on the same address.
type smtpGate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	open   bool
}

func newSMTPGate(t *testing.T, target string) *smtpGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &smtpGate{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go g.serve()
	return g
}

func (g *smtpGate) Addr() string { return g.ln.Addr().String() }

func (g *smtpGate) Open() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
}

func (g *smtpGate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		if !open {
			c.Close() // down: the client sees the connection dropped before the greeting
			continue
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", g.target)
			if err != nil {
				return
			}
			defer up.Close()
			go io.Copy(up, c) //nolint:errcheck // ends when either side closes
			io.Copy(c, up)    //nolint:errcheck // ends when either side closes
		}()
	}
}

// TestOrdersWaitForTheMailServer runs the pipeline while the SMTP server is down: orders are
// paid and reserved but cannot be confirmed; the email stage retries (in process, then by
// redelivery and re-drive) and does not dead-letter them as poisoned. When the server comes
// back every order finishes, each with exactly one email.
func TestOrdersWaitForTheMailServer(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	gate := newSMTPGate(t, env.SMTPAddr)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "SMTP_ADDR": gate.Addr(),
		"REDRIVE_AFTER": "2s", "VISIBILITY_TIMEOUT": "6s"})

	stockBefore := stock(t, env)
	const n = 50
	orders := placeOrders(t, srv.URL, mailDomain, n, nil)
	// Every order reaches the email step, and none gets past it while the server is down.
	waitFor(t, 60*time.Second, "every order to wait for its email", func() (bool, string) {
		waiting := env.Count(t, `SELECT COUNT(*) FROM orders WHERE email_sent = 0 AND
			(inventory_status = 'completed' OR payment_status IN ('failed', 'refunded'))`)
		return waiting == n, fmt.Sprintf("%d of %d waiting for the mail server", waiting, n)
	})
	if sent := env.Count(t, `SELECT COUNT(*) FROM events WHERE event_type = 'EmailSent'`); sent != 0 {
		t.Fatalf("%d EmailSent events while the mail server was down", sent)
	}
	if poisoned := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); poisoned != 0 {
		t.Fatalf("%d messages dead-lettered as poisoned while the mail server was merely down", poisoned)
	}

	// Keep the server down until the outage has outlasted the in-process retries: the sweeper
	// has found orders stuck for REDRIVE_AFTER and driven their email step again.
	waitFor(t, 60*time.Second, "the sweeper to re-drive orders stuck on the email step", func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM order_redrives`)
		return n > 0, fmt.Sprintf("%d re-driven", n)
	})
	redriven := env.Count(t, `SELECT COUNT(*) FROM order_redrives`)
	gate.Open()
	waitFinished(t, env, n, 90*time.Second)
	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain)
	t.Logf("%d orders waited at the email step while SMTP was down (%d re-driven by the sweeper meanwhile), none poisoned; after it came back all finished: %d events, %d emails (one each)",
		n, redriven, events, emails)
}
