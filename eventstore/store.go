package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"orderd/domain"
)

// Hook writes what must commit together with an append: a projection row, an outbox row.
// history is the whole stream after the append; appended are the new records in it.
type Hook interface {
	AfterAppend(ctx context.Context, tx *sql.Tx, history, appended []Record) error
}

// maxConflictRetries bounds how often Update reloads and decides again after losing an
// optimistic-concurrency race; more than a handful means something is badly wrong.
const maxConflictRetries = 5

// Store is the event log.
type Store struct {
	db       *sql.DB
	hooks    []Hook
	onCommit []func(appended []Record)
	now      func() time.Time
}

// New returns a store over db; hooks run inside every append transaction, in order.
func New(db *sql.DB, hooks ...Hook) (*Store, error) {
	if db == nil {
		return nil, errors.New("eventstore: nil db")
	}
	for i, h := range hooks {
		if h == nil {
			return nil, fmt.Errorf("eventstore: hook %d is nil", i)
		}
	}
	return &Store{db: db, hooks: hooks, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}, nil
}

// OnCommit registers f to run after every committed append with the records it appended
// (to wake the relay, to count events).
// It is not safe to call once the store is in use.
func (s *Store) OnCommit(f func(appended []Record)) { s.onCommit = append(s.onCommit, f) }

// Load returns the order's stream, oldest first, and the order folded from it.
func (s *Store) Load(ctx context.Context, id domain.OrderID) ([]Record, *domain.Order, error) {
	return load(ctx, s.db, id)
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func load(ctx context.Context, q queryer, id domain.OrderID) ([]Record, *domain.Order, error) {
	rows, err := q.QueryContext(ctx, `SELECT position, version, event_type, schema_version, payload, metadata, occurred_at
		FROM events WHERE stream_id = ? ORDER BY version`, id)
	if err != nil {
		return nil, nil, fmt.Errorf("load order %d: %w", id, err)
	}
	defer rows.Close()
	var recs []Record
	var events []domain.Event
	for rows.Next() {
		r := Record{StreamID: id}
		var payload, meta []byte
		if err := rows.Scan(&r.Position, &r.Version, &r.Type, &r.SchemaVersion, &payload, &meta, &r.OccurredAt); err != nil {
			return nil, nil, fmt.Errorf("load order %d: %w", id, err)
		}
		if err := decodeStored(&r, payload, meta); err != nil {
			return nil, nil, fmt.Errorf("load order %d: %w", id, err)
		}
		recs = append(recs, r)
		events = append(events, r.Event)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load order %d: %w", id, err)
	}
	return recs, domain.Rehydrate(id, events), nil
}

// decodeStored fills r.Event and r.Metadata from the stored columns, upcasting old schemas.
func decodeStored(r *Record, payload, meta []byte) error {
	e, err := decodeEvent(r.Type, r.SchemaVersion, payload)
	if err != nil {
		return fmt.Errorf("event %s: %w", r.EventID(), err)
	}
	r.Event, r.SchemaVersion = e, schemas[r.Type].version
	return jsonUnmarshalMeta(meta, &r.Metadata)
}

// CreateRequest describes a new order's stream. IdempotencyKey, when set, makes the creation
// happen at most once: a second request with the same key and RequestHash gets the first
// one's order id back (with ErrAlreadyCreated); with another hash it gets a conflict.
type CreateRequest struct {
	IdempotencyKey string
	RequestHash    string
	Metadata       Metadata
}

// ErrAlreadyCreated is returned, with the existing id, when an idempotency key was used before
// for the same request.
var ErrAlreadyCreated = errors.New("order already created for this idempotency key")

// Create allocates a new order id and appends the first events decide returns for it, in
// one transaction.
func (s *Store) Create(ctx context.Context, req CreateRequest, decide func(id domain.OrderID) ([]domain.Event, error)) (domain.OrderID, error) {
	for attempt := 1; ; attempt++ {
		id, err := s.tryCreate(ctx, req, decide)
		if !isRetryable(err) || attempt == maxConflictRetries {
			return id, err
		}
	}
}

func (s *Store) tryCreate(ctx context.Context, req CreateRequest, decide func(id domain.OrderID) ([]domain.Event, error)) (domain.OrderID, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("create order: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var key, hash any
	if req.IdempotencyKey != "" {
		key, hash = req.IdempotencyKey, req.RequestHash
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO order_ids (idempotency_key, request_hash, created_at) VALUES (?, ?, ?)`, key, hash, s.now())
	if isDuplicate(err) && req.IdempotencyKey != "" {
		return s.existing(ctx, req)
	}
	if err != nil {
		return 0, fmt.Errorf("create order: allocate id: %w", err)
	}
	n, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("create order: allocate id: %w", err)
	}
	id := domain.OrderID(n)
	events, err := decide(id)
	if err != nil {
		return 0, err
	}
	appended, err := s.appendRecords(ctx, tx, id, nil, events, req.Metadata)
	if err != nil {
		return 0, fmt.Errorf("create order %d: %w", id, err)
	}
	if err := s.commit(tx, appended); err != nil {
		return 0, fmt.Errorf("create order %d: %w", id, err)
	}
	return id, nil
}

func (s *Store) existing(ctx context.Context, req CreateRequest) (domain.OrderID, error) {
	var id domain.OrderID
	var hash sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT order_id, request_hash FROM order_ids WHERE idempotency_key = ?`, req.IdempotencyKey).Scan(&id, &hash)
	if err != nil {
		return 0, fmt.Errorf("create order: look up idempotency key: %w", err)
	}
	if hash.String != req.RequestHash {
		return 0, &domain.Error{Kind: domain.KindConflict, Field: "Idempotency-Key", Message: "was already used with a different request body"}
	}
	return id, ErrAlreadyCreated
}

// Decide is a decision taken on a loaded order; it returns the events to append, none when
// there is nothing to do, or domain.ErrStepNotDue when the step is not (or no longer) due.
type Decide func(o *domain.Order) ([]domain.Event, error)

// DecideTx is a decision that must make writes of its own in the append's transaction.
type DecideTx func(ctx context.Context, tx *sql.Tx, o *domain.Order) ([]domain.Event, error)

// Update loads the order, lets decide choose what happens, and appends the result, in one
// transaction that first locks the order's row in order_ids. A trigger delivered twice at once
// (SQS does that) is therefore decided once: the second delivery waits, then reloads and
// finds its step no longer due, so a side effect decide performs (a charge, an email) happens
// once. The lock is a row lock, so a crashed holder releases it with its connection and never
// strands the order. decide may call slow services: it holds only that one row meanwhile,
// and the append's own locks are taken after it returns.
func (s *Store) Update(ctx context.Context, id domain.OrderID, md Metadata, decide Decide) ([]Record, error) {
	return s.UpdateTx(ctx, id, md, func(_ context.Context, _ *sql.Tx, o *domain.Order) ([]domain.Event, error) {
		return decide(o)
	})
}

// UpdateTx is Update with decide given the transaction, so that its own writes (a stock
// reservation) commit or roll back with the events.
func (s *Store) UpdateTx(ctx context.Context, id domain.OrderID, md Metadata, decide DecideTx) ([]Record, error) {
	for attempt := 0; ; attempt++ {
		recs, err := s.tryUpdate(ctx, id, md, decide)
		if !errors.Is(err, errVersionConflict) && !isRetryable(err) {
			return recs, err
		}
		if attempt == maxConflictRetries {
			return nil, domain.Conflict("order %d: still conflicting after %d attempts", id, attempt+1)
		}
	}
}

var errVersionConflict = errors.New("stream version conflict")

func (s *Store) tryUpdate(ctx context.Context, id domain.OrderID, md Metadata, decide DecideTx) ([]Record, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("update order %d: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM order_ids WHERE order_id = ? FOR UPDATE`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, domain.NotFound("order %d does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("lock order %d: %w", id, err)
	}
	// The stream is read after the lock, so this consistent read already sees every append
	// that the previous holder committed.
	history, order, err := load(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if !order.Exists() {
		return nil, domain.NotFound("order %d does not exist", id)
	}
	events, err := decide(ctx, tx, order)
	if err != nil || len(events) == 0 {
		return nil, err
	}
	appended, err := s.appendRecords(ctx, tx, id, history, events, md)
	if err != nil {
		return nil, err
	}
	if err := s.commit(tx, appended); err != nil {
		return nil, fmt.Errorf("update order %d: %w", id, err)
	}
	return appended, nil
}

// appendRecords inserts events after history (the stream as it was read) and runs the hooks.
// The UNIQUE (stream_id, version) key turns a concurrent append into errVersionConflict.
func (s *Store) appendRecords(ctx context.Context, tx *sql.Tx, id domain.OrderID, history []Record, events []domain.Event, md Metadata) ([]Record, error) {
	meta, err := jsonMarshalMeta(md)
	if err != nil {
		return nil, err
	}
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT id FROM event_log_barrier WHERE id = 1 LOCK IN SHARE MODE`).Scan(&one); err != nil {
		return nil, fmt.Errorf("append to order %d: pass the log barrier: %w", id, err)
	}
	now := s.now()
	appended := make([]Record, 0, len(events))
	for i, e := range events {
		typ, schema, payload, err := encodeEvent(e)
		if err != nil {
			return nil, err
		}
		r := Record{StreamID: id, Version: len(history) + i + 1, Type: typ, SchemaVersion: schema, Event: e, Metadata: md, OccurredAt: now}
		// One row per statement: LAST_INSERT_ID of a multi-row insert is only the first of its
		// positions, and MySQL 8's interleaved auto-increment mode does not promise the rest.
		res, err := tx.ExecContext(ctx, `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, r.Version, typ, schema, payload, meta, now)
		if isDuplicate(err) {
			return nil, errVersionConflict
		}
		if err != nil {
			return nil, fmt.Errorf("append %s to order %d: %w", typ, id, err)
		}
		if r.Position, err = res.LastInsertId(); err != nil {
			return nil, fmt.Errorf("append %s to order %d: %w", typ, id, err)
		}
		appended = append(appended, r)
	}
	full := append(append(make([]Record, 0, len(history)+len(appended)), history...), appended...)
	for _, h := range s.hooks {
		if err := h.AfterAppend(ctx, tx, full, appended); err != nil {
			return nil, err
		}
	}
	return appended, nil
}

func (s *Store) commit(tx *sql.Tx, appended []Record) error {
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, f := range s.onCommit {
		f(appended)
	}
	return nil
}

// isRetryable reports whether err is a deadlock (1213) or a lock wait timeout (1205): InnoDB
// rolled the transaction back (or may have), and running it again is the documented remedy.
// Both happen when a killed process's transaction is rolled back under waiting inserts.
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// isDuplicate reports whether err is MySQL's duplicate-key error (1062).
func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

// Queryer is what reads run through: a *sql.DB, *sql.Conn or *sql.Tx.
type Queryer = queryer

// ScanStreams calls fn for every event in the log, stream by stream and in version order
// within a stream, through q (a transaction, for a consistent snapshot). It streams: memory
// does not grow with the log.
func ScanStreams(ctx context.Context, q Queryer, fn func(Record) error) error {
	return scan(ctx, q, "", nil, fn)
}

// ScanStreamsOf is ScanStreams restricted to the given streams.
func ScanStreamsOf(ctx context.Context, q Queryer, ids []domain.OrderID, fn func(Record) error) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return scan(ctx, q, "WHERE stream_id IN ("+strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")+")", args, fn)
}

func scan(ctx context.Context, q Queryer, where string, args []any, fn func(Record) error) error {
	rows, err := q.QueryContext(ctx, `SELECT position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at
		FROM events `+where+` ORDER BY stream_id, version`, args...)
	if err != nil {
		return fmt.Errorf("scan log: %w", err)
	}
	defer rows.Close()
	var payload, meta []byte
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.Position, &r.StreamID, &r.Version, &r.Type, &r.SchemaVersion, &payload, &meta, &r.OccurredAt); err != nil {
			return fmt.Errorf("scan log: %w", err)
		}
		if err := decodeStored(&r, payload, meta); err != nil {
			return fmt.Errorf("scan log: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan log: %w", err)
	}
	return nil
}

// StreamVersionsSince returns, for every stream with events after position, its highest
// version among them.
func StreamVersionsSince(ctx context.Context, q Queryer, position int64) (map[domain.OrderID]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT stream_id, MAX(version) FROM events WHERE position > ? GROUP BY stream_id`, position)
	if err != nil {
		return nil, fmt.Errorf("streams since %d: %w", position, err)
	}
	defer rows.Close()
	out := map[domain.OrderID]int{}
	for rows.Next() {
		var id domain.OrderID
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			return nil, fmt.Errorf("streams since %d: %w", position, err)
		}
		out[id] = v
	}
	return out, rows.Err()
}

// Pause stops appends until the returned transaction ends, and returns once every append in
// flight has committed or rolled back. Appends pass the barrier (in share mode) before their
// first insert, so while it is held no event position is taken but not yet committed: a
// snapshot started now holds every position up to its highest, with no gap left to fill.
func Pause(ctx context.Context, conn *sql.Conn) (*sql.Tx, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("pause appends: %w", err)
	}
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT id FROM event_log_barrier WHERE id = 1 FOR UPDATE`).Scan(&one); err != nil {
		tx.Rollback() //nolint:errcheck // already failing
		return nil, fmt.Errorf("pause appends: %w", err)
	}
	return tx, nil
}
