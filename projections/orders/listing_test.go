package orders

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"orderd/domain"
	"orderd/internal/testenv"
)

// TestPagesWalkEveryStatus: walking the pages of each status (and of all orders), each from
// the previous page's last id, gives exactly that status's orders, newest first, each once —
// so the status_order column the pages read (migration 008) agrees with statusCodes.
func TestPagesWalkEveryStatus(t *testing.T) {
	env := testenv.New(t)
	env.FillOrders(t, 2000, 30)
	rd, err := NewReader(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, status := range []string{"", domain.StatusPending, domain.StatusCompleted, domain.StatusPaymentFailed, domain.StatusCancelled} {
		want := env.Strings(t, `SELECT order_id FROM orders WHERE ? = '' OR order_status = ? ORDER BY order_id DESC`, status, status)
		var got []string
		var before domain.OrderID
		for pages := 0; ; pages++ {
			page, err := rd.Page(ctx, status, before, 37)
			if err != nil {
				t.Fatalf("status %q before %d: %v", status, before, err)
			}
			if len(page) == 0 || pages > 100 {
				break
			}
			for _, o := range page {
				if status != "" && o.OrderStatus != status {
					t.Fatalf("status %q: page holds order %d in status %q", status, o.OrderID, o.OrderStatus)
				}
				got = append(got, fmt.Sprint(o.OrderID))
			}
			before = page[len(page)-1].OrderID
		}
		if len(want) == 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("status %q: pages gave %d orders, want the %d in the table, newest first", status, len(got), len(want))
		}
	}
	if _, err := rd.Page(ctx, "lost", 0, 10); domain.ErrorKind(err) != domain.KindInvalid {
		t.Errorf("unknown status: %v, want an invalid-status error", err)
	}
}

// TestStatusCounter: pending orders are counted on every call; the terminal statuses come
// from a count at most maxAge old, made again in the background once it is older.
func TestStatusCounter(t *testing.T) {
	env := testenv.New(t)
	env.FillOrders(t, 1000, 10)
	count := func(status string) int64 {
		return int64(env.Count(t, `SELECT COUNT(*) FROM orders WHERE order_status = ?`, status))
	}
	want := func() map[string]int64 {
		m := map[string]int64{"all": int64(env.Count(t, `SELECT COUNT(*) FROM orders`))}
		for s := range statusCodes {
			m[s] = count(s)
		}
		return m
	}
	c, err := NewStatusCounter(env.DB, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := context.Background()
	got, err := c.Counts(ctx)
	if err != nil || !reflect.DeepEqual(got.ByStatus, want()) || !got.TerminalAsOf.Equal(now) {
		t.Fatalf("first counts %v as of %s (%v), want %v as of %s", got.ByStatus, got.TerminalAsOf, err, want(), now)
	}
	before := want()

	// Five orders complete: pending shows it at once, completed once recounted.
	env.MustExec(t, `UPDATE orders SET order_status = 'completed', email_sent = 1 WHERE order_status = 'pending' ORDER BY order_id LIMIT 5`)
	got, err = c.Counts(ctx)
	if err != nil || got.ByStatus[domain.StatusPending] != before[domain.StatusPending]-5 ||
		got.ByStatus[domain.StatusCompleted] != before[domain.StatusCompleted] {
		t.Fatalf("counts within maxAge: %v (%v); want pending %d live, completed %d as counted", got.ByStatus, err,
			before[domain.StatusPending]-5, before[domain.StatusCompleted])
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = c.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if reflect.DeepEqual(got.ByStatus, want()) && got.TerminalAsOf.Equal(now) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts 10 s later: %v as of %s, want %v recounted", got.ByStatus, got.TerminalAsOf, want())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
