package testenv

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Mailpit is a Mailpit of the test's own, started with the flags the test needs (a
// recipient restriction, authentication, TLS, chaos), so that it can play a mail server
// that the shared one, which accepts everything, does not.
type Mailpit struct {
	SMTPAddr string // host:port of its SMTP server
	URL      string // base URL of its web UI and API, for internal/mailpit
	*Process
}

// StartMailpit starts a Mailpit on free ports with flags added to the usual ones (no
// reverse DNS, no version check, its store in the test's temporary directory), and waits
// until both its API and its SMTP server accept connections. The binary comes from
// MAILPIT_BIN, or .bin/mailpit (scripts/services.sh builds it there).
func StartMailpit(t testing.TB, flags ...string) *Mailpit {
	t.Helper()
	bin := toolBinary(t, "mailpit", "MAILPIT_BIN")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	argv := append([]string{bin, "--listen", httpAddr, "--smtp", smtpAddr, "--smtp-disable-rdns", "--disable-version-check"}, flags...)
	environ := append(MinimalEnviron(), "TMPDIR="+t.TempDir())
	p := StartProcess(t, "mailpit", argv, environ, httpAddr)
	WaitPort(t, smtpAddr, 10*time.Second)
	return &Mailpit{SMTPAddr: smtpAddr, URL: "http://" + httpAddr, Process: p}
}

// Relay is a Mailpit playing a real relay (Amazon SES, a company relay): it takes mail only
// after a login, over TLS with a certificate from a CA of the test's own.
type Relay struct {
	*Mailpit
	CA                 *CA
	Username, Password string // the one account it accepts; the password is random
}

// StartRelay starts a Mailpit with an auth file holding one account and a certificate for
// 127.0.0.1, plus flags saying how TLS is demanded: --smtp-require-starttls (STARTTLS, as
// on port 587) or --smtp-require-tls (TLS from the first byte, as on port 465).
func StartRelay(t testing.TB, flags ...string) *Relay {
	t.Helper()
	ca := NewCA(t)
	cert, key := ca.Issue(t, "127.0.0.1")
	r := &Relay{CA: ca, Username: "orderd", Password: "pw-" + rand.Text()}
	auth := filepath.Join(t.TempDir(), "smtp-auth")
	if err := os.WriteFile(auth, []byte(r.Username+":"+r.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Mailpit = StartMailpit(t, append([]string{"--smtp-auth-file", auth, "--smtp-tls-cert", cert, "--smtp-tls-key", key}, flags...)...)
	return r
}
