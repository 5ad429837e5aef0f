package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"orderd/internal/mailpit"
	"orderd/internal/testenv"
)

// TestOrderdSendsThroughAnAuthenticatedTLSRelay runs `orderd serve` as a child process
// against a Mailpit that demands STARTTLS and a password, as Amazon SES or a company relay
// does, with a certificate from the test's own CA (given to orderd as SSL_CERT_FILE, as an
// operator would for a relay with a private CA). With a wrong password the order waits at
// the email step, nothing dead-lettered: a configuration problem, not a poisoned message.
// With the right one, after a restart, it completes and the email arrives. Neither password
// ever appears in orderd's log.
func TestOrderdSendsThroughAnAuthenticatedTLSRelay(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	relay := testenv.StartRelay(t, "--smtp-require-starttls")
	password, wrong := relay.Password, "wrong-"+rand.Text()

	bin := testenv.BuildOrderd(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	environ := func(pw string) []string {
		return append(childEnviron(env, map[string]string{"HTTP_ADDR": addr, "MAIL_FROM": "orders@" + mailDomain,
			"SMTP_ADDR": relay.SMTPAddr, "SMTP_USERNAME": relay.Username, "SMTP_PASSWORD": pw, // SMTP_TLS unset: required
			"REDRIVE_AFTER": "2s", "VISIBILITY_TIMEOUT": "6s"}), "SSL_CERT_FILE="+relay.CA.File)
	}
	first := testenv.StartProcess(t, "orderd-wrong-password", []string{bin, "serve"}, environ(wrong), addr)
	id, _ := placeFor(t, "http://"+addr, "Ann", "ann@"+mailDomain, `[{"sku":"SKU-BOOK","quantity":1}]`)
	waitFor(t, 60*time.Second, "the relay to refuse orderd's login", func() (bool, string) {
		return strings.Contains(first.LogTail(1<<20), "AUTH: 535"), stream(t, env, id)
	})
	if got := stream(t, env, id); got != "OrderPlaced,PaymentCompleted,InventoryReserved" {
		t.Errorf("with a wrong password: events %s, want the order waiting for its email", got)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d messages dead-lettered for a wrong SMTP password", n)
	}
	if err := first.Stop(40 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}

	second := testenv.StartProcess(t, "orderd-right-password", []string{bin, "serve"}, environ(password), addr)
	waitFor(t, 90*time.Second, "the order to be emailed with the right password", func() (bool, string) {
		got := stream(t, env, id)
		return got == "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent", got
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := mailpit.New(relay.URL).WaitFor(ctx, "message-id:@"+mailDomain, 1)
	if err != nil || len(msgs) != 1 || msgs[0].To[0].Address != "ann@"+mailDomain {
		t.Errorf("relay holds %+v (%v), want the order's one email", msgs, err)
	}
	if err := second.Stop(40 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	for _, p := range []*testenv.Process{first, second} {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{password, wrong} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s's log holds an SMTP password", p.Name)
			}
		}
	}
}

// TestSMTPSettingsAreChecked: SMTP settings that would send a password in plain text, or
// half a set of credentials, stop orderd at start with one line naming the setting and
// never showing the password.
func TestSMTPSettingsAreChecked(t *testing.T) {
	const password = "pw-Never-Shown"
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SMTP_USERNAME": "shop", "SMTP_PASSWORD": password, "SMTP_TLS": "off"}, "SMTP_PASSWORD:"},
		{map[string]string{"SMTP_TLS": "starttls"}, "SMTP_TLS:"},
		{map[string]string{"SMTP_USERNAME": "shop"}, "SMTP_USERNAME, SMTP_PASSWORD:"},
		{map[string]string{"SMTP_PASSWORD": password}, "SMTP_USERNAME, SMTP_PASSWORD:"},
	} {
		err := run(context.Background(), []string{"serve"}, func(k string) string { return tc.env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), password) {
			t.Errorf("%v: want one line starting %q without the password, got %v", tc.env, tc.want, err)
		}
	}
	for _, mode := range []string{"", "required", "opportunistic", "implicit"} {
		cfg, err := loadConfig(func(k string) string {
			return map[string]string{"SMTP_USERNAME": "shop", "SMTP_PASSWORD": " " + password + " ", "SMTP_TLS": mode}[k]
		})
		if err != nil {
			t.Errorf("SMTP_TLS=%q with credentials: %v", mode, err)
			continue
		}
		if got := cfg.adapters().SMTP; got.Password != " "+password+" " || got.Username != "shop" || string(got.TLS) != mode {
			t.Errorf("SMTP_TLS=%q: adapters().SMTP = %v", mode, got)
		}
	}
}
