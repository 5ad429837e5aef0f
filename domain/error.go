// Package domain holds the order aggregate, its events and the rules that decide them.
// It imports only the standard library: storage, transport and JSON live elsewhere.
package domain

import (
	"errors"
	"fmt"
)

// Kind classifies an error so that the edges (HTTP, queue consumers) can react to it
// without matching error text.
type Kind int

// The kinds of domain error.
const (
	// KindInternal is anything unexpected; it is the zero value so that an unknown
	// error is never mistaken for the caller's fault.
	KindInternal Kind = iota
	// KindInvalid means the input breaks a rule; retrying it cannot help.
	KindInvalid
	// KindNotFound means the order (or another named thing) does not exist.
	KindNotFound
	// KindConflict means the request clashes with the current state.
	KindConflict
	// KindUnavailable means a dependency is down; retrying later can help.
	KindUnavailable
)

// Error is a domain error: a kind, the field it concerns (if any) and a message meant for
// the person who sent the input.
type Error struct {
	Kind    Kind
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// Invalid returns a KindInvalid error about field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound returns a KindNotFound error.
func NotFound(format string, args ...any) *Error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf(format, args...)}
}

// Conflict returns a KindConflict error.
func Conflict(format string, args ...any) *Error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

// Unavailable returns a KindUnavailable error.
func Unavailable(format string, args ...any) *Error {
	return &Error{Kind: KindUnavailable, Message: fmt.Sprintf(format, args...)}
}

// ErrorKind returns the kind of the first *Error in err's chain, or KindInternal.
func ErrorKind(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrStepNotDue is returned by a decision whose step has already been taken or can no
// longer be taken (the order moved on). Consumers treat it as "nothing to do": it is how a
// redelivered message turns into a no-op.
var ErrStepNotDue = &Error{Kind: KindConflict, Message: "step not due in the order's current state"}

// ErrNotTrigger marks a message that is not what drives its order on: it claims an event the
// order's log does not hold as its latest (a stale, forged or foreign message: an order that
// does not exist, a version beyond the stream, another type at that version), or it went to a
// stage that does not act on its event. Such a message changes nothing; consumers dead-letter
// it without attaching it to the order, which it cannot be holding up.
var ErrNotTrigger = errors.New("stale, forged or misrouted message")
