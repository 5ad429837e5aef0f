package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"orderd/internal/testenv"
)

// TestConnectionCapKeepsReceiversAlive runs `orderd serve` as a child process with a low
// open-file limit (256, soft and hard: Go raises the soft limit to the hard one at start),
// places orders, and then floods the API with ten times as many silent TCP connections as
// its connection cap, keeping the flood up while it places more orders over a connection it
// opened before. The process never holds more API connections than the cap; every order
// — those in flight when the flood began and those placed during it — completes (payment,
// inventory and email need SQS, MySQL and SMTP descriptors all along); silent connections
// are dropped after ReadHeaderTimeout and the cap still holds as the flood replaces them;
// nothing logs "too many open files"; and once the flood stops a new client's order is
// accepted.
func TestConnectionCapKeepsReceiversAlive(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	bin := testenv.BuildOrderd(t)
	port := testenv.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	const nofile = 256
	proc := testenv.StartProcess(t, "orderd", []string{"/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" serve`, nofile), bin},
		childEnviron(env, map[string]string{"HTTP_ADDR": addr, "MAIL_FROM": "orders@" + mailDomain}), addr)
	pid := proc.Pid()

	// The cap is what the limit leaves beside MySQL, SQS, SMTP and the process itself.
	defaults, err := loadConfig(func(string) string { return "" })
	must(t, err)
	want, err := defaults.httpMaxConns(nofile)
	must(t, err)
	var capLine struct {
		MaxConns      int    `json:"max_conns"`
		OpenFileLimit uint64 `json:"open_file_limit"`
	}
	waitFor(t, 10*time.Second, "the connection cap in the log", func() (bool, string) {
		line := findLogLine(t, proc.LogPath, "HTTP connections capped")
		return line != "" && json.Unmarshal([]byte(line), &capLine) == nil, line
	})
	if capLine.OpenFileLimit != nofile || capLine.MaxConns != want {
		t.Fatalf("orderd runs with open-file limit %d and cap %d, want %d and %d", capLine.OpenFileLimit, capLine.MaxConns, nofile, want)
	}
	maxConns := capLine.MaxConns

	// One keep-alive connection of our own, opened before the flood: it keeps its slot.
	held := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	defer held.CloseIdleConnections()
	base := "http://" + addr
	stockBefore := stock(t, env)
	var orders []placed
	place := func(client *http.Client, n int) {
		t.Helper()
		for range n {
			p, ok := placeOneWith(t, client, base, mailDomain, len(orders))
			if !ok {
				t.FailNow()
			}
			orders = append(orders, p)
		}
	}
	place(held, 10)

	flood := startFlood(addr, 10*maxConns)
	defer flood.Stop()
	waitFor(t, 30*time.Second, fmt.Sprintf("the flood to fill all %d connections", maxConns), func() (bool, string) {
		n := heldConnections(t, pid, port)
		return n == maxConns, fmt.Sprintf("%d of %d held, %d flood sockets connected", n, maxConns, flood.connected.Load())
	})
	var peak atomic.Int64
	sampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for {
			// Reading the descriptor table is not atomic: a connection closed and another
			// accepted during one read can both be seen. A breach shows in two reads running.
			if n := int64(min(heldConnections(t, pid, port), heldConnections(t, pid, port))); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-sampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	place(held, 20)
	waitFinished(t, env, len(orders), 90*time.Second)
	events, emails := checkOrders(t, env, orders, stockBefore, mailDomain)
	// Silent connections are dropped after ReadHeaderTimeout (5 s), and the flood's next ones
	// take their places: the cap holds as connections come and go.
	waitFor(t, 20*time.Second, "orderd to drop silent connections and the flood to replace them", func() (bool, string) {
		n := flood.opened.Load()
		return n > int64(10*maxConns), fmt.Sprintf("%d flood connections opened", n)
	})
	waitFor(t, 10*time.Second, "the flood to still fill every connection", func() (bool, string) {
		n := heldConnections(t, pid, port)
		return n == maxConns, fmt.Sprintf("%d of %d held", n, maxConns)
	})
	close(sampling)
	sampled.Wait()
	if p := peak.Load(); p > int64(maxConns) {
		t.Errorf("orderd held %d API connections at once, over its cap of %d", p, maxConns)
	}
	if line := findLogLine(t, proc.LogPath, "too many open files"); line != "" {
		t.Errorf("orderd ran out of file descriptors: %s", line)
	}
	if proc.Exited() {
		t.Fatal("orderd exited during the flood")
	}

	opened := flood.opened.Load()
	flood.Stop()
	fresh := &http.Client{Timeout: 15 * time.Second}
	start := time.Now()
	place(fresh, 1)
	accepted := time.Since(start)
	waitFinished(t, env, len(orders), 60*time.Second)
	t.Logf("open-file limit %d, API connection cap %d (at most %d held while %d flood connections were opened); %d orders (10 placed before the flood, 20 during it) completed while it lasted (%d events, %d emails), nothing ran out of descriptors; a new client's order accepted %s after the flood stopped",
		nofile, maxConns, peak.Load(), opened, len(orders)-1, events, emails, accepted.Round(time.Millisecond))
}

// findLogLine returns the first line of the log at path that contains s, or "".
func findLogLine(t *testing.T, path, s string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(strings.ToLower(sc.Text()), strings.ToLower(s)) {
			return sc.Text()
		}
	}
	return ""
}

// heldConnections counts the TCP connections on local port that process pid holds open:
// the sockets in its descriptor table that /proc/net/tcp lists with that local port (not
// the listener). Connections still in the kernel's accept queue belong to no process yet.
func heldConnections(t *testing.T, pid, port int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	inodes := map[string]bool{}
	for _, e := range entries {
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] == "0A" { // 0A: LISTEN
			continue
		}
		_, hexPort, _ := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port && inodes[f[9]] {
			n++
		}
	}
	return n
}

// flood keeps n silent TCP connections to an address open: each one is reopened as soon as
// the server closes it, so that the server's cap stays full and its accept queue long.
type flood struct {
	stop      chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]bool
	opened    atomic.Int64
	connected atomic.Int64
	stopOnce  sync.Once
}

func startFlood(addr string, n int) *flood {
	f := &flood{stop: make(chan struct{}), conns: map[net.Conn]bool{}}
	for range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					select {
					case <-f.stop:
						return
					case <-time.After(50 * time.Millisecond):
						continue
					}
				}
				f.mu.Lock()
				select {
				case <-f.stop:
					f.mu.Unlock()
					c.Close()
					return
				default:
				}
				f.conns[c] = true
				f.mu.Unlock()
				f.opened.Add(1)
				f.connected.Add(1)
				c.Read(make([]byte, 1)) //nolint:errcheck // returns when the server or Stop closes it
				f.connected.Add(-1)
				c.Close()
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
			}
		}()
	}
	return f
}

// Stop closes every connection and waits until no more are opened.
func (f *flood) Stop() {
	f.stopOnce.Do(func() {
		f.mu.Lock()
		close(f.stop)
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
}

// TestHTTPMaxConns: the default cap is what the open-file limit leaves beside MySQL, SQS,
// SMTP and the process itself, at most 1024; a limit or an explicit setting that would eat
// into their descriptors stops the start with a line naming the setting.
func TestHTTPMaxConns(t *testing.T) {
	defaults, err := loadConfig(func(string) string { return "" })
	must(t, err)
	reserve := defaults.descriptorsBesidesHTTP()
	for _, c := range []struct {
		nofile   uint64
		explicit int
		want     int // 0: an error
	}{
		{nofile: 256, want: 256 - reserve},
		{nofile: 1024, want: 1024 - reserve},
		{nofile: 20000, want: maxHTTPConns},
		{nofile: 1 << 63, want: maxHTTPConns},
		{nofile: 0, want: maxHTTPConns},
		{nofile: uint64(reserve + minHTTPConns - 1)},
		{nofile: 256, explicit: 10, want: 10},
		{nofile: 256, explicit: 256 - reserve + 1},
		{nofile: 0, explicit: 5000, want: 5000},
	} {
		cfg := defaults
		cfg.HTTPMaxConns = c.explicit
		got, err := cfg.httpMaxConns(c.nofile)
		switch {
		case c.want == 0 && (err == nil || !strings.HasPrefix(err.Error(), "HTTP_MAX_CONNS: ")):
			t.Errorf("limit %d, HTTP_MAX_CONNS %d: got %d, %v; want an error naming HTTP_MAX_CONNS", c.nofile, c.explicit, got, err)
		case c.want != 0 && (err != nil || got != c.want):
			t.Errorf("limit %d, HTTP_MAX_CONNS %d: got %d, %v; want %d", c.nofile, c.explicit, got, err, c.want)
		}
	}
	t.Logf("%d descriptors kept for MySQL, SQS, SMTP and the process with the defaults", reserve)
}
