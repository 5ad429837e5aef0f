package outbox

import (
	"testing"
	"time"
)

// TestOldestAge: the age of the oldest waiting row is now less its time, 0 when nothing waits,
// and never negative when the reader's clock is behind the writer's.
func TestOldestAge(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		oldest time.Time
		want   time.Duration
	}{
		{time.Time{}, 0},
		{now.Add(-90 * time.Second), 90 * time.Second},
		{now.Add(time.Second), 0},
	} {
		if got := (Backlog{Oldest: c.oldest}).OldestAge(now); got != c.want {
			t.Errorf("Backlog{Oldest: %v}.OldestAge = %v, want %v", c.oldest, got, c.want)
		}
		if got := (QueueBacklog{Oldest: c.oldest}).OldestAge(now); got != c.want {
			t.Errorf("QueueBacklog{Oldest: %v}.OldestAge = %v, want %v", c.oldest, got, c.want)
		}
	}
}
