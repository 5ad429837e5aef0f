package eventstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"orderd/domain"
)

// importRows is how many rows one multi-row INSERT of an import writes.
const importRows = 2000

// Importer writes a log straight into the events and order_ids tables in bulk, with
// multi-row INSERTs on several connections: no append, no hook, no outbox, no projection.
// It fills a scratch database with a log as the store would have written it (cmd/replaybench
// fills a million events this way in seconds); nothing else may write the log meanwhile,
// and the caller gives each event its position and version. Values are written as SQL
// literals rather than placeholders: at this volume binding a million rows' arguments
// costs more than the INSERTs themselves.
type Importer struct {
	ctx     context.Context
	batches chan string
	wg      sync.WaitGroup
	errOnce sync.Once
	err     error
	failed  chan struct{} // closed on the first failed INSERT

	events, ids strings.Builder
	evRows      int
	idRows      int
	closed      bool
}

// NewImporter returns an importer writing to db over conns connections at once.
func NewImporter(ctx context.Context, db *sql.DB, conns int) (*Importer, error) {
	if db == nil || conns < 1 {
		return nil, errors.New("eventstore: NewImporter needs a db and at least one connection")
	}
	im := &Importer{ctx: ctx, batches: make(chan string, conns), failed: make(chan struct{})}
	for range conns {
		im.wg.Add(1)
		go func() {
			defer im.wg.Done()
			for q := range im.batches {
				if _, err := db.ExecContext(ctx, q); err != nil {
					im.fail(err)
				}
			}
		}()
	}
	return im, nil
}

func (im *Importer) fail(err error) {
	im.errOnce.Do(func() { im.err = err; close(im.failed) })
}

// Order writes order id's row in order_ids, created at createdAt.
func (im *Importer) Order(id domain.OrderID, createdAt time.Time) error {
	if im.idRows == 0 {
		im.ids.WriteString("INSERT INTO order_ids (order_id, created_at) VALUES")
	} else {
		im.ids.WriteByte(',')
	}
	fmt.Fprintf(&im.ids, "\n(%d,'%s')", id, createdAt.UTC().Format("2006-01-02 15:04:05.000000"))
	if im.idRows++; im.idRows == importRows {
		return im.flush(&im.ids, &im.idRows)
	}
	return nil
}

// Event writes r (its Position, StreamID, Version, Event, Metadata and OccurredAt) in
// events, encoded as an append encodes it.
func (im *Importer) Event(r Record) error {
	typ, version, payload, err := encodeEvent(r.Event)
	if err != nil {
		return err
	}
	meta, err := json.Marshal(r.Metadata)
	if err != nil {
		return err
	}
	if im.evRows == 0 {
		im.events.WriteString("INSERT INTO events (position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at) VALUES")
	} else {
		im.events.WriteByte(',')
	}
	fmt.Fprintf(&im.events, "\n(%d,%d,%d,'%s',%d,", r.Position, r.StreamID, r.Version, typ, version)
	writeSQLString(&im.events, payload)
	im.events.WriteByte(',')
	writeSQLString(&im.events, meta)
	fmt.Fprintf(&im.events, ",'%s')", r.OccurredAt.UTC().Format("2006-01-02 15:04:05.000000"))
	if im.evRows++; im.evRows == importRows {
		return im.flush(&im.events, &im.evRows)
	}
	return nil
}

// flush hands the statement in b to a connection, unless an INSERT has failed or ctx ended.
func (im *Importer) flush(b *strings.Builder, rows *int) error {
	if *rows == 0 {
		return nil
	}
	q := b.String()
	b.Reset()
	*rows = 0
	select {
	case im.batches <- q:
		return nil
	case <-im.failed:
		return fmt.Errorf("import the log: %w", im.err)
	case <-im.ctx.Done():
		return fmt.Errorf("import the log: %w", im.ctx.Err())
	}
}

// Close writes what is buffered, waits for every INSERT and returns the first error.
func (im *Importer) Close() error {
	if im.closed {
		return nil
	}
	im.closed = true
	err := errors.Join(im.flush(&im.events, &im.evRows), im.flush(&im.ids, &im.idRows))
	close(im.batches)
	im.wg.Wait()
	if im.err != nil {
		return fmt.Errorf("import the log: %w", im.err)
	}
	if err == nil {
		err = im.ctx.Err()
	}
	return err
}

// writeSQLString writes b to sb as a MySQL string literal. Encoded JSON needs no more than
// its backslashes and quotes escaped: json.Marshal escapes control characters.
func writeSQLString(sb *strings.Builder, b []byte) {
	sb.WriteByte('\'')
	for len(b) > 0 {
		i := bytes.IndexAny(b, `\'`)
		if i < 0 {
			sb.Write(b)
			break
		}
		sb.Write(b[:i])
		sb.WriteByte('\\')
		sb.WriteByte(b[i])
		b = b[i+1:]
	}
	sb.WriteByte('\'')
}
