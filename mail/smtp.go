package mail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"slices"
	"sync"
	"time"
)

// The standard library's net/smtp is used rather than a mail library: a
// single-part plain-text message is a few lines to render (message.go), and
// net/smtp lets us own the connection, which is what deadlines, cancellation
// and reuse need.

const (
	defaultTimeout = 10 * time.Second
	// defaultMaxIdle is sized to how many sends run at once: a commit group of the email
	// stage sends up to 32 together. Keeping 8 made most sends dial, each dial adding a
	// greeting, EHLO and QUIT: the machine accepted 1,720 TCP connections during 3,000
	// orders, against about 220 with 64.
	defaultMaxIdle = 64
	// quitTimeout bounds the polite QUIT on a connection being discarded;
	// nothing is lost if the server does not answer in time.
	quitTimeout = time.Second
)

// SMTPConfig configures an SMTPSender. The zero value of every field except
// Addr selects a default.
type SMTPConfig struct {
	// Addr is the server's host:port, e.g. "127.0.0.1:1025".
	Addr string
	// Timeout bounds one Send, dialling included. Zero means 10 s.
	Timeout time.Duration
	// Username and Password, set both or neither, log in with AUTH PLAIN
	// (or LOGIN when the server offers only that), only ever over TLS.
	// Neither appears in an error or in the config's printed form.
	Username, Password string
	// TLS is how the connection is protected (see TLSMode). Empty means
	// TLSRequired when credentials are set, TLSOpportunistic otherwise.
	TLS TLSMode
	// RootCAs verifies the server's certificate; nil means the system's
	// roots (on Linux, SSL_CERT_FILE and SSL_CERT_DIR can point elsewhere).
	RootCAs *x509.CertPool
	// LocalName is the host name sent with EHLO. Empty means "localhost".
	LocalName string
	// MaxIdle is how many open connections are kept for reuse between
	// sends. Zero means 64; a negative value disables reuse.
	MaxIdle int
}

// Validate reports whether c can be used. Its errors are one line each and name the setting
// at fault as both binaries read it (SMTP_ADDR, SMTP_USERNAME, SMTP_PASSWORD, SMTP_TLS); none
// shows the password.
func (c SMTPConfig) Validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("SMTP_ADDR: %q: %w", c.Addr, err)
	}
	// The host is needed to verify TLS certificates, so ":25" will not do.
	if host == "" || port == "" {
		return fmt.Errorf("SMTP_ADDR: %q: want host:port", c.Addr)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("smtp config: negative timeout %v", c.Timeout)
	}
	if c.TLS != "" && !slices.Contains(TLSModes, c.TLS) {
		return fmt.Errorf("SMTP_TLS: must be one of %v, got %q", TLSModes, c.TLS)
	}
	if (c.Username == "") != (c.Password == "") {
		return errors.New("SMTP_USERNAME, SMTP_PASSWORD: set both, or neither")
	}
	if c.Password != "" && c.TLS == TLSOff {
		return errors.New("SMTP_PASSWORD: credentials are only ever sent over TLS; SMTP_TLS=off would send them in plain text")
	}
	return nil
}

// tlsMode is the mode in force: c.TLS, or its default.
func (c SMTPConfig) tlsMode() TLSMode {
	switch {
	case c.TLS != "":
		return c.TLS
	case c.Username != "":
		return TLSRequired
	}
	return TLSOpportunistic
}

// String shows the configuration with the password masked, so that printing
// it (%v, %+v) cannot leak it.
func (c SMTPConfig) String() string {
	if c.Password != "" {
		c.Password = "********"
	}
	type plain SMTPConfig // without the String method
	return fmt.Sprintf("%+v", plain(c))
}

// GoString masks the password from %#v as String does from %v.
func (c SMTPConfig) GoString() string { return "mail.SMTPConfig" + c.String() }

// SMTPSender sends messages over SMTP, keeping a few connections open for
// reuse. It is safe for concurrent use; concurrent sends use separate
// connections. Call Close to release the idle connections.
type SMTPSender struct {
	cfg    SMTPConfig
	host   string // for TLS verification and net/smtp's PLAIN auth check
	tls    *tls.Config
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*smtpConn
	closed bool
}

// smtpConn is one SMTP session, with the raw connection kept so that its
// deadline can be set.
type smtpConn struct {
	nc net.Conn
	c  *smtp.Client
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender returns a sender for cfg. It does not connect until the
// first Send, so it does not fail when the server is down.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.LocalName == "" {
		cfg.LocalName = "localhost"
	}
	if cfg.MaxIdle == 0 {
		cfg.MaxIdle = defaultMaxIdle
	}
	cfg.TLS = cfg.tlsMode()
	host, _, _ := net.SplitHostPort(cfg.Addr)
	// TLS 1.2 at least: what every maintained mail server speaks, and what
	// RFC 8996 leaves after deprecating 1.0 and 1.1.
	tc := &tls.Config{ServerName: host, RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	return &SMTPSender{cfg: cfg, host: host, tls: tc}, nil
}

// Send delivers m, taking at most the configured Timeout (less if ctx ends
// sooner). On error, IsPermanent tells whether a retry can succeed. An error
// after the message was handed over (e.g. the final reply was lost) means it
// may have been delivered; a retry then sends a copy with the same
// Message-ID.
func (s *SMTPSender) Send(ctx context.Context, m Message) error {
	env, raw, err := compose(m, time.Now())
	if err != nil {
		return fmt.Errorf("send mail to %q: %w", m.To, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.send(ctx, env, raw); err != nil {
		return fmt.Errorf("send mail to %q: %w", env.to, withCause(ctx, err))
	}
	return nil
}

// withCause adds ctx's error to err when ctx is why err happened, so that
// callers can test for context.Canceled or context.DeadlineExceeded instead
// of getting a bare "i/o timeout".
func withCause(ctx context.Context, err error) error {
	cause := ctx.Err()
	if cause == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is ctx's, and it can pass a moment
		// before ctx's own timer fires.
		cause = context.DeadlineExceeded
	}
	if cause == nil || errors.Is(err, cause) {
		return err
	}
	return fmt.Errorf("%w: %w", cause, err)
}

// Close closes the idle connections; later sends fail with ErrClosed. Sends
// in progress finish, and their connections are closed afterwards.
func (s *SMTPSender) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, sc := range idle {
		sc.quit()
	}
	return nil
}

// send runs one transaction on a pooled or new connection.
func (s *SMTPSender) send(ctx context.Context, env envelope, raw []byte) error {
	sc, release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	err = deliver(sc, env, raw)
	usable := release()
	if err != nil || !usable {
		// After an error the session state is unknown; a fresh connection
		// is cheaper than working out whether this one can continue.
		sc.nc.Close()
		return err
	}
	s.put(sc)
	return nil
}

// acquire returns a live connection bound to ctx (see bind), reusing an idle
// one when it still answers.
func (s *SMTPSender) acquire(ctx context.Context) (*smtpConn, func() bool, error) {
	for {
		sc, err := s.pop()
		if err != nil {
			return nil, nil, err
		}
		if sc == nil {
			break
		}
		release := bind(ctx, sc.nc)
		// The server may have dropped the connection while it sat idle.
		// RSET proves it alive and clears any transaction state in the
		// same round trip.
		if err := sc.c.Reset(); err == nil {
			return sc, release, nil
		}
		release()
		sc.nc.Close()
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
	}
	return s.dial(ctx)
}

// pop takes the most recently used idle connection, or nil if none.
func (s *SMTPSender) pop() (*smtpConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	n := len(s.idle)
	if n == 0 {
		return nil, nil
	}
	sc := s.idle[n-1]
	s.idle[n-1] = nil
	s.idle = s.idle[:n-1]
	return sc, nil
}

// put keeps sc for reuse, or closes it if the pool is full or closed.
func (s *SMTPSender) put(sc *smtpConn) {
	s.mu.Lock()
	if !s.closed && len(s.idle) < s.cfg.MaxIdle {
		s.idle = append(s.idle, sc)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	sc.quit()
}

// dial opens and sets up a new session.
func (s *SMTPSender) dial(ctx context.Context) (*smtpConn, func() bool, error) {
	var nc net.Conn
	var err error
	if s.cfg.TLS == TLSImplicit {
		d := tls.Dialer{NetDialer: &s.dialer, Config: s.tls}
		nc, err = d.DialContext(ctx, "tcp", s.cfg.Addr)
	} else {
		nc, err = s.dialer.DialContext(ctx, "tcp", s.cfg.Addr)
	}
	if err != nil {
		return nil, nil, err
	}
	release := bind(ctx, nc)
	c, err := s.handshake(nc)
	if err != nil {
		release()
		nc.Close()
		return nil, nil, err
	}
	return &smtpConn{nc: nc, c: c}, release, nil
}

// handshake reads the greeting, says EHLO, upgrades to TLS as the mode says
// and authenticates when configured. Its errors are about the server or our
// configuration, never about a message, so none is permanent.
func (s *SMTPSender) handshake(nc net.Conn) (*smtp.Client, error) {
	c, err := smtp.NewClient(nc, s.host)
	if err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if s.cfg.TLS == TLSRequired || s.cfg.TLS == TLSOpportunistic {
		switch ok, _ := c.Extension("STARTTLS"); {
		case ok:
			// StartTLS says EHLO again: what the server offered before
			// the upgrade (AUTH among it) is forgotten.
			if err := c.StartTLS(s.tls); err != nil {
				return nil, fmt.Errorf("STARTTLS: %w", err)
			}
		case s.cfg.TLS == TLSRequired:
			return nil, errors.New("STARTTLS: TLS is required but the server does not offer STARTTLS")
		}
	}
	if s.cfg.Username != "" {
		if err := authenticate(c, s.host, s.cfg.Username, s.cfg.Password); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// stepMail names the MAIL FROM step in errors; rejected judges its replies apart.
const stepMail = "MAIL FROM"

// deliver runs MAIL, RCPT and DATA for one message.
func deliver(sc *smtpConn, env envelope, raw []byte) error {
	if err := sc.c.Mail(env.from); err != nil {
		return rejected(stepMail, err)
	}
	if err := sc.c.Rcpt(env.to); err != nil {
		return rejected("RCPT TO", err)
	}
	w, err := sc.c.Data()
	if err != nil {
		return rejected("DATA", err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	// Close sends the final "." and reads the server's verdict.
	if err := w.Close(); err != nil {
		return rejected("end of DATA", err)
	}
	return nil
}

// bind applies ctx to nc: its deadline becomes the connection's, and
// cancelling ctx interrupts any blocked read or write (a deadline in the past
// wakes them). The returned release detaches ctx and reports whether the
// connection is still usable, which it is not once cancellation reached it.
func bind(ctx context.Context, nc net.Conn) (release func() bool) {
	deadline, _ := ctx.Deadline() // zero, meaning none, if ctx has no deadline
	_ = nc.SetDeadline(deadline)
	return context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Unix(1, 0))
	})
}

// quit ends the session politely and closes the connection. Errors are
// ignored: the connection is being discarded either way.
func (sc *smtpConn) quit() {
	_ = sc.nc.SetDeadline(time.Now().Add(quitTimeout))
	_ = sc.c.Quit()
	sc.nc.Close()
}
