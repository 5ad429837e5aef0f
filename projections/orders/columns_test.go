package orders

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"orderd/domain"
	"orderd/internal/testenv"
)

// TestTableColumnsAreTheTable: TableColumns names every column of the migrated orders table
// that a row writes (all but the generated ones), in the table's order, and rows round-trip
// through WriteRows (Values) and the reader (scanRow), NULLs included.
func TestTableColumnsAreTheTable(t *testing.T) {
	env := testenv.New(t)
	want := env.Strings(t, `SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE()
		AND table_name = 'orders' AND extra NOT LIKE '%GENERATED%' ORDER BY ordinal_position`)
	var got []string
	for _, c := range TableColumns {
		got = append(got, c.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("TableColumns %v, want the table's written columns %v", got, want)
	}
	if ColumnCount != len(want) {
		t.Errorf("ColumnCount %d, want %d", ColumnCount, len(want))
	}

	rd, err := NewReader(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 678901000, time.UTC)
	for _, r := range []OrderRow{
		{OrderID: 7, CustomerName: "Ann", OrderStatus: domain.StatusPaymentFailed, PaymentStatus: domain.StatusFailed,
			InventoryStatus: domain.StatusPending, EmailSent: true, EmailFailed: true, CustomerEmail: "ann@example.com",
			Items: []domain.Item{{SKU: "SKU-MUG", Quantity: 2, UnitPriceCents: 899}}, TotalCents: 1798,
			FailureReason: "card declined", Version: 3, LastPosition: 42, PlacedAt: at, UpdatedAt: at.Add(time.Second)},
		{OrderID: 8, CustomerName: "Bob", OrderStatus: domain.StatusPending, PaymentStatus: domain.StatusPending,
			InventoryStatus: domain.StatusPending, Items: []domain.Item{}, Version: 1, LastPosition: 43, PlacedAt: at, UpdatedAt: at},
	} {
		if err := WriteRows(t.Context(), env.DB, Table, []OrderRow{r}); err != nil {
			t.Fatalf("write order %d: %v", r.OrderID, err)
		}
		got, err := rd.Order(t.Context(), r.OrderID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("order %d: wrote %+v, read %+v", r.OrderID, r, got)
		}
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM orders WHERE customer_email IS NULL AND failure_reason IS NULL`); n != 1 {
		t.Errorf("%d rows with NULL email and reason, want 1 (empty strings are stored as NULL)", n)
	}
}
