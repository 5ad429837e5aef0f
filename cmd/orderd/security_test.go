package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"orderd/internal/testenv"
)

// Security of the running service, end to end (handlers/security_test.go tests each class of
// who-may-see-what against the API itself): secrets never reach a log line, and with no
// OPERATOR_PASSWORD nothing is served open.

// TestSecretsNeverLogged runs orderd as a child process with a password in MYSQL_DSN (a
// MySQL user of the test's own), a user and password in SQS_ENDPOINT, an operator
// password and a message signing key, places an order through the whole pipeline (so every secret was used), makes it
// answer errors, then starts it twice with one secret wrong so that it fails, and looks for
// every secret in everything it wrote, stdout and stderr.
func TestSecretsNeverLogged(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	bin := testenv.BuildOrderd(t)
	user, dbPassword := "u"+env.ID, "db-secret-"+env.ID
	sqsUser, sqsPassword := "sqs-user-"+env.ID, "sqs-secret-"+env.ID
	operatorPassword := "operator-secret-" + env.ID
	signingKey := "signing-key-of-at-least-32-bytes-" + env.ID
	// MariaDB matches a TCP client from 127.0.0.1 to 'localhost' or '127.0.0.1' before '%'.
	for _, host := range []string{"%", "localhost", "127.0.0.1"} {
		env.MustExec(t, fmt.Sprintf("CREATE USER '%s'@'%s' IDENTIFIED BY '%s'", user, host, dbPassword))
		t.Cleanup(func() { env.DB.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%s'", user, host)) }) //nolint:errcheck // best effort
		env.MustExec(t, fmt.Sprintf("GRANT ALL ON `%s`.* TO '%s'@'%s'", env.DBName, user, host))
	}
	mc, err := mysql.ParseDSN(env.DSN)
	if err != nil {
		t.Fatal(err)
	}
	mc.User, mc.Passwd = user, dbPassword
	sqsURL := strings.Replace(env.SQSEndpoint, "://", "://"+sqsUser+":"+sqsPassword+"@", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	mailDomain := env.ID + ".example"
	environ := childEnviron(env, map[string]string{
		"MYSQL_DSN": mc.FormatDSN(), "SQS_ENDPOINT": sqsURL, "OPERATOR_PASSWORD": operatorPassword,
		"HTTP_ADDR": addr, "MAIL_FROM": "orders@" + mailDomain, "MESSAGE_SIGNING_KEY": signingKey,
	})
	environ = append(environ, "AWS_ACCESS_KEY_ID=dummy", "AWS_SECRET_ACCESS_KEY=dummy")
	secrets := []string{dbPassword, sqsUser, sqsPassword, operatorPassword, signingKey}

	proc := testenv.StartProcess(t, "orderd", []string{bin, "serve"}, environ, addr)
	base := "http://" + addr
	code, body := postJSON(t, base+"/orders", `{"customerName":"Sec","customerEmail":"sec@`+mailDomain+`","items":[{"sku":"SKU-MUG","quantity":1}]}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %s", code, body)
	}
	waitFinished(t, env, 1, 60*time.Second)
	for _, get := range []func() (*http.Response, error){
		func() (*http.Response, error) { return testenv.OperatorGet(base + "/metrics") }, // the test's password: wrong here
		func() (*http.Response, error) { return http.Get(base + "/api/dashboard/orders") },
		func() (*http.Response, error) { return http.Get(base + "/readyz") },
	} {
		resp, err := get()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := proc.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	logged := proc.LogTail(1 << 20)
	// What it says about where it connects, without credentials.
	if !strings.Contains(logged, `"sqs":"http://redacted@127.0.0.1:`) || !strings.Contains(logged, `"mysql":"127.0.0.1:3306/`+env.DBName+`"`) {
		t.Errorf("the start line does not name MySQL and SQS as expected:\n%s", logged)
	}

	// Started with one secret wrong, it fails, and says why without the secret.
	for what, override := range map[string]map[string]string{
		"a wrong database password":    {"MYSQL_DSN": strings.Replace(mc.FormatDSN(), dbPassword, dbPassword+"-wrong", 1)},
		"an SQS endpoint that is down": {"SQS_ENDPOINT": fmt.Sprintf("http://%s:%s@127.0.0.1:%d", sqsUser, sqsPassword, testenv.FreePort(t))},
	} {
		over := map[string]string{"MYSQL_DSN": mc.FormatDSN(), "SQS_ENDPOINT": sqsURL, "OPERATOR_PASSWORD": operatorPassword, "HTTP_ADDR": addr}
		for k, v := range override {
			over[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		cmd := exec.CommandContext(ctx, bin, "serve")
		cmd.Env = append(childEnviron(env, over), "AWS_ACCESS_KEY_ID=dummy", "AWS_SECRET_ACCESS_KEY=dummy")
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !bytes.Contains(out, []byte("orderd: ")) {
			t.Errorf("with %s orderd did not fail at start as expected (%v):\n%s", what, err, out)
		}
		logged += string(out)
	}
	for _, s := range secrets {
		if strings.Contains(logged, s) {
			t.Errorf("secret %q appears in orderd's output", s)
		}
	}
	t.Logf("orderd's output (%d bytes: a whole order, 401s, readiness, and two failed starts) holds none of the %d secrets", len(logged), len(secrets))
}

// TestRedactingLogger feeds the log the ways a secret slips into a line unnoticed: a driver's
// error quoting the DSN, a URL with userinfo in the message, a value of any type, a secret
// field. The secrets must be gone, and the rest of each line kept.
func TestRedactingLogger(t *testing.T) {
	cfg, err := loadConfig(func(k string) string {
		return map[string]string{
			"MYSQL_DSN":         "orderd:p@ss w0rd/x@tcp(db.internal:3306)/orderd",
			"SQS_ENDPOINT":      "https://proxy-user:proxy-pass@sqs.internal",
			"OPERATOR_PASSWORD": "operator-password-1",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := newLogger(&buf, cfg.redactor())
	log.Error("dial "+cfg.SQSEndpoint+" failed", "error", errors.New("open orderd:p@ss w0rd/x@tcp(db.internal:3306)/orderd: refused"),
		"url", "https://proxy-user:proxy-pass@sqs.internal", "escaped", "p%40ss%20w0rd%2Fx",
		"any", struct{ DSN string }{cfg.MySQLDSN}, "config", cfg.OperatorPassword, "n", 42)
	line := buf.String()
	for _, s := range []string{"p@ss w0rd/x", "p%40ss%20w0rd%2Fx", "proxy-user", "proxy-pass", "operator-password-1"} {
		if strings.Contains(line, s) {
			t.Errorf("the log line holds %q: %s", s, line)
		}
	}
	for _, kept := range []string{"db.internal:3306", "sqs.internal", `"n":42`, "refused"} {
		if !strings.Contains(line, kept) {
			t.Errorf("the log line lost %q: %s", kept, line)
		}
	}
	// A secret formats as redacted with every verb, and as a log value.
	for _, verb := range []string{"%s", "%v", "%q", "%#v", "%x", "%+v"} {
		if s := fmt.Sprintf(verb, cfg.OperatorPassword); strings.Contains(s, "operator-password") || strings.Contains(s, "6f70") {
			t.Errorf("fmt %s of a secret: %q", verb, s)
		}
	}
	if v := slog.AnyValue(cfg.OperatorPassword).Resolve().String(); v != redacted {
		t.Errorf("slog value of a secret: %q", v)
	}
	// And the error orderd exits with.
	err = run(context.Background(), []string{"serve"}, func(k string) string {
		return map[string]string{"MYSQL_DSN": "orderd:p@ss w0rd/x@tcp(127.0.0.1:1)/orderd", "HTTP_ADDR": "127.0.0.1:0"}[k]
	}, io.Discard, io.Discard)
	if err == nil || strings.Contains(err.Error(), "p@ss w0rd/x") {
		t.Errorf("run's error: %v", err)
	}
}

// TestGeneratedOperatorPassword starts serve with no OPERATOR_PASSWORD: it must make one,
// print it once on stdout (not in the log), and serve nothing operators' to anyone without it.
func TestGeneratedOperatorPassword(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	srv := startOrderd(t, env, map[string]string{"OPERATOR_PASSWORD": "", "MAIL_FROM": "orders@" + env.ID + ".example"})
	line := regexp.MustCompile(`user operator, password (\S+)\n`)
	var password string
	waitFor(t, 10*time.Second, "orderd to print the operator password", func() (bool, string) {
		m := line.FindStringSubmatch(srv.stdout.String())
		if m != nil {
			password = m[1]
		}
		return m != nil, srv.stdout.String()
	})
	if len(password) < 20 || password == testenv.OperatorPassword {
		t.Fatalf("generated password %q: want a long random one", password)
	}
	if n := strings.Count(srv.stdout.String(), password); n != 1 {
		t.Errorf("the password is printed %d times, want once", n)
	}
	status := func(path, user, pw string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/", "/metrics", "/api/dashboard/lag"} {
		if got := status(path, "", ""); got != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, got)
		}
		if got := status(path, "operator", testenv.OperatorPassword); got != http.StatusUnauthorized {
			t.Errorf("GET %s with the tests' usual password: %d, want 401", path, got)
		}
		if got := status(path, "operator", password); got != http.StatusOK {
			t.Errorf("GET %s with the printed password: %d, want 200", path, got)
		}
	}
	srv.Stop(t)
	if b, _ := os.ReadFile(srv.logs); bytes.Contains(b, []byte(password)) {
		t.Errorf("the generated password is in the log")
	}
}

// TestConfigRefusesOpenSettings checks the settings that would open the service up.
func TestConfigRefusesOpenSettings(t *testing.T) {
	base := map[string]string{"OPERATOR_PASSWORD": "long-enough-password"}
	for _, tc := range []struct {
		key, value string
		ok         bool
	}{
		{"CORS_ALLOWED_ORIGINS", "*", false},
		{"CORS_ALLOWED_ORIGINS", "https://shop.example, *", false},
		{"CORS_ALLOWED_ORIGINS", "shop.example", false},
		{"CORS_ALLOWED_ORIGINS", "https://shop.example/", false},
		{"CORS_ALLOWED_ORIGINS", "https://shop.example/app", false},
		{"CORS_ALLOWED_ORIGINS", "https://user@shop.example", false},
		{"CORS_ALLOWED_ORIGINS", "https://shop.example, http://localhost:3000", true},
		{"CORS_ALLOWED_ORIGINS", "", true},
		{"OPERATOR_PASSWORD", "elevenchars", false},
		{"OPERATOR_PASSWORD", "twelve chars", true},
		{"SQS_ENDPOINT", "ftp://user:sqs-secret@sqs.internal", false},
	} {
		env := map[string]string{tc.key: tc.value}
		for k, v := range base {
			if k != tc.key {
				env[k] = v
			}
		}
		cfg, err := loadConfig(func(k string) string { return env[k] })
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s=%q refused: %v", tc.key, tc.value, err)
		case !tc.ok && (err == nil || !strings.HasPrefix(err.Error(), tc.key+":")):
			t.Errorf("%s=%q: got %v, want an error naming %s", tc.key, tc.value, err, tc.key)
		case err != nil && strings.Contains(err.Error(), "sqs-secret"):
			t.Errorf("%s: the error shows the secret: %v", tc.key, err)
		case tc.key == "CORS_ALLOWED_ORIGINS" && tc.value == "" && cfg.AllowedOrigins != nil:
			t.Errorf("default CORS_ALLOWED_ORIGINS = %v, want none", cfg.AllowedOrigins)
		}
	}
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil || !cfg.OperatorPasswordGenerated || len(cfg.OperatorPassword.reveal()) < 20 {
		t.Errorf("with OPERATOR_PASSWORD unset: generated %v, %d characters, %v", cfg.OperatorPasswordGenerated, len(cfg.OperatorPassword.reveal()), err)
	}
	if b, err := json.Marshal(cfg); err != nil || strings.Contains(string(b), cfg.OperatorPassword.reveal()) {
		t.Errorf("the configuration as JSON shows the operator password (%v): %s", err, b)
	}
}
