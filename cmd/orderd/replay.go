package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"orderd/app"
	"orderd/eventstore"
	"orderd/projections"
)

const replayUsage = `usage: orderd replay [--verify] [--projection NAME] [--quiet]

Rebuilds every projection (or the one named) from the event log into new tables, catches
up with the live log and swaps them in atomically; the service may keep running. Nothing is
appended, published or sent. With --verify it swaps nothing: it folds the log and compares
the result with the live tables in one consistent snapshot, prints every difference and
exits non-zero if there is any.

Progress goes to stderr (redrawn in place on a terminal, a line a second otherwise); the
summary and the differences go to stdout.
`

// replay rebuilds the projections from the log and swaps them in while the service runs, or
// with --verify checks the live tables against the log.
func replay(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verify := fs.Bool("verify", false, "compare the live tables with the log instead of rebuilding them")
	only := fs.String("projection", "", "the projection to replay or verify (default all: "+strings.Join(app.Projections().Names(), ", ")+")")
	quiet := fs.Bool("quiet", false, "show no progress")
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	picked, err := app.Projections().Pick(*only)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	db, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	var total int64
	if !*quiet {
		if total, err = eventstore.EstimateEvents(ctx, db); err != nil {
			return err
		}
	}
	var differ []string
	for _, proj := range picked {
		var p *progressPrinter // nil: quiet
		if !*quiet {
			verb := "replay " + proj.Name()
			if *verify {
				verb = "verify " + proj.Name()
			}
			p = newProgressPrinter(stderr, verb, total)
		}
		if *verify {
			n, err := runVerify(ctx, db, proj, p, stdout)
			if err != nil {
				return err
			}
			if n > 0 {
				differ = append(differ, fmt.Sprintf("%s: %s differences", proj.Name(), group(n)))
			}
			continue
		}
		stats, err := proj.Rebuild(ctx, db, p.progress())
		p.clear()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replay: rebuilt %s from %s events (%s orders) in %s, %s events/s; %d streams caught up, %d refolded; %s paused %s; peak RSS %s\n",
			proj.Name(), group(stats.Events), group(stats.Orders), stats.Duration.Round(time.Millisecond), group(rate(stats.Events, stats.Duration)),
			stats.CaughtUp, stats.Refolded, pausedWhat(proj), stats.Pause.Round(time.Microsecond), peakRSS())
	}
	if len(differ) > 0 {
		return fmt.Errorf("verify: %w: %s", errDifferences, strings.Join(differ, "; "))
	}
	return nil
}

// pausedWhat names what a projection's swap holds off: the appends for the orders table,
// written in their transactions; the feed's consumers for the others.
func pausedWhat(p projections.Projection) string {
	if p.Name() == projections.OrdersTable {
		return "appends"
	}
	return "its consumers"
}

// errDifferences makes `orderd replay --verify` exit non-zero when a projection's tables
// are not the log's fold.
var errDifferences = errors.New("a live projection differs from the event log")

// runVerify verifies one projection, prints its differences and summary, and returns how
// many differences it found.
func runVerify(ctx context.Context, db *sql.DB, proj projections.Projection, p *progressPrinter, stdout io.Writer) (int64, error) {
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	stats, err := proj.Verify(ctx, db, projections.VerifyOptions{
		Progress: p.progress(),
		OnDiff: func(d projections.Difference) {
			if p.clear() {
				defer out.Flush() // on the terminal, between two draws of the bar
			}
			fmt.Fprintln(out, d)
		},
	})
	p.clear()
	if err != nil {
		return 0, err
	}
	verdict := "no differences"
	if stats.Differences > 0 {
		verdict = fmt.Sprintf("%s differences", group(stats.Differences))
	}
	subject := "verify"
	if proj.Name() != projections.OrdersTable {
		subject = "verify " + proj.Name()
	}
	fmt.Fprintf(out, "%s: %s events fold to %s orders; the live table has %s rows; %s (in %s, %s events/s; peak RSS %s)\n",
		subject, group(stats.Events), group(stats.Orders), group(stats.LiveRows), verdict, stats.Duration.Round(time.Millisecond),
		group(rate(stats.Events, stats.Duration)), peakRSS())
	return stats.Differences, nil
}

// progressPrinter shows how a replay goes: a bar redrawn in place (at most ten times a
// second) on a terminal, a plain line every second otherwise, such as a log file reads well.
type progressPrinter struct {
	w           io.Writer
	tty         bool
	verb        string
	total       int64 // an estimate: the events may turn out a few more or fewer
	start, last time.Time
	every       time.Duration
	drawn       bool
}

func newProgressPrinter(w io.Writer, verb string, total int64) *progressPrinter {
	p := &progressPrinter{w: w, verb: verb, total: total, start: time.Now(), every: time.Second}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty, p.every = true, 100*time.Millisecond
	}
	p.last = p.start
	return p
}

func (p *progressPrinter) update(done int64) {
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	r := rate(done, elapsed)
	total := max(p.total, done)
	eta := "?"
	if r > 0 {
		eta = (time.Duration(float64(total-done) / float64(r) * float64(time.Second))).Round(100 * time.Millisecond).String()
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	if !p.tty {
		fmt.Fprintf(p.w, "%s: %s of about %s events (%.0f%%), %s events/s, ETA %s\n", p.verb, group(done), group(total), pct, group(r), eta)
		return
	}
	const width = 30
	filled := int(pct / 100 * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	fmt.Fprintf(p.w, "\r\033[K%s [%s] %3.0f%%  %s/%s events  %s events/s  ETA %s", p.verb, bar, pct, group(done), group(total), group(r), eta)
	p.drawn = true
}

// progress returns p.update as a projections.Progress, or nil for no printer.
func (p *progressPrinter) progress() projections.Progress {
	if p == nil {
		return nil
	}
	return p.update
}

// clear erases the bar, if one is drawn, so that other output starts on a clean line; it
// reports whether it is drawing on a terminal.
func (p *progressPrinter) clear() bool {
	if p == nil || !p.tty {
		return false
	}
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
	return true
}

func rate(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}

// group writes n with thousands separators: 1,000,000 reads faster than 1000000.
func group(n int64) string {
	if n < 0 {
		return "-" + group(-n)
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// peakRSS returns the process's peak resident memory (VmHWM), where Linux reports it.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB")))), 10, 64)
			if err == nil {
				return fmt.Sprintf("%d MiB", kb>>10)
			}
		}
	}
	return "unknown"
}
