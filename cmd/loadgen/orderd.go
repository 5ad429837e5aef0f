package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// orderdProc is an orderd that loadgen started and must stop.
type orderdProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	log    *os.File
}

// orderdEnv is the environment orderd is started with: loadgen's own, then the settings
// loadgen must agree with orderd on (the database it polls, the address it sends to, the SQS
// endpoint it shares with the peer, no placement rate limit: every client of the benchmark
// is one address placing as fast as it can), then -orderd-env, which wins because exec uses
// the last value of a repeated key.
func orderdEnv(cfg *config) ([]string, error) {
	u, err := url.Parse(cfg.orderdURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("-url %q: not an absolute URL", cfg.orderdURL)
	}
	env := append(os.Environ(),
		"MYSQL_DSN="+cfg.orderdDSN,
		"HTTP_ADDR="+u.Host,
		"SQS_ENDPOINT="+cfg.sqsEndpoint,
		"SQS_EMULATOR="+cfg.sqsEmulator,
		"PLACEMENT_RATE_LIMIT=0",
	)
	return append(env, cfg.orderdEnv...), nil
}

// startOrderd runs `<bin> migrate`, then `<bin> serve` in the background, and returns once the
// server answers HTTP at -url.
func startOrderd(ctx context.Context, cfg *config, client *http.Client) (*orderdProc, error) {
	env, err := orderdEnv(cfg)
	if err != nil {
		return nil, err
	}
	if err := refuseBusy(ctx, client, cfg.orderdURL); err != nil {
		return nil, err
	}
	mig := exec.CommandContext(ctx, cfg.orderdBin, "migrate")
	mig.Env = env
	if out, err := mig.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s migrate: %w\n%s", cfg.orderdBin, err, out)
	}

	log, err := os.OpenFile(cfg.orderdLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("orderd log: %w", err)
	}
	// Not CommandContext: a cancelled run must still stop orderd gracefully, in stop.
	cmd := exec.Command(cfg.orderdBin, "serve")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s serve: %w", cfg.orderdBin, err)
	}
	p := &orderdProc{cmd: cmd, exited: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()

	if err := waitHTTP(ctx, client, cfg.orderdURL, 60*time.Second, p.exited); err != nil {
		p.stop()
		return nil, fmt.Errorf("orderd: %w; see %s", err, cfg.orderdLog)
	}
	return p, nil
}

// pid returns the server's process id, for RSS sampling.
func (p *orderdProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, gives orderd ten seconds to drain, then kills it.
func (p *orderdProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.log.Close()
}

// waitHTTP returns once url answers HTTP at all (a 404 is fine: the listener is up, and the
// first order tells the rest), or fails after limit, when ctx ends, or when exited closes.
func waitHTTP(ctx context.Context, client *http.Client, url string, limit time.Duration, exited <-chan struct{}) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before answering at %s", url)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no answer at %s within %s: %w", url, limit, err)
		case <-tick.C:
		}
	}
}

// refuseBusy fails when something already answers at url: a service we are about to start
// there could not listen, and the run would measure whatever is running instead.
func refuseBusy(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return fmt.Errorf("something already answers at %s; stop it, or measure it without starting another", url)
}
