// Package router routes events between the stages: which queue receives which event
// (Route), and the Watermill router whose handlers feed each queue's messages to its stage.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/metrics"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
	"orderd/tracing"
)

// Route returns the outbox route of the order flow, from the pipeline q's queues belong to:
// each event goes to the queue of the stage it triggers. An event that triggers no stage
// (EmailSent, EmailFailed) ends the path and goes nowhere.
func Route(q queues.Config) outbox.Route {
	byType := map[string]string{}
	for _, st := range q.Stages().Stages() {
		for _, t := range st.Triggers {
			byType[t] = q.Name(st.Queue)
		}
	}
	return func(t string) string { return byType[t] }
}

// StageFunc is a stage as the router calls it.
type StageFunc = pipeline.Func

// Stage is one stage the router feeds.
type Stage struct {
	// Name is the Watermill handler's name; it must never change once shipped, as handler
	// names identify consumers (in metrics, in logs).
	Name  string
	Queue string // unprefixed queue name
	Run   StageFunc
}

// Config tunes the router.
type Config struct {
	Queues queues.Config
	// HandlerTimeout bounds one attempt; it must be well under the visibility timeout.
	HandlerTimeout time.Duration
	// Retries is how often a failing message is retried in process before it is nacked
	// (and comes back after the visibility timeout).
	Retries int
	// SigningKey, if set, makes every stage refuse a message the relay did not sign with it
	// (see CheckSignature).
	SigningKey []byte
}

// New returns a Watermill router that feeds each stage from its queue. Messages that can
// never succeed (malformed, unknown order, unexpected event, a panic) are handed to dlqPub
// for the queue's dead-letter queue, with the reason in the metadata; transient failures are
// retried briefly, then nacked so SQS redelivers them, and after MaxReceiveCount receives
// SQS's redrive policy moves them to the same dead-letter queue.
func New(cfg Config, sub message.Subscriber, dlqPub message.Publisher, m *metrics.Metrics, log *slog.Logger, stages ...Stage) (*message.Router, error) {
	if sub == nil || dlqPub == nil || m == nil || log == nil {
		return nil, errors.New("router: New needs a subscriber, a publisher, metrics and a logger")
	}
	wlog := watermill.NewSlogLogger(log)
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	for _, st := range stages {
		if st.Run == nil {
			return nil, fmt.Errorf("router: stage %s has no function", st.Name)
		}
		queue := cfg.Queues.Name(st.Queue)
		poison, err := middleware.PoisonQueueWithFilter(dlqPub, queue+queues.DLQSuffix, func(err error) bool {
			if !IsPermanent(err) {
				return false
			}
			m.StageMessages.WithLabelValues(st.Queue, "dead_lettered").Inc()
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		retry := middleware.Retry{
			MaxRetries:      cfg.Retries,
			InitialInterval: 50 * time.Millisecond,
			MaxInterval:     time.Second,
			Multiplier:      2,
			ShouldRetry:     func(p middleware.RetryParams) bool { return !IsPermanent(p.Err) },
			OnRetryHook:     func(int, time.Duration) { m.StageRetries.WithLabelValues(st.Queue).Inc() },
			Logger:          wlog,
		}
		// One handler per queue: the router runs each message in a goroutine of its own,
		// and the subscriber hands out a batch without waiting for acks (bounded by its
		// in-flight limit), so one subscription is as concurrent as the subscriber allows.
		h := r.AddNoPublisherHandler(st.Name, queue, sub, handle(st, cfg.SigningKey, cfg.HandlerTimeout, m, log))
		// Outermost first: dead-letter what retries cannot fix; retry what they can; turn
		// panics into errors. Each attempt is bounded by handle itself (HandlerTimeout), not
		// by middleware.Timeout, whose deadline sits on the message's context, which shutdown
		// cancels.
		h.AddMiddleware(poison, retry.Middleware, middleware.Recoverer)
	}
	return r, nil
}

// handle adapts a stage to a Watermill handler: check the message's signature (with a key),
// decode it, run the stage, and account for the attempt.
//
// The stage runs under the attempt's own deadline (timeout), not under the message's
// context: the subscriber ends that context as soon as shutdown begins, and a step cut
// there (an email accepted by the server whose EmailSent is never appended) would be done
// again by another instance. Shutdown instead lets a started attempt finish (the router and
// the subscriber wait up to their close timeouts), which is what "shutdown drains" promises.
func handle(st Stage, key []byte, timeout time.Duration, m *metrics.Metrics, log *slog.Logger) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		start := time.Now()
		base, cancel := context.WithoutCancel(msg.Context()), context.CancelFunc(func() {})
		if timeout > 0 {
			base, cancel = context.WithTimeout(base, timeout)
		}
		defer cancel()
		// The stage's span continues the trace of the append that produced the message.
		ctx, span := tracing.Start(tracing.FromParent(base, msg.Metadata.Get(outbox.MetaTraceParent)), "stage "+st.Queue, trace.SpanKindConsumer)
		defer span.End()
		var rec eventstore.Record
		err := CheckSignature(key, msg.Metadata.Get(outbox.MetaSignature), msg.Metadata.Get(outbox.MetaEventID), msg.Metadata.Get(outbox.MetaEventType), msg.Payload)
		if err == nil {
			rec, err = eventstore.DecodeMessage(msg.Payload)
		}
		if err == nil {
			span.SetAttributes(attribute.Int64("order.id", int64(rec.StreamID)), attribute.String("event.id", rec.EventID()), attribute.String("event.type", rec.Type))
			err = st.Run(ctx, rec)
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		m.StageDuration.WithLabelValues(st.Queue).Observe(time.Since(start).Seconds())
		if err == nil {
			m.StageMessages.WithLabelValues(st.Queue, "handled").Inc()
			return nil
		}
		if !IsPermanent(err) {
			m.StageMessages.WithLabelValues(st.Queue, "failed").Inc()
		}
		if errors.Is(err, domain.ErrNotTrigger) {
			// Dead-lettered, but not what holds its order up: see deadletter.MetaDetached.
			msg.Metadata.Set(deadletter.MetaDetached, "true")
		}
		log.WarnContext(ctx, "stage failed", "stage", st.Queue, "order_id", rec.StreamID, "event_id", msg.UUID,
			"correlation_id", middleware.MessageCorrelationID(msg), "permanent", IsPermanent(err), "error", err)
		return err
	}
}

// CheckSignature returns nil if key is nil (signatures are not required) or sig is the
// relay's signature of the message under key; otherwise an error that dead-letters the
// message as one that is not its order's trigger (domain.ErrNotTrigger).
func CheckSignature(key []byte, sig, eventID, eventType string, body []byte) error {
	if key == nil || outbox.VerifySignature(key, sig, eventID, eventType, body) {
		return nil
	}
	what := "does not match the message"
	if sig == "" {
		what = "is missing"
	}
	return fmt.Errorf("%w: %w", domain.ErrNotTrigger, domain.Invalid(outbox.MetaSignature, "%s: the relay did not send this message", what))
}

// IsPermanent reports whether err is one that no retry can fix, so the message must be
// dead-lettered: bad input (a malformed message, an event the stage does not expect), an
// order that does not exist, or a panic (a bug).
func IsPermanent(err error) bool {
	var p middleware.RecoveredPanicError
	switch {
	case errors.As(err, &p):
		return true
	case errors.Is(err, context.DeadlineExceeded):
		return false
	}
	k := domain.ErrorKind(err)
	return k == domain.KindInvalid || k == domain.KindNotFound
}
