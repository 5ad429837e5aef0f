// Package feed is the event log's change feed for consumers that run apart from the appends:
// a watermill-sql topic per consumer, kept in the event_feed table. Writer, an event-store
// hook, publishes every appended event a consumer wants through watermill-sql's Publisher in
// the append's own transaction (one multi-row INSERT per topic and group); a Consumer reads it
// with watermill-sql's Subscriber and deletes each row in the transaction that applied it.
//
// The rows present are the work left to do, not "positions after the last one read", so an
// append that commits late with a lower position is still handled when it commits: gap-safe
// by construction, with no offset to skip past it. A consumer locks only the rows it took
// (READ COMMITTED, FOR UPDATE SKIP LOCKED: no gap locks), so appends never wait for it, and
// several consumers of one topic share its rows.
package feed

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
	"orderd/eventstore"
)

// Topic is one consumer's feed.
type Topic struct {
	// Name is the topic's name: the value of event_feed.topic. It must never change once
	// shipped: rows written under the old name would wait for a consumer forever.
	Name string
	// Skip lists event types the consumer has no use for; they are not written.
	Skip []string
}

// Writer is the eventstore.Hook that fills the feed's topics.
type Writer struct{ topics []Topic }

// NewWriter returns a writer for topics.
func NewWriter(topics ...Topic) (*Writer, error) {
	for _, t := range topics {
		if t.Name == "" {
			return nil, errors.New("feed: a topic without a name")
		}
	}
	return &Writer{topics: topics}, nil
}

// AfterAppend implements eventstore.Hook.
func (w *Writer) AfterAppend(ctx context.Context, tx *sql.Tx, changes []eventstore.Change) error {
	var pub *wsql.Publisher
	var recs []eventstore.Record
	var all []*message.Message // all[i] is recs[i] as a message, made once for every topic
	for _, c := range changes {
		recs = append(recs, c.Appended...)
	}
	for _, t := range w.topics {
		var msgs []*message.Message
		for i, rec := range recs {
			if slices.Contains(t.Skip, rec.Type) {
				continue
			}
			if all == nil {
				all = make([]*message.Message, len(recs))
			}
			if all[i] == nil {
				msg, err := eventstore.NewMessage(rec)
				if err != nil {
					return fmt.Errorf("feed %s: %w", t.Name, err)
				}
				all[i] = msg
			}
			msgs = append(msgs, all[i])
		}
		if len(msgs) == 0 {
			continue
		}
		if pub == nil {
			var err error
			if pub, err = wsql.NewPublisher(eventstore.NewExecutor(ctx, tx), wsql.PublisherConfig{SchemaAdapter: schema{}}, nil); err != nil {
				return fmt.Errorf("feed: %w", err)
			}
		}
		if err := pub.Publish(t.Name, msgs...); err != nil {
			return fmt.Errorf("feed %s: %w", t.Name, err)
		}
	}
	return nil
}

// schema is the watermill-sql SchemaAdapter of the feed: every topic is a set of rows of
// event_feed, which the migrations create.
type schema struct{ batch int }

var _ wsql.SchemaAdapter = schema{}

// InsertQuery implements wsql.SchemaAdapter: the messages' events, numbered by the log.
func (schema) InsertQuery(topic string, msgs message.Messages) (wsql.Query, error) {
	args := make([]any, 0, 9*len(msgs))
	for _, msg := range msgs {
		pos, err := strconv.ParseInt(msg.Metadata[eventstore.MetaPosition], 10, 64)
		if err != nil || pos <= 0 {
			return wsql.Query{}, fmt.Errorf("message %s has no log position", msg.UUID)
		}
		cols, err := eventstore.MessageColumns(msg)
		if err != nil {
			return wsql.Query{}, err
		}
		args = append(append(args, topic, pos), cols...)
	}
	return wsql.Query{Query: `INSERT INTO event_feed (topic, position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at) VALUES ` +
		eventstore.PlaceholderRows(9, len(msgs)), Args: args}, nil
}

// SelectQuery implements wsql.SchemaAdapter: whatever rows of the topic are there and not
// taken by another consumer, oldest first. Rows an uncommitted append is writing are locked
// by it and skipped until it commits; under READ COMMITTED the read takes no gap locks, so
// appends never wait for it.
func (s schema) SelectQuery(topic, _ string, _ wsql.OffsetsAdapter) wsql.Query {
	return wsql.Query{Query: `SELECT ` + eventstore.MessageColumnList + ` FROM event_feed WHERE topic = ? ORDER BY position LIMIT ` +
		strconv.Itoa(s.batch) + ` FOR UPDATE SKIP LOCKED`, Args: []any{topic}}
}

// UnmarshalMessage implements wsql.SchemaAdapter.
func (schema) UnmarshalMessage(row wsql.Scanner) (wsql.Row, error) {
	return eventstore.ScanMessage(row)
}

// SchemaInitializingQueries implements wsql.SchemaAdapter: none, the migrations own the schema.
func (schema) SchemaInitializingQueries(string) []wsql.Query { return nil }

// SubscribeIsolationLevel implements wsql.SchemaAdapter. READ COMMITTED is safe here (it is
// not for an offset, which a late commit below it would be lost under) because nothing is
// skipped for good: a row is consumed only by deleting it.
func (schema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelReadCommitted }

// offsets is the watermill-sql OffsetsAdapter of the feed, which keeps no offsets: a row is
// acknowledged by the DELETE the consumer runs with the handler's writes (consumer.go).
type offsets struct{}

var _ wsql.OffsetsAdapter = offsets{}

// AckMessageQuery implements wsql.OffsetsAdapter. The subscriber runs it after a batch, also
// when a deadlock has already rolled the batch's transaction back and the connection runs
// each statement on its own: then anything but a no-op would act outside a transaction (a
// DELETE there would drop rows whose handling was undone).
func (offsets) AckMessageQuery(string, wsql.Row, string) wsql.Query { return wsql.Query{Query: `DO 0`} }

// ConsumedMessageQuery implements wsql.OffsetsAdapter: none.
func (offsets) ConsumedMessageQuery(string, wsql.Row, string, []byte) wsql.Query { return wsql.Query{} }

// NextOffsetQuery implements wsql.OffsetsAdapter; the feed's SelectQuery does not use it.
func (offsets) NextOffsetQuery(string, string) wsql.Query { return wsql.Query{Query: `SELECT 0`} }

// SchemaInitializingQueries implements wsql.OffsetsAdapter: none.
func (offsets) SchemaInitializingQueries(string) []wsql.Query { return nil }

// BeforeSubscribingQueries implements wsql.OffsetsAdapter: none.
func (offsets) BeforeSubscribingQueries(string, string) []wsql.Query { return nil }

// DropCovered deletes, in tx, the rows of topic at or below position that no consumer holds,
// and returns how many it deleted: a rebuild of the topic's projection from a snapshot of
// the log up to position has applied their events. The rows a consumer holds are left to it
// (its handler must find them applied already); waiting for them could deadlock with a
// consumer that waits for tx.
func DropCovered(ctx context.Context, tx *sql.Tx, topic string, position int64) (int, error) {
	const chunk = 1000
	deleted := 0
	for after := int64(0); ; {
		rows, err := tx.QueryContext(ctx, `SELECT position FROM event_feed WHERE topic = ? AND position > ? AND position <= ?
			ORDER BY position LIMIT `+strconv.Itoa(chunk)+` FOR UPDATE SKIP LOCKED`, topic, after, position)
		if err != nil {
			return deleted, fmt.Errorf("feed %s: drop covered rows: %w", topic, err)
		}
		var args []any
		for rows.Next() {
			if err := rows.Scan(&after); err != nil {
				rows.Close()
				return deleted, fmt.Errorf("feed %s: drop covered rows: %w", topic, err)
			}
			args = append(args, after)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return deleted, fmt.Errorf("feed %s: drop covered rows: %w", topic, err)
		}
		if len(args) == 0 {
			return deleted, nil
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM event_feed WHERE topic = ? AND position IN (`+
			eventstore.Placeholders(len(args))+`)`, append([]any{topic}, args...)...)
		if err != nil {
			return deleted, fmt.Errorf("feed %s: drop covered rows: %w", topic, err)
		}
		n, _ := res.RowsAffected()
		deleted += int(n)
		if len(args) < chunk {
			return deleted, nil
		}
	}
}

// PendingStreams returns the streams with rows of topic left to consume, as q sees them (a
// snapshot's transaction, for a verification).
func PendingStreams(ctx context.Context, q eventstore.Queryer, topic string) (map[domain.OrderID]bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT stream_id FROM event_feed WHERE topic = ?`, topic)
	if err != nil {
		return nil, fmt.Errorf("feed %s: pending streams: %w", topic, err)
	}
	defer rows.Close()
	out := map[domain.OrderID]bool{}
	for rows.Next() {
		var id domain.OrderID
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("feed %s: pending streams: %w", topic, err)
		}
		out[id] = true
	}
	return out, rows.Err()
}
