package app

import (
	"fmt"
	netmail "net/mail"
	"slices"
	"strings"

	"orderd/mail"
	"orderd/payment"
)

// GatewaySimulated is the built-in payment gateway (payment.Simulated), and the default.
const GatewaySimulated = "simulated"

// PaymentGateways are the PAYMENT_GATEWAY values this release accepts.
var PaymentGateways = []string{GatewaySimulated}

// Adapters chooses the outside world the stages talk to: which payment gateway, which mail
// server. Both binaries read them from the same variables and check them with Validate.
type Adapters struct {
	// PaymentGateway names the gateway (PAYMENT_GATEWAY, one of PaymentGateways); "" is
	// the simulated one.
	PaymentGateway string
	// DeclineAboveCents is the simulated gateway's limit (PAYMENT_DECLINE_ABOVE_CENTS).
	DeclineAboveCents int64
	// Gateway, if set, is used instead of the one PaymentGateway names: a program that embeds
	// the service with a gateway of its own, or a test with one that fails on purpose.
	Gateway payment.Gateway

	// SMTP is the mail server (SMTP_ADDR, SMTP_USERNAME, SMTP_PASSWORD, SMTP_TLS).
	SMTP mail.SMTPConfig
	// MailFrom is the shop's address (MAIL_FROM): sender of every email, recipient when an
	// order has none.
	MailFrom string
	// Mailer, if set, is used instead of an SMTP sender over SMTP (another transport, or a
	// test's).
	Mailer mail.Sender
}

// Validate checks the adapters' settings; its errors are one line each and name the
// variable at fault.
func (a Adapters) Validate() error {
	if a.Gateway == nil && a.PaymentGateway != "" && !slices.Contains(PaymentGateways, a.PaymentGateway) {
		return fmt.Errorf("PAYMENT_GATEWAY: want one of %s, got %q", strings.Join(PaymentGateways, ", "), a.PaymentGateway)
	}
	if a.DeclineAboveCents < 0 {
		return fmt.Errorf("PAYMENT_DECLINE_ABOVE_CENTS: must be a non-negative whole number of cents, got %d", a.DeclineAboveCents)
	}
	if addr, err := netmail.ParseAddress(a.MailFrom); err != nil || addr.Address != a.MailFrom {
		return fmt.Errorf("MAIL_FROM: must be a plain email address, got %q", a.MailFrom)
	}
	if a.Mailer == nil {
		return a.SMTP.Validate()
	}
	return nil
}

// gateway returns the payment gateway the settings choose.
func (a Adapters) gateway() (payment.Gateway, error) {
	if a.Gateway != nil {
		return a.Gateway, nil
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	switch a.PaymentGateway {
	case "", GatewaySimulated:
		return payment.Simulated{DeclineAboveCents: a.DeclineAboveCents}, nil
	}
	return nil, fmt.Errorf("PAYMENT_GATEWAY: no gateway %q", a.PaymentGateway) // Validate lets none through
}

// mailer returns the mail sender the settings choose, and what closes it.
func (a Adapters) mailer() (mail.Sender, func() error, error) {
	if a.Mailer != nil {
		return a.Mailer, func() error { return nil }, nil
	}
	s, err := mail.NewSMTPSender(a.SMTP)
	if err != nil {
		return nil, nil, fmt.Errorf("SMTP_ADDR: %w", err)
	}
	return s, s.Close, nil
}
