package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"orderd/domain"
)

// Hook writes what must commit together with appends: projection rows, outbox rows. It is
// called once per transaction with every stream the transaction appended to, so that it can
// write them all in one statement.
type Hook interface {
	AfterAppend(ctx context.Context, tx *sql.Tx, changes []Change) error
}

// Change is what one transaction appended to one stream.
type Change struct {
	History  []Record // the whole stream after the append, oldest first
	Appended []Record // the records appended: the tail of History
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

	// Group commit (group.go): the lanes of creations and updates (their requests waiting
	// and workers running; at most workers each), and the requests in a worker's group.
	workers, maxGroup int
	mu                sync.Mutex
	creates, updates  lane
	running           map[*request]struct{}
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
	sealed.Store(true)
	return &Store{
		db: db, hooks: hooks, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		workers: defaultWorkers, maxGroup: defaultMaxGroup, running: map[*request]struct{}{},
	}, nil
}

// OnCommit registers f to run after every commit with the records it appended, for every
// stream in it (to wake the relay, to count events).
// It is not safe to call once the store is in use.
func (s *Store) OnCommit(f func(appended []Record)) { s.onCommit = append(s.onCommit, f) }

// Load returns the order's stream, oldest first, and the order folded from it.
func (s *Store) Load(ctx context.Context, id domain.OrderID) (_ []Record, _ *domain.Order, err error) {
	defer Classify(&err)
	return load(ctx, s.db, id)
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func load(ctx context.Context, q queryer, id domain.OrderID) ([]Record, *domain.Order, error) {
	var recs []Record
	var events []domain.Event
	err := ScanStreamsOf(ctx, q, []domain.OrderID{id}, func(r Record) error {
		recs, events = append(recs, r), append(events, r.Event)
		return nil
	})
	if err != nil {
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
	// AccessHash is the SHA-256 of the order's capability (nil: none), stored with its id
	// in the creating transaction (see access.go).
	AccessHash []byte
}

// maxIdempotencyKeyLen is the width of order_ids.idempotency_key.
const maxIdempotencyKeyLen = 255

// ErrAlreadyCreated is returned, with the existing id, when an idempotency key was used before
// for the same request.
var ErrAlreadyCreated = errors.New("order already created for this idempotency key")

// Create allocates a new order id and appends events as the first of its stream, in one
// transaction.
func (s *Store) Create(ctx context.Context, req CreateRequest, events []domain.Event) (_ domain.OrderID, err error) {
	defer Classify(&err)
	if len(events) == 0 {
		return 0, errors.New("create order: no events")
	}
	// A key that cannot be stored would fail the whole group it joined; refused here, it
	// fails only itself and costs the others nothing.
	if !utf8.ValidString(req.IdempotencyKey) || utf8.RuneCountInString(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return 0, domain.Invalid("Idempotency-Key", "must be valid UTF-8 of at most %d characters", maxIdempotencyKeyLen)
	}
	r := &request{ctx: ctx, create: &req, events: events, md: req.Metadata}
	s.submit(r)
	switch {
	case errors.Is(r.err, errIdempotencyKeyUsed):
		return s.existing(ctx, req)
	case r.err != nil:
		return 0, fmt.Errorf("create order: %w", r.err)
	}
	return r.newID, nil
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

// DecideTx is a decision that must make writes of its own in the append's transaction. It
// may run more than once for one call (a deadlocked group runs again request by request), so
// it must not act outside the transaction.
type DecideTx func(ctx context.Context, tx Tx, o *domain.Order) ([]domain.Event, error)

// Tx is the append's transaction as a DecideTx uses it (a *sql.Tx satisfies it).
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Update loads the order, lets decide choose what happens, and appends the result, in one
// transaction that first locks the order's row in order_ids. A trigger delivered twice at once
// (SQS does that) is therefore decided once: the second delivery waits, then reloads and
// finds its step no longer due, so a side effect decide performs (a charge, an email) happens
// once. The lock is a row lock, so a crashed holder releases it with its connection and never
// strands the order. decide may call slow services: meanwhile it holds the order rows of its
// group and the log barrier in share mode (a replay's brief pause waits for it).
//
// Concurrent calls share transactions (see group.go): decide runs in the order's turn within
// its group, sees every event appended before it (in the group too), and its result commits
// with the group's.
func (s *Store) Update(ctx context.Context, id domain.OrderID, md Metadata, decide Decide) ([]Record, error) {
	return s.update(ctx, id, md, false, func(_ context.Context, _ Tx, o *domain.Order) ([]domain.Event, error) {
		return decide(o)
	})
}

// UpdateTx is Update with decide given the transaction, so that its own writes (a stock
// reservation) commit or roll back with the events. In a group, a decide that fails has its
// writes rolled back (to a savepoint) without touching the others'.
func (s *Store) UpdateTx(ctx context.Context, id domain.OrderID, md Metadata, decide DecideTx) ([]Record, error) {
	return s.update(ctx, id, md, true, decide)
}

func (s *Store) update(ctx context.Context, id domain.OrderID, md Metadata, writes bool, decide DecideTx) (_ []Record, err error) {
	defer Classify(&err)
	r := &request{ctx: ctx, id: id, md: md, decide: decide, writes: writes}
	s.submit(r)
	return r.appended, r.err
}

// isRetryable reports whether err is a deadlock (1213) or a lock wait timeout (1205): InnoDB
// rolled the transaction back (or may have), and running it again is the documented remedy.
// Both happen when a killed process's transaction is rolled back under waiting inserts.
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// dataError is a statement refused because a value does not fit its column: not valid in the
// column's character set (1366, 1300), too long (1406), out of range (1264) or not a value of
// its type (1292). Run alone, such a request would fail the same way every time, so it is the
// request's own fault, as a KindInvalid error: a 400 over HTTP, a dead letter in a stage.
// The database's words stay in the chain for the log and the dead letter's reason; the
// domain error alone (what a client is shown) names no table or column.
type dataError struct {
	invalid *domain.Error
	cause   error
}

func (e *dataError) Error() string   { return e.invalid.Error() + ": " + e.cause.Error() }
func (e *dataError) Unwrap() []error { return []error{e.invalid, e.cause} }

// asDataError returns err as a dataError when it is one, else err.
func asDataError(err error) error {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return err
	}
	switch me.Number {
	case 1264, 1292, 1300, 1366, 1406:
		return &dataError{invalid: domain.Invalid("request", "holds a value the database cannot store (too long for its column, or not valid UTF-8)"), cause: err}
	}
	return err
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
	return scan(ctx, q, "WHERE stream_id IN ("+Placeholders(len(ids))+")", args, fn)
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
