// Package pipeline is the one definition of the order pipeline's shape: which stages there
// are, the queue each listens on, the events that trigger each and the events each may
// produce. The routes (event type → queue), the stages' trigger checks, the queues that are
// created and dead-lettered, the ORDERD_COMPONENTS names and the Lambda STAGE values are all
// derived from the table here; a test checks that the domain's order of steps agrees with it.
//
// It imports only the domain (for event type names) and the event store's record type (for
// the stage function's signature), so that the domain-free layers — queues, router, ordering,
// lambdastage, cmd — can all import it without cycles.
package pipeline

import (
	"context"
	"slices"

	"orderd/domain"
	"orderd/eventstore"
)

// The stages' component names: the ORDERD_COMPONENTS names and the Lambda STAGE values.
const (
	Payment   = "payment"
	Inventory = "inventory"
	Email     = "email"
)

// The seed's queue names; a deployment's QUEUE_PREFIX goes in front of each.
const (
	PaymentQueue   = "PaymentStatusQueue"
	InventoryQueue = "InventoryStatusQueue"
	EmailQueue     = "EmailNotificationQueue"
)

// Func is a stage's function as the router and the Lambda handler call it.
type Func = func(ctx context.Context, trigger eventstore.Record) error

// Steps is what carries out the stages' work (ordering.Stages); a stage's Run names its
// method, so the table can say which function a stage runs without importing ordering.
type Steps interface {
	Payment(ctx context.Context, trigger eventstore.Record) error
	Inventory(ctx context.Context, trigger eventstore.Record) error
	Email(ctx context.Context, trigger eventstore.Record) error
}

// Stage is one stage of the pipeline.
type Stage struct {
	// Name is the Watermill handler's name; it must never change once shipped, as handler
	// names identify consumers (in metrics, in logs).
	Name string
	// Component is the stage's ORDERD_COMPONENTS name and its Lambda STAGE value.
	Component string
	// Steps are the domain's steps (domain.Order.NextStep) the stage takes.
	Steps []domain.Step
	// Queue is the unprefixed name of the queue the stage listens on; each has a
	// dead-letter queue beside it.
	Queue string
	// Triggers are the event types that make the stage's step due; they are routed to
	// Queue, and anything else on Queue is a poisoned message.
	Triggers []string
	// Produces are the event types the stage may append.
	Produces []string
	// Run is the stage's function, as a method of Steps.
	Run func(s Steps, ctx context.Context, trigger eventstore.Record) error
}

// stages is the pipeline, in the order an order passes through it. An event type that
// triggers no stage (EmailSent, EmailFailed) ends the order's path.
var stages = []Stage{
	{
		Name: "payment-charge-or-refund", Component: Payment, Queue: PaymentQueue,
		Steps:    []domain.Step{domain.StepPayment, domain.StepRefund},
		Triggers: []string{domain.TypeOrderPlaced, domain.TypeInventoryReservationFailed}, // charge; refund
		Produces: []string{domain.TypePaymentCompleted, domain.TypePaymentFailed, domain.TypePaymentRefunded},
		Run:      Steps.Payment,
	},
	{
		Name: "inventory-reserve-on-payment-completed", Component: Inventory, Queue: InventoryQueue,
		Steps:    []domain.Step{domain.StepInventory},
		Triggers: []string{domain.TypePaymentCompleted},
		Produces: []string{domain.TypeInventoryReserved, domain.TypeInventoryReservationFailed},
		Run:      Steps.Inventory,
	},
	{
		Name: "email-notify-customer", Component: Email, Queue: EmailQueue,
		Steps:    []domain.Step{domain.StepEmail},
		Triggers: []string{domain.TypeInventoryReserved, domain.TypePaymentFailed, domain.TypePaymentRefunded},
		Produces: []string{domain.TypeEmailSent, domain.TypeEmailFailed},
		Run:      Steps.Email,
	},
}

// Stages returns the pipeline's stages, in order.
func Stages() []Stage { return slices.Clone(stages) }

// Lookup returns the stage whose component name is component.
func Lookup(component string) (Stage, bool) {
	i := slices.IndexFunc(stages, func(s Stage) bool { return s.Component == component })
	if i < 0 {
		return Stage{}, false
	}
	return stages[i], true
}

// MustLookup is Lookup for a component name the code itself names; it panics on any other.
func MustLookup(component string) Stage {
	s, ok := Lookup(component)
	if !ok {
		panic("pipeline: no stage " + component)
	}
	return s
}

// Components returns the stages' component names, in order.
func Components() []string {
	out := make([]string, len(stages))
	for i, s := range stages {
		out[i] = s.Component
	}
	return out
}

// Queues returns the stages' unprefixed queue names, in order.
func Queues() []string {
	out := make([]string, len(stages))
	for i, s := range stages {
		out[i] = s.Queue
	}
	return out
}

// ForStep returns the stage that takes the domain's step.
func ForStep(step domain.Step) (Stage, bool) {
	i := slices.IndexFunc(stages, func(s Stage) bool { return slices.Contains(s.Steps, step) })
	if i < 0 {
		return Stage{}, false
	}
	return stages[i], true
}

// QueueFor returns the unprefixed queue of the stage that eventType triggers, or "" if it
// triggers none (it ends the order's path).
func QueueFor(eventType string) string {
	for _, s := range stages {
		if slices.Contains(s.Triggers, eventType) {
			return s.Queue
		}
	}
	return ""
}

// Func returns the stage's function bound to steps.
func (s Stage) Func(steps Steps) Func {
	return func(ctx context.Context, trigger eventstore.Record) error { return s.Run(steps, ctx, trigger) }
}
