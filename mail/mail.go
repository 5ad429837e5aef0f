// Package mail sends one plain-text email per call. The email stage depends on
// the Sender interface; SMTPSender is the implementation that talks to a real
// server (Mailpit in development and tests).
package mail

import "context"

// Message is one plain-text email to a single recipient.
type Message struct {
	// To and From are single RFC 5322 addresses, with or without a display
	// name ("Ada <ada@example.com>" or "ada@example.com").
	To, From string
	// Subject may contain any Unicode text except line breaks; it is
	// RFC 2047-encoded when it is not plain ASCII.
	Subject string
	// Body is UTF-8 text; it is sent quoted-printable, so any line length
	// and any line-ending style is safe.
	Body string
	// MessageID is the caller's stable id, e.g. "<order-42-v4@orderd>"
	// (angle brackets are added if missing). It must not change when the
	// same email is sent again after a crash, so that copies can be
	// recognised downstream; for that reason it is required rather than
	// generated here.
	MessageID string
}

// Sender delivers a message, or reports why it could not. Callers should
// dead-letter errors for which IsPermanent reports true and retry the rest.
type Sender interface {
	Send(ctx context.Context, m Message) error
}
