package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
)

// Group commit. Every Create and Update is a request queued for a few workers; a worker takes
// every request waiting (up to maxGroup) and runs them in one transaction: one statement locks
// all their orders, one loads their streams, each decides in turn, then one insert allocates
// the new ids, one appends every event, each hook writes once for the group, and one commit
// makes it durable. Under load the cost of a commit and of each statement is shared by the
// whole group; with one request waiting a group is that request alone, so light load pays
// nothing for it.
//
// Creations and updates queue in separate lanes, each with its own workers. An update's
// decide may wait on the world (the email stage sends its email inside it), and a group lasts
// as long as its slowest decide; a customer placing an order should not wait for that. With
// one lane, placement at 16 clients ran at ~900 orders/s with a p99 of ~57 ms; with two,
// ~1,300/s and ~40 ms (creations no longer share updates' commits; 0.65 commits per order in
// all, measured with MariaDB's Com_commit).
//
// If a group fails before its commit (a deadlock, a version conflict, a hook's error, a value
// that does not fit its column), it is rolled back and each of its requests runs again alone,
// so one request's failure is its own: the others commit, and a request whose value does not
// fit gets a KindInvalid error of its own (see dataError). A failed commit is reported to all:
// whether it happened is unknown, and running a creation again could place the order twice.

const (
	// defaultWorkers is how many groups of a lane may be in flight at once: one commits (or
	// waits on its decides' emails) while the next forms. More only split the same requests
	// into smaller groups, each paying its statements and commit, on a machine whose CPU is
	// already the limit. At 16 clients, 2 against 4 (alternating; 7 and 5 runs with the
	// benchmark's SMTP sink): placement ~940–1,160 against ~760–880 orders/s, p99 ~32–40
	// against ~46–61 ms, end to end ~790–980 against ~735–840 /s; with Mailpit (4 and 2
	// runs) ~530–670 against ~590–650 /s end to end. One worker per lane placed faster
	// still (p99 ~18–33 ms) but lost end-to-end throughput with Mailpit, where an update
	// group waits on slow sends.
	defaultWorkers = 2
	// defaultMaxGroup bounds a group, and with it the size of its statements.
	defaultMaxGroup = 32
	// groupTimeout bounds a group's transaction: its requests' own contexts cannot, as one
	// caller giving up must not abort the others' append.
	groupTimeout = 30 * time.Second
)

// request is one Create or Update waiting for its group.
type request struct {
	ctx context.Context
	md  Metadata

	// An update names its order and decides; writes says decide writes through the tx.
	id     domain.OrderID
	decide DecideTx
	writes bool
	// A creation has its request and first events instead.
	create *CreateRequest
	events []domain.Event

	// Results, valid once done is closed.
	newID    domain.OrderID
	appended []Record
	err      error
	done     chan struct{}
	// Where the group put r's records: st.appended[from:to].
	st       *stream
	from, to int
	// deciding is true while decide runs (for the tests' view of who waits for whom).
	deciding atomic.Bool
}

// errVersionConflict says another writer appended the same version of a stream first.
var errVersionConflict = errors.New("stream version conflict")

// errIdempotencyKeyUsed says a creation's idempotency key is already in order_ids.
var errIdempotencyKeyUsed = errors.New("idempotency key already used")

// commitError marks a failed COMMIT: the outcome is unknown, so nothing is run again.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// submit queues r and returns when its group has finished with it.
func (s *Store) submit(r *request) {
	r.done = make(chan struct{})
	l := &s.updates
	if r.create != nil {
		l = &s.creates
	}
	s.mu.Lock()
	l.pending = append(l.pending, r)
	start := l.busy < s.workers
	if start {
		l.busy++
	}
	s.mu.Unlock()
	if start {
		go s.work(l)
	}
	<-r.done
}

// work runs groups until no request is waiting. Workers exist only while there is work, so a
// store needs no Close.
func (s *Store) work(l *lane) {
	for {
		s.mu.Lock()
		if len(l.pending) == 0 {
			l.busy--
			s.mu.Unlock()
			return
		}
		n := min(len(l.pending), s.maxGroup)
		group := slices.Clone(l.pending[:n])
		l.pending = append(l.pending[:0], l.pending[n:]...)
		for _, r := range group {
			s.running[r] = struct{}{}
		}
		s.mu.Unlock()
		s.run(group)
		s.mu.Lock()
		for _, r := range group {
			delete(s.running, r)
		}
		s.mu.Unlock()
		for _, r := range group {
			close(r.done)
		}
	}
}

// lane is a queue of requests and how many workers are running its groups (at most
// Store.workers). Both fields are guarded by Store.mu.
type lane struct {
	pending []*request
	busy    int
}

// run runs group; a request alone is retried on a conflict or deadlock, a failed group is
// split into requests alone.
func (s *Store) run(group []*request) {
	if len(group) > 1 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), groupTimeout)
		err := s.tryGroup(ctx, group)
		cancel()
		var ce *commitError
		switch {
		case err == nil:
			return
		case errors.As(err, &ce):
			for _, r := range group {
				r.appended, r.newID, r.err = nil, 0, err
			}
			return
		}
		for _, r := range group {
			s.run([]*request{r})
		}
		return
	}
	r := group[0]
	for attempt := 1; ; attempt++ {
		err := s.tryGroup(r.ctx, group)
		if err == nil {
			return
		}
		r.appended, r.newID = nil, 0
		retry := errors.Is(err, errVersionConflict) || isRetryable(err)
		switch {
		case !retry:
			r.err = asDataError(err)
		case attempt < maxConflictRetries:
			continue
		case errors.Is(err, errVersionConflict):
			r.err = domain.Conflict("order %d: still conflicting after %d attempts", r.id, attempt)
		default:
			r.err = err
		}
		if r.create == nil {
			r.err = fmt.Errorf("update order %d: %w", r.id, r.err)
		}
		return
	}
}

// stream is an order's stream as the group sees it: what was stored, then what the group
// appends.
type stream struct {
	id       domain.OrderID
	history  []Record
	appended []Record
	payloads [][]byte // the encoded events of appended
}

func (st *stream) events() []domain.Event {
	out := make([]domain.Event, 0, len(st.history)+len(st.appended))
	for _, recs := range [][]Record{st.history, st.appended} {
		for _, r := range recs {
			out = append(out, r.Event)
		}
	}
	return out
}

// tryGroup runs group in one transaction. A request's own failure (its order is missing, its
// decide refused) is left in its err and does not fail the group; the error returned fails
// all of it.
func (s *Store) tryGroup(ctx context.Context, group []*request) error {
	for _, r := range group {
		r.appended, r.newID, r.err, r.st = nil, 0, nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit

	// Past the barrier (in share mode) first: see Pause. Before anything is read, too: the
	// transaction's snapshot is then taken after any projection swap that paused appends
	// (RENAME TABLE), never before it, so its writes go to the table that is live. The
	// session's auto_increment_increment comes along, to number the rows of multi-row inserts.
	var one int
	var increment int64
	if err := tx.QueryRowContext(ctx, `SELECT id, @@SESSION.auto_increment_increment FROM event_log_barrier WHERE id = 1 LOCK IN SHARE MODE`).Scan(&one, &increment); err != nil {
		return fmt.Errorf("pass the log barrier: %w", err)
	}
	streams, err := lockStreams(ctx, tx, group)
	if err != nil {
		return err
	}
	// Decisions that write through the transaction go first, one at a time: they take locks
	// (stock rows) that can deadlock with another group, and a group that fails while they
	// run has not yet run any decision that calls the outside world (an email), so running
	// its requests again repeats nothing outside the database.
	for _, r := range filter(group, isUpdate(true)) {
		if err := decideOn(ctx, tx, r, streams, len(group) > 1); err != nil {
			return err
		}
	}
	// The others do not use the transaction: they run at once, one goroutine per order (an
	// order's requests in turn), so that their calls to the outside world overlap.
	if err := decideConcurrently(ctx, filter(group, isUpdate(false)), streams); err != nil {
		return err
	}
	creates := filter(group, func(r *request) bool { return r.create != nil })
	if len(creates) == 0 && !slices.ContainsFunc(group, func(r *request) bool { return r.st != nil }) {
		return nil // nothing to write: no step was due
	}
	if len(creates) > 0 {
		if err := s.allocate(ctx, tx, creates, len(group) == 1, increment); err != nil {
			return err
		}
		for _, r := range creates {
			if err := (&stream{id: r.newID}).add(r, r.events); err != nil {
				return err
			}
		}
	}
	// The streams appended to, in the order of the group's requests.
	var touched []*stream
	for _, r := range group {
		if r.st != nil && !slices.Contains(touched, r.st) {
			touched = append(touched, r.st)
		}
	}
	if err := insertEvents(ctx, tx, touched, increment, s.now()); err != nil {
		return err
	}
	changes := make([]Change, len(touched))
	var all []Record
	for i, st := range touched {
		changes[i] = Change{History: append(slices.Clip(st.history), st.appended...), Appended: st.appended}
		all = append(all, st.appended...)
	}
	for _, h := range s.hooks {
		if err := h.AfterAppend(ctx, tx, changes); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return &commitError{err}
	}
	for _, r := range group {
		if r.st != nil {
			r.appended = slices.Clone(r.st.appended[r.from:r.to])
		}
	}
	for _, f := range s.onCommit {
		f(all)
	}
	return nil
}

// isUpdate returns a filter for updates whose decide writes or does not.
func isUpdate(writes bool) func(*request) bool {
	return func(r *request) bool { return r.create == nil && r.writes == writes }
}

func filter(group []*request, keep func(*request) bool) []*request {
	var out []*request
	for _, r := range group {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// decideOn runs r's decision on its order's stream and adds the events it decides to it.
func decideOn(ctx context.Context, tx *sql.Tx, r *request, streams map[domain.OrderID]*stream, grouped bool) error {
	st := streams[r.id]
	if st == nil {
		r.err = domain.NotFound("order %d does not exist", r.id)
		return nil
	}
	events, err := decideIn(ctx, tx, r, st, grouped)
	if err != nil {
		return err
	}
	return st.add(r, events)
}

// decideConcurrently runs decisions that do not use the transaction, one goroutine per
// order.
func decideConcurrently(ctx context.Context, reqs []*request, streams map[domain.OrderID]*stream) error {
	byOrder := map[domain.OrderID][]*request{}
	for _, r := range reqs {
		byOrder[r.id] = append(byOrder[r.id], r)
	}
	decide := func(reqs []*request) error {
		for _, r := range reqs {
			if err := decideOn(ctx, nil, r, streams, true); err != nil {
				return err
			}
		}
		return nil
	}
	if len(byOrder) == 1 {
		return decide(reqs)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, reqs := range byOrder {
		wg.Go(func() {
			if err := decide(reqs); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// add appends events to st as its next versions, on behalf of r.
func (st *stream) add(r *request, events []domain.Event) error {
	if r.err != nil || len(events) == 0 {
		return nil
	}
	r.st, r.from = st, len(st.appended)
	for _, e := range events {
		typ, schema, payload, err := encodeEvent(e)
		if err != nil {
			return err
		}
		st.appended = append(st.appended, Record{StreamID: st.id, Version: len(st.history) + len(st.appended) + 1,
			Type: typ, SchemaVersion: schema, Event: e, Metadata: r.md})
		st.payloads = append(st.payloads, payload)
	}
	r.to = len(st.appended)
	return nil
}

// lockStreams locks the order_ids rows of the group's updates, in id order (so that two groups
// never wait for each other in a cycle), then loads their streams. The streams are read after
// the locks, so this consistent read sees every append the previous holders committed. An
// order without a row or without events is missing from the map.
func lockStreams(ctx context.Context, tx *sql.Tx, group []*request) (map[domain.OrderID]*stream, error) {
	var ids []domain.OrderID
	for _, r := range group {
		if r.create == nil {
			ids = append(ids, r.id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.QueryContext(ctx, `SELECT order_id FROM order_ids WHERE order_id IN (`+Placeholders(len(ids))+`) ORDER BY order_id FOR UPDATE`, args...)
	if err != nil {
		return nil, fmt.Errorf("lock orders: %w", err)
	}
	locked := map[domain.OrderID]bool{}
	for rows.Next() {
		var id domain.OrderID
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lock orders: %w", err)
		}
		locked[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock orders: %w", err)
	}
	streams := map[domain.OrderID]*stream{}
	err = ScanStreamsOf(ctx, tx, ids, func(r Record) error {
		if !locked[r.StreamID] {
			return nil
		}
		st := streams[r.StreamID]
		if st == nil {
			st = &stream{id: r.StreamID}
			streams[r.StreamID] = st
		}
		st.history = append(st.history, r)
		return nil
	})
	return streams, err
}

// decideIn runs r's decision on its stream as the group has it so far. A refusal is r's own
// (left in r.err); the error returned fails the group: a deadlock or lock wait timeout under
// decide, after which InnoDB may have rolled the whole transaction back.
func decideIn(ctx context.Context, tx *sql.Tx, r *request, st *stream, grouped bool) ([]domain.Event, error) {
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return nil, nil
	}
	// In a group, a decide that writes does so after a savepoint, so that a refusal after
	// some of its writes undoes them and only them.
	var dtx Tx = tx
	sp := &savepointTx{tx: tx, ctx: ctx}
	if grouped && r.writes {
		dtx = sp
	}
	// decide gets its caller's context (its deadline, its trace) for the services it calls.
	r.deciding.Store(true)
	events, err := r.decide(r.ctx, dtx, domain.Rehydrate(st.id, st.events()))
	r.deciding.Store(false)
	switch {
	case sp.err != nil:
		return nil, sp.err
	case err == nil:
		return events, nil
	case isRetryable(err):
		return nil, err
	}
	if sp.taken {
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT decide`); rerr != nil {
			return nil, fmt.Errorf("roll back to savepoint: %w", rerr)
		}
	}
	r.err = err
	return nil, nil
}

// savepointTx is the transaction as a grouped decide that writes sees it: its first
// statement is preceded by a savepoint. The savepoint is taken lazily because many such
// decides run no statement at all (the inventory stage with an order of no items), and a
// SAVEPOINT is a round trip to the server like any other statement.
type savepointTx struct {
	tx    *sql.Tx
	ctx   context.Context // the group's: the savepoint is the group's statement, not decide's
	taken bool
	err   error // the savepoint's own failure: it fails the group, whatever decide makes of it
}

func (t *savepointTx) take() error {
	if !t.taken && t.err == nil {
		if _, err := t.tx.ExecContext(t.ctx, `SAVEPOINT decide`); err != nil {
			t.err = fmt.Errorf("savepoint: %w", err)
		} else {
			t.taken = true
		}
	}
	return t.err
}

func (t *savepointTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := t.take(); err != nil {
		return nil, err
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *savepointTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.take(); err != nil {
		return nil, err
	}
	return t.tx.QueryContext(ctx, query, args...)
}

// allocate inserts the order_ids rows of the group's creations in one statement; alone says
// the creation is its group's only request. The rows of
// a multi-row INSERT with its row count known in advance get consecutive auto-increment
// values in every InnoDB lock mode (steps of auto_increment_increment), so each creation's id
// follows from LAST_INSERT_ID.
func (s *Store) allocate(ctx context.Context, tx *sql.Tx, creates []*request, alone bool, increment int64) error {
	args := make([]any, 0, 4*len(creates))
	for _, r := range creates {
		var key, hash any
		if r.create.IdempotencyKey != "" {
			key, hash = r.create.IdempotencyKey, r.create.RequestHash
		}
		args = append(args, key, hash, r.create.AccessHash, s.now())
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO order_ids (idempotency_key, request_hash, access_hash, created_at) VALUES `+PlaceholderRows(4, len(creates)), args...)
	if isDuplicate(err) {
		if alone {
			return errIdempotencyKeyUsed
		}
		return err // the group runs again request by request, which tells which one it was
	}
	if err != nil {
		return fmt.Errorf("create order: allocate id: %w", err)
	}
	first, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("create order: allocate id: %w", err)
	}
	for i, r := range creates {
		r.newID = domain.OrderID(first + int64(i)*increment)
	}
	return nil
}

// insertEvents appends the streams' new records in one statement, published to the log's
// watermill-sql topic (topic.go), and fills in their positions and time. The UNIQUE
// (stream_id, version) key turns a concurrent append into errVersionConflict.
func insertEvents(ctx context.Context, tx *sql.Tx, touched []*stream, increment int64, now time.Time) error {
	var msgs message.Messages
	for _, st := range touched {
		for i := range st.appended {
			r := &st.appended[i]
			r.OccurredAt = now
			msgs = append(msgs, newMessage(*r, st.payloads[i]))
		}
	}
	res, err := publishLog(ctx, tx, msgs)
	if isDuplicate(err) {
		return errVersionConflict
	}
	if err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	first, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	k := int64(0)
	for _, st := range touched {
		for i := range st.appended {
			st.appended[i].Position = first + k*increment
			k++
		}
	}
	return nil
}

// PlaceholderRows returns n rows of cols placeholders each, "(?, ?), (?, ?)", for a
// multi-row INSERT: the one writer of them for every package that owns a table.
func PlaceholderRows(cols, n int) string {
	row := "(?" + strings.Repeat(", ?", cols-1) + ")"
	return row + strings.Repeat(", "+row, n-1)
}

// Placeholders returns n placeholders, "?,?,?", for an IN list.
func Placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }
