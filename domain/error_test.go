package domain_test

import (
	"errors"
	"fmt"
	"testing"

	"orderd/domain"
)

func TestErrorKind(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want domain.Kind
	}{
		{"invalid", domain.Invalid("items[0].sku", "is required"), domain.KindInvalid},
		{"wrapped invalid", fmt.Errorf("place order: %w", domain.Invalid("customerName", "is required")), domain.KindInvalid},
		{"not found", domain.NotFound("order %d does not exist", 3), domain.KindNotFound},
		{"conflict", domain.Conflict("busy"), domain.KindConflict},
		{"unavailable", domain.Unavailable("db down"), domain.KindUnavailable},
		{"step not due is a conflict", fmt.Errorf("pay: %w", domain.ErrStepNotDue), domain.KindConflict},
		{"plain error is internal", errors.New("boom"), domain.KindInternal},
		{"nil is internal", nil, domain.KindInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := domain.ErrorKind(tc.err); got != tc.want {
				t.Errorf("ErrorKind = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	if got, want := domain.Invalid("items[1].quantity", "must be at most %d", 1000).Error(), "items[1].quantity: must be at most 1000"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := domain.NotFound("order %d does not exist", 9).Error(), "order 9 does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
