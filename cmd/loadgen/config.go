package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// usageError is a bad command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// config is the parsed command line.
type config struct {
	n, c, rounds, warmup int
	rate                 float64
	target               string
	timeout, poll, pause time.Duration
	httpTimeout          time.Duration
	jsonOut, serial      bool
	sqsEndpoint          string
	sqsEmulator          string

	orderdURL, orderdPath, orderdDSN string
	orderdBin, orderdLog             string
	orderdEnv                        stringList
	orderdPID                        int
	smtpSink                         bool

	peerPort                      int
	peerStart                     bool
	peerScript, peerDB, peerDSN   string
	peerPrefix, peerPIDs, peerLog string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// parseConfig reads the flags; defaults that name a service come from the same environment
// variables orderd, the Makefile and the peer use, so one environment drives all of them.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	envOr := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	cfg := &config{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.n, "n", 1000, "orders placed per system per measured round")
	fs.IntVar(&cfg.n, "orders", 1000, "same as -n")
	fs.IntVar(&cfg.c, "c", 16, "concurrent clients (in open-loop mode: most requests in flight)")
	fs.Float64Var(&cfg.rate, "rate", 0, "light-load mode: place this many orders/s open-loop (0: closed loop with -c clients; -c 1 places one at a time)")
	fs.BoolVar(&cfg.serial, "serial", false, "light-load mode: one order at a time end to end, each placed when the previous one is terminal")
	fs.StringVar(&cfg.target, "target", "orderd", "system(s) to measure: orderd, peer or both (alternating peer, orderd each round)")
	fs.IntVar(&cfg.rounds, "rounds", 1, "measured rounds per system")
	fs.IntVar(&cfg.warmup, "warmup", 0, "orders placed per system before the first round, waited for and not measured")
	fs.DurationVar(&cfg.timeout, "timeout", time.Minute, "an order not terminal this long after it was placed counts as lost")
	fs.DurationVar(&cfg.poll, "poll", 5*time.Millisecond, "shortest pause between polls of the orders table (grows with the backlog)")
	fs.DurationVar(&cfg.pause, "pause", time.Second, "idle time before each run, so one system's leftovers do not bleed into the next")
	fs.DurationVar(&cfg.httpTimeout, "http-timeout", 30*time.Second, "timeout of one placement request")
	fs.BoolVar(&cfg.jsonOut, "json", false, "also print the summary as one line of JSON, last on stdout")
	fs.StringVar(&cfg.sqsEndpoint, "sqs-endpoint", envOr("SQS_ENDPOINT", "http://127.0.0.1:4100"), "SQS endpoint given to the peer and to an orderd started by loadgen; $SQS_ENDPOINT when set")
	fs.StringVar(&cfg.sqsEmulator, "sqs-emulator", envOr("SQS_EMULATOR", "goaws"), "SQS_EMULATOR given to an orderd started by loadgen: goaws (the default endpoint's), or none for an SQS that follows the API reference; $SQS_EMULATOR when set")

	fs.StringVar(&cfg.orderdURL, "url", envOr("API_URL", "http://127.0.0.1:8080"), "orderd base URL; $API_URL when set (an orderd loadgen does not start must run with PLACEMENT_RATE_LIMIT=0)")
	fs.StringVar(&cfg.orderdPath, "orderd-path", "/place-order", "path orderd takes orders on; the seed-compatible one by default")
	fs.StringVar(&cfg.orderdDSN, "orderd-dsn", envOr("MYSQL_DSN", "root@tcp(127.0.0.1:3306)/orderd"), "orderd's database, polled for terminal orders; $MYSQL_DSN when set")
	fs.StringVar(&cfg.orderdBin, "orderd-bin", "", "start orderd from this binary `path` (path migrate, then path serve) instead of using one running at -url")
	fs.StringVar(&cfg.orderdLog, "orderd-log", "/tmp/loadgen-orderd.log", "output of an orderd started by loadgen")
	fs.Var(&cfg.orderdEnv, "orderd-env", "KEY=VALUE added to the environment of an orderd started by loadgen (repeatable)")
	fs.IntVar(&cfg.orderdPID, "orderd-pid", 0, "pid of a running orderd whose peak RSS to report")
	fs.BoolVar(&cfg.smtpSink, "smtp-sink", false, "send the email of the orderd loadgen starts to an SMTP sink inside loadgen that discards it (email leaving the machine), not to $SMTP_ADDR; needs -orderd-bin")

	fs.IntVar(&cfg.peerPort, "peer-port", 3000, "port of the seed peer's HTTP server")
	fs.BoolVar(&cfg.peerStart, "peer-start", true, "start the peer with -peer-script (it recreates -peer-db); false: use one already running")
	fs.StringVar(&cfg.peerScript, "peer-script", "/work/shared/peers/seed-design/run.sh", "the seed peer's start script")
	fs.StringVar(&cfg.peerDB, "peer-db", envOr("RDS_DATABASE", "sqs_test"), "the peer's database, RDS_DATABASE ($RDS_DATABASE when set); starting the peer drops and recreates it")
	fs.StringVar(&cfg.peerDSN, "peer-dsn", "", "DSN polled for the peer's orders (default root@tcp(127.0.0.1:3306)/<peer-db>)")
	fs.StringVar(&cfg.peerPrefix, "peer-queue-prefix", "peer-", "queue-name prefix for the peer, keeping its queues apart from orderd's on the shared endpoint")
	fs.StringVar(&cfg.peerPIDs, "peer-pids", "", "the peer's pid file, PEER_PIDS (default /tmp/loadgen-peer-<port>.pids)")
	fs.StringVar(&cfg.peerLog, "peer-log", "", "the peer's log, PEER_LOG (default /tmp/loadgen-peer-<port>.log)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if cfg.peerDSN == "" {
		cfg.peerDSN = "root@tcp(127.0.0.1:3306)/" + cfg.peerDB
	}
	if cfg.peerPIDs == "" {
		cfg.peerPIDs = "/tmp/loadgen-peer-" + strconv.Itoa(cfg.peerPort) + ".pids"
	}
	if cfg.peerLog == "" {
		cfg.peerLog = "/tmp/loadgen-peer-" + strconv.Itoa(cfg.peerPort) + ".log"
	}
	return cfg, cfg.validate()
}

// validate rejects settings that would make a meaningless run.
func (cfg *config) validate() error {
	bad := func(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }
	switch {
	case cfg.n < 1:
		return bad("-n must be at least 1")
	case cfg.c < 1:
		return bad("-c must be at least 1")
	case cfg.rate < 0:
		return bad("-rate must not be negative")
	case cfg.rounds < 1:
		return bad("-rounds must be at least 1")
	case cfg.warmup < 0:
		return bad("-warmup must not be negative")
	case cfg.timeout <= 0:
		return bad("-timeout must be positive")
	case cfg.poll <= 0:
		return bad("-poll must be positive")
	case cfg.serial && cfg.rate > 0:
		return bad("-serial and -rate are two different light-load modes: choose one")
	case cfg.target != "orderd" && cfg.target != "peer" && cfg.target != "both":
		return bad("-target must be orderd, peer or both, not %q", cfg.target)
	case cfg.smtpSink && (cfg.orderdBin == "" || !cfg.wants("orderd")):
		return bad("-smtp-sink sets the SMTP server of the orderd loadgen starts: it needs -orderd-bin and -target orderd or both")
	}
	for _, kv := range cfg.orderdEnv {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || k == "":
			return bad("-orderd-env %q: want KEY=VALUE", kv)
		case k == "SMTP_ADDR" && cfg.smtpSink:
			return bad("-orderd-env %q and -smtp-sink both set orderd's SMTP server: choose one", kv)
		}
	}
	for _, dsn := range []string{cfg.orderdDSN, cfg.peerDSN} {
		if _, err := mysql.ParseDSN(dsn); err != nil {
			return bad("DSN %q: %v", dsn, err)
		}
	}
	return nil
}

// wants reports whether the run measures the named system.
func (cfg *config) wants(name string) bool { return cfg.target == name || cfg.target == "both" }

// mode describes the load pattern for the report's header.
func (cfg *config) mode() string {
	if cfg.serial {
		return "one order at a time end to end"
	}
	if cfg.rate > 0 {
		return fmt.Sprintf("open loop at %g orders/s (at most %d in flight)", cfg.rate, cfg.c)
	}
	if cfg.c == 1 {
		return "closed loop, one order at a time"
	}
	return fmt.Sprintf("closed loop, %d clients", cfg.c)
}
