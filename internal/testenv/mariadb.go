package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// MariaDB is a private MariaDB server of one test, on its own data directory and port, so
// that the test may kill it and start it again: the MariaDB on 127.0.0.1:3306 is shared with
// other developers and CI and must never be stopped.
type MariaDB struct {
	*Process
	// DSN names the server (no database), user root without a password, as TEST_MYSQL_DSN does.
	DSN     string
	DataDir string
}

// mariadbSearchPath is where distributions put the server binaries; /usr/sbin is often not
// on a non-root user's PATH.
var mariadbSearchPath = []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/mysql/bin"}

func findBinary(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, dir := range mariadbSearchPath {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	return ""
}

// StartMariaDB initialises a fresh data directory with mariadb-install-db (root@127.0.0.1
// without a password, normal authentication, no grant tables skipped) and starts mariadbd on
// it on a free port, with MariaDB's defaults otherwise (max_connections 151, as on a user's
// server) and extra server options appended. It skips the test if MariaDB's server binaries are not installed.
// The server is killed and its data directory removed when the test ends.
func StartMariaDB(t testing.TB, extra ...string) *MariaDB {
	t.Helper()
	server := findBinary("mariadbd")
	install := findBinary("mariadb-install-db", "mysql_install_db")
	if server == "" || install == "" {
		t.Skipf("a private MariaDB server is needed (mariadbd and mariadb-install-db, found %q and %q): install the mariadb-server package", server, install)
	}
	// A short path: the Unix socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "orderd-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	datadir := filepath.Join(dir, "data")
	port := FreePort(t)

	// Options shared by install and server. Durability stays as in production
	// (innodb_flush_log_at_trx_commit=1): a kill -9 must find every committed transaction.
	common := []string{"--no-defaults", "--datadir=" + datadir, "--skip-name-resolve",
		"--innodb-buffer-pool-size=128M", "--innodb-log-file-size=48M"}
	if os.Geteuid() == 0 {
		common = append(common, "--user=root") // mariadbd refuses to run as root otherwise
	}
	installArgs := append([]string{"--auth-root-authentication-method=normal", "--skip-test-db"}, common...)
	cmd := exec.Command(install, installArgs...)
	cmd.Env = MinimalEnviron()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", install, installArgs, err, b)
	}

	argv := append([]string{server}, common...)
	argv = append(argv, "--port="+strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--socket="+filepath.Join(dir, "sock"), "--pid-file="+filepath.Join(dir, "pid"),
		"--skip-log-bin")
	argv = append(argv, extra...)
	m := &MariaDB{DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port), DataDir: datadir}
	m.Process = StartProcess(t, "mariadbd", argv, MinimalEnviron(), fmt.Sprintf("127.0.0.1:%d", port))
	m.WaitReady(t, 30*time.Second)
	return m
}

// WaitReady waits until the server answers a query as root (it listens a moment before it
// has finished crash recovery and loaded the grant tables).
func (m *MariaDB) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	db, err := sql.Open("mysql", m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var one int
		err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("private MariaDB on %s does not answer after %s: %v; log tail:\n%s", m.Addr, timeout, err, m.LogTail(5000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
