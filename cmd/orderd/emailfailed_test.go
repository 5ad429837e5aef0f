package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"orderd/internal/mailpit"
	"orderd/internal/testenv"
)

// placeFor places one order over POST /orders and returns its id and the link the answer
// gives to read it (which needs no other credential).
func placeFor(t *testing.T, baseURL, name, email, items string) (id int, self string) {
	t.Helper()
	code, body := postJSON(t, baseURL+"/orders", fmt.Sprintf(`{"customerName":%q,"customerEmail":%q,"items":%s}`, name, email, items))
	var got struct {
		OrderID int               `json:"orderId"`
		Links   map[string]string `json:"links"`
	}
	if err := json.Unmarshal(body, &got); code != http.StatusAccepted || err != nil || got.OrderID <= 0 {
		t.Fatalf("POST /orders: %d %s", code, body)
	}
	return got.OrderID, got.Links["self"]
}

// stream returns an order's event types, in order, comma-separated.
func stream(t *testing.T, env *testenv.Env, id int) string {
	t.Helper()
	return strings.Join(env.Strings(t, `SELECT event_type FROM events WHERE stream_id = ? ORDER BY version`, id), ",")
}

// TestRefusedAddressEndsTheOrder: a customer whose address the mail server refuses for good
// (550) cannot strand their order. The email step ends with an EmailFailed event carrying
// the server's reply; the order keeps its outcome (completed when paid and reserved,
// payment_failed when declined), is not marked emailed, and says why in failure_reason;
// nothing is dead-lettered, so nothing waits for `dlq redrive`. An order beside them with a
// good address completes with its one email, and `orderd replay --verify` finds the
// projection equal to the log.
func TestRefusedAddressEndsTheOrder(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	// A real Mailpit that takes mail only for ok.<domain> and answers RCPT TO for anyone
	// else "550 5.1.0 Requested action not taken: mailbox unavailable".
	mp := testenv.StartMailpit(t, "--smtp-allowed-recipients", `@ok\.`+env.ID+`\.example$`)
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "SMTP_ADDR": mp.SMTPAddr,
		"REDRIVE_AFTER": "1s", "VISIBILITY_TIMEOUT": "6s"})

	book, decline := `[{"sku":"SKU-BOOK","quantity":1}]`, `[{"sku":"SKU-TSHIRT","quantity":60}]` // 1199.40: declined
	good, _ := placeFor(t, srv.URL, "Ann", "ann@ok."+mailDomain, book)
	refused, refusedSelf := placeFor(t, srv.URL, "Bob", "nobody@refused."+mailDomain, book)
	refusedDeclined, _ := placeFor(t, srv.URL, "Cy", "nobody-else@refused."+mailDomain, decline)
	ids := fmt.Sprintf("%d,%d,%d", good, refused, refusedDeclined)
	waitFor(t, 60*time.Second, "the three orders to end", func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_id IN (`+ids+`)
			AND order_status IN ('completed','payment_failed','cancelled') AND (email_sent = 1 OR email_failed = 1)`)
		return n == 3, fmt.Sprintf("%d of 3 ended", n)
	})

	const reply = "RCPT TO: 550 5.1.0 Requested action not taken: mailbox unavailable"
	tests := []struct {
		id                   int
		events, status       string
		emailSent, refused   bool
		reason, to, template string
	}{
		{good, "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent", "completed", true, false, "", "", ""},
		{refused, "OrderPlaced,PaymentCompleted,InventoryReserved,EmailFailed", "completed", false, true,
			"email not delivered: " + reply, "nobody@refused." + mailDomain, "order_confirmed"},
		{refusedDeclined, "OrderPlaced,PaymentFailed,EmailFailed", "payment_failed", false, true,
			"card declined: amount 119940 exceeds the limit of 100000 cents; email not delivered: " + reply,
			"nobody-else@refused." + mailDomain, "payment_failed"},
	}
	for _, tc := range tests {
		if got := stream(t, env, tc.id); got != tc.events {
			t.Errorf("order %d: events %s, want %s", tc.id, got, tc.events)
		}
		var status, reason string
		var sent, failed bool
		err := env.DB.QueryRow(`SELECT order_status, email_sent, email_failed, COALESCE(failure_reason, '') FROM orders WHERE order_id = ?`, tc.id).
			Scan(&status, &sent, &failed, &reason)
		if err != nil || status != tc.status || sent != tc.emailSent || failed != tc.refused || reason != tc.reason {
			t.Errorf("order %d: row %s, email sent %v, refused %v, reason %q (%v); want %s, %v, %v, %q",
				tc.id, status, sent, failed, reason, err, tc.status, tc.emailSent, tc.refused, tc.reason)
		}
		if !tc.refused {
			continue
		}
		var payload []byte
		if err := env.DB.QueryRow(`SELECT payload FROM events WHERE stream_id = ? AND event_type = 'EmailFailed'`, tc.id).Scan(&payload); err != nil {
			t.Fatal(err)
		}
		var e struct{ To, Template, Reply string }
		if err := json.Unmarshal(payload, &e); err != nil || e.To != tc.to || e.Template != tc.template || e.Reply != reply {
			t.Errorf("order %d: EmailFailed %s, want to %s, template %s, reply %q", tc.id, payload, tc.to, tc.template, reply)
		}
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d messages dead-lettered; a refused address must end the order, not strand it", n)
	}

	// The order's own link says so.
	resp, err := http.Get(srv.URL + refusedSelf)
	if err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	err = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if err != nil || view["order_status"] != "completed" || view["email_sent"] != false || view["email_failed"] != true ||
		view["failure_reason"] != "email not delivered: "+reply || view["stuck"] != nil {
		t.Errorf("GET %s: %v (%v)", refusedSelf, view, err)
	}

	// One email: the good order's. The refused ones never reached a mailbox.
	msgs, err := mailpit.New(mp.URL).Search(context.Background(), "message-id:@"+mailDomain)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0].Address != "ann@ok."+mailDomain {
		t.Errorf("Mailpit holds %d emails (%+v), want one, to ann@ok.%s", len(msgs), msgs, mailDomain)
	}

	// The projection is the fold of the log, EmailFailed included.
	var out, errOut strings.Builder
	if err := run(context.Background(), []string{"replay", "--verify"}, env.Getenv(nil), &out, &errOut); err != nil {
		t.Errorf("orderd replay --verify: %v\n%s%s", err, out.String(), errOut.String())
	}
	t.Logf("refused addresses ended their orders (completed / payment_failed) with EmailFailed %q; the good one was emailed; %s",
		reply, strings.TrimSpace(out.String()))
}

// TestTemporaryRefusalIsRetried: a 4xx reply ("try again later") is not a refusal. A real
// Mailpit with its chaos switched on answers every RCPT TO with 451; the order waits at the
// email step, retried, neither failed nor dead-lettered, and once the server accepts mail
// again it completes with exactly one email. (TestOrdersWaitForTheMailServer covers a
// server that is down altogether.)
func TestTemporaryRefusalIsRetried(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	mp := testenv.StartMailpit(t, "--enable-chaos", "--chaos-triggers", "Recipient:451:100")
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "SMTP_ADDR": mp.SMTPAddr,
		"REDRIVE_AFTER": "2s", "VISIBILITY_TIMEOUT": "6s"})
	id, _ := placeFor(t, srv.URL, "Ann", "ann@"+mailDomain, `[{"sku":"SKU-BOOK","quantity":1}]`)

	// Mailpit logs each reply it gives; two 451s mean the stage has tried again.
	waitFor(t, 60*time.Second, "the mail server to answer 451 twice", func() (bool, string) {
		n := strings.Count(mp.LogTail(1<<20), "451 Chaos recipient error")
		return n >= 2, fmt.Sprintf("%d times", n)
	})
	if got := stream(t, env, id); got != "OrderPlaced,PaymentCompleted,InventoryReserved" {
		t.Errorf("while the server answers 451: events %s, want the order waiting for its email", got)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d messages dead-lettered for a temporary refusal", n)
	}

	api := mailpit.New(mp.URL)
	if err := api.SetChaos(context.Background(), mailpit.ChaosTriggers{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the order to be emailed once the server accepts mail", func() (bool, string) {
		got := stream(t, env, id)
		return got == "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent", got
	})
	msgs, err := api.Search(context.Background(), "message-id:@"+mailDomain)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Errorf("Mailpit holds %d emails for the order, want 1", len(msgs))
	}
}
