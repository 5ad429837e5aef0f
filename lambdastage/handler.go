// Package lambdastage runs the order pipeline's stages as AWS Lambda functions: it adapts an
// SQS event (a batch of up to ten queue messages, as Lambda's event source mapping delivers
// them) to the very same stage functions the service's Watermill router calls, and answers
// with a partial batch response naming only the records that failed.
package lambdastage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-lambda-go/events"

	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/router"
)

// DeadLetters records messages that can never succeed; *deadletter.Log implements it.
type DeadLetters interface {
	Record(ctx context.Context, l deadletter.Letter) error
}

// Handler feeds the records of an SQS event to one stage.
type Handler struct {
	queue string // prefixed name of the queue the function consumes, for dead letters
	run   router.StageFunc
	dead  DeadLetters
	key   []byte // the relay's signing key; nil: signatures are not required
	log   *slog.Logger
}

// NewHandler returns a handler that runs run for every record taken from queue. Records that
// can never succeed are recorded in dead (so GET /orders/{id} says what holds the order).
func NewHandler(queue string, run router.StageFunc, dead DeadLetters, log *slog.Logger) (*Handler, error) {
	if queue == "" || run == nil || dead == nil || log == nil {
		return nil, errors.New("lambdastage: NewHandler needs a queue, a stage, a dead-letter log and a logger")
	}
	return &Handler{queue: queue, run: run, dead: dead, log: log}, nil
}

// Handle is the Lambda handler. Records are handled concurrently (a batch holds at most ten;
// stages take a per-order lock where a duplicate could double a side effect). The response
// lists the records to be delivered again: transient failures, which SQS redelivers after the
// visibility timeout, and records that can never succeed, which fail on every receive until
// the queue's RedrivePolicy moves them to its dead-letter queue after maxReceiveCount
// receives. Everything not listed is deleted from the queue by Lambda. Handle itself never
// fails: an error would make Lambda retry the whole batch.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	failed := make([]bool, len(ev.Records))
	var wg sync.WaitGroup
	for i := range ev.Records {
		wg.Add(1)
		go func() {
			defer wg.Done()
			failed[i] = !h.handleRecord(ctx, ev.Records[i])
		}()
	}
	wg.Wait()
	var resp events.SQSEventResponse
	for i, f := range failed {
		if f {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: ev.Records[i].MessageId})
		}
	}
	return resp, nil
}

// handleRecord runs the stage for one record and reports whether it may be deleted.
func (h *Handler) handleRecord(ctx context.Context, m events.SQSMessage) bool {
	rec, err := h.process(ctx, m)
	if err == nil {
		return true
	}
	if !router.IsPermanent(err) {
		h.log.WarnContext(ctx, "record failed; SQS will deliver it again", "queue", h.queue, "message_id", m.MessageId, "error", err)
		return false
	}
	h.log.ErrorContext(ctx, "record can never succeed; left for the dead-letter queue", "queue", h.queue, "message_id", m.MessageId, "error", err)
	// Record the letter on the first receive only: the record fails on every receive until
	// SQS moves it, and one row per poisoned message is what the service writes too.
	if receiveCount(m) <= 1 {
		if derr := h.dead.Record(context.WithoutCancel(ctx), h.letter(m, rec, err)); derr != nil {
			h.log.ErrorContext(ctx, "could not record dead letter", "queue", h.queue, "message_id", m.MessageId, "error", derr)
		}
	}
	return false
}

// process decodes the record and runs the stage; a panic becomes a permanent error, as the
// service's Recoverer middleware makes it.
func (h *Handler) process(ctx context.Context, m events.SQSMessage) (rec eventstore.Record, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = middleware.RecoveredPanicError{V: p, Stacktrace: string(debug.Stack())}
		}
	}()
	if err := router.CheckSignature(h.key, attr(m, outbox.MetaSignature), attr(m, outbox.MetaEventID), attr(m, outbox.MetaEventType), []byte(m.Body)); err != nil {
		return rec, err
	}
	rec, err = eventstore.DecodeMessage([]byte(m.Body))
	if err != nil {
		return rec, err
	}
	return rec, h.run(ctx, rec)
}

func (h *Handler) letter(m events.SQSMessage, rec eventstore.Record, err error) deadletter.Letter {
	l := deadletter.Letter{
		Queue: h.queue, EventID: attr(m, outbox.MetaEventID), EventType: attr(m, outbox.MetaEventType),
		Reason: err.Error(), DeadAt: time.Now().UTC(),
	}
	if rec.StreamID > 0 {
		l.EventID, l.EventType = rec.EventID(), rec.Type
		if !errors.Is(err, domain.ErrNotTrigger) { // a stale or forged message holds up no order
			l.OrderID, l.Version = rec.StreamID, rec.Version
		}
	}
	if l.EventID == "" {
		l.EventID = truncate("sqs:"+m.MessageId, 40) // the column is NOT NULL, VARCHAR(40)
	}
	return l
}

func attr(m events.SQSMessage, key string) string {
	if a, ok := m.MessageAttributes[key]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// receiveCount is SQS's ApproximateReceiveCount of the record; 0 when absent.
func receiveCount(m events.SQSMessage) int {
	n, _ := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
	return n
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// errUnknownStage is returned for a STAGE that names no stage of the pipeline.
var errUnknownStage = errors.New("unknown stage")

func unknownStage(p *pipeline.Pipeline, s string) error {
	return fmt.Errorf("%w %q: want one of %s", errUnknownStage, s, strings.Join(p.Components(), ", "))
}
