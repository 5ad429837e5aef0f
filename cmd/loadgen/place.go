package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// order is the record of one order in a run. A placing goroutine writes start, placed and id
// before handing the index to the waiter over a channel, and the waiter alone writes done and
// outcome afterwards, so no field is written by two goroutines.
type order struct {
	start   time.Time // request start; in open-loop mode the scheduled start
	placed  time.Time // placement response received
	done    time.Time // first poll that saw the order terminal
	id      int64
	outcome string // terminal state as read from the orders table
}

// newClient returns the one HTTP client a whole loadgen run shares. Keep-alive with at least
// conns idle connections per host means the measured latency is the service's, not TCP
// handshakes'.
func newClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil, // a local benchmark never goes through a proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        2 * conns,
			MaxIdleConnsPerHost: 2 * conns,
			// Node's HTTP server (the peer) drops idle connections after 5 s. A POST that
			// races such a close fails rather than being retried (it is not idempotent), so
			// let go of idle connections first; the pause between runs would hit it.
			IdleConnTimeout: 3 * time.Second,
		},
	}
}

// placer sends orders to one system.
type placer struct {
	client *http.Client
	url    string // full URL of the place-order endpoint
	name   string // customer-name prefix, so a row in the table tells which run made it
}

// worker holds one placing goroutine's reusable buffers.
type worker struct {
	body bytes.Buffer
	resp bytes.Buffer
}

// placeResponse is the seed's answer, which orderd keeps for compatibility.
type placeResponse struct {
	OrderID *int64 `json:"orderId"`
}

// place sends order number i and returns the id the service gave it.
func (p *placer) place(ctx context.Context, w *worker, i int) (int64, error) {
	w.body.Reset()
	w.body.WriteString(`{"customerName":"`)
	w.body.WriteString(p.name)
	w.body.Write(strconv.AppendInt(w.body.AvailableBuffer(), int64(i), 10))
	w.body.WriteString(`"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(w.body.Bytes()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	w.resp.Reset()
	_, err = w.resp.ReadFrom(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return 0, fmt.Errorf("status %d: %.200s", resp.StatusCode, w.resp.Bytes())
	}
	var out placeResponse
	if err := json.Unmarshal(w.resp.Bytes(), &out); err != nil || out.OrderID == nil {
		return 0, fmt.Errorf("answer without a numeric orderId: %.200s", w.resp.Bytes())
	}
	return *out.OrderID, nil
}

// counters is what the progress line reads while a run goes on.
type counters struct {
	placed, failed, terminal atomic.Int64
}

// failureLog prints the first few placement errors and counts the rest, so that a dead
// target produces a readable diagnosis instead of thousands of identical lines.
type failureLog struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	shown int
}

func (f *failureLog) add(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shown < 5 {
		fmt.Fprintf(f.w, "%s: order %d not placed: %v\n", f.label, i, err)
	} else if f.shown == 5 {
		fmt.Fprintf(f.w, "%s: further placement errors are only counted\n", f.label)
	}
	f.shown++
}

// placeAll places len(orders) orders and sends the index of each placed one on placed; it
// returns when every request has been answered. With rate > 0 it runs open-loop: order i is
// due at start+i/rate whatever happened to the others, and its latency counts from when it was
// due, so a service that falls behind is charged for the queueing it causes (no coordinated
// omission). Otherwise it runs closed-loop with conc clients, each sending its next order as
// soon as the previous one is answered. At most conc requests are in flight in either mode.
func placeAll(ctx context.Context, p *placer, orders []order, conc int, rate float64, placed chan<- int, c *counters, fails *failureLog) {
	next := make(chan int, len(orders))
	var due func(i int) time.Time
	if rate <= 0 {
		for i := range orders {
			next <- i
		}
		close(next)
	} else {
		t0 := time.Now()
		interval := time.Duration(float64(time.Second) / rate)
		due = func(i int) time.Time { return t0.Add(time.Duration(i) * interval) }
		go func() {
			defer close(next)
			t := time.NewTimer(0)
			defer t.Stop()
			for i := range orders {
				if d := time.Until(due(i)); d > 0 {
					t.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
				next <- i
			}
		}()
	}
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var w worker
			for i := range next {
				if ctx.Err() != nil {
					return
				}
				start := time.Now()
				if due != nil {
					start = due(i)
				}
				id, err := p.place(ctx, &w, i)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						fails.add(i, err)
					}
					c.failed.Add(1)
					continue
				}
				orders[i].start, orders[i].placed, orders[i].id = start, time.Now(), id
				c.placed.Add(1)
				placed <- i
			}
		})
	}
	wg.Wait()
}

// placeSerial places one order at a time end to end: each order is sent only once the previous
// one has been seen terminal (its index arrives on terminal), so every order crosses an idle
// system and its latency is the pipeline's own. It stops early if an order is not terminal
// within timeout: waiting longer would only measure the loss, which the waiter reports.
func placeSerial(ctx context.Context, p *placer, orders []order, placed chan<- int, terminal <-chan int, timeout time.Duration, c *counters, fails *failureLog) {
	var w worker
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := range orders {
		start := time.Now()
		id, err := p.place(ctx, &w, i)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails.add(i, err)
			c.failed.Add(1)
			continue
		}
		orders[i].start, orders[i].placed, orders[i].id = start, time.Now(), id
		c.placed.Add(1)
		placed <- i
		deadline.Reset(timeout)
		select {
		case <-ctx.Done():
			return
		case <-terminal:
		case <-deadline.C:
			return
		}
	}
}
