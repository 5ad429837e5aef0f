// Command orderd-lambda runs one stage of the order pipeline (payment, inventory or email,
// chosen by env STAGE) as an AWS Lambda function fed by its SQS queue. It runs the same stage
// code as `orderd serve`; the adapter is package lambdastage, this only wires it. Build for
// the provided.al2023 runtime:
//
//	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -o bootstrap ./cmd/orderd-lambda
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-sql-driver/mysql"

	"orderd/lambdastage"
	"orderd/queues"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	fn, err := setup(context.Background(), os.Getenv, log)
	if err != nil {
		// An init failure: Lambda reports it and retries the init on the next invocation.
		log.Error("orderd-lambda: start", "error", err)
		os.Exit(1)
	}
	lambda.Start(fn.Handler.Handle)
}

// setup builds the function once per execution environment; the pool and SMTP connections
// are reused by every invocation it serves.
func setup(ctx context.Context, getenv func(string) string, log *slog.Logger) (*lambdastage.Function, error) {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return nil, err
	}
	var sm secretGetter
	if cfg.needsSecrets() {
		awsCfg, err := queues.AWSConfig(ctx, queues.Config{Region: cfg.Region})
		if err != nil {
			return nil, err
		}
		sm = secretsmanager.NewFromConfig(awsCfg)
	}
	mc, err := cfg.dsn(ctx, sm)
	if err != nil {
		return nil, err
	}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("MySQL config: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(cfg.MySQLMaxConns)
	db.SetMaxIdleConns(cfg.MySQLMaxConns)
	// A frozen execution environment keeps its sockets; the server may drop them meanwhile.
	db.SetConnMaxIdleTime(time.Minute)
	stage, err := cfg.stage(ctx, sm)
	if err != nil {
		db.Close()
		return nil, err
	}
	fn, err := lambdastage.Build(db, stage, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	return fn, nil
}
