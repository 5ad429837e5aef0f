package deadletter

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/outbox"
)

// execs plays the database for Record: it keeps each INSERT's arguments, or fails.
type execs struct {
	args [][]any
	err  error
}

func (e *execs) ExecContext(_ context.Context, _ string, args ...any) (sql.Result, error) {
	if e.err != nil {
		return nil, e.err
	}
	e.args = append(e.args, args)
	return nil, nil
}

func (e *execs) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, errors.New("not played")
}

func (e *execs) QueryRowContext(context.Context, string, ...any) *sql.Row { return nil }

// published plays the dead-letter queue's publisher.
type published struct{ topics []string }

func (p *published) Publish(topic string, msgs ...*message.Message) error {
	for range msgs {
		p.topics = append(p.topics, topic)
	}
	return nil
}

func (p *published) Close() error { return nil }

// TestPublishDecisions: what the letter of a poisoned message says, decided from the message
// alone — the order and version its body names (none for a detached message, or a body that
// cannot be read), the event its body or else its metadata names, the reason — and that a
// letter that cannot be recorded is not published (the message comes back instead).
func TestPublishDecisions(t *testing.T) {
	body, err := json.Marshal(eventstore.Record{StreamID: 7, Version: 2, Type: "PaymentCompleted",
		Event: domain.PaymentCompleted{PaymentID: "p", AmountCents: 100}})
	if err != nil {
		t.Fatal(err)
	}
	poisoned := func(body []byte, detached bool) *message.Message {
		m := message.NewMessage("uuid", body)
		m.Metadata.Set(middleware.PoisonedTopicKey, "InventoryStatusQueue")
		m.Metadata.Set(middleware.ReasonForPoisonedKey, "order 7: invalid")
		m.Metadata.Set(outbox.MetaEventID, "9-9")
		m.Metadata.Set(outbox.MetaEventType, "OrderPlaced")
		if detached {
			m.Metadata.Set(MetaDetached, "true")
		}
		return m
	}
	for _, c := range []struct {
		name           string
		msg            *message.Message
		order, version any
		event, typ     string
	}{
		{"attached", poisoned(body, false), domain.OrderID(7), 2, "7-2", "PaymentCompleted"},
		{"detached", poisoned(body, true), nil, nil, "7-2", "PaymentCompleted"},
		{"unreadable body", poisoned([]byte("{"), false), nil, nil, "9-9", "OrderPlaced"},
	} {
		db, pub := &execs{}, &published{}
		p, err := NewPublisher(&Log{db: db}, pub)
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now().UTC()
		if err := p.Publish("InventoryStatusQueue-DLQ", c.msg); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := []any{c.order, c.version, "InventoryStatusQueue", c.event, c.typ, "order 7: invalid"}
		if len(db.args) != 1 || !slices.Equal(db.args[0][:6], want) {
			t.Errorf("%s: recorded %v, want %v", c.name, db.args, want)
		} else if at, ok := db.args[0][6].(time.Time); !ok || at.Before(before) || at.After(time.Now().UTC()) || at.Location() != time.UTC {
			t.Errorf("%s: dead at %v, want the moment of Publish in UTC", c.name, db.args[0][6])
		}
		if !slices.Equal(pub.topics, []string{"InventoryStatusQueue-DLQ"}) {
			t.Errorf("%s: published to %v", c.name, pub.topics)
		}
		if _, ok := c.msg.Metadata[MetaDetached]; ok {
			t.Errorf("%s: the detached mark left the process", c.name)
		}
	}

	db, pub := &execs{err: errors.New("MySQL is down")}, &published{}
	p, err := NewPublisher(&Log{db: db}, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish("InventoryStatusQueue-DLQ", poisoned(body, false)); err == nil || len(pub.topics) != 0 {
		t.Errorf("unrecorded letter: Publish = %v, published %v; want an error and nothing published", err, pub.topics)
	}
}

// TestRedriveAndDescribeDecisions: a redriven message goes back with every attribute but the
// poisoning's, and a listed one is described by its attributes, a message without a reason
// being one SQS's redrive policy moved.
func TestRedriveAndDescribeDecisions(t *testing.T) {
	attr := func(s string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(s)}
	}
	m := types.Message{MessageId: aws.String("m1"), Body: aws.String("{}"), MessageAttributes: map[string]types.MessageAttributeValue{
		outbox.MetaEventID: attr("7-2"), outbox.MetaEventType: attr("PaymentCompleted"), outbox.MetaSignature: attr("sig"),
		middleware.ReasonForPoisonedKey: attr("invalid"), middleware.PoisonedTopicKey: attr("q"),
		middleware.PoisonedHandlerKey: attr("h"), middleware.PoisonedSubscriberKey: attr("s"),
	}}
	if got, want := slices.Sorted(maps.Keys(redriven(m))), []string{outbox.MetaEventID, outbox.MetaEventType, outbox.MetaSignature}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("redriven with %v, want %v", got, want)
	}
	if d := describe("q", m); d != (Message{Queue: "q", MessageID: "m1", EventID: "7-2", EventType: "PaymentCompleted", Reason: "invalid", Body: "{}"}) {
		t.Errorf("described as %+v", d)
	}
	delete(m.MessageAttributes, middleware.ReasonForPoisonedKey)
	if d := describe("q", m); d.Reason != "moved by SQS after too many failed receives (RedrivePolicy)" {
		t.Errorf("without a reason: %q", d.Reason)
	}
}
