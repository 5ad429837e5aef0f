package eventstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"orderd/domain"
)

// The event log is a watermill-sql topic: appends publish the group's events through
// watermill-sql's Publisher, on the group's transaction, with LogSchema mapping the topic onto
// the events table (one multi-row INSERT per group, as before). An event travels as a Watermill
// message: its payload is the event's JSON, its metadata the other columns (keys below), its
// UUID the event id. Other tables that carry events (the feed, package feed) use the same
// message shape through MessageColumns and ScanMessage.

// Topic is the event log's name as a watermill-sql topic.
const Topic = "events"

// Metadata keys of an event's message.
const (
	MetaStreamID      = "stream_id"
	MetaVersion       = "version"
	MetaEventType     = "event_type"
	MetaSchemaVersion = "schema_version"
	MetaOccurredAt    = "occurred_at" // RFC 3339, UTC, microseconds
	MetaPosition      = "position"    // absent until the log has numbered the event
	MetaCorrelationID = middleware.CorrelationIDMetadataKey
	MetaCausationID   = "causation_id"
	MetaTraceParent   = "traceparent"
)

// NewMessage returns r as a message.
func NewMessage(r Record) (*message.Message, error) {
	_, _, payload, err := encodeEvent(r.Event)
	if err != nil {
		return nil, err
	}
	return newMessage(r, payload), nil
}

// newMessage returns r, whose event is encoded as payload, as a message.
func newMessage(r Record, payload []byte) *message.Message {
	msg := message.NewMessage(r.EventID(), payload)
	m := msg.Metadata
	m[MetaStreamID] = strconv.Itoa(int(r.StreamID))
	m[MetaVersion] = strconv.Itoa(r.Version)
	m[MetaEventType] = r.Type
	m[MetaSchemaVersion] = strconv.Itoa(r.SchemaVersion)
	m[MetaOccurredAt] = r.OccurredAt.UTC().Format(time.RFC3339Nano)
	if r.Position > 0 {
		m[MetaPosition] = strconv.FormatInt(r.Position, 10)
	}
	setMeta(m, r.Metadata)
	return msg
}

func setMeta(m message.Metadata, md Metadata) {
	if md.CorrelationID != "" {
		m[MetaCorrelationID] = md.CorrelationID
	}
	if md.CausationID != "" {
		m[MetaCausationID] = md.CausationID
	}
	if md.TraceParent != "" {
		m[MetaTraceParent] = md.TraceParent
	}
}

// MessageColumns returns the values of the events columns (stream_id, version, event_type,
// schema_version, payload, metadata, occurred_at) for msg, checking that it carries them all.
func MessageColumns(msg *message.Message) ([]any, error) {
	m := msg.Metadata
	id, err1 := strconv.Atoi(m[MetaStreamID])
	version, err2 := strconv.Atoi(m[MetaVersion])
	schema, err3 := strconv.Atoi(m[MetaSchemaVersion])
	at, err4 := time.Parse(time.RFC3339Nano, m[MetaOccurredAt])
	if err := errors.Join(err1, err2, err3, err4); err != nil || m[MetaEventType] == "" || id <= 0 || version <= 0 {
		return nil, fmt.Errorf("message %s is not an event of the log (metadata %v): %v", msg.UUID, m, err)
	}
	meta, err := jsonMarshalMeta(Metadata{CorrelationID: m[MetaCorrelationID], CausationID: m[MetaCausationID], TraceParent: m[MetaTraceParent]})
	if err != nil {
		return nil, err
	}
	return []any{id, version, m[MetaEventType], schema, []byte(msg.Payload), meta, at}, nil
}

// MessageColumnList is the select list ScanMessage reads: the events columns, position first.
const MessageColumnList = "position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at"

// ScanMessage reads a row of MessageColumnList as a message; its offset is the position.
func ScanMessage(row wsql.Scanner) (wsql.Row, error) {
	var r Record
	var payload, meta []byte
	if err := row.Scan(&r.Position, &r.StreamID, &r.Version, &r.Type, &r.SchemaVersion, &payload, &meta, &r.OccurredAt); err != nil {
		return wsql.Row{}, fmt.Errorf("scan event message: %w", err)
	}
	if err := jsonUnmarshalMeta(meta, &r.Metadata); err != nil {
		return wsql.Row{}, fmt.Errorf("event %s: %w", r.EventID(), err)
	}
	msg := newMessage(r, payload)
	return wsql.Row{Offset: r.Position, UUID: []byte(msg.UUID), Payload: payload, Metadata: meta, Msg: msg}, nil
}

// RecordFromMessage decodes an event's message, upcasting an older schema. A message whose
// event this release does not know is a KindInvalid error.
func RecordFromMessage(msg *message.Message) (Record, error) {
	cols, err := MessageColumns(msg)
	if err != nil {
		return Record{}, domain.Invalid("metadata", "%v", err)
	}
	r := Record{StreamID: domain.OrderID(cols[0].(int)), Version: cols[1].(int), Type: cols[2].(string),
		SchemaVersion: cols[3].(int), OccurredAt: cols[6].(time.Time)}
	r.Position, _ = strconv.ParseInt(msg.Metadata[MetaPosition], 10, 64)
	r.Metadata = Metadata{CorrelationID: msg.Metadata[MetaCorrelationID], CausationID: msg.Metadata[MetaCausationID],
		TraceParent: msg.Metadata[MetaTraceParent]}
	if err := decodeStored(&r, msg.Payload, nil); err != nil {
		return Record{}, err
	}
	return r, nil
}

// LogSchema is the watermill-sql SchemaAdapter of the log's topic: it maps Topic onto the
// existing events table, which the migrations create (SchemaInitializingQueries creates
// nothing). Its insert is one multi-row statement, and the UNIQUE (stream_id, version) key
// still turns a concurrent append into a duplicate-key error.
//
// It also reads the topic like any watermill-sql topic (positions after a consumer group's
// offset), but orderd does not subscribe to it that way: the locking read that makes such a
// subscriber gap-safe makes appends wait for its handler (see package feed for what does).
type LogSchema struct {
	// SubscribeBatchSize is how many events one poll reads (default 100).
	SubscribeBatchSize int
}

var _ wsql.SchemaAdapter = LogSchema{}

// InsertQuery implements wsql.SchemaAdapter.
func (s LogSchema) InsertQuery(topic string, msgs message.Messages) (wsql.Query, error) {
	if topic != Topic {
		return wsql.Query{}, fmt.Errorf("the event log is topic %q, not %q", Topic, topic)
	}
	args := make([]any, 0, 7*len(msgs))
	for _, msg := range msgs {
		cols, err := MessageColumns(msg)
		if err != nil {
			return wsql.Query{}, err
		}
		args = append(args, cols...)
	}
	return wsql.Query{Query: `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at) VALUES ` +
		PlaceholderRows(7, len(msgs)), Args: args}, nil
}

// SelectQuery implements wsql.SchemaAdapter.
func (s LogSchema) SelectQuery(topic, consumerGroup string, offsets wsql.OffsetsAdapter) wsql.Query {
	next := offsets.NextOffsetQuery(topic, consumerGroup)
	return wsql.Query{Query: `SELECT ` + MessageColumnList + ` FROM events WHERE position > (` + next.Query + `) ORDER BY position LIMIT ` +
		strconv.Itoa(cmp.Or(s.SubscribeBatchSize, 100)), Args: next.Args}
}

// UnmarshalMessage implements wsql.SchemaAdapter.
func (LogSchema) UnmarshalMessage(row wsql.Scanner) (wsql.Row, error) { return ScanMessage(row) }

// SchemaInitializingQueries implements wsql.SchemaAdapter: none, the migrations own the schema.
func (LogSchema) SchemaInitializingQueries(string) []wsql.Query { return nil }

// SubscribeIsolationLevel implements wsql.SchemaAdapter: a subscriber that keeps an offset is
// gap-safe on MySQL only with watermill-sql's serializable locking read.
func (LogSchema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelSerializable }

// Executor is tx as watermill-sql's executor, running its statements with ctx (its Publisher
// passes context.Background()) and keeping the last statement's result.
type Executor struct {
	*sql.Tx
	ctx    context.Context
	Result sql.Result
}

// NewExecutor returns tx as an executor whose statements run with ctx.
func NewExecutor(ctx context.Context, tx *sql.Tx) *Executor { return &Executor{Tx: tx, ctx: ctx} }

// ExecContext runs query on the transaction with the executor's context.
func (e *Executor) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	res, err := e.Tx.ExecContext(e.ctx, query, args...)
	e.Result = res
	return res, err
}

// publishLog appends msgs to the log through watermill-sql's Publisher on tx and returns the
// statement's result (its LastInsertId numbers the events).
func publishLog(ctx context.Context, tx *sql.Tx, msgs message.Messages) (sql.Result, error) {
	ex := NewExecutor(ctx, tx)
	pub, err := wsql.NewPublisher(ex, wsql.PublisherConfig{SchemaAdapter: LogSchema{}}, nil)
	if err != nil {
		return nil, err
	}
	if err := pub.Publish(Topic, msgs...); err != nil {
		return nil, err
	}
	return ex.Result, nil
}
