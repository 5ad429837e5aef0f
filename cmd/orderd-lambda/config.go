package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-sql-driver/mysql"

	"orderd/app"
	"orderd/eventstore"
	"orderd/lambdastage"
	"orderd/mail"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
)

// config is the function's configuration, read from the environment only.
type config struct {
	Stage             string
	MySQLDSN          string // MYSQL_DSN: local runs and tests
	DBSecretARN       string // DB_SECRET_ARN: in AWS, the DSN's parts come from Secrets Manager
	DBName            string // DB_NAME: the database, when the secret names none
	Region            string
	QueuePrefix       string
	SMTPAddr          string
	MailFrom          string
	PaymentGateway    string // PAYMENT_GATEWAY, as for orderd
	DeclineAboveCents int64
	MySQLMaxConns     int
	// The SMTP login, as orderd serve reads it: SMTP_USERNAME and SMTP_PASSWORD for local
	// runs and tests; in AWS the secret SMTP_SECRET_ARN names ({"username","password"}),
	// so that no password sits in the function's environment. SMTP_TLS as for orderd.
	SMTPUsername, SMTPPassword string
	SMTPSecretARN              string
	SMTPTLS                    mail.TLSMode
	SigningKey                 []byte // MESSAGE_SIGNING_KEY: records the relay did not sign with it are refused
}

func loadConfig(getenv func(string) string) (config, error) {
	get := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	c := config{
		Stage:       getenv("STAGE"),
		MySQLDSN:    getenv("MYSQL_DSN"),
		DBSecretARN: getenv("DB_SECRET_ARN"),
		DBName:      get("DB_NAME", "orderd"),
		Region:      get("AWS_REGION", "us-east-1"),
		QueuePrefix: getenv("QUEUE_PREFIX"),
		SMTPAddr:    get("SMTP_ADDR", "127.0.0.1:1025"),
		MailFrom:    get("MAIL_FROM", "orders@shop.localhost"),

		PaymentGateway: get("PAYMENT_GATEWAY", app.GatewaySimulated),

		SMTPUsername:  getenv("SMTP_USERNAME"),
		SMTPPassword:  getenv("SMTP_PASSWORD"),
		SMTPSecretARN: getenv("SMTP_SECRET_ARN"),
		SMTPTLS:       mail.TLSMode(getenv("SMTP_TLS")),
	}
	var err error
	if _, ok := pipeline.Lookup(c.Stage); !ok {
		return c, fmt.Errorf("STAGE: want one of %s, got %q", strings.Join(pipeline.Components(), ", "), c.Stage)
	}
	if c.MySQLDSN == "" && c.DBSecretARN == "" {
		return c, errors.New("MYSQL_DSN or DB_SECRET_ARN: one must be set")
	}
	if c.DeclineAboveCents, err = strconv.ParseInt(get("PAYMENT_DECLINE_ABOVE_CENTS", "100000"), 10, 64); err != nil || c.DeclineAboveCents < 0 {
		return c, fmt.Errorf("PAYMENT_DECLINE_ABOVE_CENTS: must be a non-negative whole number of cents, got %q", getenv("PAYMENT_DECLINE_ABOVE_CENTS"))
	}
	// One connection per record of a batch (at most ten), each held for one transaction.
	if c.MySQLMaxConns, err = strconv.Atoi(get("MYSQL_MAX_CONNS", "10")); err != nil || c.MySQLMaxConns < 1 {
		return c, fmt.Errorf("MYSQL_MAX_CONNS: want a positive integer, got %q", getenv("MYSQL_MAX_CONNS"))
	}
	if c.SMTPSecretARN != "" && (c.SMTPUsername != "" || c.SMTPPassword != "") {
		return c, errors.New("SMTP_SECRET_ARN: the login comes from the secret or from SMTP_USERNAME and SMTP_PASSWORD, not both")
	}
	if err := c.adapters(c.SMTPUsername, c.SMTPPassword).Validate(); err != nil {
		return c, err
	}
	if c.SigningKey, err = outbox.SigningKey(getenv("MESSAGE_SIGNING_KEY")); err != nil {
		return c, fmt.Errorf("MESSAGE_SIGNING_KEY: %w", err)
	}
	return c, nil
}

// adapters returns the payment gateway and mail server settings, with the given SMTP login.
func (c config) adapters(username, password string) app.Adapters {
	return app.Adapters{PaymentGateway: c.PaymentGateway, DeclineAboveCents: c.DeclineAboveCents, MailFrom: c.MailFrom,
		SMTP: mail.SMTPConfig{Addr: c.SMTPAddr, Username: username, Password: password, TLS: c.SMTPTLS}}
}

// stage returns the stage's configuration, with the SMTP login read from SMTP_SECRET_ARN
// when it names a secret (only the email stage sends mail, so only it reads the secret).
func (c config) stage(ctx context.Context, sm secretGetter) (lambdastage.Config, error) {
	username, password := c.SMTPUsername, c.SMTPPassword
	if c.SMTPSecretARN != "" && c.Stage == pipeline.Email {
		out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(c.SMTPSecretARN)})
		if err != nil {
			return lambdastage.Config{}, fmt.Errorf("read SMTP secret %s: %w", c.SMTPSecretARN, err)
		}
		var login struct{ Username, Password string }
		if err := json.Unmarshal([]byte(aws.ToString(out.SecretString)), &login); err != nil {
			return lambdastage.Config{}, fmt.Errorf("SMTP secret %s: not JSON: want {\"username\",\"password\"} ({} for a relay that needs no login)", c.SMTPSecretARN)
		}
		username, password = login.Username, login.Password
		if err := c.adapters(username, password).SMTP.Validate(); err != nil {
			return lambdastage.Config{}, fmt.Errorf("SMTP secret %s: %w", c.SMTPSecretARN, err)
		}
	}
	return lambdastage.Config{
		Stage: c.Stage, Queues: queues.Config{Region: c.Region, Prefix: c.QueuePrefix},
		Adapters: c.adapters(username, password), SigningKey: c.SigningKey,
	}, nil
}

// needsSecrets reports whether setup must ask Secrets Manager for anything.
func (c config) needsSecrets() bool {
	return c.MySQLDSN == "" || (c.SMTPSecretARN != "" && c.Stage == pipeline.Email)
}

// secretGetter is the one Secrets Manager call the function makes.
type secretGetter interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// dsn returns the MySQL configuration: MYSQL_DSN when set, else the secret DB_SECRET_ARN
// names, with the driver options every pool uses (eventstore.WithDriverOptions).
func (c config) dsn(ctx context.Context, sm secretGetter) (*mysql.Config, error) {
	if c.MySQLDSN != "" {
		mc, err := mysql.ParseDSN(c.MySQLDSN)
		if err != nil {
			return nil, fmt.Errorf("MYSQL_DSN: %w", err)
		}
		return eventstore.WithDriverOptions(mc), nil
	}
	out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(c.DBSecretARN)})
	if err != nil {
		return nil, fmt.Errorf("read database secret %s: %w", c.DBSecretARN, err)
	}
	mc, err := parseSecret(aws.ToString(out.SecretString), c.DBName)
	if err != nil {
		return nil, fmt.Errorf("database secret %s: %w", c.DBSecretARN, err)
	}
	return eventstore.WithDriverOptions(mc), nil
}

// dbSecret is the JSON shape of an RDS database secret (what RDS writes for a managed master
// password, and what the console's "credentials for an Amazon RDS database" stores), or a
// secret holding a whole DSN under "dsn".
type dbSecret struct {
	DSN      string          `json:"dsn"`
	Username string          `json:"username"`
	Password string          `json:"password"`
	Host     string          `json:"host"`
	Port     json.RawMessage `json:"port"` // RDS writes a number; people write strings
	DBName   string          `json:"dbname"`
}

func parseSecret(s, defaultDB string) (*mysql.Config, error) {
	var sec dbSecret
	if err := json.Unmarshal([]byte(s), &sec); err != nil {
		return nil, errors.New("not JSON: want {\"username\",\"password\",\"host\",\"port\",\"dbname\"} or {\"dsn\"}")
	}
	if sec.DSN != "" {
		mc, err := mysql.ParseDSN(sec.DSN)
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		return mc, nil
	}
	if sec.Username == "" || sec.Host == "" {
		return nil, errors.New("names no username or host")
	}
	port := "3306"
	if len(sec.Port) > 0 {
		var n int
		var str string
		switch {
		case json.Unmarshal(sec.Port, &n) == nil:
			port = strconv.Itoa(n)
		case json.Unmarshal(sec.Port, &str) == nil && str != "":
			port = str
		}
	}
	mc := mysql.NewConfig()
	mc.User, mc.Passwd, mc.Net, mc.Addr = sec.Username, sec.Password, "tcp", net.JoinHostPort(sec.Host, port)
	mc.DBName = sec.DBName
	if mc.DBName == "" {
		mc.DBName = defaultDB
	}
	return mc, nil
}
