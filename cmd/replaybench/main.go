// Command replaybench measures `orderd replay`: it creates a scratch database, fills it with
// a realistic event log written directly in bulk (not through the pipeline), and times
// projections.Rebuild on it end to end, swap included.
//
//	go run ./cmd/replaybench -events 1000000            # fill, rebuild 3 times, drop
//	go run ./cmd/replaybench -events 1000000 -keep      # keep the database to look at it
//	go run ./cmd/replaybench -db replaybench_x1y2 -runs 5 -verify   # reuse a kept database
//	go run ./cmd/replaybench -cpuprofile cpu.out        # profile the rebuilds
//
// The database (on the server of -dsn, by default root@tcp(127.0.0.1:3306)/) is named
// replaybench_<random> and dropped at the end unless -keep. The log has events/4 orders,
// one placed every 2 ms of simulated time, each with its later events 30–300 ms apart so
// that streams interleave as under load: 80% completed (4 events), 10% payment failed (3),
// 10% cancelled after a failed reservation (5), payloads as the event store writes them.
// The first rebuild swaps in over an empty orders table, later ones over a full one, as in
// production. Each line gives events/s, the peak RSS (the process's VmHWM, reset after the
// fill so it covers the rebuilds only), the CPU time this process spent on it (the client
// side: decoding, folding, formatting) and where the time went (RebuildStats.Phases).
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"orderd/eventstore"
	"orderd/migrations"
	"orderd/projections"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "replaybench:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	dsn        string
	events     int
	runs       int
	keep       bool
	reuse      string
	verify     bool
	cpuprofile string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var o options
	fs := flag.NewFlagSet("replaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dsn, "dsn", "root@tcp(127.0.0.1:3306)/", "MySQL server to create the scratch database on (its database name is ignored)")
	fs.IntVar(&o.events, "events", 1_000_000, "about how many events to write (events/4 orders)")
	fs.IntVar(&o.runs, "runs", 3, "how many rebuilds to time")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch database")
	fs.StringVar(&o.reuse, "db", "", "reuse this database (kept by an earlier -keep run) instead of filling a new one")
	fs.BoolVar(&o.verify, "verify", false, "also time projections.Verify after the rebuilds")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the rebuilds to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mc, err := mysql.ParseDSN(o.dsn)
	if err != nil {
		return fmt.Errorf("-dsn: %w", err)
	}
	eventstore.WithDriverOptions(mc)

	name := o.reuse
	if name == "" {
		name = "replaybench_" + strings.ToLower(rand.Text()[:10])
		mc.DBName = ""
		admin, err := sql.Open("mysql", mc.FormatDSN())
		if err != nil {
			return err
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return fmt.Errorf("create scratch database: %w", err)
		}
		fmt.Fprintf(stdout, "database %s\n", name)
		if !o.keep {
			defer func() {
				if _, derr := admin.ExecContext(context.WithoutCancel(ctx), "DROP DATABASE "+name); derr != nil {
					err = errors.Join(err, fmt.Errorf("drop %s: %w", name, derr))
				}
			}()
		}
	}
	mc.DBName = name
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)

	if o.reuse == "" {
		if _, err := migrations.Apply(ctx, db); err != nil {
			return err
		}
		start := time.Now()
		orders, events, err := fill(ctx, db, o.events)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "filled %d events of %d orders in %s\n", events, orders, time.Since(start).Round(time.Millisecond))
	}
	return bench(ctx, db, o, stdout)
}

// bench times o.runs rebuilds (and a verify) and prints one line for each.
func bench(ctx context.Context, db *sql.DB, o options, stdout io.Writer) error {
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for i := 1; i <= o.runs; i++ {
		start, cpu := time.Now(), cpuTime()
		st, err := projections.Rebuild(ctx, db, nil)
		if err != nil {
			return err
		}
		d := time.Since(start)
		fmt.Fprintf(stdout, "rebuild %d: %d events, %d orders in %s: %.0f events/s, peak RSS %s, CPU here %s (%s)\n",
			i, st.Events, st.Orders, d.Round(time.Millisecond), float64(st.Events)/d.Seconds(), mib(peakRSS()),
			(cpuTime() - cpu).Round(time.Millisecond), st.Phases)
	}
	if o.verify {
		start := time.Now()
		st, err := projections.Verify(ctx, db, projections.VerifyOptions{})
		if err != nil {
			return err
		}
		d := time.Since(start)
		fmt.Fprintf(stdout, "verify: %d events, %d orders, %d differences in %s: %.0f events/s (peak RSS %s)\n",
			st.Events, st.Orders, st.Differences, d.Round(time.Millisecond), float64(st.Events)/d.Seconds(), mib(peakRSS()))
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
