// Package pipeline is the one definition of the order pipeline's shape: which stages there
// are, the queue each listens on, the events that trigger each, the events each may produce
// and the function each runs. A Pipeline is a value: Default is the built-in one (payment,
// inventory, email), and New builds and checks another (a test's toy fourth stage, a
// deployment's extra stage). The routes (event type → queue), the stages' trigger checks,
// the queues that are created and dead-lettered, the ORDERD_COMPONENTS names and the Lambda
// STAGE values are all derived from the Pipeline the assembly (package app) was given; a
// test checks that the domain's order of steps agrees with the default.
//
// It imports the domain (for event type names), the event store's record type and the use
// cases (ordering) whose functions its entries name. Nothing below it imports it, so the
// transport layers — queues, router, lambdastage, app, cmd — can all derive from it.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/ordering"
)

// The built-in stages' component names: the ORDERD_COMPONENTS names and the Lambda STAGE
// values.
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

// Run is a stage's function before it is bound to the use cases: given the stages' shared
// dependencies (store, catalogue, gateway, mailer) and what the stage is (its name and the
// triggers it accepts, from its entry), it takes the stage's step for trigger. Built-in
// stages name a method of ordering.Stages; a new stage writes a function that calls
// ordering.Stages.Take or TakeTx with its own decision.
type Run = func(s *ordering.Stages, ctx context.Context, spec ordering.StageSpec, trigger eventstore.Record) error

// Stage is one stage of the pipeline.
type Stage struct {
	// Name is the Watermill handler's name; it must never change once shipped, as handler
	// names identify consumers (in metrics, in logs).
	Name string
	// Component is the stage's ORDERD_COMPONENTS name and its Lambda STAGE value.
	Component string
	// Steps are the domain's steps (domain.Order.NextStep) the stage takes; a stage whose
	// decision lives outside the domain's state machine (a toy stage in a test) has none.
	Steps []domain.Step
	// Queue is the unprefixed name of the queue the stage listens on; each has a
	// dead-letter queue beside it.
	Queue string
	// Triggers are the event types that make the stage's step due; they are routed to
	// Queue, and anything else on Queue is a poisoned message.
	Triggers []string
	// Produces are the event types the stage may append.
	Produces []string
	// Run is the stage's function.
	Run Run
}

// Spec is what ordering needs to know of the stage to check a trigger against it.
func (s Stage) Spec() ordering.StageSpec {
	return ordering.StageSpec{Name: s.Component, Triggers: slices.Clone(s.Triggers), Produces: slices.Clone(s.Produces)}
}

// Func returns the stage's function bound to stages.
func (s Stage) Func(stages *ordering.Stages) Func {
	spec := s.Spec()
	return func(ctx context.Context, trigger eventstore.Record) error { return s.Run(stages, ctx, spec, trigger) }
}

func (s Stage) clone() Stage {
	s.Steps, s.Triggers, s.Produces = slices.Clone(s.Steps), slices.Clone(s.Triggers), slices.Clone(s.Produces)
	return s
}

// Pipeline is a checked list of stages, in the order an order passes through them. It is
// immutable: every accessor returns copies.
type Pipeline struct {
	stages []Stage
}

// dlqSuffix is what queues.DLQSuffix puts after a stage's queue to name its dead-letter
// queue; a stage's own queue must not look like one.
const dlqSuffix = "-DLQ"

// New returns the pipeline of stages, in order, after checking what every derivation relies
// on: each stage has a name, a component, a queue, triggers, products and a function; names,
// components and queues are unique, and no queue is named like a dead-letter queue; no
// event type triggers two stages, so that each has one route; and no domain step is taken
// by two stages. That the event types exist is checked where they are known
// (app.Build, against the event store's types).
func New(stages ...Stage) (*Pipeline, error) {
	if len(stages) == 0 {
		return nil, errors.New("pipeline: no stages")
	}
	names, comps, qs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	triggered := map[string]string{}
	stepped := map[domain.Step]string{}
	p := &Pipeline{}
	for _, st := range stages {
		if st.Name == "" || st.Component == "" || st.Queue == "" || st.Run == nil || len(st.Triggers) == 0 || len(st.Produces) == 0 {
			return nil, fmt.Errorf("pipeline: stage %q: name, component, queue, triggers, products and function must all be set", st.Name)
		}
		if strings.HasSuffix(st.Queue, dlqSuffix) {
			return nil, fmt.Errorf("pipeline: stage %s: queue %q is named like a dead-letter queue", st.Component, st.Queue)
		}
		for _, step := range st.Steps {
			if other, ok := stepped[step]; ok {
				return nil, fmt.Errorf("pipeline: step %q is taken by both %s and %s", step, other, st.Component)
			}
			stepped[step] = st.Component
		}
		for _, u := range []struct {
			what, v string
			seen    map[string]bool
		}{{"name", st.Name, names}, {"component", st.Component, comps}, {"queue", st.Queue, qs}} {
			if u.seen[u.v] {
				return nil, fmt.Errorf("pipeline: %s %q is used by two stages", u.what, u.v)
			}
			u.seen[u.v] = true
		}
		for _, tr := range st.Triggers {
			if other, ok := triggered[tr]; ok {
				return nil, fmt.Errorf("pipeline: %s triggers both %s and %s; an event type has one route", tr, other, st.Component)
			}
			triggered[tr] = st.Component
		}
		p.stages = append(p.stages, st.clone())
	}
	return p, nil
}

// builtIn is the built-in pipeline. An event type that triggers no stage (EmailSent,
// EmailFailed) ends the order's path.
var builtIn = func() *Pipeline {
	p, err := New(
		Stage{
			Name: "payment-charge-or-refund", Component: Payment, Queue: PaymentQueue,
			Steps:    []domain.Step{domain.StepPayment, domain.StepRefund},
			Triggers: []string{domain.TypeOrderPlaced, domain.TypeInventoryReservationFailed}, // charge; refund
			Produces: []string{domain.TypePaymentCompleted, domain.TypePaymentFailed, domain.TypePaymentRefunded},
			Run:      (*ordering.Stages).Payment,
		},
		Stage{
			Name: "inventory-reserve-on-payment-completed", Component: Inventory, Queue: InventoryQueue,
			Steps:    []domain.Step{domain.StepInventory},
			Triggers: []string{domain.TypePaymentCompleted},
			Produces: []string{domain.TypeInventoryReserved, domain.TypeInventoryReservationFailed},
			Run:      (*ordering.Stages).Inventory,
		},
		Stage{
			Name: "email-notify-customer", Component: Email, Queue: EmailQueue,
			Steps:    []domain.Step{domain.StepEmail},
			Triggers: []string{domain.TypeInventoryReserved, domain.TypePaymentFailed, domain.TypePaymentRefunded},
			Produces: []string{domain.TypeEmailSent, domain.TypeEmailFailed},
			Run:      (*ordering.Stages).Email,
		},
	)
	if err != nil {
		panic(err)
	}
	return p
}()

// Default returns the built-in pipeline: payment, inventory, email.
func Default() *Pipeline { return builtIn }

// Stages returns the pipeline's stages, in order.
func (p *Pipeline) Stages() []Stage {
	out := make([]Stage, len(p.stages))
	for i, s := range p.stages {
		out[i] = s.clone()
	}
	return out
}

// Lookup returns the stage whose component name is component.
func (p *Pipeline) Lookup(component string) (Stage, bool) {
	i := slices.IndexFunc(p.stages, func(s Stage) bool { return s.Component == component })
	if i < 0 {
		return Stage{}, false
	}
	return p.stages[i].clone(), true
}

// Components returns the stages' component names, in order.
func (p *Pipeline) Components() []string {
	out := make([]string, len(p.stages))
	for i, s := range p.stages {
		out[i] = s.Component
	}
	return out
}

// Queues returns the stages' unprefixed queue names, in order.
func (p *Pipeline) Queues() []string {
	out := make([]string, len(p.stages))
	for i, s := range p.stages {
		out[i] = s.Queue
	}
	return out
}

// The default pipeline's derivations, for code and tests that only ever run the built-in
// stages (the orderd binary's flags, the SAM template's test). Code handed a Pipeline uses
// its methods instead.

// Stages returns the default pipeline's stages.
func Stages() []Stage { return builtIn.Stages() }

// Lookup looks a component up in the default pipeline.
func Lookup(component string) (Stage, bool) { return builtIn.Lookup(component) }

// MustLookup is Lookup for a component name the code itself names; it panics on any other.
func MustLookup(component string) Stage {
	s, ok := Lookup(component)
	if !ok {
		panic("pipeline: no stage " + component)
	}
	return s
}

// Components returns the default pipeline's component names.
func Components() []string { return builtIn.Components() }

// Queues returns the default pipeline's unprefixed queue names.
func Queues() []string { return builtIn.Queues() }
