// Package payment charges and refunds orders through a gateway. The built-in Simulated
// gateway is deterministic, so tests and demos know in advance which orders it declines.
package payment

import (
	"context"
	"errors"
	"fmt"
)

// ChargeRequest asks for an amount to be taken. IdempotencyKey is derived from the order's
// stream and version: a retried charge with the same key must not charge twice (real
// gateways such as Stripe honour such keys).
type ChargeRequest struct {
	OrderID        int64
	AmountCents    int64
	IdempotencyKey string
}

// ChargeResult is the gateway's answer; a decline is a result, not an error.
type ChargeResult struct {
	Approved  bool
	PaymentID string
	Reason    string
}

// RefundRequest asks for a charge to be given back.
type RefundRequest struct {
	OrderID        int64
	PaymentID      string
	AmountCents    int64
	IdempotencyKey string
}

// Gateway is what the payment stage charges through. Errors mean "could not ask" (network,
// outage) and are retried, unless the adapter marks them Permanent; declines come back as
// results.
type Gateway interface {
	Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error)
	Refund(ctx context.Context, req RefundRequest) (refundID string, err error)
}

// Simulated approves every charge up to DeclineAboveCents and declines the rest. Payment
// and refund ids are derived from the idempotency key, so a retry gets the same answer.
type Simulated struct {
	DeclineAboveCents int64
}

// Charge implements Gateway.
func (s Simulated) Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error) {
	if err := ctx.Err(); err != nil {
		return ChargeResult{}, err
	}
	if req.AmountCents > s.DeclineAboveCents {
		return ChargeResult{Reason: fmt.Sprintf("card declined: amount %d exceeds the limit of %d cents", req.AmountCents, s.DeclineAboveCents)}, nil
	}
	return ChargeResult{Approved: true, PaymentID: "pay_" + req.IdempotencyKey}, nil
}

// Refund implements Gateway.
func (s Simulated) Refund(ctx context.Context, req RefundRequest) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return "ref_" + req.IdempotencyKey, nil
}

// Permanent marks err as one that asking again cannot change: the gateway refused the
// request for good (a card the provider will never accept, a payment that can no longer be
// refunded), as opposed to "could not ask". reason says why, in words a shop can show; an
// empty one falls back to err's text. The payment stage ends the order with PaymentFailed
// for a permanent charge error and dead-letters a permanent refund error, instead of
// retrying either for ever.
func Permanent(err error, reason string) error {
	if err == nil {
		return nil
	}
	if reason == "" {
		reason = err.Error()
	}
	return permanentError{err: err, reason: reason}
}

// IsPermanent reports whether err, or an error it wraps, was marked by Permanent. Every
// other gateway error is transient: retried.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Reason returns why a permanent error is permanent, as Permanent was told; "" for any
// other error.
func Reason(err error) string {
	var p permanentError
	if !errors.As(err, &p) {
		return ""
	}
	return p.reason
}

type permanentError struct {
	err    error
	reason string
}

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }
