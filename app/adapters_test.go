package app_test

import (
	"context"
	"strings"
	"testing"

	"orderd/app"
	"orderd/mail"
	"orderd/payment"
)

type nopGateway struct{ payment.Simulated }

type nopMailer struct{}

func (nopMailer) Send(context.Context, mail.Message) error { return nil }

func TestAdaptersValidate(t *testing.T) {
	ok := app.Adapters{MailFrom: "shop@example.com", SMTP: mail.SMTPConfig{Addr: "127.0.0.1:1025"}}
	for name, c := range map[string]struct {
		change func(a *app.Adapters)
		err    string // a prefix of the error; "" for none
	}{
		"the defaults":           {func(*app.Adapters) {}, ""},
		"simulated by name":      {func(a *app.Adapters) { a.PaymentGateway = "simulated" }, ""},
		"an unknown gateway":     {func(a *app.Adapters) { a.PaymentGateway = "stripe" }, `PAYMENT_GATEWAY: want one of simulated, got "stripe"`},
		"a built gateway":        {func(a *app.Adapters) { a.PaymentGateway, a.Gateway = "stripe", nopGateway{} }, ""},
		"a negative limit":       {func(a *app.Adapters) { a.DeclineAboveCents = -1 }, "PAYMENT_DECLINE_ABOVE_CENTS:"},
		"a display name in From": {func(a *app.Adapters) { a.MailFrom = "Shop <shop@example.com>" }, "MAIL_FROM:"},
		"no SMTP port":           {func(a *app.Adapters) { a.SMTP.Addr = "127.0.0.1" }, "SMTP_ADDR:"},
		"a built mailer":         {func(a *app.Adapters) { a.SMTP.Addr, a.Mailer = "", nopMailer{} }, ""},
	} {
		a := ok
		c.change(&a)
		err := a.Validate()
		if (c.err == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), c.err)) {
			t.Errorf("%s: %v, want %q", name, err, c.err)
		}
	}
}
