package eventstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
)

func TestLogSchemaRefusesAnotherTopic(t *testing.T) {
	msg, err := eventstore.NewMessage(eventstore.Record{StreamID: 1, Version: 1, Type: domain.TypeOrderPlaced, SchemaVersion: 2,
		Event: domain.OrderPlaced{CustomerName: "A"}, OccurredAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (eventstore.LogSchema{}).InsertQuery("orders", message.Messages{msg}); err == nil {
		t.Error("LogSchema inserted into topic orders; the log is topic events only")
	}
	delete(msg.Metadata, eventstore.MetaVersion)
	if _, err := (eventstore.LogSchema{}).InsertQuery(eventstore.Topic, message.Messages{msg}); err == nil {
		t.Error("LogSchema inserted a message without a version")
	}
}

// The log is a watermill-sql topic like any other: what the store appended through the
// Publisher, a watermill-sql Subscriber with the default MySQL offsets reads back as the same
// messages, and they decode to the same records.
func TestLogTopicReadsBackWhatWasAppended(t *testing.T) {
	env := testenv.New(t)
	s, err := eventstore.New(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	md := eventstore.Metadata{CorrelationID: "corr-1", CausationID: "req-1", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	id, err := s.Create(ctx, eventstore.CreateRequest{Metadata: md}, []domain.Event{domain.OrderPlaced{CustomerName: "Ada",
		CustomerEmail: "ada@example.com", Items: []domain.Item{{SKU: "SKU-MUG", Quantity: 2, UnitPriceCents: 899}}, TotalCents: 1798}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(ctx, id, eventstore.Metadata{CorrelationID: "corr-1", CausationID: eventstore.EventID(id, 1)}, func(*domain.Order) ([]domain.Event, error) {
		return []domain.Event{domain.PaymentCompleted{PaymentID: "pay-1", AmountCents: 1798}, domain.InventoryReserved{}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.Load(ctx, id)
	if err != nil || len(recs) != 3 {
		t.Fatalf("load: %d records, %v", len(recs), err)
	}

	sub, err := wsql.NewSubscriber(env.DB, wsql.SubscriberConfig{ConsumerGroup: "test", PollInterval: 10 * time.Millisecond,
		SchemaAdapter: eventstore.LogSchema{}, OffsetsAdapter: wsql.DefaultMySQLOffsetsAdapter{}, InitializeSchema: true},
		watermill.NewSlogLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	subCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msgs, err := sub.Subscribe(subCtx, eventstore.Topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		var msg *message.Message
		select {
		case msg = <-msgs:
		case <-subCtx.Done():
			t.Fatalf("no message for event %s", rec.EventID())
		}
		msg.Ack()
		want, err := eventstore.NewMessage(rec)
		if err != nil {
			t.Fatal(err)
		}
		if msg.UUID != want.UUID || string(msg.Payload) != string(want.Payload) || !reflect.DeepEqual(msg.Metadata, want.Metadata) {
			t.Errorf("read message %s %s %v\nwant %s %s %v", msg.UUID, msg.Payload, msg.Metadata, want.UUID, want.Payload, want.Metadata)
		}
		got, err := eventstore.RecordFromMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", rec) {
			t.Errorf("decoded %+v\nwant    %+v", got, rec)
		}
	}
}

// BenchmarkAppendStatement is the cost of the log's insert on MariaDB, through watermill-sql's
// Publisher and directly, for a group of n events: begin, insert, roll back.
//
//	TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/' go test -run '^$' -bench AppendStatement -count 6 ./eventstore/
func BenchmarkAppendStatement(b *testing.B) {
	env := testenv.New(b)
	for _, n := range []int{1, 16} {
		recs := make([]eventstore.Record, n)
		for i := range recs {
			recs[i] = eventstore.Record{StreamID: 1, Version: i + 1, Type: domain.TypePaymentFailed, SchemaVersion: 1,
				Event: domain.PaymentFailed{Reason: "declined"}, Metadata: eventstore.Metadata{CorrelationID: "corr-1", CausationID: "1-1"}}
		}
		for _, path := range []string{"direct", "publisher"} {
			b.Run(fmt.Sprintf("%s/events=%d", path, n), func(b *testing.B) {
				ctx := context.Background()
				for b.Loop() {
					tx, err := env.DB.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := eventstore.AppendStatement(ctx, tx, recs, path == "direct"); err != nil {
						b.Fatal(err)
					}
					tx.Rollback() //nolint:errcheck // the benchmark keeps nothing
				}
			})
		}
	}
}

// BenchmarkInsertArgs is the CPU the message path adds: building the insert's arguments from
// messages through LogSchema against building them from the records.
func BenchmarkInsertArgs(b *testing.B) {
	recs := make([]eventstore.Record, 16)
	payloads := make([][]byte, len(recs))
	for i := range recs {
		recs[i] = eventstore.Record{StreamID: 1, Version: i + 1, Type: domain.TypePaymentFailed, SchemaVersion: 1,
			Event: domain.PaymentFailed{Reason: "declined"}, Metadata: eventstore.Metadata{CorrelationID: "corr-1", CausationID: "1-1"},
			OccurredAt: time.Now().UTC()}
		payloads[i] = []byte(`{"reason":"declined"}`)
	}
	for _, path := range []string{"direct", "publisher"} {
		b.Run(path+"/events=16", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := eventstore.InsertQueryArgs(recs, payloads, path == "direct"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
