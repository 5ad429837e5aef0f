package domain_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"orderd/domain"
)

// The order the tests talk about, and the events of its possible paths.
const orderID domain.OrderID = 7

var (
	book = domain.Item{SKU: "SKU-BOOK", Quantity: 2, UnitPriceCents: 1299}
	mug  = domain.Item{SKU: "SKU-MUG", Quantity: 3, UnitPriceCents: 899}

	placed = domain.OrderPlaced{CustomerName: "Ann", CustomerEmail: "ann@example.com",
		Items: []domain.Item{book, mug}, TotalCents: 2*1299 + 3*899}
	// seedPlaced is an order as the seed's POST /place-order makes it: a name, nothing else.
	seedPlaced = domain.OrderPlaced{CustomerName: "Seed", Items: []domain.Item{}}

	paid     = domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: 5295}
	declined = domain.PaymentFailed{Reason: "card declined"}
	reserved = domain.InventoryReserved{Items: []domain.Item{book, mug}}
	short    = domain.InventoryReservationFailed{Reason: "out of stock: SKU-MUG"}
	refunded = domain.PaymentRefunded{RefundID: "ref-1", AmountCents: 5295}

	confirmed     = domain.EmailSent{To: "ann@example.com", MessageID: "msg-1", Template: domain.TemplateConfirmation}
	failedNotice  = domain.EmailSent{To: "ann@example.com", MessageID: "msg-1", Template: domain.TemplatePaymentFailed}
	cancelNotice  = domain.EmailSent{To: "ann@example.com", MessageID: "msg-1", Template: domain.TemplateCancelled}
	seedConfirmed = domain.EmailSent{To: "", MessageID: "msg-1", Template: domain.TemplateConfirmation}

	// The mail server refused the notification for good.
	bounced       = domain.EmailFailed{To: "ann@example.com", Template: domain.TemplateConfirmation, Reply: "RCPT TO: 550 5.1.1 no such user"}
	bouncedFailed = domain.EmailFailed{To: "ann@example.com", Template: domain.TemplatePaymentFailed, Reply: "RCPT TO: 550 5.1.1 no such user"}
	bouncedCancel = domain.EmailFailed{To: "ann@example.com", Template: domain.TemplateCancelled, Reply: "RCPT TO: 550 5.1.1 no such user"}
)

// given is the order as loaded from the log after events.
func given(events ...domain.Event) *domain.Order { return domain.Rehydrate(orderID, events) }

// The commands, as functions of the order, so that tables can list them.
var (
	payApproved = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: "pay-1"})
	}
	payDeclined = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: false, Reason: "card declined"})
	}
	reserveOK = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: true})
	}
	reserveShort = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: false, Reason: "out of stock: SKU-MUG"})
	}
	refund = func(o *domain.Order) ([]domain.Event, error) { return o.Refund("ref-1") }
	bounce = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmailFailure(o.CustomerEmail(), "RCPT TO: 550 5.1.1 no such user")
	}
	email = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmail(o.CustomerEmail(), "msg-1")
	}
)

type command func(o *domain.Order) ([]domain.Event, error)

// decisionCase is one given-events / when-command / then-events (or error) case.
type decisionCase struct {
	name    string
	given   []domain.Event
	when    command
	then    []domain.Event
	wantErr error
}

func runDecisions(t *testing.T, cases []decisionCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.when(given(tc.given...))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.then) {
				t.Errorf("events =\n  %#v\nwant\n  %#v", got, tc.then)
			}
		})
	}
}

func TestPay(t *testing.T) {
	runDecisions(t, []decisionCase{
		{name: "approved charges the total", given: evs(placed), when: payApproved,
			then: evs(domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: 5295})},
		{name: "declined records the reason", given: evs(placed), when: payDeclined,
			then: evs(domain.PaymentFailed{Reason: "card declined"})},
		{name: "seed order with no items is charged zero", given: evs(seedPlaced), when: payApproved,
			then: evs(domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: 0})},
		{name: "not due for an order never placed", when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due once paid", given: evs(placed, paid), when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due once paid, even if declined now", given: evs(placed, paid), when: payDeclined, wantErr: domain.ErrStepNotDue},
		{name: "not due once failed", given: evs(placed, declined), when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due once failed and notified", given: evs(placed, declined, failedNotice), when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due after reservation", given: evs(placed, paid, reserved), when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due after refund", given: evs(placed, paid, short, refunded), when: payApproved, wantErr: domain.ErrStepNotDue},
		{name: "not due once completed", given: evs(placed, paid, reserved, confirmed), when: payApproved, wantErr: domain.ErrStepNotDue},
	})
}

func TestReserve(t *testing.T) {
	runDecisions(t, []decisionCase{
		{name: "reserved lists the items", given: evs(placed, paid), when: reserveOK, then: evs(reserved)},
		{name: "short stock fails with the reason", given: evs(placed, paid), when: reserveShort,
			then: evs(domain.InventoryReservationFailed{Reason: "out of stock: SKU-MUG"})},
		{name: "seed order reserves nothing and passes", given: evs(seedPlaced, paid), when: reserveOK,
			then: evs(domain.InventoryReserved{})},
		{name: "seed order passes even when told short", given: evs(seedPlaced, paid), when: reserveShort,
			then: evs(domain.InventoryReserved{})},
		{name: "not due for an order never placed", when: reserveOK, wantErr: domain.ErrStepNotDue},
		{name: "not due before payment", given: evs(placed), when: reserveOK, wantErr: domain.ErrStepNotDue},
		{name: "not due after payment failed", given: evs(placed, declined), when: reserveOK, wantErr: domain.ErrStepNotDue},
		{name: "not due once reserved", given: evs(placed, paid, reserved), when: reserveOK, wantErr: domain.ErrStepNotDue},
		{name: "not due once reserved, even if short now", given: evs(placed, paid, reserved), when: reserveShort, wantErr: domain.ErrStepNotDue},
		{name: "not due once reservation failed", given: evs(placed, paid, short), when: reserveOK, wantErr: domain.ErrStepNotDue},
		{name: "not due after refund", given: evs(placed, paid, short, refunded), when: reserveOK, wantErr: domain.ErrStepNotDue},
	})
}

func TestRefund(t *testing.T) {
	runDecisions(t, []decisionCase{
		{name: "refunds the total after a failed reservation", given: evs(placed, paid, short), when: refund,
			then: evs(domain.PaymentRefunded{RefundID: "ref-1", AmountCents: 5295})},
		{name: "not due for an order never placed", when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due before payment", given: evs(placed), when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due after payment only", given: evs(placed, paid), when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due after payment failed", given: evs(placed, declined), when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due after reservation", given: evs(placed, paid, reserved), when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due twice", given: evs(placed, paid, short, refunded), when: refund, wantErr: domain.ErrStepNotDue},
		{name: "not due once notified", given: evs(placed, paid, short, refunded, cancelNotice), when: refund, wantErr: domain.ErrStepNotDue},
	})
}

func TestRecordEmail(t *testing.T) {
	runDecisions(t, []decisionCase{
		{name: "confirmation after reservation", given: evs(placed, paid, reserved), when: email, then: evs(confirmed)},
		{name: "payment failed notice after payment failed", given: evs(placed, declined), when: email, then: evs(failedNotice)},
		{name: "cancellation after refund", given: evs(placed, paid, short, refunded), when: email, then: evs(cancelNotice)},
		{name: "seed order confirmation", given: evs(seedPlaced, paid, domain.InventoryReserved{}), when: email, then: evs(seedConfirmed)},
		{name: "not due for an order never placed", when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due before payment", given: evs(placed), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due before reservation", given: evs(placed, paid), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due before refund", given: evs(placed, paid, short), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due twice after confirmation", given: evs(placed, paid, reserved, confirmed), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due twice after payment failed", given: evs(placed, declined, failedNotice), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due twice after refund", given: evs(placed, paid, short, refunded, cancelNotice), when: email, wantErr: domain.ErrStepNotDue},
		{name: "not due once the server refused it", given: evs(placed, paid, reserved, bounced), when: email, wantErr: domain.ErrStepNotDue},
	})
}

func TestRecordEmailFailure(t *testing.T) {
	runDecisions(t, []decisionCase{
		{name: "confirmation refused", given: evs(placed, paid, reserved), when: bounce, then: evs(bounced)},
		{name: "payment failed notice refused", given: evs(placed, declined), when: bounce, then: evs(bouncedFailed)},
		{name: "cancellation refused", given: evs(placed, paid, short, refunded), when: bounce, then: evs(bouncedCancel)},
		{name: "not due for an order never placed", when: bounce, wantErr: domain.ErrStepNotDue},
		{name: "not due before payment", given: evs(placed), when: bounce, wantErr: domain.ErrStepNotDue},
		{name: "not due before reservation", given: evs(placed, paid), when: bounce, wantErr: domain.ErrStepNotDue},
		{name: "not due before refund", given: evs(placed, paid, short), when: bounce, wantErr: domain.ErrStepNotDue},
		{name: "not due once sent", given: evs(placed, paid, reserved, confirmed), when: bounce, wantErr: domain.ErrStepNotDue},
		{name: "not due twice", given: evs(placed, paid, reserved, bounced), when: bounce, wantErr: domain.ErrStepNotDue},
	})
}

// The reply is the mail server's text: whatever it holds, the event carries one bounded line
// of printable, valid UTF-8.
func TestRecordEmailFailureBoundsTheReply(t *testing.T) {
	tests := []struct{ name, reply, want string }{
		{"multi-line reply", "RCPT TO: 550-5.1.1 first line\r\n550 5.1.1 second\tline", "RCPT TO: 550-5.1.1 first line 550 5.1.1 second line"},
		{"control and format characters", "550 \x00bad\x1b[31m \u202emailbox\u200b", "550 bad [31m mailbox"},
		{"invalid UTF-8", "550 caf\xe9 \xff", "550 caf"},
		{"unicode text kept", "550 Postfach unbekannt – ß", "550 Postfach unbekannt – ß"},
		{"long reply cut", "550 " + strings.Repeat("é", 2*domain.MaxReasonLen), "550 " + strings.Repeat("é", domain.MaxReasonLen-5) + "…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := given(placed, paid, reserved).RecordEmailFailure("ann@example.com", tc.reply)
			if err != nil {
				t.Fatal(err)
			}
			reply := got[0].(domain.EmailFailed).Reply
			if reply != tc.want {
				t.Errorf("reply = %q, want %q", reply, tc.want)
			}
			if n := utf8.RuneCountInString(reply); n > domain.MaxReasonLen || !utf8.ValidString(reply) {
				t.Errorf("reply is %d runes (valid UTF-8: %v), want at most %d", n, utf8.ValidString(reply), domain.MaxReasonLen)
			}
		})
	}
}

// TestState checks what every reachable history says about the order: the next step, the
// seed's order_status, whether it is finished, and which email it calls for.
func TestState(t *testing.T) {
	tests := []struct {
		name     string
		given    []domain.Event
		next     domain.Step
		status   string
		terminal bool
		template string
	}{
		{"never placed", nil, domain.StepNone, "", false, domain.TemplateConfirmation},
		{"placed", evs(placed), domain.StepPayment, domain.StatusPending, false, domain.TemplateConfirmation},
		{"paid", evs(placed, paid), domain.StepInventory, domain.StatusPending, false, domain.TemplateConfirmation},
		{"reserved", evs(placed, paid, reserved), domain.StepEmail, domain.StatusPending, false, domain.TemplateConfirmation},
		{"completed", evs(placed, paid, reserved, confirmed), domain.StepNone, domain.StatusCompleted, true, domain.TemplateConfirmation},
		{"payment failed", evs(placed, declined), domain.StepEmail, domain.StatusPaymentFailed, true, domain.TemplatePaymentFailed},
		{"payment failed, notified", evs(placed, declined, failedNotice), domain.StepNone, domain.StatusPaymentFailed, true, domain.TemplatePaymentFailed},
		{"reservation failed", evs(placed, paid, short), domain.StepRefund, domain.StatusPending, false, domain.TemplateConfirmation},
		{"refunded", evs(placed, paid, short, refunded), domain.StepEmail, domain.StatusCancelled, true, domain.TemplateCancelled},
		{"refunded, notified", evs(placed, paid, short, refunded, cancelNotice), domain.StepNone, domain.StatusCancelled, true, domain.TemplateCancelled},
		{"seed placed", evs(seedPlaced), domain.StepPayment, domain.StatusPending, false, domain.TemplateConfirmation},
		{"seed completed", evs(seedPlaced, paid, domain.InventoryReserved{}, seedConfirmed), domain.StepNone, domain.StatusCompleted, true, domain.TemplateConfirmation},
		{"confirmation refused", evs(placed, paid, reserved, bounced), domain.StepNone, domain.StatusCompleted, true, domain.TemplateConfirmation},
		{"payment failed, notice refused", evs(placed, declined, bouncedFailed), domain.StepNone, domain.StatusPaymentFailed, true, domain.TemplatePaymentFailed},
		{"refunded, notice refused", evs(placed, paid, short, refunded, bouncedCancel), domain.StepNone, domain.StatusCancelled, true, domain.TemplateCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := given(tc.given...)
			if got := o.NextStep(); got != tc.next {
				t.Errorf("NextStep = %q, want %q", got, tc.next)
			}
			if got := o.Status(); got != tc.status {
				t.Errorf("Status = %q, want %q", got, tc.status)
			}
			if got := o.Terminal(); got != tc.terminal {
				t.Errorf("Terminal = %v, want %v", got, tc.terminal)
			}
			if got := o.EmailTemplate(); got != tc.template {
				t.Errorf("EmailTemplate = %q, want %q", got, tc.template)
			}
			if got, want := o.Version(), len(tc.given); got != want {
				t.Errorf("Version = %d, want %d", got, want)
			}
			if got, want := o.Exists(), len(tc.given) > 0; got != want {
				t.Errorf("Exists = %v, want %v", got, want)
			}
			if n := len(tc.given); n > 0 && o.LastEventType() != tc.given[n-1].EventType() {
				t.Errorf("LastEventType = %q, want %q", o.LastEventType(), tc.given[n-1].EventType())
			}
			if o.ID() != orderID {
				t.Errorf("ID = %d, want %d", o.ID(), orderID)
			}
		})
	}
}

// TestPaths drives an order down each of its paths by the decisions alone, loading it from
// the history so far before each one, as the stages do. Each path must end terminal with
// nothing left to do. (That the read model's fold agrees with this one on every path is
// projections' TestOrderRowAgreesWithTheDomain: domain cannot import projections.)
func TestPaths(t *testing.T) {
	tests := []struct {
		name       string
		placement  domain.Placement
		steps      []command
		wantStatus string
		wantEvents []string
	}{
		{"completed", placement(), []command{payApproved, reserveOK, email}, domain.StatusCompleted,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeEmailSent}},
		{"payment failed", placement(), []command{payDeclined, email}, domain.StatusPaymentFailed,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentFailed, domain.TypeEmailSent}},
		{"cancelled", placement(), []command{payApproved, reserveShort, refund, email}, domain.StatusCancelled,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReservationFailed, domain.TypePaymentRefunded, domain.TypeEmailSent}},
		{"seed order", domain.Placement{CustomerName: "Seed"}, []command{payApproved, reserveShort, email}, domain.StatusCompleted,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeEmailSent}},
		{"completed, confirmation refused", placement(), []command{payApproved, reserveOK, bounce}, domain.StatusCompleted,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReserved, domain.TypeEmailFailed}},
		{"payment failed, notice refused", placement(), []command{payDeclined, bounce}, domain.StatusPaymentFailed,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentFailed, domain.TypeEmailFailed}},
		{"cancelled, notice refused", placement(), []command{payApproved, reserveShort, refund, bounce}, domain.StatusCancelled,
			[]string{domain.TypeOrderPlaced, domain.TypePaymentCompleted, domain.TypeInventoryReservationFailed, domain.TypePaymentRefunded, domain.TypeEmailFailed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			history, err := domain.Place(tc.placement)
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			live := given(history...)
			for i, step := range tc.steps {
				events, err := step(live)
				if err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
				history = append(history, events...)
				live = domain.Rehydrate(orderID, append([]domain.Event(nil), history...))
				if live.Version() != len(history) {
					t.Fatalf("after step %d: Version = %d, want %d", i+1, live.Version(), len(history))
				}
			}
			var types []string
			for _, e := range history {
				types = append(types, e.EventType())
			}
			if !reflect.DeepEqual(types, tc.wantEvents) {
				t.Errorf("events = %v, want %v", types, tc.wantEvents)
			}
			if live.Status() != tc.wantStatus || !live.Terminal() || live.NextStep() != domain.StepNone {
				t.Errorf("ended %q (terminal %v, next %q), want %q, terminal, nothing next",
					live.Status(), live.Terminal(), live.NextStep(), tc.wantStatus)
			}
			for i, step := range append([]command{payApproved, payDeclined, reserveOK, reserveShort, refund, email, bounce}, tc.steps...) {
				if events, err := step(live); !errors.Is(err, domain.ErrStepNotDue) || events != nil {
					t.Errorf("command %d on a finished order = %v, %v; want ErrStepNotDue", i, events, err)
				}
			}
		})
	}
}

func TestRehydrateExposesWhatWasPlaced(t *testing.T) {
	o := given(placed, paid)
	if o.CustomerName() != "Ann" || o.CustomerEmail() != "ann@example.com" || o.TotalCents() != 5295 || o.PaymentID() != "pay-1" {
		t.Errorf("got name %q email %q total %d payment %q", o.CustomerName(), o.CustomerEmail(), o.TotalCents(), o.PaymentID())
	}
	items := o.Items()
	if !reflect.DeepEqual(items, []domain.Item{book, mug}) {
		t.Fatalf("Items = %v", items)
	}
	items[0].Quantity = 999
	if o.Items()[0].Quantity != book.Quantity {
		t.Error("Items returned the order's own slice: a caller changed the order")
	}
	if given(placed).PaymentID() != "" {
		t.Error("an unpaid order has a payment id")
	}
}

// placement returns a valid placement; tests change one thing in it.
func placement() domain.Placement {
	return domain.Placement{
		CustomerName:  "Ann",
		CustomerEmail: "ann@example.com",
		Items:         []domain.Item{book, mug},
	}
}

func with(change func(p *domain.Placement)) domain.Placement {
	p := placement()
	change(&p)
	return p
}

// items returns n distinct valid lines.
func items(n int) []domain.Item {
	out := make([]domain.Item, n)
	for i := range out {
		out[i] = domain.Item{SKU: fmt.Sprintf("SKU-%d", i), Quantity: 1, UnitPriceCents: 100}
	}
	return out
}

// emailOfLen returns a valid address exactly n bytes long (n >= 8): a@, then labels of at
// most 63 characters, then .com.
func emailOfLen(n int) string {
	d := strings.Repeat("b", n-len("a@.com"))
	for i := 63; i < len(d)-1; i += 64 {
		d = d[:i] + "." + d[i+1:]
	}
	return "a@" + d + ".com"
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name string
		p    domain.Placement
		want domain.OrderPlaced
	}{
		{"total is quantity times unit price, summed", placement(),
			domain.OrderPlaced{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"name is trimmed", with(func(p *domain.Placement) { p.CustomerName = " \t Ann Lee \n" }),
			domain.OrderPlaced{CustomerName: "Ann Lee", CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"seed order: a name and nothing else", domain.Placement{CustomerName: "Seed"},
			domain.OrderPlaced{CustomerName: "Seed", Items: []domain.Item{}, TotalCents: 0}},
		{"name of exactly 100 runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("a", 100) }),
			domain.OrderPlaced{CustomerName: strings.Repeat("a", 100), CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"name of 100 two-byte runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("é", 100) }),
			domain.OrderPlaced{CustomerName: strings.Repeat("é", 100), CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"name of 100 four-byte runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("😀", 100) }),
			domain.OrderPlaced{CustomerName: strings.Repeat("😀", 100), CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"100 runes once trimmed", with(func(p *domain.Placement) { p.CustomerName = "  " + strings.Repeat("a", 100) + "  " }),
			domain.OrderPlaced{CustomerName: strings.Repeat("a", 100), CustomerEmail: "ann@example.com", Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"email of exactly 254 bytes", with(func(p *domain.Placement) { p.CustomerEmail = emailOfLen(254) }),
			domain.OrderPlaced{CustomerName: "Ann", CustomerEmail: emailOfLen(254), Items: []domain.Item{book, mug}, TotalCents: 5295}},
		{"50 items", with(func(p *domain.Placement) { p.Items = items(50) }),
			domain.OrderPlaced{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: items(50), TotalCents: 5000}},
		{"quantity bounds 1 and 1000, free item, 64-byte SKU", with(func(p *domain.Placement) {
			p.Items = []domain.Item{
				{SKU: "A", Quantity: 1, UnitPriceCents: 7},
				{SKU: "B", Quantity: 1000, UnitPriceCents: 4999},
				{SKU: strings.Repeat("S", 64), Quantity: 5, UnitPriceCents: 0},
			}
		}), domain.OrderPlaced{CustomerName: "Ann", CustomerEmail: "ann@example.com", Items: []domain.Item{
			{SKU: "A", Quantity: 1, UnitPriceCents: 7},
			{SKU: "B", Quantity: 1000, UnitPriceCents: 4999},
			{SKU: strings.Repeat("S", 64), Quantity: 5, UnitPriceCents: 0},
		}, TotalCents: 7 + 4999000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got, err := domain.Place(tc.p)
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if want := evs(tc.want); !reflect.DeepEqual(got, want) {
				t.Errorf("events =\n  %#v\nwant\n  %#v", got, want)
			}
		})
	}
}

func TestPlaceCopiesItems(t *testing.T) {
	p := placement()
	got, err := domain.Place(p)
	if err != nil {
		t.Fatal(err)
	}
	p.Items[0].Quantity = 999
	if got[0].(domain.OrderPlaced).Items[0].Quantity != book.Quantity {
		t.Error("OrderPlaced shares the placement's items: changing them changed the event")
	}
}

func TestPlaceRejects(t *testing.T) {
	tooMany := items(51)
	tests := []struct {
		name  string
		p     domain.Placement
		field string
	}{
		{"empty name", with(func(p *domain.Placement) { p.CustomerName = "" }), "customerName"},
		{"whitespace name", with(func(p *domain.Placement) { p.CustomerName = " \t\r\n " }), "customerName"},
		{"name of 101 runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("a", 101) }), "customerName"},
		{"name of 101 two-byte runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("é", 101) }), "customerName"},
		{"name of 101 four-byte runes", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("😀", 101) }), "customerName"},
		{"LF in name", with(func(p *domain.Placement) { p.CustomerName = "Ann\nLee" }), "customerName"},
		{"CR in name", with(func(p *domain.Placement) { p.CustomerName = "Ann\rLee" }), "customerName"},
		{"header injection in name", with(func(p *domain.Placement) { p.CustomerName = "Ann\r\nBcc: x@example.com" }), "customerName"},
		{"NUL in name", with(func(p *domain.Placement) { p.CustomerName = "Ann\x00" }), "customerName"},
		{"invalid UTF-8 in name", with(func(p *domain.Placement) { p.CustomerName = "Ann\xff" }), "customerName"},
		{"no @ in email", with(func(p *domain.Placement) { p.CustomerEmail = "not-an-email" }), "customerEmail"},
		{"no domain in email", with(func(p *domain.Placement) { p.CustomerEmail = "ann@" }), "customerEmail"},
		{"no local part in email", with(func(p *domain.Placement) { p.CustomerEmail = "@example.com" }), "customerEmail"},
		{"display name in email", with(func(p *domain.Placement) { p.CustomerEmail = "Ann <ann@example.com>" }), "customerEmail"},
		{"spaces around email", with(func(p *domain.Placement) { p.CustomerEmail = " ann@example.com " }), "customerEmail"},
		{"two addresses", with(func(p *domain.Placement) { p.CustomerEmail = "ann@example.com, bob@example.com" }), "customerEmail"},
		{"header injection in email", with(func(p *domain.Placement) { p.CustomerEmail = "ann@example.com\r\nBcc: x@example.com" }), "customerEmail"},
		{"non-ASCII local part", with(func(p *domain.Placement) { p.CustomerEmail = "jörg@example.com" }), "customerEmail"},
		{"non-ASCII domain", with(func(p *domain.Placement) { p.CustomerEmail = "ann@exämple.com" }), "customerEmail"},
		{"email of 255 bytes", with(func(p *domain.Placement) { p.CustomerEmail = emailOfLen(255) }), "customerEmail"},
		{"51 items", with(func(p *domain.Placement) { p.Items = tooMany }), "items"},
		{"empty SKU", with(func(p *domain.Placement) { p.Items[0].SKU = "" }), "items[0].sku"},
		{"blank SKU", with(func(p *domain.Placement) { p.Items[1].SKU = "   " }), "items[1].sku"},
		{"SKU of 65 bytes", with(func(p *domain.Placement) { p.Items[1].SKU = strings.Repeat("S", 65) }), "items[1].sku"},
		{"duplicate SKU names the second line", with(func(p *domain.Placement) { p.Items[1].SKU = p.Items[0].SKU }), "items[1].sku"},
		{"quantity 0", with(func(p *domain.Placement) { p.Items[0].Quantity = 0 }), "items[0].quantity"},
		{"negative quantity", with(func(p *domain.Placement) { p.Items[1].Quantity = -1 }), "items[1].quantity"},
		{"quantity 1001", with(func(p *domain.Placement) { p.Items[1].Quantity = 1001 }), "items[1].quantity"},
		{"huge quantity", with(func(p *domain.Placement) { p.Items[0].Quantity = 1 << 30 }), "items[0].quantity"},
		{"negative unit price", with(func(p *domain.Placement) { p.Items[1].UnitPriceCents = -1 }), "items[1].unitPriceCents"},
		{"first offending field is named", domain.Placement{CustomerName: "", CustomerEmail: "bad", Items: []domain.Item{{}}}, "customerName"},
		{"email before items", domain.Placement{CustomerName: "Ann", CustomerEmail: "bad", Items: []domain.Item{{}}}, "customerEmail"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := domain.Place(tc.p)
			if got != nil {
				t.Errorf("events = %#v, want none", got)
			}
			assertInvalid(t, err, tc.field)
			assertInvalid(t, tc.p.Validate(), tc.field)
		})
	}
}

// assertInvalid checks that err is a KindInvalid *domain.Error about field.
func assertInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("error = %v (%T), want a *domain.Error about %s", err, err, field)
	}
	if de.Kind != domain.KindInvalid || de.Field != field || de.Message == "" {
		t.Errorf("error = {Kind %d, Field %q, Message %q}, want KindInvalid about %q with a message", de.Kind, de.Field, de.Message, field)
	}
}

func evs(events ...domain.Event) []domain.Event { return events }
