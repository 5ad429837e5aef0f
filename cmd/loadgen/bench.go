package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// system is one service under test: where its orders go and how to see them finish.
type system struct {
	name   string
	placer *placer
	waiter *waiter
	rss    *rssSampler // nil when no pid is known
	runs   []runResult
}

// bench holds what a loadgen run set up, so that tearDown can undo it in reverse.
type bench struct {
	cfg      *config
	client   *http.Client
	stderr   io.Writer
	systems  []*system // peer first: the order is peer, orderd in every round
	sink     *smtpSink // with -smtp-sink
	cleanups []func()
}

// setUp starts what loadgen is asked to start and connects to every orders table.
func (b *bench) setUp(ctx context.Context) error {
	cfg := b.cfg
	// A system that should already be running is checked first, before anything is started,
	// so that a forgotten orderd costs a second rather than a peer start and a failed round.
	if cfg.wants("orderd") && cfg.orderdBin == "" {
		if err := waitHTTP(ctx, b.client, cfg.orderdURL, 2*time.Second, nil); err != nil {
			return fmt.Errorf("orderd: %w: start it, or give -orderd-bin", err)
		}
	}
	if cfg.wants("peer") && !cfg.peerStart {
		if err := waitHTTP(ctx, b.client, "http://127.0.0.1:"+strconv.Itoa(cfg.peerPort)+"/", 2*time.Second, nil); err != nil {
			return fmt.Errorf("peer: %w: start it, or drop -peer-start=false", err)
		}
	}
	if cfg.wants("peer") {
		var pids []int
		if cfg.peerStart {
			fmt.Fprintf(b.stderr, "starting the seed peer on :%d (database %s, queue prefix %q, SQS %s)\n",
				cfg.peerPort, cfg.peerDB, cfg.peerPrefix, cfg.sqsEndpoint)
			var err error
			if pids, err = startPeer(ctx, cfg, b.client, b.stderr); err != nil {
				return err
			}
			b.cleanups = append(b.cleanups, func() {
				fmt.Fprintf(b.stderr, "stopping the seed peer (pids %v)\n", pids)
				stopPIDs(pids, 5*time.Second)
			})
		} else {
			pids, _ = readPIDs(cfg.peerPIDs) // only for RSS; a peer started elsewhere may have none
		}
		s, err := b.newSystem(ctx, "peer", "http://127.0.0.1:"+strconv.Itoa(cfg.peerPort)+"/place-order", cfg.peerDSN, peerTerminal)
		if err != nil {
			return err
		}
		if len(pids) > 0 {
			s.rss = newRSSSampler(pids)
		}
		b.systems = append(b.systems, s)
	}
	if cfg.wants("orderd") {
		pid := cfg.orderdPID
		if cfg.smtpSink {
			sink, err := startSMTPSink()
			if err != nil {
				return err
			}
			b.sink = sink
			b.cleanups = append(b.cleanups, sink.close)
			cfg.orderdEnv = append([]string{"SMTP_ADDR=" + sink.addr()}, cfg.orderdEnv...)
			fmt.Fprintf(b.stderr, "orderd's email goes to loadgen's SMTP sink at %s, which discards it\n", sink.addr())
		}
		if cfg.orderdBin != "" {
			fmt.Fprintf(b.stderr, "starting %s (migrate, then serve at %s; log %s)\n", cfg.orderdBin, cfg.orderdURL, cfg.orderdLog)
			p, err := startOrderd(ctx, cfg, b.client)
			if err != nil {
				return err
			}
			b.cleanups = append(b.cleanups, func() {
				fmt.Fprintf(b.stderr, "stopping orderd (pid %d)\n", p.pid())
				p.stop()
			})
			if pid == 0 {
				pid = p.pid()
			}
		}
		s, err := b.newSystem(ctx, "orderd", strings.TrimRight(cfg.orderdURL, "/")+cfg.orderdPath, cfg.orderdDSN, orderdTerminal)
		if err != nil {
			return err
		}
		if pid > 0 {
			s.rss = newRSSSampler([]int{pid})
		}
		b.systems = append(b.systems, s)
	}
	return nil
}

// newSystem opens the system's database and checks that its orders table can be polled.
func (b *bench) newSystem(ctx context.Context, name, url, dsn string, q terminalQuery) (*system, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s DSN: %w", name, err)
	}
	if mc.Timeout == 0 {
		mc.Timeout = 5 * time.Second
	}
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("%s database: %w", name, err)
	}
	// The poller is one sequential loop: one connection, kept open, is all it needs.
	db.SetMaxOpenConns(2)
	db.SetMaxIdleConns(2)
	b.cleanups = append(b.cleanups, func() { db.Close() })
	w := &waiter{db: db, q: q, every: b.cfg.poll, timeout: b.cfg.timeout, stderr: b.stderr, label: name}
	if err := w.check(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w (database %s)", name, err, mc.DBName)
	}
	return &system{
		name:   name,
		placer: &placer{client: b.client, url: url},
		waiter: w,
	}, nil
}

// tearDown undoes setUp in reverse order.
func (b *bench) tearDown() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// runOnce places n orders on s, waits for all of them to be terminal, and measures it. round 0
// is the warm-up. Progress goes to stderr under label.
func (b *bench) runOnce(ctx context.Context, s *system, n, round int, label string) (runResult, error) {
	start := time.Now()
	orders := make([]order, n)
	// Buffered for every order, so a placing client never waits for the poller.
	placed := make(chan int, n)
	var c counters

	type waited struct {
		lost []int
		err  error
	}
	var terminal chan int // only the serial mode waits for each order
	if b.cfg.serial {
		terminal = make(chan int, n)
	}
	done := make(chan waited, 1)
	go func() {
		lost, err := s.waiter.wait(ctx, orders, placed, terminal, &c)
		done <- waited{lost, err}
	}()
	progCtx, stopProgress := context.WithCancel(ctx)
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		progress(progCtx, b.stderr, label, n, &c)
	}()

	p := *s.placer
	p.name = fmt.Sprintf("loadgen-%s-r%d-", s.name, round)
	fails := &failureLog{w: b.stderr, label: label}
	if b.cfg.serial {
		placeSerial(ctx, &p, orders, placed, terminal, b.cfg.timeout, &c, fails)
	} else {
		placeAll(ctx, &p, orders, b.cfg.c, b.cfg.rate, placed, &c, fails)
	}
	close(placed)
	w := <-done
	stopProgress()
	<-progDone
	if w.err != nil {
		return runResult{}, fmt.Errorf("%s: %w", label, w.err)
	}
	report(b.stderr, label, n, &c)
	if q := s.waiter.queries; q > 0 {
		fmt.Fprintf(b.stderr, "%s: poller: %d queries, %.2f ms each on average, %.1f%% of the run's wall time\n",
			label, q, ms(s.waiter.busy)/float64(q), 100*s.waiter.busy.Seconds()/time.Since(start).Seconds())
	}
	for _, i := range w.lost {
		if len(w.lost) > 10 {
			fmt.Fprintf(b.stderr, "%s: %d orders lost, first id %d\n", label, len(w.lost), orders[i].id)
			break
		}
		fmt.Fprintf(b.stderr, "%s: order %d lost (placed, not terminal within %s)\n", label, orders[i].id, b.cfg.timeout)
	}
	return measure(s.name, round, orders, int(c.failed.Load()), len(w.lost)), nil
}

// measure turns a finished run's order records into figures.
func measure(name string, round int, orders []order, failed, lost int) runResult {
	r := runResult{system: name, round: round, requested: len(orders), failed: failed, lost: lost, outcomes: map[string]int{}}
	var first, lastPlaced, lastDone time.Time
	r.placeLat = make([]time.Duration, 0, len(orders))
	r.e2eLat = make([]time.Duration, 0, len(orders))
	for i := range orders {
		o := &orders[i]
		if o.placed.IsZero() {
			continue // placement failed
		}
		r.placed++
		if first.IsZero() || o.start.Before(first) {
			first = o.start
		}
		if o.placed.After(lastPlaced) {
			lastPlaced = o.placed
		}
		r.placeLat = append(r.placeLat, o.placed.Sub(o.start))
		if o.done.IsZero() {
			continue // lost
		}
		r.e2eLat = append(r.e2eLat, o.done.Sub(o.start))
		r.outcomes[o.outcome]++
		if o.done.After(lastDone) {
			lastDone = o.done
		}
	}
	if r.placed > 0 {
		r.placeDur = lastPlaced.Sub(first)
	}
	if len(r.e2eLat) > 0 {
		r.e2eDur = lastDone.Sub(first)
	}
	return r
}

// progress writes a line to w every second until ctx is done.
func progress(ctx context.Context, w io.Writer, label string, n int, c *counters) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	var lastPlaced, lastTerminal int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			placed, terminal := c.placed.Load(), c.terminal.Load()
			secs := now.Sub(last).Seconds()
			fmt.Fprintf(w, "%s: placed %d/%d, failed %d, terminal %d, outstanding %d | %.0f placed/s, %.0f terminal/s\n",
				label, placed, n, c.failed.Load(), terminal, placed-terminal,
				float64(placed-lastPlaced)/secs, float64(terminal-lastTerminal)/secs)
			last, lastPlaced, lastTerminal = now, placed, terminal
		}
	}
}

// report writes the final counts of a run.
func report(w io.Writer, label string, n int, c *counters) {
	placed, terminal := c.placed.Load(), c.terminal.Load()
	fmt.Fprintf(w, "%s: done: placed %d/%d, failed %d, terminal %d\n", label, placed, n, c.failed.Load(), terminal)
}
