package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/internal/mailpit"
	"orderd/internal/testenv"
)

// These tests run against Mailpits of their own, started with authentication and TLS on,
// playing a real relay (Amazon SES, a company relay): credentials required, certificates
// that must verify.

// relay is a private Mailpit that demands TLS and a password, with a client for its API.
type relay struct {
	*testenv.Relay
	api *mailpit.Client
}

func startRelay(t *testing.T, flags ...string) *relay {
	t.Helper()
	r := testenv.StartRelay(t, flags...)
	return &relay{Relay: r, api: mailpit.New(r.URL)}
}

// messageTo returns a valid message to a run-specific address.
func messageTo(run string) Message {
	m := validMessage()
	m.To = "buyer-" + run + "@example.com"
	m.MessageID = "<" + run + "@orderd.test>"
	return m
}

// count returns how many messages the relay holds for run.
func (r *relay) count(t *testing.T, run string) int {
	t.Helper()
	got, err := r.api.Search(context.Background(), "message-id:"+run)
	if err != nil {
		t.Fatal(err)
	}
	return len(got)
}

// TestSMTPSenderAuthenticatesOverSTARTTLS: with the right password the email arrives,
// authenticated and over a verified TLS connection; a wrong password, or a certificate the
// sender cannot verify, fails the send as a configuration problem (transient: the queue
// retries it and then dead-letters it, and a fix lets it through), without the password
// in the error.
func TestSMTPSenderAuthenticatesOverSTARTTLS(t *testing.T) {
	testenv.Require(t, "SMTP_ADDR") // an integration test: skipped with the others in -short mode
	r := startRelay(t, "--smtp-require-starttls")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, mode := range []TLSMode{"", TLSRequired, TLSOpportunistic} { // "" is the default with credentials: required
		t.Run("right password, TLS "+string(mode), func(t *testing.T) {
			run := strings.ToLower(rand.Text()[:12])
			s := newTestSender(t, SMTPConfig{Addr: r.SMTPAddr, Username: r.Username, Password: r.Password, TLS: mode, RootCAs: r.CA.Pool})
			if err := s.Send(ctx, messageTo(run)); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got, err := r.api.WaitFor(ctx, "message-id:"+run, 1)
			if err != nil {
				t.Fatal(err)
			}
			// The relay takes mail only from an authenticated client (a 530 otherwise, as
			// "no credentials" below shows), so arriving proves the login. (Mailpit records
			// the user name of a LOGIN only, not of a PLAIN one.)
			if len(got[0].To) != 1 || got[0].To[0].Address != "buyer-"+run+"@example.com" {
				t.Errorf("arrived to %v, want buyer-%s@example.com", got[0].To, run)
			}
		})
	}

	failures := []struct {
		name string
		cfg  SMTPConfig
		want string // in the error
	}{
		{"no credentials", SMTPConfig{RootCAs: r.CA.Pool}, "MAIL FROM: 530"},
		{"wrong password", SMTPConfig{Username: r.Username, Password: "wrong-" + r.Password, RootCAs: r.CA.Pool}, "AUTH: 535"},
		{"unknown user", SMTPConfig{Username: "someone", Password: r.Password, RootCAs: r.CA.Pool}, "AUTH: 535"},
		// The system's roots do not know the test's CA: the certificate does not verify.
		{"unverified certificate", SMTPConfig{Username: r.Username, Password: r.Password}, "STARTTLS: tls: failed to verify certificate"},
		{"unverified certificate, no credentials", SMTPConfig{TLS: TLSOpportunistic}, "STARTTLS: tls: failed to verify certificate"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			run := strings.ToLower(rand.Text()[:12])
			tc.cfg.Addr = r.SMTPAddr
			s := newTestSender(t, tc.cfg)
			err := s.Send(ctx, messageTo(run))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Send: %v, want an error with %q", err, tc.want)
			}
			if IsPermanent(err) {
				t.Errorf("%v is permanent: a configuration problem would end every order without its email", err)
			}
			if strings.Contains(err.Error(), r.Password) {
				t.Errorf("the error holds the password: %v", err)
			}
			if n := r.count(t, run); n != 0 {
				t.Errorf("%d messages arrived", n)
			}
		})
	}
}

// TestSMTPSenderImplicitTLS sends through a relay that speaks TLS from the first byte (SMTPS).
func TestSMTPSenderImplicitTLS(t *testing.T) {
	testenv.Require(t, "SMTP_ADDR")
	r := startRelay(t, "--smtp-require-tls")
	run := strings.ToLower(rand.Text()[:12])
	s := newTestSender(t, SMTPConfig{Addr: r.SMTPAddr, Username: r.Username, Password: r.Password, TLS: TLSImplicit, RootCAs: r.CA.Pool})
	if err := s.Send(context.Background(), messageTo(run)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.api.WaitFor(ctx, "message-id:"+run, 1); err != nil {
		t.Fatal(err)
	}
}

// wiretap is a TCP front for a server that records everything the client sends through it.
type wiretap struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	sent   bytes.Buffer
}

func newWiretap(t *testing.T, target string) *wiretap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wiretap{ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", w.target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					io.Copy(c, up) //nolint:errcheck // ends when either side closes
					c.Close()
				}()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						w.mu.Lock()
						w.sent.Write(buf[:n])
						w.mu.Unlock()
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return w
}

func (w *wiretap) Addr() string { return w.ln.Addr().String() }

// Sent returns what clients have sent so far.
func (w *wiretap) Sent() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent.String()
}

// TestSMTPSenderNeverSendsCredentialsInPlainText runs against a Mailpit without TLS that
// offers PLAIN and LOGIN in the clear and takes any password (as a misconfigured relay, or
// a man in the middle who stripped STARTTLS, would). With credentials configured, in the
// required mode and in the opportunistic one, the send fails before any AUTH command: the
// wire shows neither the password nor its base64 forms, and nothing is delivered. Without
// credentials, opportunistic mode delivers (the local Mailpit) and required mode refuses.
func TestSMTPSenderNeverSendsCredentialsInPlainText(t *testing.T) {
	testenv.Require(t, "SMTP_ADDR")
	mp := testenv.StartMailpit(t, "--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	api := mailpit.New(mp.URL)
	password := "pw-" + rand.Text()
	tests := []struct {
		name      string
		cfg       SMTPConfig
		delivered bool
		want      string // in the error
	}{
		{"credentials, default mode", SMTPConfig{Username: "orderd", Password: password}, false, "TLS is required but the server does not offer STARTTLS"},
		{"credentials, required", SMTPConfig{Username: "orderd", Password: password, TLS: TLSRequired}, false, "TLS is required"},
		{"credentials, opportunistic", SMTPConfig{Username: "orderd", Password: password, TLS: TLSOpportunistic}, false, "refusing to send credentials without TLS"},
		{"no credentials, required", SMTPConfig{TLS: TLSRequired}, false, "TLS is required"},
		{"no credentials, default (opportunistic)", SMTPConfig{}, true, ""},
		{"no credentials, off", SMTPConfig{TLS: TLSOff}, true, ""},
	}
	secrets := []string{password, base64.StdEncoding.EncodeToString([]byte(password)),
		base64.StdEncoding.EncodeToString([]byte("\x00orderd\x00" + password))}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tap := newWiretap(t, mp.SMTPAddr)
			run := strings.ToLower(rand.Text()[:12])
			tc.cfg.Addr = tap.Addr()
			s := newTestSender(t, tc.cfg)
			err := s.Send(context.Background(), messageTo(run))
			s.Close()
			switch {
			case tc.delivered && err != nil:
				t.Fatalf("Send: %v", err)
			case !tc.delivered && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Send: %v, want an error with %q", err, tc.want)
			case err != nil && IsPermanent(err):
				t.Errorf("%v is permanent, want transient (a configuration problem)", err)
			}
			sent := tap.Sent()
			if !strings.Contains(sent, "EHLO") {
				t.Fatalf("the wiretap saw no EHLO: %q", sent)
			}
			if strings.Contains(strings.ToUpper(sent), "AUTH") {
				t.Errorf("an AUTH command went out in plain text: %q", sent)
			}
			for _, s := range secrets {
				if strings.Contains(sent, s) {
					t.Errorf("the password went out in plain text: %q", sent)
				}
			}
			got, err := api.Search(context.Background(), "message-id:"+run)
			if err != nil {
				t.Fatal(err)
			}
			if (len(got) == 1) != tc.delivered || len(got) > 1 {
				t.Errorf("%d messages arrived, want delivered=%v", len(got), tc.delivered)
			}
		})
	}
}

// TestSMTPConfigRefusesPlainTextCredentials: a password with TLS off, or half a set of
// credentials, is refused when the sender is made, never at the first send.
func TestSMTPConfigRefusesPlainTextCredentials(t *testing.T) {
	const password = "pw-Do-Not-Show"
	for _, cfg := range []SMTPConfig{
		{Addr: "smtp.example.com:587", Username: "u", Password: password, TLS: TLSOff},
		{Addr: "smtp.example.com:587", Username: "u"},
		{Addr: "smtp.example.com:587", Password: password},
		{Addr: "smtp.example.com:587", TLS: "starttls"},
	} {
		if _, err := NewSMTPSender(cfg); err == nil {
			t.Errorf("NewSMTPSender(%v) succeeded, want an error", cfg)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("error %q shows the password", err)
		}
	}
}

// The password never shows when the configuration is printed, however it is printed.
func TestSMTPConfigHidesThePassword(t *testing.T) {
	cfg := SMTPConfig{Addr: "smtp.example.com:587", Username: "shop", Password: "s3cr3t-Pa55"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, cfg); strings.Contains(out, cfg.Password) || !strings.Contains(out, "shop") {
			t.Errorf("%s: %s", verb, out)
		}
	}
	if out := fmt.Sprintf("%v", &cfg); strings.Contains(out, cfg.Password) {
		t.Errorf("%%v of a pointer: %s", out)
	}
}
