package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"orderd/mail"
)

// TestSMTPSinkTakesOrderdsEmail: orderd's own SMTP sender delivers to the sink over TCP, one
// pooled connection reused (RSET between messages), and the sink counts each message once.
func TestSMTPSinkTakesOrderdsEmail(t *testing.T) {
	sink, err := startSMTPSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.close()
	sender, err := mail.NewSMTPSender(mail.SMTPConfig{Addr: sink.addr(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		m := mail.Message{To: "ada@example.com", From: "orders@shop.localhost", Subject: "Order confirmed", Body: "Thank you.\n",
			MessageID: fmt.Sprintf("sink-test-%d@shop.localhost", i)}
		if err := sender.Send(ctx, m); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	if n := sink.messages.Load(); n != 3 {
		t.Errorf("sink counted %d messages, want 3", n)
	}
	if n := sink.conns.Load(); n != 1 {
		t.Errorf("%d SMTP sessions, want 1 (the sender's pooled connection, reused)", n)
	}
}
