package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildOrderd compiles cmd/orderd into the test's temporary directory and returns the
// binary's path, so that a test can run `orderd serve` as a real child process and kill it.
// The build cache makes this a link step (about a second) after the first build.
func BuildOrderd(t testing.TB) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("build orderd: the go command is not on PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), "orderd")
	cmd := exec.Command(gobin, "build", "-o", out, "orderd/cmd/orderd")
	cmd.Dir = ModuleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build orderd/cmd/orderd: %v\n%s", err, b)
	}
	return out
}

// Process is a child process of the test (an `orderd serve`, a private mariadbd) that the
// test may kill with SIGKILL and start again with the same arguments, environment and
// address. Its output, across every start, goes to one log file that is printed (its tail)
// if the test fails.
type Process struct {
	Name    string // for messages
	Addr    string // host:port it accepts connections on once it is up
	LogPath string

	argv    []string
	environ []string
	t       testing.TB

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited; waitErr is then set
	waitErr error
	starts  int
	kills   int
}

// StartProcess starts argv with exactly the environment environ (nothing is inherited, so
// a developer's shell cannot change what the test runs) and waits until it accepts
// connections on addr. The process is killed when the test ends.
func StartProcess(t testing.TB, name string, argv, environ []string, addr string) *Process {
	t.Helper()
	p := &Process{Name: name, Addr: addr, LogPath: filepath.Join(t.TempDir(), name+".log"), argv: argv, environ: environ, t: t}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s log, warnings and errors:\n%s", p.Name, p.LogProblems(50))
			t.Logf("%s log (tail):\n%s", p.Name, p.LogTail(30000))
		}
	})
	p.Start()
	return p
}

// Start starts the process (again) and waits up to 30 s until it accepts connections on
// its address. It fails the test if the process exits first or never listens.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		p.t.Fatalf("%s: Start while it is running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== %s: start %d at %s ===\n", p.Name, p.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = p.environ
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
	logf.Close() // the child holds its own descriptor
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	p.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			p.mu.Lock()
			werr := p.waitErr
			p.cmd = nil
			p.mu.Unlock()
			p.t.Fatalf("%s exited before it listened on %s (%v); log tail:\n%s", p.Name, p.Addr, werr, p.LogTail(5000))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s does not listen on %s after 30 s: %v; log tail:\n%s", p.Name, p.Addr, err, p.LogTail(5000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL (no chance to clean up, as in a power cut or an OOM kill) and waits
// until the process is gone. It does nothing if the process is not running.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	if cmd != nil {
		p.kills++
	}
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill() //nolint:errcheck // it may have exited by itself
	<-exited
}

// Stop sends SIGTERM and waits up to timeout for the process to exit; it returns an error
// if it exited with a failure or had to be killed.
func (p *Process) Stop(timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return errors.New(p.Name + " is not running")
	}
	cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited by itself
	select {
	case <-exited:
	case <-time.After(timeout):
		cmd.Process.Kill() //nolint:errcheck // did not drain in time
		<-exited
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr != nil {
		return fmt.Errorf("%s exited after SIGTERM with %v", p.Name, p.waitErr)
	}
	return nil
}

// Exited reports whether the process, started and not killed by the test, has exited by
// itself (a crash the test did not cause).
func (p *Process) Exited() bool {
	p.mu.Lock()
	exited := p.exited
	running := p.cmd != nil
	p.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-exited:
		return true
	default:
		return false
	}
}

// Pid returns the running process's id, 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Starts and Kills count the starts and the SIGKILLs so far.
func (p *Process) Starts() int { p.mu.Lock(); defer p.mu.Unlock(); return p.starts }
func (p *Process) Kills() int  { p.mu.Lock(); defer p.mu.Unlock(); return p.kills }

// LogTail returns the last max bytes of the process's log.
func (p *Process) LogTail(max int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > max {
		b = b[len(b)-max:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// MinimalEnviron is the part of the test's own environment a child process needs to run at
// all (PATH, HOME, TMPDIR), to which the caller adds the configuration it means to give.
func MinimalEnviron() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// LogProblems returns up to n lines of the log at level WARN or ERROR, the first ones: the
// tail of a busy log rarely holds the line that explains a failure.
func (p *Process) LogProblems(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			out = append(out, line)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
