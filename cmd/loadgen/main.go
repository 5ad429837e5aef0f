// Command loadgen measures orderd beside the seed design it replaces: it places orders over
// HTTP, watches the orders table until each one is terminal, and prints placement and
// end-to-end throughput and latency for each system and the ratio orderd/peer.
//
//	go run ./cmd/loadgen -target both -n 2000 -c 16 -rounds 3 -warmup 200   # capacity
//	go run ./cmd/loadgen -target both -n 600 -rate 20                       # light load
//	go run ./cmd/loadgen -target both -n 200 -serial                        # one order at a time
//	go run ./cmd/loadgen -target both -orderd-bin bin/orderd -url http://127.0.0.1:8080
//	go run ./cmd/loadgen -target both -orderd-bin bin/orderd -smtp-sink   # email leaves the machine
//
// Orders go to POST /place-order with {"customerName": "..."} on both systems (orderd keeps
// the seed's endpoint), and the answer's orderId is what loadgen waits for. An order is
// terminal when its row in the system's orders table says so: email_sent = 1 for the seed
// peer, order_status completed, payment_failed or cancelled for orderd. loadgen polls the
// table directly, by primary key and only for its own outstanding orders.
//
// Figures: placement throughput (placed orders / first request start → last response),
// placement latency (request start → response), end-to-end throughput (terminal orders /
// first request start → last order seen terminal) and end-to-end latency (request start →
// first poll that saw the order terminal). In -rate mode a request's start is when it was
// due. Percentiles are exact, pooled over rounds; throughput is the median of the rounds.
// Peak RSS comes from /proc/<pid>/status of the peer's processes and of orderd (started by
// loadgen, or -orderd-pid).
//
// With -target peer or both it starts the seed peer itself (run.sh, which recreates -peer-db)
// on the same MySQL and SQS endpoint, with its own queue prefix; orderd is either already
// running at -url or started from -orderd-bin (migrate, then serve). With both, each round
// runs the peer, then orderd. With -smtp-sink the orderd it starts sends its email to an SMTP
// server inside loadgen that discards it, instead of to Mailpit (see smtpsink.go). Progress
// goes to stderr once a second; the report goes to stdout. The exit status is 1 when any
// placement failed or any placed order did not become terminal within -timeout (warm-up
// included), 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// rssTargetMiB is the bound on orderd's resident memory under load.
const rssTargetMiB = 150

// run is the whole command: it parses args, sets the systems up, runs warm-up and the rounds,
// prints the report and tears down what it started, whatever happened in between.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, client: newClient(cfg.c, cfg.httpTimeout), stderr: stderr}
	defer b.tearDown()
	if err := b.setUp(ctx); err != nil {
		return err
	}

	// Memory is sampled over the whole run, warm-up included: a peak is a peak.
	rssCtx, stopRSS := context.WithCancel(context.Background())
	var sampling sync.WaitGroup
	for _, s := range b.systems {
		if s.rss != nil {
			sampling.Go(func() { s.rss.run(rssCtx, 250*time.Millisecond) })
		}
	}
	defer func() { stopRSS(); sampling.Wait() }()

	fmt.Fprintf(stdout, "loadgen: %d orders per system per round, %d round(s), %s, warm-up %d\n",
		cfg.n, cfg.rounds, cfg.mode(), cfg.warmup)
	fmt.Fprintln(stdout, "placement latency: request start → response; end-to-end latency: request start → first poll that saw the order terminal")
	if cfg.rate > 0 {
		fmt.Fprintln(stdout, "open loop: \"request start\" is when the order was due, so queueing in the client counts against the service")
	}

	var unmeasured struct{ failed, lost int }
	if cfg.warmup > 0 {
		for _, s := range b.systems {
			r, err := b.runOnce(ctx, s, cfg.warmup, 0, "warm-up "+s.name)
			if err != nil {
				return err
			}
			unmeasured.failed += r.failed
			unmeasured.lost += r.lost
			fmt.Fprintf(stdout, "warm-up %s: %d placed, %d failed, %d lost\n", s.name, r.placed, r.failed, r.lost)
		}
	}
	for round := 1; round <= cfg.rounds; round++ {
		for _, s := range b.systems {
			if err := sleep(ctx, cfg.pause); err != nil {
				return err
			}
			r, err := b.runOnce(ctx, s, cfg.n, round, fmt.Sprintf("round %d/%d %s", round, cfg.rounds, s.name))
			if err != nil {
				return err
			}
			s.runs = append(s.runs, r)
			printRound(stdout, &r)
		}
	}
	stopRSS()
	sampling.Wait()

	sums := make([]*systemSummary, 0, len(b.systems))
	for _, s := range b.systems {
		sum := summariseRuns(s.name, s.runs)
		if s.rss != nil {
			if mib, ok := s.rss.peakMiB(); ok {
				sum.PeakRSSMiB = num(mib)
			}
			sum.RSSPIDs = s.rss.pids
		}
		sums = append(sums, &sum)
	}
	fmt.Fprintln(stdout)
	if err := printTable(stdout, sums); err != nil {
		return err
	}
	printOutcomes(stdout, sums)
	if b.sink != nil {
		fmt.Fprintf(stdout, "orderd's email: %d messages over %d SMTP connections to loadgen's sink, discarded (-smtp-sink)\n",
			b.sink.messages.Load(), b.sink.conns.Load())
	}
	for _, s := range sums {
		if s.Name == "orderd" && !math.IsNaN(float64(s.PeakRSSMiB)) {
			verdict := "within"
			if float64(s.PeakRSSMiB) >= rssTargetMiB {
				verdict = "OVER"
			}
			fmt.Fprintf(stdout, "orderd peak RSS %.1f MiB: %s the %d MiB target\n", float64(s.PeakRSSMiB), verdict, rssTargetMiB)
		}
		if s.Name == "peer" && len(s.RSSPIDs) > 1 {
			fmt.Fprintf(stdout, "peer RSS is the sum of its %d processes' peaks\n", len(s.RSSPIDs))
		}
	}

	failed, lost := unmeasured.failed, unmeasured.lost
	for _, s := range sums {
		failed += s.Failed
		lost += s.Lost
	}
	if cfg.jsonOut {
		if err := printJSON(stdout, cfg, sums, failed == 0 && lost == 0); err != nil {
			return err
		}
	}
	if failed > 0 || lost > 0 {
		return fmt.Errorf("%d placement(s) failed, %d placed order(s) not terminal within %s (warm-up included)", failed, lost, cfg.timeout)
	}
	return nil
}

// printRound writes the one-line result of a measured run.
func printRound(w io.Writer, r *runResult) {
	fmt.Fprintf(w, "round %d %-6s placed %d/%d in %.2fs (%s orders/s), terminal %d in %.2fs (%s orders/s), failed %d, lost %d\n",
		r.round, r.system, r.placed, r.requested, r.placeDur.Seconds(), formatValue(perSecond(r.placed, r.placeDur)),
		len(r.e2eLat), r.e2eDur.Seconds(), formatValue(perSecond(len(r.e2eLat), r.e2eDur)), r.failed, r.lost)
}

// printJSON writes the machine-readable summary as one line.
func printJSON(w io.Writer, cfg *config, sums []*systemSummary, ok bool) error {
	out := struct {
		Orders  int                       `json:"orders_per_round"`
		Clients int                       `json:"clients"`
		Rate    float64                   `json:"rate_per_s,omitempty"`
		Rounds  int                       `json:"rounds"`
		Warmup  int                       `json:"warmup"`
		Systems map[string]*systemSummary `json:"systems"`
		Ratios  map[string]num            `json:"ratios_orderd_over_peer,omitempty"`
		OK      bool                      `json:"ok"`
	}{cfg.n, cfg.c, cfg.rate, cfg.rounds, cfg.warmup, map[string]*systemSummary{}, nil, ok}
	for _, s := range sums {
		out.Systems[s.Name] = s
	}
	if o, p := out.Systems["orderd"], out.Systems["peer"]; o != nil && p != nil {
		out.Ratios = ratios(o, p)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
