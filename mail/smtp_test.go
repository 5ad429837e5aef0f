package mail

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// fakeSMTP is a scripted SMTP server for exercising SMTPSender's protocol
// handling, error classification and connection reuse without Mailpit.
type fakeSMTP struct {
	ln net.Listener

	// Replies, each a full reply line such as "250 ok". Empty means
	// success.
	mailReply, rcptReply, dataReply string
	// dropAfterMessage closes each connection after accepting one message,
	// as a server with an idle timeout would later on.
	dropAfterMessage bool
	// silent accepts connections but never greets, like a hung server.
	silent bool
	// tls, if set, makes the server speak TLS from the first byte (SMTPS).
	tls *tls.Config
	// auth is what EHLO advertises after "AUTH " (e.g. "LOGIN"); AUTH LOGIN
	// accepts user "shop" with password "s3cret" and records what it got.
	auth string

	mu     sync.Mutex
	conns  int      // connections accepted
	logins []string // "user:password" of each AUTH LOGIN, decoded
	data   []string // message bodies received
	quits  int      // QUIT commands received
	open   []net.Conn
	wg     sync.WaitGroup
}

func startFakeSMTP(t *testing.T, f *fakeSMTP) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if f.tls != nil {
		ln = tls.NewListener(ln, f.tls)
	}
	f.ln = ln
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			f.open = append(f.open, nc)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer nc.Close()
				f.serve(textproto.NewConn(nc))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, nc := range f.open {
			nc.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeSMTP) addr() string { return f.ln.Addr().String() }

func (f *fakeSMTP) serve(c *textproto.Conn) {
	if f.silent {
		_, _ = c.ReadLine() // block until the client gives up
		return
	}
	reply := func(line, fallback string) {
		if line == "" {
			line = fallback
		}
		_ = c.PrintfLine("%s", line)
	}
	reply("220 fake ESMTP", "")
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch verb {
		case "EHLO":
			_ = c.PrintfLine("250-fake")
			if f.auth != "" {
				_ = c.PrintfLine("250-AUTH %s", f.auth)
			}
			_ = c.PrintfLine("250 8BITMIME")
		case "AUTH":
			if !strings.EqualFold(line, "AUTH LOGIN") {
				reply("504 5.5.4 unrecognized authentication type", "")
				continue
			}
			var got []string
			for _, prompt := range []string{"VXNlcm5hbWU6", "UGFzc3dvcmQ6"} { // "Username:", "Password:"
				_ = c.PrintfLine("334 %s", prompt)
				line, err := c.ReadLine()
				if err != nil {
					return
				}
				b, _ := base64.StdEncoding.DecodeString(line)
				got = append(got, string(b))
			}
			f.mu.Lock()
			f.logins = append(f.logins, strings.Join(got, ":"))
			f.mu.Unlock()
			if got[0] == "shop" && got[1] == "s3cret" {
				reply("235 2.7.0 ok", "")
			} else {
				reply("535 5.7.8 bad credentials", "")
			}
		case "MAIL":
			reply(f.mailReply, "250 ok")
		case "RSET", "NOOP":
			reply("250 ok", "")
		case "RCPT":
			reply(f.rcptReply, "250 ok")
		case "DATA":
			reply("354 go ahead", "")
			body, err := readData(c)
			if err != nil {
				return
			}
			f.mu.Lock()
			f.data = append(f.data, body)
			f.mu.Unlock()
			reply(f.dataReply, "250 queued")
			if f.dropAfterMessage {
				return
			}
		case "QUIT":
			f.mu.Lock()
			f.quits++
			f.mu.Unlock()
			reply("221 bye", "")
			return
		default:
			reply("502 not implemented", "")
		}
	}
}

// readData reads a DATA payload up to the terminating "." line, undoing dot
// stuffing but, unlike textproto.Reader.ReadDotBytes, keeping line endings as
// sent so that tests can check for CRLF.
func readData(c *textproto.Conn) (string, error) {
	var b strings.Builder
	for {
		line, err := c.R.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == ".\r\n" {
			return b.String(), nil
		}
		b.WriteString(strings.TrimPrefix(line, "."))
	}
}

// stats returns the counters once the server has handled everything the
// client sent; Close's QUIT is answered before the client returns, so no
// waiting is needed.
func (f *fakeSMTP) stats() (conns, messages, quits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, len(f.data), f.quits
}

// message returns the i-th message body received.
func (f *fakeSMTP) message(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data[i]
}

func newTestSender(t *testing.T, cfg SMTPConfig) *SMTPSender {
	t.Helper()
	s, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatalf("NewSMTPSender: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSMTPSenderReusesConnection(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})
	for i := 0; i < 3; i++ {
		if err := s.Send(context.Background(), validMessage()); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if conns, msgs, quits := srv.stats(); conns != 1 || msgs != 3 || quits != 1 {
		t.Errorf("server saw %d connections, %d messages, %d QUITs; want 1, 3, 1", conns, msgs, quits)
	}
	// What went over the wire is the composed message, dot-stuffing undone.
	_, want, _ := compose(validMessage(), testDate)
	_, got, _ := strings.Cut(srv.message(0), "\r\n") // skip the Date line
	if _, w, _ := strings.Cut(string(want), "\r\n"); got != w {
		t.Errorf("server received\n%q\nwant\n%q", got, w)
	}
}

func TestSMTPSenderWithoutReuse(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr(), MaxIdle: -1})
	for i := 0; i < 2; i++ {
		if err := s.Send(context.Background(), validMessage()); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if conns, msgs, quits := srv.stats(); conns != 2 || msgs != 2 || quits != 2 {
		t.Errorf("server saw %d connections, %d messages, %d QUITs; want 2, 2, 2", conns, msgs, quits)
	}
}

func TestSMTPSenderReplacesDroppedConnection(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{dropAfterMessage: true})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})
	for i := 0; i < 2; i++ {
		if err := s.Send(context.Background(), validMessage()); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if conns, msgs, _ := srv.stats(); conns != 2 || msgs != 2 {
		t.Errorf("server saw %d connections, %d messages; want 2, 2", conns, msgs)
	}
}

// Only a refusal of this message is permanent (it ends the order without its email); a
// refusal of us, the sender, would refuse every order's email alike and stays transient.
func TestSMTPSenderClassifiesReplies(t *testing.T) {
	tests := []struct {
		name      string
		srv       *fakeSMTP
		permanent bool
		reply     string // Reply(err) when permanent
	}{
		{"unknown recipient", &fakeSMTP{rcptReply: "550 5.1.1 no such user"}, true, "RCPT TO: 550 5.1.1 no such user"},
		{"mailbox unavailable, no enhanced code", &fakeSMTP{rcptReply: "550 mailbox unavailable"}, true, "RCPT TO: 550 mailbox unavailable"},
		{"recipient domain refused", &fakeSMTP{rcptReply: "554 5.1.2 domain not found"}, true, "RCPT TO: 554 5.1.2 domain not found"},
		{"recipient syntax", &fakeSMTP{rcptReply: "501 5.5.4 invalid TO parameter"}, true, "RCPT TO: 501 5.5.4 invalid TO parameter"},
		{"message too big", &fakeSMTP{dataReply: "552 5.3.4 message too big"}, true, "end of DATA: 552 5.3.4 message too big"},
		{"mailbox busy", &fakeSMTP{rcptReply: "450 4.2.1 try later"}, false, ""},
		{"server shutting down", &fakeSMTP{dataReply: "421 4.3.2 shutting down"}, false, ""},
		{"relay access denied", &fakeSMTP{rcptReply: "554 5.7.1 <buyer@example.com>: Relay access denied"}, false, ""},
		{"authentication required", &fakeSMTP{rcptReply: "530 5.7.0 Authentication required"}, false, ""},
		{"content refused by policy", &fakeSMTP{dataReply: "554 5.7.1 spam"}, false, ""},
		{"sender refused", &fakeSMTP{mailReply: "553 5.1.8 sender domain does not exist"}, false, ""},
		{"sender refused, no enhanced code", &fakeSMTP{mailReply: "550 not allowed"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeSMTP(t, tt.srv)
			s := newTestSender(t, SMTPConfig{Addr: srv.addr(), TLS: TLSOff})
			err := s.Send(context.Background(), validMessage())
			if err == nil {
				t.Fatal("Send succeeded, want error")
			}
			if !strings.HasPrefix(err.Error(), `send mail to "buyer@example.com": `) {
				t.Errorf("error %q lacks context", err)
			}
			if got := IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent(%q) = %v, want %v", err, got, tt.permanent)
			}
			if got := Reply(err); got != tt.reply {
				t.Errorf("Reply(%q) = %q, want %q", err, got, tt.reply)
			}
		})
	}
}

func TestSMTPSenderDialFailureIsTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := newTestSender(t, SMTPConfig{Addr: addr})
	err = s.Send(context.Background(), validMessage())
	if err == nil || IsPermanent(err) {
		t.Errorf("Send to closed port: err = %v, want transient error", err)
	}
}

// A server that accepts but never answers must not hold Send beyond ctx.
func TestSMTPSenderHonoursContext(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{silent: true})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Send(ctx, validMessage())
	if !errors.Is(err, context.DeadlineExceeded) || IsPermanent(err) {
		t.Errorf("Send with expiring ctx: err = %v, want transient DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err = s.Send(ctx, validMessage())
	if !errors.Is(err, context.Canceled) || IsPermanent(err) {
		t.Errorf("Send with cancelled ctx: err = %v, want transient Canceled", err)
	}
}

func TestSMTPSenderTimeout(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{silent: true})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr(), Timeout: 100 * time.Millisecond})
	err := s.Send(context.Background(), validMessage())
	if !errors.Is(err, context.DeadlineExceeded) || IsPermanent(err) {
		t.Errorf("Send to hung server: err = %v, want transient DeadlineExceeded", err)
	}
}

func TestSMTPSenderInvalidMessageIsNotSent(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})
	m := validMessage()
	m.Subject = "x\r\nBcc: victim@example.com"
	err := s.Send(context.Background(), m)
	if !errors.Is(err, ErrInvalidMessage) || !IsPermanent(err) {
		t.Errorf("err = %v, want permanent ErrInvalidMessage", err)
	}
	if conns, _, _ := srv.stats(); conns != 0 {
		t.Errorf("server saw %d connections, want none", conns)
	}
}

func TestSMTPSenderClosed(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})
	s.Close()
	err := s.Send(context.Background(), validMessage())
	if !errors.Is(err, ErrClosed) || IsPermanent(err) {
		t.Errorf("Send after Close: err = %v, want transient ErrClosed", err)
	}
}

func TestNewSMTPSenderRejectsBadConfig(t *testing.T) {
	for _, cfg := range []SMTPConfig{
		{},
		{Addr: "localhost"},
		{Addr: ":25"},
		{Addr: "localhost:25", Timeout: -time.Second},
	} {
		if _, err := NewSMTPSender(cfg); err == nil {
			t.Errorf("NewSMTPSender(%+v) succeeded, want error", cfg)
		}
	}
}

// A body line that is a lone "." would end DATA early if it were not
// dot-stuffed on the wire.
func TestSMTPSenderDotStuffing(t *testing.T) {
	srv := startFakeSMTP(t, &fakeSMTP{})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr()})
	m := validMessage()
	m.Body = "first\n.\n..two dots\nlast\n"
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, body, _ := strings.Cut(srv.message(0), "\r\n\r\n")
	if want := "first\r\n.\r\n..two dots\r\nlast\r\n"; body != want {
		t.Errorf("server received body %q, want %q", body, want)
	}
}

// TestSMTPSenderLoginAuth logs in with LOGIN when the server offers only that (Mailpit offers
// PLAIN too, and PLAIN is preferred), over implicit TLS verified against the test's CA.
func TestSMTPSenderLoginAuth(t *testing.T) {
	ca := testenv.NewCA(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := startFakeSMTP(t, &fakeSMTP{tls: &tls.Config{Certificates: []tls.Certificate{cert}}, auth: "LOGIN"})
	s := newTestSender(t, SMTPConfig{Addr: srv.addr(), TLS: TLSImplicit, Username: "shop", Password: "s3cret", RootCAs: ca.Pool})
	if err := s.Send(context.Background(), validMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	bad := newTestSender(t, SMTPConfig{Addr: srv.addr(), TLS: TLSImplicit, Username: "shop", Password: "wrong", RootCAs: ca.Pool})
	err = bad.Send(context.Background(), validMessage())
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "AUTH: 535") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("Send with a wrong password: %v, want a transient AUTH error without the password", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if want := []string{"shop:s3cret", "shop:wrong"}; !slices.Equal(srv.logins, want) || len(srv.data) != 1 {
		t.Errorf("server saw logins %q and %d messages, want %q and 1", srv.logins, len(srv.data), want)
	}
}
