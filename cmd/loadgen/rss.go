package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// parseStatus reads VmRSS and VmHWM (peak resident set) from a /proc/<pid>/status file, in
// bytes. A kernel thread or zombie has neither; that is reported as an error.
func parseStatus(r io.Reader) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(r)
	var haveRSS, haveHWM bool
	for sc.Scan() {
		line := sc.Bytes()
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst, haveRSS = &rss, true
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst, haveHWM = &hwm, true
		default:
			continue
		}
		// "VmRSS:	   12345 kB"
		fields := bytes.Fields(line[bytes.IndexByte(line, ':')+1:])
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, 0, fmt.Errorf("unexpected status line %q", line)
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected status line %q: %w", line, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveRSS || !haveHWM {
		return 0, 0, fmt.Errorf("no VmRSS/VmHWM (kernel thread or exited process)")
	}
	return rss, hwm, nil
}

// rssSampler tracks the peak resident memory of a set of processes. VmHWM alone would do for
// a process that is still alive at the end; sampling VmRSS as well keeps a figure for one
// that exits (or is restarted) during the run.
type rssSampler struct {
	mu   sync.Mutex
	pids []int
	peak map[int]int64
}

func newRSSSampler(pids []int) *rssSampler {
	return &rssSampler{pids: pids, peak: map[int]int64{}}
}

// sample reads every process once.
func (s *rssSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pid := range s.pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue // gone: keep its last figure
		}
		rss, hwm, err := parseStatus(f)
		f.Close()
		if err != nil {
			continue
		}
		s.peak[pid] = max(s.peak[pid], rss, hwm)
	}
}

// run samples every interval until ctx is done, then once more.
func (s *rssSampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			s.sample()
			return
		case <-t.C:
		}
	}
}

// peakMiB returns the sum of the processes' peaks in MiB, and false if none was ever read.
// For a system made of several processes (the peer: server and pollers) the sum is an upper
// bound of their joint peak, since each may have peaked at a different moment.
func (s *rssSampler) peakMiB() (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum int64
	for _, v := range s.peak {
		sum += v
	}
	return float64(sum) / (1 << 20), len(s.peak) > 0
}
