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
	"orderd/tracing"
)

// Stages runs the stages of an order's path. Each stage is given the event that triggered
// it (as received from its queue), reloads the order from the log — the log, not the
// message, is the truth — and lets a decision act on it. A trigger whose step was already
// taken is a redelivery and changes nothing. Payment, Inventory and Email are the built-in
// stages; Take and TakeTx are how any stage, built in or new, takes its step.
type Stages struct {
	store    StageStore
	catalog  Stock
	gateway  payment.Gateway
	mailer   mail.Sender
	mailFrom string
	log      *slog.Logger
}

// StageStore is what the stages need of the event log: reload an order, let a decision act
// on it and append what it decided, with or without a transaction to write through
// (*eventstore.Store).
type StageStore interface {
	Update(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.Decide) ([]eventstore.Record, error)
	UpdateTx(ctx context.Context, id domain.OrderID, md eventstore.Metadata, decide eventstore.DecideTx) ([]eventstore.Record, error)
}

// Stock is what the inventory stage needs of the catalogue (*Catalog): take an order's items
// out of stock in the transaction that appends the outcome.
type Stock interface {
	Reserve(ctx context.Context, tx eventstore.Tx, items []domain.Item) (domain.ReservationOutcome, error)
}

// StagesConfig lists the stages' dependencies.
type StagesConfig struct {
	Store    StageStore
	Catalog  Stock
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

// StageSpec is what Take needs to know of the stage taking a step, from its entry in the
// pipeline table: its name (for logs and errors) and the event types it acts on.
type StageSpec struct {
	Name     string
	Triggers []string
	// Produces are the event types the stage may append; a decision that returns another
	// is refused (KindInvalid: a bug no retry fixes) and appends nothing.
	Produces []string
}

// allowed refuses events the stage's entry does not say it produces: another type would
// have no route, or the wrong one, and the order would stop or go astray.
func (spec StageSpec) allowed(events []domain.Event, err error) ([]domain.Event, error) {
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		if !slices.Contains(spec.Produces, e.EventType()) {
			return nil, domain.Invalid("event", "the %s stage produced %s, which its pipeline entry does not list (%s)", spec.Name, e.EventType(), strings.Join(spec.Produces, ", "))
		}
	}
	return events, nil
}

// Payment charges a placed order, or refunds one whose reservation failed.
//
// A charge the gateway refuses for good (payment.IsPermanent: a card the provider will never
// accept, an account closed) ends the order as PaymentFailed with the gateway's reason, as a
// decline does: retrying cannot help, and the customer gets the payment_failed email. A
// refund refused for good cannot be turned into an outcome (the customer paid, and is owed
// the money), so it is dead-lettered with its reason for an operator; any other gateway
// error is retried.
func (s *Stages) Payment(ctx context.Context, spec StageSpec, trigger eventstore.Record) error {
	return s.Take(ctx, spec, trigger, func(ctx context.Context, o *domain.Order) ([]domain.Event, error) {
		key := eventstore.EventID(o.ID(), o.Version())
		switch o.NextStep() {
		case domain.StepPayment:
			res, err := s.gateway.Charge(ctx, payment.ChargeRequest{OrderID: int64(o.ID()), AmountCents: o.TotalCents(), IdempotencyKey: key})
			if payment.IsPermanent(err) {
				s.log.WarnContext(ctx, "the payment gateway refused the charge for good; the order fails",
					"order_id", o.ID(), "error", err, "correlation_id", trigger.Metadata.CorrelationID)
				return o.Pay(domain.PaymentOutcome{Reason: payment.Reason(err)})
			}
			if err != nil {
				return nil, domain.Unavailable("payment gateway: %v", err)
			}
			return o.Pay(domain.PaymentOutcome{Approved: res.Approved, PaymentID: res.PaymentID, Reason: res.Reason})
		case domain.StepRefund:
			id, err := s.gateway.Refund(ctx, payment.RefundRequest{OrderID: int64(o.ID()), PaymentID: o.PaymentID(), AmountCents: o.TotalCents(), IdempotencyKey: key})
			if payment.IsPermanent(err) {
				return nil, domain.Invalid("refund", "the payment gateway refused the refund of payment %s for good: %s", o.PaymentID(), payment.Reason(err))
			}
			if err != nil {
				return nil, domain.Unavailable("payment gateway: %v", err)
			}
			return o.Refund(id)
		}
		return nil, domain.ErrStepNotDue
	})
}

// Inventory reserves a paid order's items; the stock change commits with the event.
func (s *Stages) Inventory(ctx context.Context, spec StageSpec, trigger eventstore.Record) error {
	return s.TakeTx(ctx, spec, trigger, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
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
func (s *Stages) Email(ctx context.Context, spec StageSpec, trigger eventstore.Record) error {
	return s.Take(ctx, spec, trigger, func(ctx context.Context, o *domain.Order) ([]domain.Event, error) {
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

// Take checks trigger against the order's log and against spec, the stage's entry in the
// pipeline table, and lets decide act on the order; what decide returns is appended, caused
// by trigger. It is how every stage takes its step: decide returns domain.ErrStepNotDue
// when the order's state says the step was already taken.
//
// A step that is not due is a redelivery: it is logged and acknowledged. A trigger that is
// not the order's latest event as the log holds it, or that this stage does not act on, is
// refused as domain.ErrNotTrigger: it changes nothing, and it is dead-lettered without
// holding up the order.
func (s *Stages) Take(ctx context.Context, spec StageSpec, trigger eventstore.Record, decide func(ctx context.Context, o *domain.Order) ([]domain.Event, error)) error {
	return s.take(ctx, spec, trigger, func(md eventstore.Metadata, check func(*domain.Order) error) error {
		_, err := s.store.Update(ctx, trigger.StreamID, md, func(o *domain.Order) ([]domain.Event, error) {
			if err := check(o); err != nil {
				return nil, err
			}
			return spec.allowed(decide(ctx, o))
		})
		return err
	})
}

// TakeTx is Take for a decision that writes through the append's transaction (the
// inventory stage's stock change): only then does the store need to isolate its writes.
func (s *Stages) TakeTx(ctx context.Context, spec StageSpec, trigger eventstore.Record, decide eventstore.DecideTx) error {
	return s.take(ctx, spec, trigger, func(md eventstore.Metadata, check func(*domain.Order) error) error {
		_, err := s.store.UpdateTx(ctx, trigger.StreamID, md, func(ctx context.Context, tx eventstore.Tx, o *domain.Order) ([]domain.Event, error) {
			if err := check(o); err != nil {
				return nil, err
			}
			return spec.allowed(decide(ctx, tx, o))
		})
		return err
	})
}

// take runs update with the trigger's metadata and the check that the trigger is the
// order's, and turns its outcome into the stage's answer.
func (s *Stages) take(ctx context.Context, spec StageSpec, trigger eventstore.Record, update func(eventstore.Metadata, func(*domain.Order) error) error) error {
	md := eventstore.Metadata{CorrelationID: trigger.Metadata.CorrelationID, CausationID: trigger.EventID(), TraceParent: tracing.Parent(ctx)}
	err := update(md, func(o *domain.Order) error {
		// Every step is due because of the stream's latest event, so only that event may
		// drive it: an older one is a redelivery whose step was taken (a stale OrderPlaced
		// must not drive the refund that InventoryReservationFailed made due). The log, not
		// the message, says what that event is: the message must name it exactly.
		switch {
		case trigger.Version > o.Version():
			return notTrigger("version", "names version %d of order %d, which has only %d events", trigger.Version, o.ID(), o.Version())
		case trigger.Version < o.Version():
			return domain.ErrStepNotDue
		case trigger.Type != o.LastEventType():
			return notTrigger("type", "names %s as version %d of order %d, whose log has %s there", trigger.Type, trigger.Version, o.ID(), o.LastEventType())
		case !slices.Contains(spec.Triggers, trigger.Type):
			return notTrigger("type", "the %s stage does not handle %s events", spec.Name, trigger.Type)
		}
		return nil
	})
	stage := spec.Name
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
