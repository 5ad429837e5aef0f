package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startPeer runs the seed design's run.sh, which (re)creates the peer's database and queues and
// starts its server and pollers in the background, and returns their pids. The peer gets its
// own queue prefix because it shares the SQS endpoint with orderd, whose queues carry the
// seed's names: with one set of queues each system's pollers would eat the other's messages.
func startPeer(ctx context.Context, cfg *config, client *http.Client, stderr io.Writer) ([]int, error) {
	// run.sh appends to its log and takes "ready" lines in it as the sign that the peer is up:
	// a log left by an earlier run makes it report success at once. Start from an empty one.
	if err := os.Truncate(cfg.peerLog, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("truncate peer log: %w", err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(cfg.peerPort) + "/"
	if err := refuseBusy(ctx, client, url); err != nil {
		return nil, fmt.Errorf("peer: %w (-peer-start=false)", err)
	}
	cmd := exec.CommandContext(ctx, cfg.peerScript)
	cmd.Env = append(os.Environ(),
		"SQS_ENDPOINT="+cfg.sqsEndpoint,
		"PORT="+strconv.Itoa(cfg.peerPort),
		"QUEUE_PREFIX="+cfg.peerPrefix,
		"RDS_DATABASE="+cfg.peerDB,
		"PEER_PIDS="+cfg.peerPIDs,
		"PEER_LOG="+cfg.peerLog,
	)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	runErr := cmd.Run()
	// Read the pids even when run.sh failed: whatever it started must not outlive us.
	pids, err := readPIDs(cfg.peerPIDs)
	if runErr != nil {
		stopPIDs(pids, 5*time.Second)
		return nil, fmt.Errorf("start peer with %s (log in %s): %w", cfg.peerScript, cfg.peerLog, runErr)
	}
	if err != nil {
		return nil, fmt.Errorf("read peer pids: %w", err)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("peer started but %s lists no pids", cfg.peerPIDs)
	}
	if err := waitHTTP(ctx, client, url, 10*time.Second, nil); err != nil {
		stopPIDs(pids, 5*time.Second)
		return nil, fmt.Errorf("peer: %w; see %s", err, cfg.peerLog)
	}
	return pids, nil
}

// readPIDs reads a file of one pid per line, as run.sh writes to $PEER_PIDS.
func readPIDs(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		pid, err := strconv.Atoi(line)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s: bad pid %q", path, line)
		}
		pids = append(pids, pid)
	}
	return pids, sc.Err()
}

// stopPIDs asks each process to stop, waits up to grace for all of them, then kills what is
// left. It works on processes that are not our children (run.sh's exit hands the peer to
// init), so it watches /proc rather than waiting.
func stopPIDs(pids []int, grace time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !anyAlive(pids) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if alive(pid) {
			return true
		}
	}
	return false
}

// alive reports whether pid runs; a zombie (exited, not yet reaped) does not.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')', since comm may contain one.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}
