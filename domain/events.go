package domain

// Event is a fact recorded on an order's stream. Each concrete event is a plain struct;
// how it is encoded is the event store's business.
type Event interface {
	// EventType is the event's name as stored in the log, e.g. "OrderPlaced".
	EventType() string
}

// Names of the events, as written in the log and carried between the stages.
const (
	TypeOrderPlaced                = "OrderPlaced"
	TypePaymentCompleted           = "PaymentCompleted"
	TypePaymentFailed              = "PaymentFailed"
	TypeInventoryReserved          = "InventoryReserved"
	TypeInventoryReservationFailed = "InventoryReservationFailed"
	TypePaymentRefunded            = "PaymentRefunded"
	TypeEmailSent                  = "EmailSent"
	TypeEmailFailed                = "EmailFailed"
)

// Item is one line of an order: a stock-keeping unit, how many, and the unit price at the
// moment the order was placed (prices come from the catalogue, never from the customer).
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unitPriceCents"`
}

// OrderPlaced opens an order's stream.
type OrderPlaced struct {
	CustomerName  string `json:"customerName"`
	CustomerEmail string `json:"customerEmail,omitempty"`
	Items         []Item `json:"items"`
	TotalCents    int64  `json:"totalCents"`
}

// PaymentCompleted records a successful charge.
type PaymentCompleted struct {
	PaymentID   string `json:"paymentId"`
	AmountCents int64  `json:"amountCents"`
}

// PaymentFailed records a declined charge; the order ends as payment_failed.
type PaymentFailed struct {
	Reason string `json:"reason"`
}

// InventoryReserved records that every item was taken out of available stock.
type InventoryReserved struct {
	Items []Item `json:"items"`
}

// InventoryReservationFailed records that stock was short; nothing was reserved and the
// payment must be refunded.
type InventoryReservationFailed struct {
	Reason string `json:"reason"`
}

// PaymentRefunded records the refund that compensates a failed reservation; the order ends
// as cancelled.
type PaymentRefunded struct {
	RefundID    string `json:"refundId"`
	AmountCents int64  `json:"amountCents"`
}

// EmailSent records the notification sent to the customer at the end of the order's path.
type EmailSent struct {
	To        string `json:"to"`
	MessageID string `json:"messageId"`
	Template  string `json:"template"`
}

// EmailFailed records that the mail server permanently refused the notification (a 5xx
// reply to the recipient or the message, or a message that cannot be sent at all): sending
// it again cannot succeed, so the order ends without it, its outcome unchanged. Reply is the
// server's answer, as it gave it, so that the shop can see why.
type EmailFailed struct {
	To       string `json:"to"`
	Template string `json:"template"`
	Reply    string `json:"reply"`
}

// EventType implements Event.
func (OrderPlaced) EventType() string { return TypeOrderPlaced }

// EventType implements Event.
func (PaymentCompleted) EventType() string { return TypePaymentCompleted }

// EventType implements Event.
func (PaymentFailed) EventType() string { return TypePaymentFailed }

// EventType implements Event.
func (InventoryReserved) EventType() string { return TypeInventoryReserved }

// EventType implements Event.
func (InventoryReservationFailed) EventType() string { return TypeInventoryReservationFailed }

// EventType implements Event.
func (PaymentRefunded) EventType() string { return TypePaymentRefunded }

// EventType implements Event.
func (EmailSent) EventType() string { return TypeEmailSent }

// EventType implements Event.
func (EmailFailed) EventType() string { return TypeEmailFailed }
