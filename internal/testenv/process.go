package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ModuleRoot returns the directory holding go.mod, found upwards from the working directory
// (a test runs in its package's directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until something accepts connections on addr.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// toolBinary returns the path of a service's binary: $envKey if set, else .bin/name, where
// scripts/services.sh builds it. Without it the test fails (skips under -short).
func toolBinary(t testing.TB, name, envKey string) string {
	t.Helper()
	bin := os.Getenv(envKey)
	if bin == "" {
		bin = filepath.Join(ModuleRoot(t), ".bin", name)
	}
	if _, err := os.Stat(bin); err != nil {
		if testing.Short() {
			t.Skipf("%s binary not found (%v): skipped in -short mode", name, err)
		}
		t.Fatalf("%s binary not found (%v): run the tests with `make test`, which builds it", name, err)
	}
	return bin
}

// Goaws is an SQS emulator of the test's own, so that the test may kill and restart it
// without disturbing tests that share the one `make test` started.
type Goaws struct {
	URL    string
	bin    string
	config string
	addr   string
	t      testing.TB
	mu     sync.Mutex
	cmd    *exec.Cmd
}

// StartGoaws starts a goaws on a free port with the project's dev/goaws.yaml. The binary
// comes from GOAWS_BIN (set by `make test`; scripts/services.sh builds it into .bin/).
func StartGoaws(t testing.TB) *Goaws {
	t.Helper()
	bin := toolBinary(t, "goaws", "GOAWS_BIN")
	src, err := os.ReadFile(filepath.Join(ModuleRoot(t), "dev", "goaws.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	conf := regexp.MustCompile(`(?m)^(\s*Port:\s*)4100\b`).ReplaceAll(src, []byte("${1}"+strconv.Itoa(port)))
	path := filepath.Join(t.TempDir(), "goaws.yaml")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &Goaws{URL: fmt.Sprintf("http://127.0.0.1:%d", port), bin: bin, config: path, addr: fmt.Sprintf("127.0.0.1:%d", port), t: t}
	g.start()
	t.Cleanup(g.kill)
	return g
}

func (g *Goaws) start() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	cmd := exec.Command(g.bin, "-config", g.config)
	// As scripts/services.sh runs it: goaws v0.5.4 writes its queue map from concurrent
	// handlers without a lock, which the Go runtime ends the process for; one OS thread
	// without asynchronous preemption does not interrupt a map write.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GODEBUG=asyncpreemptoff=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start goaws: %v", err)
	}
	g.cmd = cmd
	WaitPort(g.t, g.addr, 10*time.Second)
}

func (g *Goaws) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return
	}
	g.cmd.Process.Kill() //nolint:errcheck // may have exited
	g.cmd.Wait()         //nolint:errcheck // killed
	g.cmd = nil
}

// Restart kills the emulator with SIGKILL and starts it again on the same port: every queue
// and every message in it is gone, as after a real broker loss.
func (g *Goaws) Restart() {
	g.t.Helper()
	g.kill()
	g.start()
}
