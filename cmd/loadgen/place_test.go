package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seedLike answers like the seed's /place-order, failing every failEvery-th request with 500.
func seedLike(t *testing.T, failEvery int64) (*httptest.Server, *sync.Map) {
	var next atomic.Int64
	var names sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ CustomerName string }
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", 400)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.CustomerName == "" {
			http.Error(w, "bad body", 400)
			return
		}
		id := next.Add(1)
		if failEvery > 0 && id%failEvery == 0 {
			http.Error(w, `{"error":"boom"}`, 500)
			return
		}
		names.Store(id, in.CustomerName)
		fmt.Fprintf(w, `{"message":"Order placed successfully","orderId":%d}`, id)
	}))
	t.Cleanup(srv.Close)
	return srv, &names
}

func TestPlaceAllClosedLoop(t *testing.T) {
	srv, names := seedLike(t, 0)
	p := &placer{client: newClient(4, 5*time.Second), url: srv.URL, name: "t-"}
	orders := make([]order, 50)
	placed := make(chan int, len(orders))
	var c counters
	placeAll(context.Background(), p, orders, 4, 0, placed, &c, &failureLog{w: io.Discard})
	close(placed)
	if c.placed.Load() != 50 || c.failed.Load() != 0 || len(placed) != 50 {
		t.Fatalf("placed %d, failed %d, handed to waiter %d; want 50, 0, 50", c.placed.Load(), c.failed.Load(), len(placed))
	}
	seen := map[int64]bool{}
	for i, o := range orders {
		if o.id == 0 || seen[o.id] || o.start.IsZero() || o.placed.Before(o.start) {
			t.Fatalf("order %d: %+v", i, o)
		}
		seen[o.id] = true
		if name, _ := names.Load(o.id); name != fmt.Sprintf("t-%d", i) {
			t.Errorf("order %d was sent as %v", i, name)
		}
	}
}

func TestPlaceAllCountsFailures(t *testing.T) {
	srv, _ := seedLike(t, 5)
	p := &placer{client: newClient(2, 5*time.Second), url: srv.URL, name: "t-"}
	orders := make([]order, 20)
	placed := make(chan int, len(orders))
	var c counters
	placeAll(context.Background(), p, orders, 2, 0, placed, &c, &failureLog{w: io.Discard})
	if c.placed.Load() != 16 || c.failed.Load() != 4 || len(placed) != 16 {
		t.Errorf("placed %d, failed %d, handed %d; want 16, 4, 16", c.placed.Load(), c.failed.Load(), len(placed))
	}
}

func TestPlaceRejectsAnswerWithoutOrderID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"message":"Order placed successfully","orderId":"abc"}`)
	}))
	defer srv.Close()
	p := &placer{client: newClient(1, time.Second), url: srv.URL}
	if id, err := p.place(context.Background(), &worker{}, 1); err == nil {
		t.Errorf("string orderId accepted as %d", id)
	}
}

func TestPlaceAllOpenLoopCountsFromScheduledStart(t *testing.T) {
	srv, _ := seedLike(t, 0)
	p := &placer{client: newClient(2, 5*time.Second), url: srv.URL}
	orders := make([]order, 10)
	placed := make(chan int, len(orders))
	var c counters
	began := time.Now()
	placeAll(context.Background(), p, orders, 2, 100, placed, &c, &failureLog{w: io.Discard})
	if elapsed := time.Since(began); elapsed < 90*time.Millisecond {
		t.Errorf("10 orders at 100/s took %v; the schedule alone is 90ms", elapsed)
	}
	// The recorded start is the schedule, exactly 10ms apart, not when a client got to it.
	for i := 1; i < len(orders); i++ {
		if gap := orders[i].start.Sub(orders[i-1].start); gap != 10*time.Millisecond {
			t.Errorf("start gap %d→%d = %v, want 10ms", i-1, i, gap)
		}
	}
}

func TestPlaceSerialWaitsForEachOrderAndStopsAtALostOne(t *testing.T) {
	srv, _ := seedLike(t, 0)
	p := &placer{client: newClient(1, 5*time.Second), url: srv.URL}
	orders := make([]order, 6)
	placed := make(chan int, len(orders))
	terminal := make(chan int, len(orders))
	var finishedAt [6]time.Time
	// A fake pipeline: each order finishes 5ms after it is placed, except the fourth, never.
	go func() {
		for i := range placed {
			if i == 3 {
				continue
			}
			time.Sleep(5 * time.Millisecond)
			finishedAt[i] = time.Now()
			terminal <- i
		}
	}()
	var c counters
	placeSerial(context.Background(), p, orders, placed, terminal, 100*time.Millisecond, &c, &failureLog{w: io.Discard})
	close(placed)
	if c.placed.Load() != 4 {
		t.Fatalf("placed %d orders; want 4: three that finished and the lost one, then stop", c.placed.Load())
	}
	for i := 1; i < 4; i++ {
		if orders[i].start.Before(finishedAt[i-1]) {
			t.Errorf("order %d started %v before order %d finished", i, finishedAt[i-1].Sub(orders[i].start), i-1)
		}
	}
	if !orders[4].placed.IsZero() {
		t.Error("an order was placed after the lost one")
	}
}
