package testenv

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"orderd/feed"
)

// RunFeed runs a consumer of the log's feed on the test's database until the test ends, with
// short poll and retry intervals unless cfg sets them.
func (e *Env) RunFeed(t testing.TB, handle feed.Handler, cfg feed.ConsumerConfig) {
	t.Helper()
	cfg.PollInterval = cmp.Or(cfg.PollInterval, 10*time.Millisecond)
	cfg.RetryInterval = cmp.Or(cfg.RetryInterval, 20*time.Millisecond)
	c, err := feed.NewConsumer(e.DB, handle, slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feed consumer: %v", err)
		}
	})
}

// WaitFeedDrained waits until topic has no rows left in the feed (at most 30 s).
func (e *Env) WaitFeedDrained(t testing.TB, topic string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := e.Count(t, `SELECT COUNT(*) FROM event_feed WHERE topic = ?`, topic)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed's topic %s still holds %d rows after 30 s", topic, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
