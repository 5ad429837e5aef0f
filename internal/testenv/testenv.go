// Package testenv gives integration tests their own real resources: a fresh MariaDB/MySQL
// database with the migrations applied (dropped afterwards), a queue prefix of their own on
// the SQS emulator, and the Mailpit endpoints. `make test` starts the services and sets the
// environment; without it the tests fail and say so (or skip under -short).
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"os"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"orderd/eventstore"
	"orderd/migrations"
)

// Env is the environment of one integration test.
type Env struct {
	ID          string // random, unique to this test: use it to name anything shared
	DB          *sql.DB
	DSN         string // names the test's own database
	DBName      string
	SQSEndpoint string
	// SQSEmulator names the emulator at SQSEndpoint whose quirks orderd works around, as
	// SQS_EMULATOR and queues.Config.Emulator take it: "goaws", or empty.
	SQSEmulator string
	QueuePrefix string
	SMTPAddr    string
	MailpitURL  string
}

// Require returns the variable's value, or fails the test (skips it under -short) with a
// message saying how to run it.
func Require(t testing.TB, key string) string {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		if testing.Short() {
			t.Skipf("%s not set: integration test skipped in -short mode", key)
		}
		t.Fatalf("%s is not set: run the integration tests with `make test`, which starts MariaDB, goaws and Mailpit and sets it", key)
	}
	return v
}

// ID returns a short random identifier for naming a test's resources.
func ID() string { return strings.ToLower(rand.Text()[:10]) }

// New creates a database named after the test, applies the migrations and returns the
// environment. Everything it creates is dropped when the test ends.
func New(t testing.TB) *Env {
	t.Helper()
	server := Require(t, "TEST_MYSQL_DSN")
	id := ID()
	mc, err := mysql.ParseDSN(server)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	mc.DBName = ""
	admin, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		t.Fatalf("open MySQL: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	env := &Env{ID: id, DBName: "orderd_test_" + id, QueuePrefix: "t" + id + "-"}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+env.DBName); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+env.DBName); err != nil {
			t.Errorf("drop test database %s: %v", env.DBName, err)
		}
	})
	mc.DBName = env.DBName
	env.DSN = eventstore.WithDriverOptions(mc).FormatDSN()
	if env.DB, err = sql.Open("mysql", env.DSN); err != nil {
		t.Fatalf("open test database: %v", err)
	}
	env.DB.SetMaxOpenConns(32)
	t.Cleanup(func() { env.DB.Close() })
	if _, err := migrations.Apply(ctx, env.DB); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return env
}

// WithMessaging also requires the SQS emulator and Mailpit.
func (e *Env) WithMessaging(t testing.TB) *Env {
	t.Helper()
	e.SQSEndpoint, e.SQSEmulator = Require(t, "SQS_ENDPOINT"), SQSEndpointEmulator()
	e.SMTPAddr = Require(t, "SMTP_ADDR")
	e.MailpitURL = Require(t, "MAILPIT_URL")
	return e
}

// SQS is an SQS implementation the tests can run on, and the variable that holds its endpoint.
type SQS struct {
	Name        string
	EndpointVar string
}

// SQSEndpointEmulator is the SQS_EMULATOR setting for the SQS at SQS_ENDPOINT: "goaws", which
// `make test` starts there, unless SQS_EMULATOR says otherwise (SQS_EMULATOR=none runs the
// tests against an implementation that follows SQS, without the goaws workarounds).
func SQSEndpointEmulator() string {
	if v, ok := os.LookupEnv("SQS_EMULATOR"); ok {
		if v == "none" {
			return ""
		}
		return v
	}
	return "goaws"
}

// SQSImplementations are the SQS implementations `make test` starts: goaws, which every
// integration test uses, and local-aws-sqs, on which the tests that follow the pipeline end
// to end also run, so that the code cannot lean on one emulator's quirks.
var SQSImplementations = []SQS{{Name: "goaws", EndpointVar: "SQS_ENDPOINT"}, {Name: "local-aws-sqs", EndpointVar: "SQS2_ENDPOINT"}}

// EachSQS runs test as one subtest per SQS implementation, named after it.
func EachSQS(t *testing.T, test func(t *testing.T, sqs SQS)) {
	for _, s := range SQSImplementations {
		t.Run(s.Name, func(t *testing.T) { test(t, s) })
	}
}

// WithMessagingOn is WithMessaging with the given SQS implementation. The second one is
// skipped, saying so, when its endpoint is not set (`go test` without make); `make test`
// always sets it.
func (e *Env) WithMessagingOn(t testing.TB, sqs SQS) *Env {
	t.Helper()
	e.WithMessaging(t)
	if sqs.EndpointVar == "SQS_ENDPOINT" {
		return e
	}
	// local-aws-sqs follows SQS: no workaround.
	e.SQSEmulator = ""
	if e.SQSEndpoint = os.Getenv(sqs.EndpointVar); e.SQSEndpoint == "" {
		t.Skipf("%s not set: the run on %s is skipped; `make test` starts it and sets %[1]s", sqs.EndpointVar, sqs.Name)
	}
	return e
}

// MustExec runs a statement on the test database or fails the test.
func (e *Env) MustExec(t testing.TB, query string, args ...any) sql.Result {
	t.Helper()
	res, err := e.DB.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return res
}

// Count returns the result of a COUNT(*)-style query.
func (e *Env) Count(t testing.TB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.DB.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// Strings returns the first column of every row a query returns, as text.
func (e *Env) Strings(t testing.TB, query string, args ...any) []string {
	t.Helper()
	rows, err := e.DB.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// Getenv returns a getenv function for orderd's configuration pointing at this
// environment, with overrides. The placement rate limit is off: the tests place hundreds of
// orders a second from one address (a test of the limit itself sets it).
func (e *Env) Getenv(overrides map[string]string) func(string) string {
	m := map[string]string{
		"MYSQL_DSN":            e.DSN,
		"SQS_ENDPOINT":         e.SQSEndpoint,
		"SQS_EMULATOR":         e.SQSEmulator,
		"QUEUE_PREFIX":         e.QueuePrefix,
		"SMTP_ADDR":            e.SMTPAddr,
		"HTTP_ADDR":            "127.0.0.1:0",
		"AWS_REGION":           "us-east-1",
		"PLACEMENT_RATE_LIMIT": "0",
		// Operators' endpoints need it; AsOperator sends it.
		"OPERATOR_PASSWORD": OperatorPassword,
	}
	for k, v := range overrides {
		m[k] = v
	}
	return func(k string) string { return m[k] }
}
