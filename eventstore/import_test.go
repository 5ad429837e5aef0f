package eventstore_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
)

// TestImportReadsBackAsAppended: a log written by the importer (more events than one INSERT
// holds, payloads with quotes and backslashes) reads back through the store as it was
// given, positions included, and the imported orders' ids are allocated.
func TestImportReadsBackAsAppended(t *testing.T) {
	env := testenv.New(t)
	ctx := context.Background()
	store, err := eventstore.New(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	im, err := eventstore.NewImporter(ctx, env.DB, 2)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const orders = 1500 // two events each: more than one INSERT's 2000 rows
	want := map[domain.OrderID][]eventstore.Record{}
	var position int64
	for id := domain.OrderID(1); id <= orders; id++ {
		if err := im.Order(id, at); err != nil {
			t.Fatal(err)
		}
		for v, e := range []domain.Event{
			domain.OrderPlaced{CustomerName: `O'Brien \ "Quoted"`, CustomerEmail: "o@example.com", Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 1, UnitPriceCents: 1299}}, TotalCents: 1299},
			domain.PaymentFailed{Reason: `it's \ declined`},
		} {
			position++
			r := eventstore.Record{Position: position, StreamID: id, Version: v + 1, Event: e,
				Metadata: eventstore.Metadata{CorrelationID: "c'1", CausationID: `c\1`}, OccurredAt: at.Add(time.Duration(position) * time.Microsecond)}
			if err := im.Event(r); err != nil {
				t.Fatal(err)
			}
			r.Type, r.SchemaVersion = e.EventType(), eventstore.SchemaVersions()[e.EventType()]
			want[id] = append(want[id], r)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM order_ids`); n != orders {
		t.Errorf("%d order ids, want %d", n, orders)
	}
	for _, id := range []domain.OrderID{1, 777, orders} {
		got, _, err := store.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			got[i].OccurredAt = got[i].OccurredAt.UTC()
		}
		if !reflect.DeepEqual(got, want[id]) {
			t.Errorf("order %d read back as\n%+v\nwant\n%+v", id, got, want[id])
		}
	}
}
