package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/awslabs/goformation/v7"
	"github.com/go-sql-driver/mysql"

	"orderd/deploy"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/pipeline"
)

// TestLambdaBuild builds the function as `sam build` and the README do, for the
// provided.al2023 runtime on arm64, so CI catches anything that breaks it.
func TestLambdaBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary: skipped in -short mode")
	}
	out := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", out, ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=linux GOARCH=arm64 go build: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no bootstrap binary: %v", err)
	}
	t.Logf("built bootstrap for linux/arm64: %d MiB", st.Size()>>20)
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		err  string // a substring of the error, "" for none
	}{
		{"dsn", map[string]string{"STAGE": "payment", "MYSQL_DSN": "root@tcp(h)/orderd"}, ""},
		{"secret", map[string]string{"STAGE": "email", "DB_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:db"}, ""},
		{"no stage", map[string]string{"MYSQL_DSN": "root@tcp(h)/orderd"}, "STAGE"},
		{"other stage", map[string]string{"STAGE": "shipping", "MYSQL_DSN": "x"}, "STAGE"},
		{"no database", map[string]string{"STAGE": "inventory"}, "DB_SECRET_ARN"},
		{"bad limit", map[string]string{"STAGE": "payment", "MYSQL_DSN": "x", "PAYMENT_DECLINE_ABOVE_CENTS": "-1"}, "PAYMENT_DECLINE_ABOVE_CENTS"},
		{"simulated gateway", map[string]string{"STAGE": "payment", "MYSQL_DSN": "x", "PAYMENT_GATEWAY": "simulated"}, ""},
		{"unknown gateway", map[string]string{"STAGE": "payment", "MYSQL_DSN": "x", "PAYMENT_GATEWAY": "stripe"}, "PAYMENT_GATEWAY: want one of simulated"},
		{"bad from", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "MAIL_FROM": "Shop <a@b.c>"}, "MAIL_FROM"},
		{"smtp login", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p"}, ""},
		{"smtp password in plain text", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p", "SMTP_TLS": "off"}, "SMTP_PASSWORD"},
		{"smtp half a login", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_USERNAME": "u"}, "SMTP_USERNAME"},
		{"smtp bad mode", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_TLS": "yes"}, "SMTP_TLS"},
		{"smtp login twice", map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:smtp",
			"SMTP_USERNAME": "u", "SMTP_PASSWORD": "p"}, "SMTP_SECRET_ARN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(env(tc.env))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want one naming %q", err, tc.err)
			}
		})
	}
}

// TestDSNUsesTheSharedDriverOptions checks that a function's pool, from MYSQL_DSN or from
// either shape of database secret, is opened with exactly the options
// eventstore.WithDriverOptions gives (as serve's is: its test is the same).
func TestDSNUsesTheSharedDriverOptions(t *testing.T) {
	const dsn = "u:p@tcp(db:3306)/orderd"
	want, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	wantDSN := eventstore.WithDriverOptions(want).FormatDSN()
	for _, tc := range []struct {
		cfg    config
		secret string
	}{
		{config{MySQLDSN: dsn}, ""},
		{config{DBSecretARN: "arn:aws:secretsmanager:eu-west-1:1:secret:db"}, `{"dsn":"` + dsn + `"}`},
		{config{DBSecretARN: "arn:aws:secretsmanager:eu-west-1:1:secret:db", DBName: "orderd"}, `{"username":"u","password":"p","host":"db","port":3306}`},
	} {
		mc, err := tc.cfg.dsn(context.Background(), &fakeSecrets{value: tc.secret})
		if err != nil {
			t.Fatal(err)
		}
		if got := mc.FormatDSN(); got != wantDSN {
			t.Errorf("MYSQL_DSN %q / secret %q: the function opens %s, want %s", tc.cfg.MySQLDSN, tc.secret, got, wantDSN)
		}
		if !mc.ParseTime || !mc.InterpolateParams || mc.Timeout == 0 {
			t.Errorf("%s lacks the driver options", mc.FormatDSN())
		}
	}
}

type fakeSecrets struct {
	value string
	asked string
}

func (f *fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.asked = aws.ToString(in.SecretId)
	if f.value == "" {
		return nil, errors.New("AccessDeniedException")
	}
	return &secretsmanager.GetSecretValueOutput{SecretString: aws.String(f.value)}, nil
}

func TestDSNFromSecret(t *testing.T) {
	const arn = "arn:aws:secretsmanager:eu-west-1:1:secret:db"
	for _, tc := range []struct{ secret, addr, user, db string }{
		{`{"username":"admin","password":"p@ss:w/rd","host":"db.internal","port":3306,"dbname":"shop","engine":"mysql"}`, "db.internal:3306", "admin", "shop"},
		{`{"username":"admin","password":"x","host":"db.internal","port":"3307"}`, "db.internal:3307", "admin", "orderd"},
		{`{"dsn":"app:x@tcp(10.0.0.5:3306)/orders"}`, "10.0.0.5:3306", "app", "orders"},
	} {
		sm := &fakeSecrets{value: tc.secret}
		cfg := config{DBSecretARN: arn, DBName: "orderd"}
		mc, err := cfg.dsn(context.Background(), sm)
		if err != nil {
			t.Fatalf("%s: %v", tc.secret, err)
		}
		if sm.asked != arn || mc.Addr != tc.addr || mc.User != tc.user || mc.DBName != tc.db || !mc.ParseTime || !mc.InterpolateParams {
			t.Errorf("%s: asked %q, got %s@%s/%s parseTime=%v", tc.secret, sm.asked, mc.User, mc.Addr, mc.DBName, mc.ParseTime)
		}
	}
	for _, bad := range []string{"", "user:pw@tcp(h)/db", `{"password":"x"}`} {
		if _, err := (config{DBSecretARN: arn}).dsn(context.Background(), &fakeSecrets{value: bad}); err == nil {
			t.Errorf("secret %q accepted", bad)
		}
	}
}

// TestSMTPLoginFromSecret: in AWS the email function reads its SMTP login from Secrets
// Manager (so no password sits in its environment); the other stages never ask.
func TestSMTPLoginFromSecret(t *testing.T) {
	const arn = "arn:aws:secretsmanager:eu-west-1:1:secret:smtp"
	base := map[string]string{"STAGE": "email", "MYSQL_DSN": "x", "SMTP_ADDR": "email-smtp.eu-west-1.amazonaws.com:587", "SMTP_SECRET_ARN": arn}
	cfg, err := loadConfig(env(base))
	if err != nil {
		t.Fatal(err)
	}
	sm := &fakeSecrets{value: `{"username":"AKIAEXAMPLE","password":"s3cr3t-from-secret"}`}
	st, err := cfg.stage(context.Background(), sm)
	if err != nil {
		t.Fatal(err)
	}
	if sm.asked != arn || st.Adapters.SMTP.Username != "AKIAEXAMPLE" || st.Adapters.SMTP.Password != "s3cr3t-from-secret" || st.Adapters.SMTP.Addr != base["SMTP_ADDR"] {
		t.Errorf("asked %q, SMTP config %v", sm.asked, st.Adapters.SMTP)
	}
	if st, err := cfg.stage(context.Background(), &fakeSecrets{value: `{}`}); err != nil || st.Adapters.SMTP.Username != "" {
		t.Errorf("an empty secret (a relay without login): %v, %v", st.Adapters.SMTP, err)
	}
	for _, bad := range []string{"", "not json", `{"username":"u"}`} {
		_, err := cfg.stage(context.Background(), &fakeSecrets{value: bad})
		if err == nil {
			t.Errorf("secret %q accepted", bad)
		}
	}
	base["SMTP_TLS"] = "off"
	cfg, _ = loadConfig(env(base))
	if _, err := cfg.stage(context.Background(), &fakeSecrets{value: `{"username":"u","password":"p"}`}); err == nil || !strings.Contains(err.Error(), "SMTP_PASSWORD") {
		t.Errorf("a secret login with SMTP_TLS=off: %v, want refused", err)
	}
	base["STAGE"], base["SMTP_TLS"] = "payment", ""
	cfg, _ = loadConfig(env(base))
	other := &fakeSecrets{}
	if _, err := cfg.stage(context.Background(), other); err != nil || other.asked != "" {
		t.Errorf("the payment function asked for %q (%v)", other.asked, err)
	}
}

// TestSetupWiresAStage starts the function as Lambda would (minus lambda.Start) against a
// real database, proving the wiring main uses.
func TestSetupWiresAStage(t *testing.T) {
	e := testenv.New(t)
	fn, err := setup(context.Background(), env(map[string]string{"STAGE": "inventory", "MYSQL_DSN": e.DSN}),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Close()
	resp, err := fn.Handler.Handle(context.Background(), eventsWithOneMalformedRecord())
	if err != nil || len(resp.BatchItemFailures) != 1 {
		t.Fatalf("malformed record: %v %+v", err, resp)
	}
	if n := e.Count(t, `SELECT COUNT(*) FROM dead_letters WHERE queue = 'InventoryStatusQueue'`); n != 1 {
		t.Errorf("%d dead letters recorded by the inventory function, want 1", n)
	}
}

func eventsWithOneMalformedRecord() events.SQSEvent {
	return events.SQSEvent{Records: []events.SQSMessage{{MessageId: "m1", Body: "{}", Attributes: map[string]string{"ApproximateReceiveCount": "1"}}}}
}

// TestTemplateSetsWhatTheFunctionReads checks deploy/template.yaml against loadConfig: every
// variable a function is given is one the function reads (no typo silently ignored), and every
// variable the function reads is given to every function, but for the few listed here.
func TestTemplateSetsWhatTheFunctionReads(t *testing.T) {
	notInTemplate := map[string]string{
		"MYSQL_DSN":       "local runs: in AWS the DSN comes from DB_SECRET_ARN",
		"SMTP_USERNAME":   "local runs: in AWS the login comes from SMTP_SECRET_ARN",
		"SMTP_PASSWORD":   "local runs: in AWS the login comes from SMTP_SECRET_ARN",
		"AWS_REGION":      "set by the Lambda runtime",
		"MYSQL_MAX_CONNS": "its default, 10, is the batch size",
	}
	emailOnly := []string{"SMTP_SECRET_ARN", "SMTP_TLS"}

	read := map[string]bool{}
	for _, st := range pipeline.Components() {
		valid := map[string]string{"STAGE": st, "MYSQL_DSN": "root@tcp(h)/orderd"}
		if _, err := loadConfig(func(k string) string { read[k] = true; return valid[k] }); err != nil {
			t.Fatalf("loadConfig(STAGE=%s): %v", st, err)
		}
	}
	tpl, err := goformation.ParseYAML(deploy.Template)
	if err != nil {
		t.Fatal(err)
	}
	fns := tpl.GetAllServerlessFunctionResources()
	if len(fns) != len(pipeline.Components()) {
		t.Fatalf("%d functions in the template, want one per stage", len(fns))
	}
	for id, fn := range fns {
		if fn.Environment == nil {
			t.Fatalf("%s has no environment", id)
		}
		vars := fn.Environment.Variables
		for k := range vars {
			if !read[k] {
				t.Errorf("%s: %s is set but orderd-lambda never reads it", id, k)
			}
		}
		for k := range read {
			if _, ok := vars[k]; ok || notInTemplate[k] != "" || slices.Contains(emailOnly, k) && vars["STAGE"] != pipeline.Email {
				continue
			}
			t.Errorf("%s (STAGE %q): orderd-lambda reads %s, the template does not set it", id, vars["STAGE"], k)
		}
	}
	t.Logf("the template gives each function the %d variables it reads, less %d local-only ones", len(read), len(notInTemplate))
}
