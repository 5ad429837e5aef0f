package ordering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/mail"
	"orderd/payment"
	"orderd/pipeline"
	"orderd/tracing"
)

// Stages runs the three stages of an order's path. Each stage is given the event that
// triggered it (as received from its queue), reloads the order from the log — the log, not
// the message, is the truth — and lets the domain decide. A trigger whose step was already
// taken is a redelivery and changes nothing.
type Stages struct {
	store    *eventstore.Store
	catalog  *Catalog
	gateway  payment.Gateway
	mailer   mail.Sender
	mailFrom string
	log      *slog.Logger
}

// StagesConfig lists the stages' dependencies.
type StagesConfig struct {
	Store    *eventstore.Store
	Catalog  *Catalog
	Gateway  payment.Gateway
	Mailer   mail.Sender
	MailFrom string // the shop's address: sender of every email, recipient when the order has none
	Log      *slog.Logger
}

// NewStages returns the stages.
func NewStages(c StagesConfig) (*Stages, error) {
	if c.Store == nil || c.Catalog == nil || c.Gateway == nil || c.Mailer == nil || c.Log == nil || c.MailFrom == "" {
		return nil, errors.New("ordering: NewStages needs a store, catalogue, gateway, mailer, mail-from address and logger")
	}
	return &Stages{store: c.Store, catalog: c.Catalog, gateway: c.Gateway, mailer: c.Mailer, mailFrom: c.MailFrom, log: c.Log}, nil
}

// Stages carries out the pipeline table's stages.
var _ pipeline.Steps = (*Stages)(nil)

// Payment charges a placed order, or refunds one whose reservation failed.
func (s *Stages) Payment(ctx context.Context, trigger eventstore.Record) error {
	return s.run(ctx, pipeline.MustLookup(pipeline.Payment), trigger, false, func(ctx context.Context, _ eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		key := eventstore.EventID(o.ID(), o.Version())
		switch o.NextStep() {
		case domain.StepPayment:
			res, err := s.gateway.Charge(ctx, payment.ChargeRequest{OrderID: int64(o.ID()), AmountCents: o.TotalCents(), IdempotencyKey: key})
			if err != nil {
				return nil, domain.Unavailable("payment gateway: %v", err)
			}
			return o.Pay(domain.PaymentOutcome{Approved: res.Approved, PaymentID: res.PaymentID, Reason: res.Reason})
		case domain.StepRefund:
			id, err := s.gateway.Refund(ctx, payment.RefundRequest{OrderID: int64(o.ID()), PaymentID: o.PaymentID(), AmountCents: o.TotalCents(), IdempotencyKey: key})
			if err != nil {
				return nil, domain.Unavailable("payment gateway: %v", err)
			}
			return o.Refund(id)
		}
		return nil, domain.ErrStepNotDue
	})
}

// Inventory reserves a paid order's items; the stock change commits with the event.
func (s *Stages) Inventory(ctx context.Context, trigger eventstore.Record) error {
	return s.run(ctx, pipeline.MustLookup(pipeline.Inventory), trigger, true, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		if o.NextStep() != domain.StepInventory {
			return nil, domain.ErrStepNotDue
		}
		out, err := s.catalog.Reserve(ctx, tx, o.Items())
		if err != nil {
			return nil, err
		}
		return o.Reserve(out)
	})
}

// Email tells the customer how their order ended. The mail goes out before EmailSent is
// appended, so a crash in between sends it again: at least once, with a Message-ID derived
// from the order's stream and version so the copies are recognisably the same email.
//
// A message the mail server refuses for good (an unknown mailbox, a refused domain) ends the
// step with EmailFailed and the server's reply: retrying cannot help, and dead-lettering it
// would leave a paid order pending for ever, beyond the reach of a re-drive. Anything else
// (the server down, a 4xx, our own credentials refused) is retried.
func (s *Stages) Email(ctx context.Context, trigger eventstore.Record) error {
	return s.run(ctx, pipeline.MustLookup(pipeline.Email), trigger, false, func(ctx context.Context, _ eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		if o.NextStep() != domain.StepEmail {
			return nil, domain.ErrStepNotDue
		}
		m := s.compose(o)
		if err := s.mailer.Send(ctx, m); err != nil {
			if mail.IsPermanent(err) {
				s.log.WarnContext(ctx, "the mail server refused the email for good; the order ends without it",
					"order_id", o.ID(), "template", o.EmailTemplate(), "correlation_id", trigger.Metadata.CorrelationID)
				return o.RecordEmailFailure(m.To, mail.Reply(err))
			}
			return nil, domain.Unavailable("send email: %v", err)
		}
		return o.RecordEmail(m.To, m.MessageID)
	})
}

func (s *Stages) compose(o *domain.Order) mail.Message {
	to := o.CustomerEmail()
	if to == "" {
		to = s.mailFrom // orders placed through the seed's API carry no address: notify the shop
	}
	var subject, body strings.Builder
	switch o.EmailTemplate() {
	case domain.TemplatePaymentFailed:
		fmt.Fprintf(&subject, "Order %d: payment declined", o.ID())
		fmt.Fprintf(&body, "Hello %s,\n\nwe could not take the payment for order %d, so it was not placed.\n", o.CustomerName(), o.ID())
	case domain.TemplateCancelled:
		fmt.Fprintf(&subject, "Order %d cancelled", o.ID())
		fmt.Fprintf(&body, "Hello %s,\n\norder %d was cancelled because an item is out of stock. Your payment has been refunded.\n", o.CustomerName(), o.ID())
	default:
		fmt.Fprintf(&subject, "Order %d confirmed", o.ID())
		fmt.Fprintf(&body, "Hello %s,\n\nthank you for order %d.\n\n", o.CustomerName(), o.ID())
		for _, it := range o.Items() {
			fmt.Fprintf(&body, "  %d x %s  %s\n", it.Quantity, it.SKU, money(int64(it.Quantity)*it.UnitPriceCents))
		}
		fmt.Fprintf(&body, "\nTotal: %s\n", money(o.TotalCents()))
	}
	return mail.Message{
		To: to, From: s.mailFrom, Subject: subject.String(), Body: body.String(),
		MessageID: fmt.Sprintf("<order-%d-v%d@%s>", o.ID(), o.Version(), s.mailDomain()),
	}
}

// mailDomain is the right-hand side of Message-IDs: the shop's own domain, so that ids from
// different shops (or test runs) sharing a mail server never collide.
func (s *Stages) mailDomain() string {
	_, domain, _ := strings.Cut(s.mailFrom, "@")
	return domain
}

func money(cents int64) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) }

// run checks the trigger against the order's log and the stage's triggers in the pipeline
// table, and lets decide act on the order; writes
// says whether decide writes through the transaction (only then does the store need to
// isolate its writes). A step that is not due is a redelivery: it is logged and
// acknowledged. A trigger that is not the order's latest event as the log holds it, or that
// this stage does not act on, is refused as domain.ErrNotTrigger: it changes nothing, and it
// is dead-lettered without holding up the order.
func (s *Stages) run(ctx context.Context, st pipeline.Stage, trigger eventstore.Record, writes bool, decide eventstore.DecideTx) error {
	stage, accepts := st.Component, st.Triggers
	md := eventstore.Metadata{CorrelationID: trigger.Metadata.CorrelationID, CausationID: trigger.EventID(), TraceParent: tracing.Parent(ctx)}
	update := s.store.UpdateTx
	if !writes {
		update = func(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.DecideTx) ([]eventstore.Record, error) {
			return s.store.Update(ctx, id, md, func(o *domain.Order) ([]domain.Event, error) { return decide(ctx, nil, o) })
		}
	}
	_, err := update(ctx, trigger.StreamID, md, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
		// Every step is due because of the stream's latest event, so only that event may
		// drive it: an older one is a redelivery whose step was taken (a stale OrderPlaced
		// must not drive the refund that InventoryReservationFailed made due). The log, not
		// the message, says what that event is: the message must name it exactly.
		switch {
		case trigger.Version > o.Version():
			return nil, notTrigger("version", "names version %d of order %d, which has only %d events", trigger.Version, o.ID(), o.Version())
		case trigger.Version < o.Version():
			return nil, domain.ErrStepNotDue
		case trigger.Type != o.LastEventType():
			return nil, notTrigger("type", "names %s as version %d of order %d, whose log has %s there", trigger.Type, trigger.Version, o.ID(), o.LastEventType())
		case !slices.Contains(accepts, trigger.Type):
			return nil, notTrigger("type", "the %s stage does not handle %s events", stage, trigger.Type)
		}
		return decide(ctx, tx, o)
	})
	if errors.Is(err, domain.ErrStepNotDue) {
		s.log.DebugContext(ctx, "step not due; redelivery ignored", "stage", stage, "order_id", trigger.StreamID, "event_id", trigger.EventID(), "correlation_id", trigger.Metadata.CorrelationID)
		return nil
	}
	if domain.ErrorKind(err) == domain.KindNotFound && !errors.Is(err, domain.ErrNotTrigger) {
		err = fmt.Errorf("%w: %w", domain.ErrNotTrigger, err) // no log holds the event it claims
	}
	if err != nil {
		return fmt.Errorf("%s stage, order %d: %w", stage, trigger.StreamID, err)
	}
	return nil
}

// notTrigger is the error of a message that is not its order's trigger; it is permanent
// (KindInvalid) and marked domain.ErrNotTrigger.
func notTrigger(field, format string, args ...any) error {
	return fmt.Errorf("%w: %w", domain.ErrNotTrigger, domain.Invalid(field, format, args...))
}
