// Package deadletter keeps track of messages that could not be handled: it records each one
// with its reason next to the order it concerns (so the order can say what is stuck and why),
// and lists and redrives the SQS dead-letter queues once the cause is fixed.
package deadletter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/outbox"
	"orderd/projections/orders"
	"orderd/queues"
)

// Letter is one dead-lettered message as recorded in MySQL.
type Letter struct {
	OrderID   domain.OrderID `json:"orderId,omitempty"`
	Version   int            `json:"version,omitempty"`
	Queue     string         `json:"queue"`
	EventID   string         `json:"eventId"`
	EventType string         `json:"eventType"`
	Reason    string         `json:"reason"`
	DeadAt    time.Time      `json:"deadAt"`
}

// Log records dead letters in the dead_letters table.
type Log struct{ db DB }

// DB is what the log needs of the database: a *sql.DB, or a *sql.Conn.
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// NewLog returns a log over db.
func NewLog(db DB) (*Log, error) {
	if db == nil {
		return nil, errors.New("deadletter: nil db")
	}
	return &Log{db: db}, nil
}

// The widths of dead_letters' columns (in characters), and the most of a reason kept: a
// letter is recorded whatever the message held, cut to fit.
const (
	queueWidth     = 80
	eventIDWidth   = 40
	eventTypeWidth = 64
	// MaxReasonLen bounds a recorded reason: enough for any error orderd or SQS words, and
	// no room for a message to fill the table through the text of its own refusal.
	MaxReasonLen = 2000
)

// execer is what a letter is written through: the pool, or the relay's transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Record stores l. Whatever the message that made it held, the letter fits: text is cut to
// its column (invalid UTF-8 replaced), and an order id or version out of the columns' range
// (no such order can exist) is not attached to any order; the event id still names it.
func (lg *Log) Record(ctx context.Context, l Letter) error { return record(ctx, lg.db, l) }

// RecordIn stores l in tx, the transaction of whatever consumed the message: the letter is
// recorded if, and only if, the message is consumed.
func (lg *Log) RecordIn(ctx context.Context, tx execer, l Letter) error { return record(ctx, tx, l) }

// RecordRefused implements outbox.DeadLetters: it records, in the relay's transaction, a row
// whose message the queue refused, attached to the order it is about.
func (lg *Log) RecordRefused(ctx context.Context, tx *sql.Tx, r outbox.Refusal) error {
	l := Letter{Queue: r.Queue, EventID: r.EventID, EventType: r.EventType, Reason: "refused by SQS: " + r.Reason, DeadAt: time.Now().UTC()}
	if rec, err := eventstore.DecodeMessage(r.Body); err == nil {
		l.OrderID, l.Version = rec.StreamID, rec.Version
	}
	return record(ctx, tx, l)
}

func record(ctx context.Context, db execer, l Letter) error {
	var order, version any
	if l.OrderID > 0 && l.OrderID <= math.MaxInt32 && l.Version > 0 && l.Version <= math.MaxInt32 {
		order, version = l.OrderID, l.Version
	}
	_, err := db.ExecContext(ctx, `INSERT INTO dead_letters (order_id, version, queue, event_id, event_type, reason, dead_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, order, version, fit(l.Queue, queueWidth), fit(l.EventID, eventIDWidth),
		fit(l.EventType, eventTypeWidth), fit(l.Reason, MaxReasonLen), l.DeadAt)
	if err != nil {
		return fmt.Errorf("record dead letter %s: %w", fit(l.EventID, eventIDWidth), err)
	}
	return nil
}

// fit returns s as valid UTF-8 of at most n characters, marking a cut with "…".
func fit(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// Stuck returns the dead letter that holds the order at its current version, if any: an
// order that moved on since (after a redrive) is no longer stuck on it.
func (lg *Log) Stuck(ctx context.Context, id domain.OrderID, version int) (_ *Letter, err error) {
	defer eventstore.Classify(&err)
	l := Letter{OrderID: id, Version: version}
	err = lg.db.QueryRowContext(ctx, `SELECT queue, event_id, event_type, reason, dead_at FROM dead_letters
		WHERE order_id = ? AND version = ? ORDER BY id DESC LIMIT 1`, id, version).
		Scan(&l.Queue, &l.EventID, &l.EventType, &l.Reason, &l.DeadAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read dead letters of order %d: %w", id, err)
	}
	return &l, nil
}

// MetaDetached marks a poisoned message that is not what holds its order: it claims an event
// the order's log does not hold as its latest (stale, forged), or went to a stage that does not
// act on it (domain.ErrNotTrigger). Its letter names the event it claims but is attached to no
// order, so the order is not shown stuck and the sweeper still re-drives it. The key never
// leaves the process: Publish removes it.
const MetaDetached = "orderd_detached"

// Publisher is the publisher Watermill's PoisonQueue middleware hands poisoned messages to:
// it records the letter in MySQL, then publishes it to the dead-letter queue. If either
// fails the message is not acknowledged, and SQS delivers it again.
type Publisher struct {
	log *Log
	pub message.Publisher
}

// NewPublisher returns a dead-letter publisher over pub.
func NewPublisher(lg *Log, pub message.Publisher) (*Publisher, error) {
	if lg == nil || pub == nil {
		return nil, errors.New("deadletter: NewPublisher needs a log and a publisher")
	}
	return &Publisher{log: lg, pub: pub}, nil
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		l := Letter{
			Queue: m.Metadata.Get(middleware.PoisonedTopicKey), EventID: m.Metadata.Get(outbox.MetaEventID),
			EventType: m.Metadata.Get(outbox.MetaEventType), Reason: m.Metadata.Get(middleware.ReasonForPoisonedKey),
			DeadAt: time.Now().UTC(),
		}
		// The body may be what made the message poisonous; take what can be read of it.
		if rec, err := eventstore.DecodeMessage(m.Payload); err == nil {
			l.EventID, l.EventType = rec.EventID(), rec.Type
			if m.Metadata.Get(MetaDetached) == "" {
				l.OrderID, l.Version = rec.StreamID, rec.Version
			}
		}
		// The message's context is spent by now: Watermill's Timeout middleware, inside
		// PoisonQueue, cancels it as the handler returns. Keep its values, not its end.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.Context()), 10*time.Second)
		err := p.log.Record(ctx, l)
		cancel()
		if err != nil {
			return err
		}
		fitForSQS(m)
	}
	return p.pub.Publish(topic, msgs...)
}

// keptAttributes are the metadata a dead-lettered message keeps whatever else it carries:
// what names its event and why it was poisoned.
var keptAttributes = []string{outbox.MetaEventID, outbox.MetaEventType, outbox.MetaSignature, outbox.MetaTraceParent, middleware.CorrelationIDMetadataKey,
	middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey}

// fitForSQS makes m's metadata something SQS takes as message attributes, so that the
// dead-letter queue never refuses the letter (which would send the message round again): no
// empty value (SQS refuses them), no character SQS refuses (the reason may quote the
// message), a bounded reason, and at most 10 attributes with Watermill's own uuid — the
// keys that say what the letter is first, then others in name order while they fit.
func fitForSQS(m *message.Message) {
	delete(m.Metadata, MetaDetached)
	if r := m.Metadata.Get(middleware.ReasonForPoisonedKey); r != "" {
		m.Metadata.Set(middleware.ReasonForPoisonedKey, fit(r, MaxReasonLen))
	}
	for k, v := range m.Metadata {
		if v == "" {
			delete(m.Metadata, k)
		} else {
			m.Metadata[k] = queues.Sanitize(v)
		}
	}
	const room = queues.MaxAttributes - 1 // one is Watermill's uuid
	if len(m.Metadata) <= room {
		return
	}
	keep := message.Metadata{}
	for _, k := range keptAttributes {
		if v, ok := m.Metadata[k]; ok {
			keep[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.Metadata)) {
		if len(keep) == room {
			break
		}
		keep[k] = m.Metadata[k]
	}
	m.Metadata = keep
}

// Close implements message.Publisher; the underlying publisher is closed by its owner.
func (p *Publisher) Close() error { return nil }

// OrderHeads is what the dead-letter log needs of the orders read model
// (orders.Reader): where each of the given orders stands.
type OrderHeads interface {
	Heads(ctx context.Context, ids []domain.OrderID) (map[domain.OrderID]orders.Head, error)
}

// holds reports whether a letter about version of an order still holds it: the order is
// at that version and its email is not sent.
func holds(h orders.Head, ok bool, version int) bool {
	return ok && h.Version == version && !h.EmailSent
}

// RemoveFunc deletes, in tx, up to limit records made before before, and returns how many
// (outbox.Retention's Remove).
type RemoveFunc = func(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int64, error)

// RemoveOlder returns the retention's remover of dead letters: it deletes, in tx, up to
// limit dead letters recorded before before, oldest first, and returns how many. A letter
// that still holds its order — an unfinished order at the version the letter is about, as
// orders tells — is kept whatever its age: it says why the order is stuck, and it keeps the
// sweeper from re-driving a message that cannot succeed. Old letters are read a page at a
// time, so however many are kept the ones behind them still go. Run it at READ COMMITTED,
// so that its range scan locks no gap that new letters go into. A letter that no longer
// holds its order never holds it again (an order's version only grows), so reading the
// orders outside tx cannot remove one that should stay.
func (lg *Log) RemoveOlder(orders OrderHeads) RemoveFunc {
	return func(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (_ int64, err error) {
		defer func() {
			if err != nil {
				err = fmt.Errorf("remove old dead letters: %w", err)
			}
		}()
		type old struct {
			id      int64
			order   domain.OrderID
			version int
			deadAt  time.Time
		}
		var removed int64
		var last *old
		for removed < int64(limit) {
			query, args := `SELECT id, COALESCE(order_id, 0), COALESCE(version, 0), dead_at FROM dead_letters WHERE dead_at < ?`, []any{before}
			if last != nil {
				query += ` AND (dead_at > ? OR (dead_at = ? AND id > ?))`
				args = append(args, last.deadAt, last.deadAt, last.id)
			}
			rows, err := tx.QueryContext(ctx, query+` ORDER BY dead_at, id LIMIT ?`, append(args, limit)...)
			if err != nil {
				return removed, err
			}
			var page []old
			var ids []domain.OrderID
			for rows.Next() {
				var o old
				if err := rows.Scan(&o.id, &o.order, &o.version, &o.deadAt); err != nil {
					rows.Close()
					return removed, err
				}
				page = append(page, o)
				if o.order != 0 {
					ids = append(ids, o.order)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return removed, err
			}
			if len(page) == 0 {
				break
			}
			last = &page[len(page)-1]
			heads, err := orders.Heads(ctx, ids)
			if err != nil {
				return removed, err
			}
			var gone []any
			for _, o := range page {
				h, ok := heads[o.order]
				if !holds(h, ok, o.version) && removed+int64(len(gone)) < int64(limit) {
					gone = append(gone, o.id)
				}
			}
			if len(gone) > 0 {
				res, err := tx.ExecContext(ctx, `DELETE FROM dead_letters WHERE id IN (`+eventstore.Placeholders(len(gone))+`)`, gone...)
				if err != nil {
					return removed, err
				}
				n, err := res.RowsAffected()
				if err != nil {
					return removed, err
				}
				removed += n
			}
			if len(page) < limit {
				break
			}
		}
		return removed, nil
	}
}

// Newest returns the newest limit dead letters, newest first, and how many there are in all.
func (lg *Log) Newest(ctx context.Context, limit int) (_ []Letter, total int64, err error) {
	defer eventstore.Classify(&err)
	rows, err := lg.db.QueryContext(ctx, `SELECT order_id, version, queue, event_id, event_type, reason, dead_at
		FROM dead_letters ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list dead letters: %w", err)
	}
	defer rows.Close()
	list := []Letter{}
	for rows.Next() {
		var l Letter
		var order, version sql.NullInt64
		if err := rows.Scan(&order, &version, &l.Queue, &l.EventID, &l.EventType, &l.Reason, &l.DeadAt); err != nil {
			return nil, 0, fmt.Errorf("list dead letters: %w", err)
		}
		l.OrderID, l.Version = domain.OrderID(order.Int64), int(version.Int64)
		list = append(list, l)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list dead letters: %w", err)
	}
	if err := lg.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM dead_letters`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count dead letters: %w", err)
	}
	return list, total, nil
}

// StuckReasons returns, for each of the given orders (id → its current version) that a dead
// letter holds at that version, the newest such letter's reason. It reads the orders'
// letters through ix_dead_letters_order.
func (lg *Log) StuckReasons(ctx context.Context, versions map[domain.OrderID]int) (_ map[domain.OrderID]string, err error) {
	defer eventstore.Classify(&err)
	out := map[domain.OrderID]string{}
	if len(versions) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(versions))
	for id := range versions {
		args = append(args, id)
	}
	rows, err := lg.db.QueryContext(ctx, `SELECT order_id, version, reason FROM dead_letters WHERE order_id IN (`+
		eventstore.Placeholders(len(args))+`) ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id domain.OrderID
		var version int
		var reason string
		if err := rows.Scan(&id, &version, &reason); err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		if versions[id] == version {
			out[id] = reason // the newest letter comes last
		}
	}
	return out, rows.Err()
}
