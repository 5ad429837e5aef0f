package mail

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"orderd/internal/mailpit"
)

// mailpitEnv returns the addresses of the Mailpit that `make test` starts.
// Without them the test fails instead of skipping, because a skipped
// integration test is too easily read as a passing one; -short skips it.
func mailpitEnv(tb testing.TB) (smtpAddr string, api *mailpit.Client) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test against Mailpit; skipped in -short mode")
	}
	smtpAddr, apiURL := os.Getenv("SMTP_ADDR"), os.Getenv("MAILPIT_URL")
	if smtpAddr == "" || apiURL == "" {
		tb.Fatal("SMTP_ADDR and MAILPIT_URL are not set: run the tests with `make test`, " +
			"which starts Mailpit and sets them (or use `go test -short` to skip integration tests)")
	}
	return smtpAddr, mailpit.New(apiURL)
}

// runID tells this run's messages apart from anyone else's in a shared
// Mailpit, so nothing needs deleting.
func runID() string {
	return strings.ToLower(rand.Text()[:12])
}

func TestSMTPSenderDeliversToMailpit(t *testing.T) {
	smtpAddr, api := mailpitEnv(t)
	run := runID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := NewSMTPSender(SMTPConfig{Addr: smtpAddr})
	if err != nil {
		t.Fatalf("NewSMTPSender: %v", err)
	}
	defer s.Close()

	type want struct {
		msg      Message
		to, text string
	}
	sent := []want{{
		msg: Message{
			To:        "buyer-" + run + "@example.com",
			From:      "orders@orderd.test",
			Subject:   "Order 42 completed",
			Body:      "Your order 42 has shipped.\n",
			MessageID: "<order-42-" + run + "-v4@orderd>",
		},
		to:   "buyer-" + run + "@example.com",
		text: "Your order 42 has shipped.\r\n",
	}, {
		msg: Message{
			To:        "Zoë Müller <zoe-" + run + "@example.com>",
			From:      "Orderd <orders@orderd.test>",
			Subject:   "Bestellung 43 fehlgeschlagen – " + strings.Repeat("ü", 30),
			Body:      "Hallo Zoë,\n.\nleider ging etwas schief: 10 € = zu viel.\n" + strings.Repeat("lang ", 30) + "\n",
			MessageID: "<order-43-" + run + "-v7@orderd>",
		},
		to:   "zoe-" + run + "@example.com",
		text: "Hallo Zoë,\r\n.\r\nleider ging etwas schief: 10 € = zu viel.\r\n" + strings.Repeat("lang ", 30) + "\r\n",
	}}
	for _, w := range sent {
		if err := s.Send(ctx, w.msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}

	got, err := api.WaitFor(ctx, "message-id:"+run, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sent) {
		t.Fatalf("Mailpit has %d messages for this run, want %d", len(got), len(sent))
	}
	byMessageID := map[string]string{}
	for _, sum := range got {
		byMessageID[sum.MessageID] = sum.ID
	}
	for _, w := range sent {
		id, ok := byMessageID[strings.Trim(w.msg.MessageID, "<>")]
		if !ok {
			t.Errorf("no message with Message-ID %s arrived", w.msg.MessageID)
			continue
		}
		m, err := api.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.To) != 1 || m.To[0].Address != w.to {
			t.Errorf("%s: To = %+v, want %s", w.msg.MessageID, m.To, w.to)
		}
		if m.Subject != w.msg.Subject {
			t.Errorf("%s: Subject = %q, want %q", w.msg.MessageID, m.Subject, w.msg.Subject)
		}
		if m.Text != w.text {
			t.Errorf("%s: body = %q, want %q", w.msg.MessageID, m.Text, w.text)
		}
		if h := m.Header.Get("Message-ID"); h != w.msg.MessageID {
			t.Errorf("Message-ID header = %q, want %q", h, w.msg.MessageID)
		}
	}
}

// BenchmarkSMTPSenderMailpit measures sending through Mailpit from eight
// goroutines (on two CPUs; about eight elsewhere), with and without connection reuse, and checks that the
// messages arrived. Try -benchtime=500x.
func BenchmarkSMTPSenderMailpit(b *testing.B) {
	for _, bc := range []struct {
		name    string
		maxIdle int
	}{{"reuse", 0}, {"dial-each", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			smtpAddr, api := mailpitEnv(b)
			run := runID()
			s, err := NewSMTPSender(SMTPConfig{Addr: smtpAddr, MaxIdle: bc.maxIdle})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var seq atomic.Int64
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					err := s.Send(context.Background(), Message{
						To:        fmt.Sprintf("bench-%d@example.com", i),
						From:      "orders@orderd.test",
						Subject:   fmt.Sprintf("Order %d completed", i),
						Body:      "Your order has shipped.\n",
						MessageID: fmt.Sprintf("<order-%d-%s@orderd>", i, run),
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")

			// Mailpit keeps 500 messages unless started with a larger
			// --max, so no more than that can be checked for.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := api.WaitFor(ctx, "message-id:"+run, min(b.N, 500)); err != nil {
				b.Fatal(err)
			}
		})
	}
}
