package domain

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// OrderID identifies an order and its event stream. It is numeric because the seed's
// clients read `orderId` as a number and its `orders.order_id` column is an INT.
type OrderID int64

// Limits on what an order may hold. The name limit is the seed's column width.
const (
	MaxCustomerNameLen = 100
	MaxEmailLen        = 254
	MaxItems           = 50
	MaxQuantity        = 1000
	MaxSKULen          = 64
	// MaxReasonLen bounds a failure reason recorded in an event: it comes from a gateway or
	// a list of short items, and an order's history is no place for an unbounded string.
	MaxReasonLen = 500
)

// Values of the seed's status columns. The seed used "pending" and "completed" only.
const (
	StatusPending       = "pending"
	StatusCompleted     = "completed"
	StatusPaymentFailed = "payment_failed"
	StatusCancelled     = "cancelled"
	StatusFailed        = "failed"
	StatusRefunded      = "refunded"
)

// Step names the next thing that must happen to an order; each stage acts on one step.
type Step string

// The steps of an order's path.
const (
	StepNone      Step = ""
	StepPayment   Step = "payment"
	StepInventory Step = "inventory"
	StepRefund    Step = "refund"
	StepEmail     Step = "email"
)

// Email templates, chosen by the state the order ended in.
const (
	TemplateConfirmation  = "order_confirmed"
	TemplatePaymentFailed = "payment_failed"
	TemplateCancelled     = "order_cancelled"
)

// Order is the aggregate: its state changes only in apply, which both live decisions and
// loading from the log go through, so replayed and live state cannot drift.
type Order struct {
	id            OrderID
	version       int
	customerName  string
	customerEmail string
	items         []Item
	totalCents    int64
	status        string
	payment       string
	inventory     string
	emailSent     bool
	emailFailed   bool // the mail server refused the notification for good
	paymentID     string
	lastType      string // the type of the latest event
}

// Rehydrate rebuilds an order from its history, oldest first.
func Rehydrate(id OrderID, history []Event) *Order {
	o := &Order{id: id}
	for _, e := range history {
		o.apply(e)
	}
	return o
}

func (o *Order) apply(e Event) {
	o.version++
	o.lastType = e.EventType()
	switch e := e.(type) {
	case OrderPlaced:
		o.customerName, o.customerEmail = e.CustomerName, e.CustomerEmail
		o.items, o.totalCents = e.Items, e.TotalCents
		o.status, o.payment, o.inventory = StatusPending, StatusPending, StatusPending
	case PaymentCompleted:
		o.payment, o.paymentID = StatusCompleted, e.PaymentID
	case PaymentFailed:
		o.payment, o.status = StatusFailed, StatusPaymentFailed
	case InventoryReserved:
		o.inventory = StatusCompleted
	case InventoryReservationFailed:
		o.inventory = StatusFailed
	case PaymentRefunded:
		o.payment, o.status = StatusRefunded, StatusCancelled
	case EmailSent:
		o.emailSent = true
		if o.status == StatusPending {
			o.status = StatusCompleted
		}
	case EmailFailed:
		// The email is the last step, due only once payment and stock are settled: a
		// pending order here is paid and reserved, and completes without its confirmation.
		o.emailFailed = true
		if o.status == StatusPending {
			o.status = StatusCompleted
		}
	}
}

// ID returns the order's id.
func (o *Order) ID() OrderID { return o.id }

// Version is the number of events on the order's stream.
func (o *Order) Version() int { return o.version }

// LastEventType is the type of the order's latest event: the one that made its next step due.
func (o *Order) LastEventType() string { return o.lastType }

// Exists reports whether the order has been placed.
func (o *Order) Exists() bool { return o.version > 0 }

// CustomerName returns the name the order was placed under.
func (o *Order) CustomerName() string { return o.customerName }

// CustomerEmail returns the customer's address; orders placed through the seed's API have none.
func (o *Order) CustomerEmail() string { return o.customerEmail }

// Items returns a copy of the order's lines.
func (o *Order) Items() []Item { return append([]Item(nil), o.items...) }

// TotalCents is the amount to charge.
func (o *Order) TotalCents() int64 { return o.totalCents }

// PaymentID is the gateway's id of the charge, once the order is paid.
func (o *Order) PaymentID() string { return o.paymentID }

// Status is the value of the seed's order_status column.
func (o *Order) Status() string { return o.status }

// PaymentStatus is where the payment step stands: pending, completed, failed or refunded.
func (o *Order) PaymentStatus() string { return o.payment }

// InventoryStatus is where the stock reservation stands: pending, completed or failed.
func (o *Order) InventoryStatus() string { return o.inventory }

// EmailSent reports whether the notification for the order's outcome was sent.
func (o *Order) EmailSent() bool { return o.emailSent }

// EmailFailed reports whether the mail server refused that notification for good.
func (o *Order) EmailFailed() bool { return o.emailFailed }

// NextStep says which stage must act on the order next, or StepNone when it is finished.
func (o *Order) NextStep() Step {
	switch {
	case !o.Exists():
		return StepNone
	case o.payment == StatusPending:
		return StepPayment
	case o.payment == StatusCompleted && o.inventory == StatusPending:
		return StepInventory
	case o.payment == StatusCompleted && o.inventory == StatusFailed:
		return StepRefund
	case !o.emailSent && !o.emailFailed:
		return StepEmail
	}
	return StepNone
}

// Placement is what a customer asks for. Unit prices are filled in from the catalogue
// before Place is called.
type Placement struct {
	CustomerName  string
	CustomerEmail string
	Items         []Item
}

// Validate checks a placement without prices, naming the first offending field. Text rules
// (what may travel to SQS, MySQL and an email) are in text.go.
func (p Placement) Validate() error {
	name := strings.TrimSpace(p.CustomerName)
	if name == "" {
		return Invalid("customerName", "is required")
	}
	if err := checkLabel("customerName", name, MaxCustomerNameLen); err != nil {
		return err
	}
	if p.CustomerEmail != "" {
		if err := checkEmail("customerEmail", p.CustomerEmail); err != nil {
			return err
		}
	}
	if len(p.Items) > MaxItems {
		return Invalid("items", "has more than %d lines", MaxItems)
	}
	seen := make(map[string]bool, len(p.Items))
	for i, it := range p.Items {
		field := fmt.Sprintf("items[%d]", i)
		if strings.TrimSpace(it.SKU) == "" {
			return Invalid(field+".sku", "is required")
		}
		if err := checkLabel(field+".sku", it.SKU, MaxSKULen); err != nil {
			return err
		}
		switch {
		case seen[it.SKU]:
			return Invalid(field+".sku", "%q appears more than once", it.SKU)
		case it.Quantity < 1:
			return Invalid(field+".quantity", "must be at least 1")
		case it.Quantity > MaxQuantity:
			return Invalid(field+".quantity", "must be at most %d", MaxQuantity)
		case it.UnitPriceCents < 0:
			return Invalid(field+".unitPriceCents", "must not be negative")
		}
		seen[it.SKU] = true
	}
	return nil
}

// Place decides the first event of a new order's stream.
func Place(p Placement) ([]Event, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var total int64
	for _, it := range p.Items {
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	return []Event{OrderPlaced{
		CustomerName:  strings.TrimSpace(p.CustomerName),
		CustomerEmail: p.CustomerEmail,
		Items:         append([]Item{}, p.Items...),
		TotalCents:    total,
	}}, nil
}

// PaymentOutcome is what the payment gateway answered to a charge.
type PaymentOutcome struct {
	Approved  bool
	PaymentID string
	Reason    string
}

// Pay records the outcome of charging the order's total.
func (o *Order) Pay(out PaymentOutcome) ([]Event, error) {
	if o.NextStep() != StepPayment {
		return nil, ErrStepNotDue
	}
	if !out.Approved {
		return []Event{PaymentFailed{Reason: truncate(out.Reason, MaxReasonLen)}}, nil
	}
	return []Event{PaymentCompleted{PaymentID: out.PaymentID, AmountCents: o.totalCents}}, nil
}

// ReservationOutcome says whether every item could be taken from stock, and if not, why.
type ReservationOutcome struct {
	Reserved bool
	Reason   string
}

// Reserve records the outcome of reserving the order's items. An order with no items (as
// the seed's are) reserves nothing and passes.
func (o *Order) Reserve(out ReservationOutcome) ([]Event, error) {
	if o.NextStep() != StepInventory {
		return nil, ErrStepNotDue
	}
	if !out.Reserved && len(o.items) > 0 {
		return []Event{InventoryReservationFailed{Reason: truncate(out.Reason, MaxReasonLen)}}, nil
	}
	return []Event{InventoryReserved{Items: o.Items()}}, nil
}

// Refund records the refund that compensates a failed reservation.
func (o *Order) Refund(refundID string) ([]Event, error) {
	if o.NextStep() != StepRefund {
		return nil, ErrStepNotDue
	}
	return []Event{PaymentRefunded{RefundID: refundID, AmountCents: o.totalCents}}, nil
}

// EmailTemplate says which notification the order's current state calls for.
func (o *Order) EmailTemplate() string {
	switch o.status {
	case StatusPaymentFailed:
		return TemplatePaymentFailed
	case StatusCancelled:
		return TemplateCancelled
	}
	return TemplateConfirmation
}

// RecordEmail records that the notification for the order's outcome went to `to`.
func (o *Order) RecordEmail(to, messageID string) ([]Event, error) {
	if o.NextStep() != StepEmail {
		return nil, ErrStepNotDue
	}
	return []Event{EmailSent{To: to, MessageID: messageID, Template: o.EmailTemplate()}}, nil
}

// RecordEmailFailure records that the mail server permanently refused the notification for
// `to` with reply (e.g. "RCPT TO: 550 5.1.1 no such user"): the email step ends, and the
// order with it. The reply is the server's text, so it is bounded and kept to one line of
// printable characters before it goes into the order's history.
func (o *Order) RecordEmailFailure(to, reply string) ([]Event, error) {
	if o.NextStep() != StepEmail {
		return nil, ErrStepNotDue
	}
	return []Event{EmailFailed{To: to, Template: o.EmailTemplate(), Reply: truncate(printable(reply), MaxReasonLen)}}, nil
}

// Terminal reports whether the order has reached one of its end states.
func (o *Order) Terminal() bool {
	return o.status == StatusCompleted || o.status == StatusPaymentFailed || o.status == StatusCancelled
}

// printable returns s as valid UTF-8 on one line: invalid bytes and whatever is not printable
// (control characters, a multi-line reply's line breaks among them, bidi and other format
// characters) become spaces, and every run of spaces one.
func printable(s string) string {
	s = strings.ToValidUTF8(s, " ")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// truncate cuts s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
