package eventstore

import (
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"orderd/domain"
)

// UpdateQueuedBehind reports whether an Update of id waits, in a group or for one, while
// another Update of id decides: the store's own serialisation, which the database's process
// list does not show.
func (s *Store) UpdateQueuedBehind(id domain.OrderID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	deciding, waiting := false, false
	for _, reqs := range [][]*request{s.updates.pending, keys(s.running)} {
		for _, r := range reqs {
			if r.create != nil || r.id != id {
				continue
			}
			if r.deciding.Load() {
				deciding = true
			} else if r.err == nil && r.st == nil {
				waiting = true
			}
		}
	}
	return deciding && waiting
}

func keys(m map[*request]struct{}) []*request {
	out := make([]*request, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	return out
}

// SetWorkers sets how many groups may run at once; call it before the store is used.
func (s *Store) SetWorkers(n int) { s.workers = n }

// Pending reports how many requests wait for a worker.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.creates.pending) + len(s.updates.pending)
}

// AppendStatement inserts recs (one stream, numbered already) in tx as a group's append does:
// through the log's watermill-sql Publisher, or, with direct, with the plain statement that
// path replaced (kept here as the benchmark's baseline).
func AppendStatement(ctx context.Context, tx *sql.Tx, recs []Record, direct bool) error {
	st := &stream{id: recs[0].StreamID, appended: slices.Clone(recs)}
	for _, r := range recs {
		_, _, payload, err := encodeEvent(r.Event)
		if err != nil {
			return err
		}
		st.payloads = append(st.payloads, payload)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	if !direct {
		return insertEvents(ctx, tx, []*stream{st}, 1, now)
	}
	var args []any
	for i, r := range st.appended {
		meta, err := jsonMarshalMeta(r.Metadata)
		if err != nil {
			return err
		}
		args = append(args, r.StreamID, r.Version, r.Type, r.SchemaVersion, st.payloads[i], meta, now)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at) VALUES `+PlaceholderRows(7, len(recs)), args...)
	return err
}

// InsertQueryArgs builds the arguments of the log's insert for recs without running it: through
// messages and the LogSchema, or, with direct, as the replaced path did.
func InsertQueryArgs(recs []Record, payloads [][]byte, direct bool) ([]any, error) {
	if direct {
		var args []any
		for i, r := range recs {
			meta, err := jsonMarshalMeta(r.Metadata)
			if err != nil {
				return nil, err
			}
			args = append(args, r.StreamID, r.Version, r.Type, r.SchemaVersion, payloads[i], meta, r.OccurredAt)
		}
		return args, nil
	}
	msgs := make([]*message.Message, len(recs))
	for i, r := range recs {
		msgs[i] = newMessage(r, payloads[i])
	}
	q, err := LogSchema{}.InsertQuery(Topic, msgs)
	return q.Args, err
}
