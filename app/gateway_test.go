package app_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"orderd/app"
	"orderd/domain"
	"orderd/internal/testenv"
	"orderd/payment"
	"orderd/pipeline"
)

// scriptedGateway is a payment gateway adapter that fails as a real provider can: the
// simulated gateway's answers, except for orders of the amounts it is told about.
type scriptedGateway struct {
	inner payment.Simulated
	// transientCharges is how many charges of an amount fail with an outage before one
	// gets through; permanentCharge and permanentRefund are the amounts whose charge or
	// refund the provider refuses for good.
	transientCharges map[int64]int
	permanentCharge  int64
	permanentRefund  int64

	mu      sync.Mutex
	charges map[int64]int // attempts, by amount
	refunds map[int64]int
}

var errOutage = errors.New("connection reset by the payment provider")

const (
	chargeRefusal = "card reported stolen"
	refundRefusal = "the original payment is older than the provider's refund window"
)

func (g *scriptedGateway) Charge(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
	g.mu.Lock()
	g.charges[req.AmountCents]++
	n := g.charges[req.AmountCents]
	g.mu.Unlock()
	switch {
	case req.AmountCents == g.permanentCharge:
		return payment.ChargeResult{}, payment.Permanent(errors.New("402 card_declined: stolen_card"), chargeRefusal)
	case n <= g.transientCharges[req.AmountCents]:
		return payment.ChargeResult{}, errOutage
	}
	return g.inner.Charge(ctx, req)
}

func (g *scriptedGateway) Refund(ctx context.Context, req payment.RefundRequest) (string, error) {
	g.mu.Lock()
	g.refunds[req.AmountCents]++
	g.mu.Unlock()
	if req.AmountCents == g.permanentRefund {
		return "", payment.Permanent(errors.New("400 charge_expired_for_refund"), refundRefusal)
	}
	return g.inner.Refund(ctx, req)
}

func (g *scriptedGateway) attempts(m map[int64]int, amount int64) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return m[amount]
}

// TestGatewayErrorsPermanentAndTransient runs the default pipeline with a gateway adapter
// that fails, on MariaDB, SQS and Mailpit: a charge refused for good ends the order as
// payment_failed with the provider's reason (and its email); a refund refused for good is
// dead-lettered with its reason, tried once; a charge that fails with an outage is retried
// until it succeeds.
func TestGatewayErrorsPermanentAndTransient(t *testing.T) {
	const (
		stolen  = 2 * 1299  // two books
		flaky   = 3 * 1299  // three books
		expired = 11 * 4999 // eleven posters: ten are in stock, so the order is refunded
	)
	g := &scriptedGateway{inner: payment.Simulated{DeclineAboveCents: 100_000},
		transientCharges: map[int64]int{flaky: 2}, permanentCharge: stolen, permanentRefund: expired,
		charges: map[int64]int{}, refunds: map[int64]int{}}
	s := startService(t, testenv.SQSImplementations[0], pipeline.Default(), app.Adapters{Gateway: g})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	refused := s.place(t, "stolen", domain.Item{SKU: "SKU-BOOK", Quantity: 2})
	retried := s.place(t, "flaky", domain.Item{SKU: "SKU-BOOK", Quantity: 3})
	stuck := s.place(t, "expired", domain.Item{SKU: "SKU-POSTER", Quantity: 11})

	waitFor(t, "the refused and the retried order to end", 30*time.Second, func() bool {
		a, events := s.order(t, refused) // payment_failed before its email is sent: wait for that too
		b, _ := s.order(t, retried)
		return a == domain.StatusPaymentFailed && len(events) == 3 && b == domain.StatusCompleted
	})
	status, events := s.order(t, refused)
	if want := []string{domain.TypeOrderPlaced, domain.TypePaymentFailed, domain.TypeEmailSent}; strings.Join(events, ",") != strings.Join(want, ",") {
		t.Errorf("refused charge: log %v, want %v", events, want)
	}
	var reason string
	must(t, s.env.DB.QueryRow(`SELECT failure_reason FROM orders WHERE order_id = ?`, refused).Scan(&reason))
	if status != domain.StatusPaymentFailed || reason != chargeRefusal {
		t.Errorf("refused charge: %s with reason %q, want %s with %q", status, reason, domain.StatusPaymentFailed, chargeRefusal)
	}
	if n := g.attempts(g.charges, stolen); n != 1 {
		t.Errorf("the refused charge was tried %d times, want once", n)
	}
	if _, err := s.mail.WaitFor(ctx, `to:stolen@`+s.domain+` subject:"payment declined"`, 1); err != nil {
		t.Errorf("payment_failed email: %v", err)
	}

	if _, events := s.order(t, retried); strings.Join(events, ",") != "OrderPlaced,PaymentCompleted,InventoryReserved,EmailSent" {
		t.Errorf("retried charge: log %v", events)
	}
	if n := g.attempts(g.charges, flaky); n != 3 {
		t.Errorf("the flaky charge was tried %d times, want 3 (two outages, then success)", n)
	}

	// The refused refund: dead-lettered with its reason, the order held where it was.
	var queue, eventType, letter string
	waitFor(t, "the refused refund's dead letter", 30*time.Second, func() bool {
		err := s.env.DB.QueryRow(`SELECT queue, event_type, reason FROM dead_letters WHERE order_id = ?`, stuck).Scan(&queue, &eventType, &letter)
		return err == nil
	})
	if queue != s.qcfg.Name(pipeline.PaymentQueue) || eventType != domain.TypeInventoryReservationFailed || !strings.Contains(letter, refundRefusal) {
		t.Errorf("dead letter: %s, %s, %q; want the payment queue, %s and a reason saying %q",
			queue, eventType, letter, domain.TypeInventoryReservationFailed, refundRefusal)
	}
	if status, events := s.order(t, stuck); status != domain.StatusPending ||
		strings.Join(events, ",") != "OrderPlaced,PaymentCompleted,InventoryReservationFailed" {
		t.Errorf("refused refund: %s, log %v; want pending, held before the refund", status, events)
	}
	if n := g.attempts(g.refunds, expired); n != 1 {
		t.Errorf("the refused refund was tried %d times, want once (dead-lettered, not retried)", n)
	}
}
