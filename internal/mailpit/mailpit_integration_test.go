package mailpit

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/smtp"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClientAgainstMailpit checks the JSON shapes this client expects
// against a real Mailpit. It sends with net/smtp directly so that it does not
// depend on the mail package it exists to test. It leaves DeleteAll alone:
// the Mailpit may be shared with other tests running at the same time.
func TestClientAgainstMailpit(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against Mailpit; skipped in -short mode")
	}
	smtpAddr, apiURL := os.Getenv("SMTP_ADDR"), os.Getenv("MAILPIT_URL")
	if smtpAddr == "" || apiURL == "" {
		t.Fatal("SMTP_ADDR and MAILPIT_URL are not set: run the tests with `make test`, " +
			"which starts Mailpit and sets them (or use `go test -short` to skip integration tests)")
	}
	c := New(apiURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	run := strings.ToLower(rand.Text()[:12])
	to := "probe-" + run + "@example.com"
	for i := 1; i <= 3; i++ {
		raw := fmt.Sprintf("From: a@example.com\r\nTo: %s\r\nSubject: probe %d\r\n"+
			"Message-ID: <probe-%d-%s@test>\r\n\r\nbody %d\r\n", to, i, i, run, i)
		if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{to}, []byte(raw)); err != nil {
			t.Fatalf("send probe %d: %v", i, err)
		}
	}

	got, err := c.WaitFor(ctx, "to:"+to, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("WaitFor returned %d messages, want 3", len(got))
	}
	// Newest first.
	newest := got[0]
	if newest.MessageID != "probe-3-"+run+"@test" || newest.Subject != "probe 3" ||
		len(newest.To) != 1 || newest.To[0].Address != to || newest.From.Address != "a@example.com" ||
		newest.Created.IsZero() || newest.ID == "" {
		t.Errorf("newest summary = %+v", newest)
	}

	one, err := c.Search(ctx, "message-id:probe-2-"+run)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].Subject != "probe 2" {
		t.Fatalf("Search for probe 2 = %+v", one)
	}
	m, err := c.Message(ctx, one[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "body 2\r\n" || m.Header.Get("Message-ID") != "<probe-2-"+run+"@test>" ||
		m.Header.Get("Subject") != "probe 2" || m.MessageID != "probe-2-"+run+"@test" {
		t.Errorf("message = %+v", m)
	}

	all, err := c.Messages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range all {
		if strings.HasSuffix(s.MessageID, run+"@test") {
			found++
		}
	}
	if found != 3 {
		t.Errorf("Messages lists %d of this run's 3 messages", found)
	}

	if _, err := c.Message(ctx, "no-such-id"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Message(no-such-id) error = %v, want a 404", err)
	}
}
