package mail

import (
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
)

// ErrInvalidMessage is wrapped by errors for messages that cannot be sent as
// given (bad address, line break in a header, missing Message-ID). Such errors
// are permanent.
var ErrInvalidMessage = errors.New("invalid message")

// ErrClosed is returned by Send after Close. It is not permanent: the message
// itself is fine and can be sent by another sender.
var ErrClosed = errors.New("mail sender closed")

// IsPermanent reports whether err means that sending the same message again
// cannot succeed: the message is invalid, or the server refused its recipient
// or its content with a 5xx reply. Everything else (dial failures, timeouts,
// cancellation, 4xx replies, a dropped connection, and the 5xx replies that
// refuse us rather than the message: see rejected) is transient and worth
// retrying.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Reply returns what a permanent error says about the message: the step and
// the server's reply ("RCPT TO: 550 5.1.1 no such user"), or why the message
// cannot be sent at all ("invalid message: ..."). It is "" for an error that
// is not permanent. It never holds the SMTP password: only replies to MAIL,
// RCPT and DATA, and the message's own fields, become permanent errors.
func Reply(err error) string {
	var p permanentError
	if !errors.As(err, &p) {
		return ""
	}
	return p.reply
}

// permanentError marks an error that retrying the same message cannot fix,
// with what it says about the message as plain text (textproto.Error quotes
// the server's text).
type permanentError struct {
	err   error
	reply string
}

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// invalid returns a permanent error wrapping ErrInvalidMessage.
func invalid(format string, args ...any) error {
	err := fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
	return permanentError{err: err, reply: err.Error()}
}

// rejected wraps an error from one step of an SMTP transaction, marking it
// permanent when the server refused this message for good: a 5xx reply to
// RCPT TO (the recipient: unknown mailbox, refused domain, bad address) or to
// DATA (the content).
//
// A permanent rejection ends the order without its email, for good, so only
// what concerns this message counts. A 5xx during the greeting, EHLO or AUTH
// says something about our configuration or the server, and so do these,
// which are left transient (retried, then dead-lettered by the queue's redrive
// policy, and sent once the cause is fixed):
//   - any 5xx to MAIL FROM: it names only our sender, so the same reply
//     would refuse every order's email;
//   - 530 (authentication or STARTTLS required) at any step;
//   - replies whose enhanced status code (RFC 3463) is of class X.7, security
//     or policy: "relay access denied", "sender not authorised", a blocked
//     sending IP, DMARC. A relay refuses us with these, whoever the recipient.
func rejected(step string, err error) error {
	err = fmt.Errorf("%s: %w", step, err)
	var tp *textproto.Error
	if !errors.As(err, &tp) || tp.Code < 500 || tp.Code > 599 {
		return err
	}
	if step == stepMail || tp.Code == 530 || enhancedClass(tp.Msg) == 7 {
		return err
	}
	return permanentError{err: err, reply: fmt.Sprintf("%s: %03d %s", step, tp.Code, tp.Msg)}
}

// enhancedClass returns the class (the middle number) of the RFC 3463 enhanced
// status code a reply's text starts with, as in "5.7.1 Relay access denied",
// or -1 if it starts with none.
func enhancedClass(msg string) int {
	code, _, _ := strings.Cut(msg, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return -1
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return -1
		}
	}
	class, _ := strconv.Atoi(parts[1])
	return class
}
