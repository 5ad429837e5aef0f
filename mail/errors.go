package mail

import (
	"errors"
	"fmt"
	"net/textproto"
)

// ErrInvalidMessage is wrapped by errors for messages that cannot be sent as
// given (bad address, line break in a header, missing Message-ID). Such errors
// are permanent.
var ErrInvalidMessage = errors.New("invalid message")

// ErrClosed is returned by Send after Close. It is not permanent: the message
// itself is fine and can be sent by another sender.
var ErrClosed = errors.New("mail sender closed")

// IsPermanent reports whether err means that sending the same message again
// cannot succeed: the message is invalid, or the server rejected it with a 5xx
// reply. Everything else (dial failures, timeouts, cancellation, 4xx replies,
// a dropped connection) is transient and worth retrying.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// permanentError marks an error that retrying the same message cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// invalid returns a permanent error wrapping ErrInvalidMessage.
func invalid(format string, args ...any) error {
	return permanentError{fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))}
}

// rejected wraps an error from one step of an SMTP transaction, marking it
// permanent when the server answered with a 5xx reply.
//
// Only steps that concern this message (MAIL, RCPT, DATA) go through here:
// a 5xx during the greeting, EHLO or AUTH says something about our
// configuration or the server, not about the message, and dead-lettering
// every message because of it would lose mail that a fix could deliver.
func rejected(step string, err error) error {
	err = fmt.Errorf("%s: %w", step, err)
	var tp *textproto.Error
	if !errors.As(err, &tp) || tp.Code < 500 || tp.Code > 599 {
		return err
	}
	// 530 "authentication required" at MAIL means we are misconfigured,
	// which is the same situation as a failed AUTH.
	if tp.Code == 530 {
		return err
	}
	return permanentError{err}
}
