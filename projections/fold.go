package projections

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"golang.org/x/sync/errgroup"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/projections/orders"
)

// Tuning of the snapshot fold. Reading the log in position order is the cheapest read
// MySQL can do (a walk of the clustered index); reading it stream by stream costs a
// secondary-index lookup per event, about twice the server's CPU.
var (
	chunkPositions int64 = 16384 // positions per read; one read per chunk
	readers              = 2     // connections reading chunks in parallel
	writers              = 2     // connections writing rows in parallel
	writeBatch           = 2000  // rows per INSERT (catch-up, refolds); orders.ColumnCount placeholders each
	loadBatch            = 5000  // rows per LOAD DATA: fewer, bigger loads cost the server less
	maxOpen              = 50000 // orders held in memory while their stream is unfinished
)

// foldLog folds every stream of the snapshot into table, reading the log in position order.
//
// Readers fetch and decode consecutive position ranges in parallel; one folder applies the
// records in position order, keeping a row per order until the order is settled (its last
// event in the domain's terms) and then handing it to the writers. Within a stream, position
// order is version order: an append reads the stream's last version committed before it
// takes its own, later position. A row is written once, when settled, or when too many
// orders are open (the oldest go), or at the end. An event arriving for a stream that was
// already written marks the stream for a refold, stream by stream, at the end; so the
// settled test is only a memory hint and correctness never rests on it.
func foldLog(ctx context.Context, w loadWriter, snap *Snapshot, progress func(events int64)) (events, streams int64, refolded []domain.OrderID, err error) {
	dec, err := newDecoder(ctx, snap.conns[0])
	if err != nil {
		return 0, 0, nil, err
	}
	query, err := rawQuery(eventstore.RawByPosition)
	if err != nil {
		return 0, 0, nil, err
	}
	g, ctx := errgroup.WithContext(ctx)

	// Readers: reader r reads chunks r, r+n, r+2n… so the folder can take them in order.
	n := min(readers, len(snap.conns))
	chunks := make([]chan []eventstore.Record, n)
	free := make(chan []eventstore.Record, 3*n)
	for r := range n {
		chunks[r] = make(chan []eventstore.Record, 1)
		g.Go(func() error {
			defer close(chunks[r])
			if snap.maxPosition == 0 {
				return nil
			}
			return readRaw(ctx, snap.conns[r], dec, query, func(read func([]eventstore.Record, ...any) ([]eventstore.Record, error)) error {
				for lo := snap.minPosition + int64(r)*chunkPositions; lo <= snap.maxPosition; lo += int64(n) * chunkPositions {
					var buf []eventstore.Record
					select {
					case buf = <-free:
					default:
						buf = make([]eventstore.Record, 0, chunkPositions)
					}
					buf, err := read(buf[:0], lo, lo+chunkPositions)
					if err != nil {
						return err
					}
					select {
					case chunks[r] <- buf:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			})
		})
	}

	batches := w.start(ctx, g)
	f := folder{open: map[domain.OrderID]*orders.OrderRow{}, refold: map[domain.OrderID]bool{}, out: batches, ctx: ctx}
	g.Go(func() error {
		defer close(batches)
		for k := 0; ; k++ {
			recs, ok := <-chunks[k%n]
			if !ok {
				break
			}
			for i := range recs {
				if err := f.apply(recs[i]); err != nil {
					return err
				}
			}
			events += int64(len(recs))
			select {
			case free <- recs:
			default:
			}
			if progress != nil {
				progress(events)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return f.flushAll()
	})
	if err := g.Wait(); err != nil {
		return events, f.streams, nil, err
	}
	for id := range f.refold {
		refolded = append(refolded, id)
	}
	slices.Sort(refolded)
	return events, f.streams, refolded, nil
}

// folder applies records in log order to the rows of the orders still open.
type folder struct {
	ctx     context.Context
	open    map[domain.OrderID]*orders.OrderRow
	refold  map[domain.OrderID]bool // streams written before all their events were seen
	batch   []*orders.OrderRow
	out     chan<- []*orders.OrderRow
	written int64 // rows handed to the writers
	streams int64 // streams seen (by their first event)
}

func (f *folder) apply(rec eventstore.Record) error {
	if rec.Version == 1 {
		f.streams++
	}
	if f.refold[rec.StreamID] {
		return nil
	}
	row := f.open[rec.StreamID]
	if row == nil {
		if rec.Version != 1 {
			f.refold[rec.StreamID] = true // its row went out early: fold it again at the end
			return nil
		}
		row = &orders.OrderRow{}
		f.open[rec.StreamID] = row
	} else if rec.Version != row.Version+1 {
		f.refold[rec.StreamID] = true // not in version order after all: let the refold decide
		delete(f.open, rec.StreamID)
		return nil
	}
	row.Apply(rec)
	if row.Settled() {
		delete(f.open, rec.StreamID)
		return f.emit(row)
	}
	if len(f.open) > maxOpen {
		return f.evictOldest()
	}
	return nil
}

// evictOldest writes out the half of the open rows that were touched longest ago.
func (f *folder) evictOldest() error {
	rows := make([]*orders.OrderRow, 0, len(f.open))
	for _, r := range f.open {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b *orders.OrderRow) int { return cmp.Compare(a.LastPosition, b.LastPosition) })
	for _, r := range rows[:len(rows)/2] {
		delete(f.open, r.OrderID)
		if err := f.emit(r); err != nil {
			return err
		}
	}
	return nil
}

// flushAll writes every row still open, in order id order.
func (f *folder) flushAll() error {
	ids := make([]domain.OrderID, 0, len(f.open))
	for id := range f.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := f.emit(f.open[id]); err != nil {
			return err
		}
	}
	return f.send()
}

// emit hands the row over to the writers; the folder no longer touches it.
func (f *folder) emit(r *orders.OrderRow) error {
	if f.batch == nil {
		f.batch = make([]*orders.OrderRow, 0, loadBatch)
	}
	f.batch = append(f.batch, r)
	f.written++
	if len(f.batch) == loadBatch {
		return f.send()
	}
	return nil
}

func (f *folder) send() error {
	if len(f.batch) == 0 {
		return nil
	}
	// Orders settle in roughly the order they were placed; sorting each batch by id makes
	// its inserts nearly appends to the primary key, which InnoDB does cheapest.
	slices.SortFunc(f.batch, func(a, b *orders.OrderRow) int { return cmp.Compare(a.OrderID, b.OrderID) })
	select {
	case f.out <- f.batch:
		f.batch = nil
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

// refoldStreams folds the given streams whole from the snapshot and upserts their rows.
func refoldStreams(ctx context.Context, snap *Snapshot, ids []domain.OrderID, write func([]orders.OrderRow) error) error {
	dec, err := newDecoder(ctx, snap.conns[0])
	if err != nil {
		return err
	}
	for start := 0; start < len(ids); start += writeBatch {
		part := ids[start:min(start+writeBatch, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		query, err := rawQuery(func(np map[string]int) eventstore.RawQuery { return eventstore.RawOfStreams(len(part), np) })
		if err != nil {
			return err
		}
		recs, err := readEvents(ctx, snap.conns[0], dec, nil, query, args...)
		if err != nil {
			return fmt.Errorf("refold: %w", err)
		}
		if err := write(foldStreams(recs, nil)); err != nil {
			return fmt.Errorf("refold: %w", err)
		}
	}
	return nil
}
