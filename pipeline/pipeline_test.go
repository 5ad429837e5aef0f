package pipeline_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"orderd/domain"
	"orderd/pipeline"
	"orderd/queues"
	"orderd/router"
)

// command is one decision the domain can be asked for, with one of its possible outcomes
// (as the stages' adapters would report it).
type command struct {
	name string
	run  func(o *domain.Order) ([]domain.Event, error)
}

var commands = []command{
	{"charge approved", func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay-1"})
	}},
	{"charge declined", func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Reason: "declined"})
	}},
	{"reserved", func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: true})
	}},
	{"out of stock", func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reason: "out of stock"})
	}},
	{"refunded", func(o *domain.Order) ([]domain.Event, error) { return o.Refund("ref-1") }},
	{"email sent", func(o *domain.Order) ([]domain.Event, error) { return o.RecordEmail("ann@example.com", "<m@shop>") }},
	{"email refused", func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmailFailure("ann@example.com", "550 no such user")
	}},
}

// TestDomainAgreesWithTheTable walks every path an order can take, driving the domain's
// decisions with every outcome, and checks at each step that the table agrees with the
// domain: the step that is due belongs to exactly one stage, the event that made it due is
// among that stage's triggers and is routed to its queue, and every event the stage's
// decision produces is among what it may produce. At the end of each path nothing is due and
// the last event goes nowhere. Finally every trigger and every produced type in the table
// must have been seen on some path, so the table lists nothing the domain never does.
func TestDomainAgreesWithTheTable(t *testing.T) {
	qcfg := queues.Config{Prefix: "test-"}
	route := router.Route(qcfg)
	seenTrigger := map[string]bool{}
	seenProduced := map[string]bool{}
	paths := 0

	var walk func(path []string, history []domain.Event)
	walk = func(path []string, history []domain.Event) {
		o := domain.Rehydrate(1, slices.Clone(history))
		where := strings.Join(path, " → ")
		last := o.LastEventType()
		step := o.NextStep()
		if step == domain.StepNone {
			paths++
			if !o.Terminal() {
				t.Errorf("%s: nothing is due, but the order is not terminal (%s)", where, o.Status())
			}
			if q := route(last); q != "" {
				t.Errorf("%s: the path ends with %s, but it is routed to %s", where, last, q)
			}
			return
		}
		var owners []pipeline.Stage
		for _, st := range pipeline.Stages() {
			if slices.Contains(st.Steps, step) {
				owners = append(owners, st)
			}
		}
		if len(owners) != 1 {
			t.Fatalf("%s: step %q is taken by %d stages, want exactly one", where, step, len(owners))
		}
		st := owners[0]
		if !slices.Contains(st.Triggers, last) {
			t.Errorf("%s: %s makes step %q due, but is not among the %s stage's triggers %v", where, last, step, st.Component, st.Triggers)
		}
		if got, want := route(last), qcfg.Name(st.Queue); got != want {
			t.Errorf("%s: %s is routed to %q, want the %s stage's queue %q", where, last, got, st.Component, want)
		}
		seenTrigger[last] = true
		taken := 0
		for _, c := range commands {
			events, err := c.run(o)
			if errors.Is(err, domain.ErrStepNotDue) {
				continue
			}
			if err != nil {
				t.Fatalf("%s → %s: %v", where, c.name, err)
			}
			taken++
			for _, e := range events {
				if !slices.Contains(st.Produces, e.EventType()) {
					t.Errorf("%s → %s: the %s stage produced %s, which is not in its Produces %v", where, c.name, st.Component, e.EventType(), st.Produces)
				}
				seenProduced[e.EventType()] = true
			}
			walk(append(slices.Clone(path), c.name), append(slices.Clone(history), events...))
		}
		if taken == 0 {
			t.Errorf("%s: step %q is due but no decision takes it", where, step)
		}
	}

	item := domain.Item{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}
	for _, p := range []domain.Placement{
		{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: []domain.Item{item}},
		{CustomerName: "Seed"}, // the seed's orders carry no items
	} {
		placed, err := domain.Place(p)
		if err != nil {
			t.Fatal(err)
		}
		walk([]string{fmt.Sprintf("placed (%d items)", len(p.Items))}, placed)
	}
	if paths == 0 {
		t.Fatal("no path walked")
	}
	for _, st := range pipeline.Stages() {
		for _, tr := range st.Triggers {
			if !seenTrigger[tr] {
				t.Errorf("the %s stage lists trigger %s, which no path makes", st.Component, tr)
			}
		}
		for _, p := range st.Produces {
			if !seenProduced[p] {
				t.Errorf("the %s stage lists %s among what it may produce, which no path produces", st.Component, p)
			}
		}
	}
	t.Logf("%d paths walked", paths)
}

// TestTableIsWellFormed checks what the derived lists rely on: names, components and queues
// are unique and set, and no event type triggers two stages (it has one route).
func TestTableIsWellFormed(t *testing.T) {
	names, comps, qs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	triggered := map[string]string{}
	for _, st := range pipeline.Stages() {
		if st.Name == "" || st.Component == "" || st.Queue == "" || st.Run == nil || len(st.Triggers) == 0 || len(st.Steps) == 0 {
			t.Errorf("stage %+v: every field must be set", st)
		}
		for what, seen := range map[string]map[string]bool{st.Name: names, st.Component: comps, st.Queue: qs} {
			if seen[what] {
				t.Errorf("%q is used by two stages", what)
			}
			seen[what] = true
		}
		for _, tr := range st.Triggers {
			if other, ok := triggered[tr]; ok {
				t.Errorf("%s triggers both %s and %s", tr, other, st.Component)
			}
			triggered[tr] = st.Component
		}
		if got, ok := pipeline.Lookup(st.Component); !ok || got.Name != st.Name {
			t.Errorf("Lookup(%q) = %v, %v", st.Component, got.Name, ok)
		}
	}
	// The handler names identify consumers in metrics and logs, and the queue names are
	// what deployed queues are called: both must never change once shipped.
	want := [][2]string{
		{"payment-charge-or-refund", "PaymentStatusQueue"},
		{"inventory-reserve-on-payment-completed", "InventoryStatusQueue"},
		{"email-notify-customer", "EmailNotificationQueue"},
	}
	var got [][2]string
	for _, st := range pipeline.Stages() {
		got = append(got, [2]string{st.Name, st.Queue})
	}
	if !slices.Equal(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
}

// TestNewChecksTheTable checks that a pipeline other than the default is refused when a
// derivation could not work with it, and that Default's stages cannot be changed through
// what Stages returns.
func TestNewChecksTheTable(t *testing.T) {
	base := pipeline.Default().Stages()
	extra := pipeline.Stage{Name: "shipping", Component: "shipping", Queue: "ShippingQueue",
		Triggers: []string{"ParcelPacked"}, Produces: []string{"ParcelShipped"}, Run: base[0].Run}
	for name, c := range map[string]struct {
		change func(st []pipeline.Stage) []pipeline.Stage
		err    string
	}{
		"a stage added":     {func(st []pipeline.Stage) []pipeline.Stage { return append(st, extra) }, ""},
		"no stages":         {func([]pipeline.Stage) []pipeline.Stage { return nil }, "no stages"},
		"a name used twice": {func(st []pipeline.Stage) []pipeline.Stage { e := extra; e.Name = st[0].Name; return append(st, e) }, "name"},
		"a component twice": {func(st []pipeline.Stage) []pipeline.Stage {
			e := extra
			e.Component = st[1].Component
			return append(st, e)
		}, "component"},
		"a queue twice": {func(st []pipeline.Stage) []pipeline.Stage { e := extra; e.Queue = st[2].Queue; return append(st, e) }, "queue"},
		"a trigger twice": {func(st []pipeline.Stage) []pipeline.Stage {
			e := extra
			e.Triggers = st[1].Triggers
			return append(st, e)
		}, "triggers both"},
		"a stage without Run":      {func(st []pipeline.Stage) []pipeline.Stage { e := extra; e.Run = nil; return append(st, e) }, "function"},
		"a stage without triggers": {func(st []pipeline.Stage) []pipeline.Stage { e := extra; e.Triggers = nil; return append(st, e) }, "triggers"},
		"a stage without products": {func(st []pipeline.Stage) []pipeline.Stage { e := extra; e.Produces = nil; return append(st, e) }, "products"},
		"a queue named like a DLQ": {func(st []pipeline.Stage) []pipeline.Stage {
			e := extra
			e.Queue = st[0].Queue + "-DLQ"
			return append(st, e)
		}, "dead-letter"},
		"a step taken twice": {func(st []pipeline.Stage) []pipeline.Stage {
			e := extra
			e.Steps = []domain.Step{domain.StepEmail}
			return append(st, e)
		}, "step"},
	} {
		p, err := pipeline.New(c.change(pipeline.Default().Stages())...)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.err == "" && (router.Route(queues.Config{Pipeline: p})("ParcelPacked") != "ShippingQueue" || len(p.Queues()) != 4):
			t.Errorf("%s: queues %v, ParcelPacked → %q", name, p.Queues(), router.Route(queues.Config{Pipeline: p})("ParcelPacked"))
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want an error about %q", name, err, c.err)
		}
	}
	base[2].Triggers[0] = "Changed"
	if got := pipeline.Default().Stages()[2].Triggers[0]; got != domain.TypeInventoryReserved {
		t.Errorf("changing a copy changed the default: %s", got)
	}
}
