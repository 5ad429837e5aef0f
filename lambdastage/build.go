package lambdastage

import (
	"database/sql"
	"errors"
	"log/slog"

	"orderd/app"
	"orderd/deadletter"
	"orderd/pipeline"
	"orderd/queues"
)

// Config says which stage a function runs and what that stage needs.
type Config struct {
	Stage string // a stage's component name in the pipeline (payment, inventory, email)
	// Pipeline is the stage table; nil is pipeline.Default().
	Pipeline *pipeline.Pipeline
	// Queues names the queues: the function's own (for dead letters) and, through
	// router.Route, the queue each appended event's outbox row is meant for. The function
	// never sends to SQS itself; the relay does.
	Queues queues.Config
	// Adapters are the payment gateway and the mail server (the email stage's).
	Adapters app.Adapters
	// SigningKey, if set, makes the function refuse records the relay did not sign with it.
	SigningKey []byte
}

// Function is one stage's Lambda handler with what it holds open.
type Function struct {
	Handler *Handler
	app     *app.App
}

// Close releases the function's SMTP connections; the database pool belongs to the caller.
func (f *Function) Close() error { return f.app.Close() }

// Build assembles the stage named by cfg.Stage over db through app.Build, as `orderd serve`
// assembles it: an event store whose appends write the orders projection and the outbox row
// in the same transaction, the catalogue, the configured gateway and mailer. Lambda's SQS
// event source takes the place of the Watermill router.
func Build(db *sql.DB, cfg Config, log *slog.Logger) (*Function, error) {
	if db == nil || log == nil {
		return nil, errors.New("lambdastage: Build needs a db and a logger")
	}
	p := cfg.Pipeline
	if p == nil {
		p = pipeline.Default()
	}
	stage, ok := p.Lookup(cfg.Stage)
	if !ok {
		return nil, unknownStage(p, cfg.Stage)
	}
	a, err := app.Build(app.Config{DB: db, Log: log, Pipeline: p, Queues: cfg.Queues, Components: []string{stage.Component},
		Adapters: cfg.Adapters, SigningKey: cfg.SigningKey})
	if err != nil {
		return nil, err
	}
	dead, err := deadletter.NewLog(db)
	if err != nil {
		a.Close()
		return nil, err
	}
	h, err := NewHandler(cfg.Queues.Name(stage.Queue), a.Funcs[stage.Component], dead, log.With("stage", cfg.Stage))
	if err != nil {
		a.Close()
		return nil, err
	}
	h.key = cfg.SigningKey
	return &Function{Handler: h, app: a}, nil
}
