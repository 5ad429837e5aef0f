package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"orderd/projections"
)

// replay rebuilds the orders projection from the log and swaps it in while the service runs.
func replay(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: orderd replay\n\nRebuilds the orders table from the event log into a new table, catches up with\nthe live log, and swaps it in atomically; the service may keep running.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	db, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	start := time.Now()
	stats, err := projections.Rebuild(ctx, db, func(events int64) {
		el := time.Since(start).Seconds()
		fmt.Fprintf(stderr, "replay: %d events folded (%.0f events/s)\n", events, float64(events)/max(el, 1e-9))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replay: rebuilt orders from %d events (%d orders) in %s, %.0f events/s; %d streams caught up; appends paused %s\n",
		stats.Events, stats.Orders, stats.Duration.Round(time.Millisecond), float64(stats.Events)/max(stats.Duration.Seconds(), 1e-9),
		stats.CaughtUp, stats.Pause.Round(time.Microsecond))
	return nil
}
