package lambdastage

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"orderd/deadletter"
	"orderd/eventstore"
	"orderd/feed"
	"orderd/mail"
	"orderd/ordering"
	"orderd/outbox"
	"orderd/payment"
	"orderd/pipeline"
	"orderd/projections"
	"orderd/projections/customers"
	"orderd/queues"
	"orderd/router"
)

// Config says which stage a function runs and what that stage needs.
type Config struct {
	Stage string // a stage's component name in the pipeline table (payment, inventory, email)
	// Queues names the queues: the function's own (for dead letters) and, through
	// router.Route, the queue each appended event's outbox row is meant for. The function
	// never sends to SQS itself; the relay does.
	Queues            queues.Config
	SMTP              mail.SMTPConfig // the mail server, credentials and TLS (the email stage's)
	MailFrom          string
	DeclineAboveCents int64
	// SigningKey, if set, makes the function refuse records the relay did not sign with it.
	SigningKey []byte
}

// Function is one stage's Lambda handler with what it holds open.
type Function struct {
	Handler *Handler
	mailer  *mail.SMTPSender
}

// Close releases the function's SMTP connections; the database pool belongs to the caller.
func (f *Function) Close() error { return f.mailer.Close() }

// Build wires the stage named by cfg.Stage over db exactly as `orderd serve` wires it: an
// event store whose appends write the orders projection and the outbox row in the same
// transaction, the catalogue, the simulated gateway and the SMTP sender.
func Build(db *sql.DB, cfg Config, log *slog.Logger) (*Function, error) {
	if db == nil || log == nil {
		return nil, errors.New("lambdastage: Build needs a db and a logger")
	}
	stage, ok := pipeline.Lookup(cfg.Stage)
	if !ok {
		return nil, unknownStage(cfg.Stage)
	}
	writer, err := outbox.NewWriter(router.Route(cfg.Queues))
	if err != nil {
		return nil, err
	}
	feedWriter, err := feed.NewWriter(customers.Topic)
	if err != nil {
		return nil, err
	}
	store, err := eventstore.New(db, projections.Orders{}, writer, feedWriter)
	if err != nil {
		return nil, err
	}
	catalog, err := ordering.NewCatalog(db)
	if err != nil {
		return nil, err
	}
	mailer, err := mail.NewSMTPSender(cfg.SMTP)
	if err != nil {
		return nil, fmt.Errorf("SMTP_ADDR: %w", err)
	}
	stages, err := ordering.NewStages(ordering.StagesConfig{
		Store: store, Catalog: catalog, Gateway: payment.Simulated{DeclineAboveCents: cfg.DeclineAboveCents},
		Mailer: mailer, MailFrom: cfg.MailFrom, Log: log,
	})
	if err != nil {
		mailer.Close()
		return nil, err
	}
	dead, err := deadletter.NewLog(db)
	if err != nil {
		mailer.Close()
		return nil, err
	}
	h, err := NewHandler(cfg.Queues.Name(stage.Queue), stage.Func(stages), dead, log.With("stage", cfg.Stage))
	if err != nil {
		mailer.Close()
		return nil, err
	}
	h.key = cfg.SigningKey
	return &Function{Handler: h, mailer: mailer}, nil
}
