// Command orderd is the event-sourced order service: `orderd migrate` prepares the
// database, `orderd serve` runs the HTTP API, the three stages and the outbox relay, and
// `orderd replay` rebuilds the orders projection from the event log.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: orderd <command> [flags]

commands:
  migrate   create the database if needed and apply the embedded migrations
  serve     run the HTTP API, the stages and the outbox relay (ORDERD_COMPONENTS picks which)
  replay    rebuild the orders projection from the event log and swap it in
            (--verify: compare a rebuild with the live table, exit 1 on any difference)
  dlq list  show the messages in the dead-letter queues, with the reason each was put there
  dlq redrive
            send every dead-lettered message back to its stage (once the cause is fixed)

Configuration comes from the environment; see .env.example.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "orderd:", err)
		}
		os.Exit(1)
	}
}

// run is the whole program; main only adds the process's signals, environment and exit.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	// From here on, nothing leaves with a secret in it: not a log line, not the exit error.
	rd := cfg.redactor()
	defer func() { err = redactError(rd, err) }()
	log := newLogger(stderr, rd)
	switch args[0] {
	case "migrate":
		return migrate(ctx, cfg, stdout)
	case "serve":
		// Only the long-running service: a replay ran no faster with it, at 110 MiB peak RSS
		// instead of 60-80.
		cfg.tuneGC()
		return serve(ctx, cfg, log, stdout)
	case "replay":
		return replay(ctx, cfg, args[1:], stdout, stderr)
	case "dlq":
		return dlq(ctx, cfg, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
