package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
	"orderd/projections/orders"
)

// These tests run against a real MariaDB/MySQL (TEST_MYSQL_DSN). Several shrink the fold's
// chunks, batches and memory bound (tiny) so that a log of a few hundred events goes
// through every path a million-event log does: many chunks, rows written before their
// stream ends, refolds.

// tiny shrinks the fold's tuning for the rest of the test.
func tiny(t *testing.T) {
	saved := [...]any{chunkPositions, writeBatch, loadBatch, maxOpen, verifyChunk}
	chunkPositions, writeBatch, loadBatch, maxOpen, verifyChunk = 7, 4, 4, 3, 5
	t.Cleanup(func() {
		chunkPositions, writeBatch, loadBatch, maxOpen, verifyChunk = saved[0].(int64), saved[1].(int), saved[2].(int), saved[3].(int), saved[4].(domain.OrderID)
	})
}

// decision is a step of an order's path, as the stages take it.
type decision func(o *domain.Order) ([]domain.Event, error)

var (
	pay = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Approved: true, PaymentID: fmt.Sprintf("pay_%d", o.ID())})
	}
	decline = func(o *domain.Order) ([]domain.Event, error) {
		return o.Pay(domain.PaymentOutcome{Reason: "card declined: \"limit\"\t\\ reached"})
	}
	reserve = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reserved: true})
	}
	short = func(o *domain.Order) ([]domain.Event, error) {
		return o.Reserve(domain.ReservationOutcome{Reason: "out of stock: SKU-<MUG>&"})
	}
	refund = func(o *domain.Order) ([]domain.Event, error) { return o.Refund(fmt.Sprintf("ref_%d", o.ID())) }
	email  = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmail(o.CustomerEmail(), fmt.Sprintf("<order-%d@test>", o.ID()))
	}
	// The mail server refused the notification for good; the reply holds what a server may
	// write and JSON must escape (so the replay's fast decoder hands it to encoding/json).
	bounce = func(o *domain.Order) ([]domain.Event, error) {
		return o.RecordEmailFailure(o.CustomerEmail(), `RCPT TO: 550 5.1.1 <x@y>: "unknown" \ user – ß`)
	}
	// An even count keeps the cancelled paths (even indexes) off the seed's orders (every
	// fourth, odd), which reserve nothing and so cannot be refunded.
	paths = [][]decision{{pay, reserve, email}, {decline, email}, {pay, short, refund, email}, {pay}, {pay, reserve}, {},
		{pay, short, refund, bounce}, {decline, bounce}, {pay, reserve, bounce}, {decline}}
	// Names that LOAD DATA and the SQL escaping must carry unchanged.
	names = []string{"Zoë 😀", `O'Brien "Q"`, "tab\there", "new\nline", `back\slash`, "<b>&amp;", "plain", "ünïcödé ✓", "\\N"}
)

// buildShop places n orders through the event store, which writes the live projection in
// each append's transaction as the service does, and walks each along one of paths. With
// interleave it takes every order one step at a time in turn, so that streams interleave in
// the log as they do under load; otherwise each order runs its whole path first.
func buildShop(t *testing.T, env *testenv.Env, n int, interleave bool) *eventstore.Store {
	t.Helper()
	ctx := context.Background()
	store, err := eventstore.New(env.DB, Orders{})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]domain.OrderID, n)
	step := func(i, k int) bool {
		path := paths[i%len(paths)]
		if k >= len(path) {
			return false
		}
		if _, err := store.Update(ctx, ids[i], eventstore.Metadata{}, eventstore.Decide(path[k])); err != nil {
			t.Fatalf("order %d step %d: %v", ids[i], k, err)
		}
		return true
	}
	for i := range ids {
		e := domain.OrderPlaced{CustomerName: names[i%len(names)], Items: []domain.Item{}}
		if i%4 != 3 { // every fourth as the seed's POST /place-order makes it: no email, no items
			e.CustomerEmail = fmt.Sprintf("c%d@example.com", i)
			e.Items = []domain.Item{{SKU: "SKU-MUG", Quantity: 1 + i%3, UnitPriceCents: 899}, {SKU: "SKU-BOOK", Quantity: 1, UnitPriceCents: 1299}}
			e.TotalCents = int64(1+i%3)*899 + 1299
		}
		if ids[i], err = store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{e}); err != nil {
			t.Fatal(err)
		}
		if !interleave {
			for k := 0; step(i, k); k++ {
			}
		}
	}
	for k := 0; interleave; k++ {
		more := false
		for i := range ids {
			more = step(i, k) || more
		}
		interleave = more
	}
	return store
}

// dump returns every row of the orders table, each column as the exact bytes MySQL holds
// (NULL distinct from the empty string), in order id order.
func dump(t *testing.T, env *testenv.Env) []string {
	t.Helper()
	var exprs []string
	for _, c := range columnNames {
		exprs = append(exprs, fmt.Sprintf("IFNULL(HEX(CAST(%s AS BINARY)), 'NULL')", c))
	}
	return env.Strings(t, `SELECT CONCAT_WS('|', `+strings.Join(exprs, ", ")+`) FROM orders ORDER BY order_id`)
}

func sameRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: %d rows differ from the %d expected", what, len(got), len(want))
		for i := 0; i < min(len(got), len(want)); i++ {
			if got[i] != want[i] {
				t.Errorf("first difference, row %d:\n got  %s\n want %s", i, got[i], want[i])
				break
			}
		}
	}
}

func verify(t *testing.T, env *testenv.Env) (VerifyStats, []Difference) {
	t.Helper()
	var diffs []Difference
	stats, err := Verify(context.Background(), env.DB, VerifyOptions{OnDiff: func(d Difference) { diffs = append(diffs, d) }})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if stats.Differences != int64(len(diffs)) {
		t.Errorf("stats say %d differences, %d reported", stats.Differences, len(diffs))
	}
	return stats, diffs
}

func mustRebuild(t *testing.T, env *testenv.Env) RebuildStats {
	t.Helper()
	stats, err := Rebuild(context.Background(), env.DB, nil)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	return stats
}

// TestVerifyAndRebuildAgreeWithLive: the live table, written append by append, is what
// Verify finds the log folds to and what Rebuild writes, byte for byte, through LOAD DATA
// and through the INSERT fallback, with streams interleaved or not and the fold's chunks,
// batches and memory bound small enough that every stream crosses them.
func TestVerifyAndRebuildAgreeWithLive(t *testing.T) {
	for _, interleave := range []bool{false, true} {
		for _, load := range []bool{true, false} {
			t.Run(fmt.Sprintf("interleaved=%v/load-data=%v", interleave, load), func(t *testing.T) {
				tiny(t)
				env := testenv.New(t)
				buildShop(t, env, 40, interleave)
				live := dump(t, env)
				events := env.Count(t, `SELECT COUNT(*) FROM events`)

				stats, diffs := verify(t, env)
				if len(diffs) != 0 || stats.Orders != 40 || stats.LiveRows != 40 || stats.Events != int64(events) {
					t.Fatalf("verify of the live table: %+v, differences %v", stats, diffs)
				}
				rs, err := rebuildOrders(context.Background(), env.DB, nil, load)
				if err != nil {
					t.Fatalf("rebuild: %v", err)
				}
				if rs.Orders != 40 || rs.Events != int64(events) {
					t.Errorf("rebuild stats %+v: want 40 orders, %d events", rs, events)
				}
				if interleave && rs.Refolded == 0 {
					t.Errorf("rebuild stats %+v: interleaved streams over a memory bound of %d orders were not refolded", rs, maxOpen)
				}
				sameRows(t, "rebuilt table", dump(t, env), live)
				if _, diffs := verify(t, env); len(diffs) != 0 {
					t.Errorf("verify after the rebuild: %v", diffs)
				}
			})
		}
	}
}

// TestVerifyReportsEveryDifference corrupts the live table in each way it can differ and
// expects each difference named, in order id order, with nothing written anywhere.
func TestVerifyReportsEveryDifference(t *testing.T) {
	tiny(t)
	env := testenv.New(t)
	buildShop(t, env, 24, false)
	// Order 1 is completed, 3 is cancelled, 4 was placed like the seed's (no email).
	env.MustExec(t, `UPDATE orders SET order_status = 'pending' WHERE order_id = 1`)
	env.MustExec(t, `UPDATE orders SET customer_email = '', total_cents = total_cents + 1 WHERE order_id = 4`)
	env.MustExec(t, `DELETE FROM orders WHERE order_id = 3`)
	env.MustExec(t, `DELETE FROM events WHERE stream_id = 10`) // its row is left without a stream
	env.MustExec(t, `INSERT INTO orders (`+orders.Columns+`) SELECT 999999, customer_name, order_status, payment_status, inventory_status, email_sent,
		email_failed, customer_email, items, total_cents, failure_reason, version, last_position, placed_at, updated_at FROM orders WHERE order_id = 2`)
	before := dump(t, env)

	stats, diffs := verify(t, env)
	want := []Difference{
		{OrderID: 1, Kind: DiffColumn, Column: "order_status", Live: `"pending"`, Rebuilt: `"completed"`},
		{OrderID: 3, Kind: DiffMissing},
		{OrderID: 4, Kind: DiffColumn, Column: "customer_email", Live: `""`, Rebuilt: "NULL"},
		{OrderID: 4, Kind: DiffColumn, Column: "total_cents", Live: `"1"`, Rebuilt: `"0"`},
		{OrderID: 10, Kind: DiffExtra},
		{OrderID: 999999, Kind: DiffExtra},
	}
	if !reflect.DeepEqual(diffs, want) {
		t.Errorf("differences:\n got  %v\n want %v", diffs, want)
	}
	if stats.Orders != 23 || stats.LiveRows != 24 {
		t.Errorf("stats %+v: want 23 orders folded and 24 live rows", stats)
	}
	if got := diffs[0].String(); got != `order 1: order_status: live "pending", rebuilt "completed"` {
		t.Errorf("difference reads %q", got)
	}
	sameRows(t, "live table after verify", dump(t, env), before)
	if n := env.Count(t, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\_%'`); n != 0 {
		t.Errorf("verify left %d scratch tables", n)
	}
}

// TestEmptyLog: with no event at all, a rebuild swaps in an empty table and every live row
// is extra.
func TestEmptyLog(t *testing.T) {
	env := testenv.New(t)
	if stats := mustRebuild(t, env); stats.Events != 0 || stats.Orders != 0 {
		t.Errorf("rebuild of an empty log: %+v", stats)
	}
	if stats, diffs := verify(t, env); len(diffs) != 0 || stats.LiveRows != 0 {
		t.Errorf("verify of an empty log and table: %+v %v", stats, diffs)
	}
	env.MustExec(t, `INSERT INTO orders (order_id, items, total_cents, version, last_position, placed_at, updated_at)
		VALUES (5, '[]', 0, 1, 1, NOW(), NOW()), (9, '[]', 0, 1, 2, NOW(), NOW())`)
	if _, diffs := verify(t, env); !reflect.DeepEqual(diffs, []Difference{{OrderID: 5, Kind: DiffExtra}, {OrderID: 9, Kind: DiffExtra}}) {
		t.Errorf("verify of rows without a log: %v", diffs)
	}
}

// TestInterruptedRebuildLeavesLiveTable cancels a rebuild midway through folding (from its
// progress callback) and expects the live table untouched, nothing left behind, and a rerun
// that succeeds.
func TestInterruptedRebuildLeavesLiveTable(t *testing.T) {
	tiny(t)
	env := testenv.New(t)
	buildShop(t, env, 60, true)
	env.MustExec(t, `UPDATE projections SET version = 0 WHERE name = 'orders'`) // as if stale
	live := dump(t, env)
	events := int64(env.Count(t, `SELECT COUNT(*) FROM events`))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls int
	var at int64
	_, err := Rebuild(ctx, env.DB, func(n int64) {
		if calls++; calls == 3 {
			at = n
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rebuild: %v, want context.Canceled", err)
	}
	if at == 0 || at >= events {
		t.Fatalf("cancelled after %d of %d events: not midway", at, events)
	}
	sameRows(t, "live table after an interrupted rebuild", dump(t, env), live)
	if n := env.Count(t, `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\_%'`); n != 0 {
		t.Errorf("the interrupted rebuild left %d work tables", n)
	}
	if v := env.Count(t, `SELECT version FROM projections WHERE name = 'orders'`); v != 0 {
		t.Errorf("the interrupted rebuild recorded version %d", v)
	}

	stats := mustRebuild(t, env)
	if stats.Events != events || stats.Orders != 60 {
		t.Errorf("rerun: %+v", stats)
	}
	sameRows(t, "table after the rerun", dump(t, env), live)
	if v := env.Count(t, `SELECT version FROM projections WHERE name = 'orders'`); v != orders.Version {
		t.Errorf("the rerun recorded version %d, want %d", v, orders.Version)
	}
}

// TestReplayHasNoSideEffects: a replay or a verify appends no event and touches neither the
// outbox (what the relay sends to SQS, and so what leads to emails) nor stock nor order ids.
func TestReplayHasNoSideEffects(t *testing.T) {
	env := testenv.New(t)
	buildShop(t, env, 12, true)
	// Messages waiting for the relay, as a running service would leave them.
	env.MustExec(t, `INSERT INTO outbox (position, queue, event_id, event_type, correlation_id, body, created_at)
		SELECT position, 'EmailNotificationQueue', CONCAT(stream_id, '-', version), event_type, '', payload, occurred_at FROM events WHERE version = 2`)
	state := func() string {
		var s sql.NullString
		err := env.DB.QueryRow(`SELECT CONCAT_WS(' / ',
			(SELECT CONCAT(COUNT(*), ':', COALESCE(MAX(position), 0), ':', COALESCE(SUM(CRC32(payload)), 0)) FROM events),
			(SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT(queue, event_id, body))), 0)) FROM outbox),
			(SELECT CONCAT(SUM(available), ':', SUM(reserved)) FROM stock),
			(SELECT COUNT(*) FROM order_ids))`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s.String
	}
	before := state()
	mustRebuild(t, env)
	verify(t, env)
	if after := state(); after != before {
		t.Errorf("events / outbox / stock / order ids changed:\n before %s\n after  %s", before, after)
	}
}

// TestRebuildUpcastsVersion1Events stores an OrderPlaced as the first release wrote it
// (schema version 1: the seed's two fields, snake case) followed by later events, all as raw
// rows, and rebuilds: the row must be the fold of the upcast stream.
func TestRebuildUpcastsVersion1Events(t *testing.T) {
	env := testenv.New(t)
	at := time.Date(2024, 3, 1, 9, 0, 0, 123456000, time.UTC)
	rows := []struct {
		typ     string
		schema  int
		payload string
	}{
		{domain.TypeOrderPlaced, 1, `{"customer_name":"Old","customer_email":"old@example.com"}`},
		{domain.TypePaymentCompleted, 1, `{"paymentId":"pay_1-1","amountCents":0}`},
		{domain.TypeInventoryReserved, 1, `{"items":[]}`},
		{domain.TypeEmailSent, 1, `{"to":"old@example.com","messageId":"<order-1-v3@shop>","template":"order_confirmed"}`},
	}
	env.MustExec(t, `INSERT INTO order_ids (order_id, created_at) VALUES (1, ?)`, at)
	for i, r := range rows {
		env.MustExec(t, `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
			VALUES (1, ?, ?, ?, ?, '{}', ?)`, i+1, r.typ, r.schema, r.payload, at.Add(time.Duration(i)*time.Second))
	}

	// The live table never saw these rows (they were written by hand): Verify says so.
	if _, diffs := verify(t, env); !reflect.DeepEqual(diffs, []Difference{{OrderID: 1, Kind: DiffMissing}}) {
		t.Errorf("verify before the rebuild: %v, want order 1 missing", diffs)
	}
	mustRebuild(t, env)
	rd, err := orders.NewReader(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rd.Order(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := orders.OrderRow{OrderID: 1, CustomerName: "Old", CustomerEmail: "old@example.com", Items: []domain.Item{},
		OrderStatus: domain.StatusCompleted, PaymentStatus: domain.StatusCompleted, InventoryStatus: domain.StatusCompleted,
		EmailSent: true, Version: 4, LastPosition: 4, PlacedAt: at, UpdatedAt: at.Add(3 * time.Second)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rebuilt row\n got  %+v\n want %+v", got, want)
	}
	// eventstore's own reader upcasts the same way, and the live fold agrees.
	store, _ := eventstore.New(env.DB, Orders{})
	history, _, err := store.Load(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if folded := orders.FoldOrder(history); !reflect.DeepEqual(folded, want) {
		t.Errorf("FoldOrder of eventstore's history\n got  %+v\n want %+v", folded, want)
	}
	if _, diffs := verify(t, env); len(diffs) != 0 {
		t.Errorf("verify after the rebuild: %v", diffs)
	}
}

// TestFastDecodeMatchesEventstore stores payloads of every event type, in the shape
// encoding/json writes and in shapes it merely accepts (or rejects), and reads each through
// eventstore's reader and through the replay's: the decoded events must be equal where the
// replay decodes them, the folded rows equal everywhere, and an error on one side an error on
// the other (except for a payload the fold ignores: the replay does not even fetch it).
// Payload-free types carry values in every field, so an Apply that starts reading one of
// them fails here until orders.PayloadFree is updated.
func TestFastDecodeMatchesEventstore(t *testing.T) {
	env := testenv.New(t)
	versions, err := currentSchemas()
	if err != nil {
		t.Fatal(err)
	}
	type payload struct {
		typ, json string
		schema    int // 0: the current one
	}
	var cases []payload
	add := func(e domain.Event) {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, payload{typ: e.EventType(), json: string(b)})
	}
	for _, s := range append(names, "", "a\x00b", "\u2028\u2029", "emoji 🎉 <&>", strings.Repeat("ü", 40)) {
		add(domain.OrderPlaced{CustomerName: s, CustomerEmail: s, Items: []domain.Item{{SKU: s, Quantity: -3, UnitPriceCents: 1 << 40}}, TotalCents: -1})
		add(domain.OrderPlaced{CustomerName: s})
		add(domain.PaymentFailed{Reason: s})
		add(domain.InventoryReservationFailed{Reason: s})
		add(domain.PaymentCompleted{PaymentID: s, AmountCents: 7})
		add(domain.InventoryReserved{Items: []domain.Item{{SKU: s, Quantity: 1}}})
		add(domain.PaymentRefunded{RefundID: s, AmountCents: 7})
		add(domain.EmailSent{To: s, MessageID: s, Template: s})
		add(domain.EmailFailed{To: s, Template: s, Reply: s})
	}
	for _, raw := range []payload{
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[],"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":null,"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","totalCents":5}`},
		{typ: domain.TypeOrderPlaced, json: `{ "customerName" : "spaced", "items" : [ ], "totalCents" : 1 }`},
		{typ: domain.TypeOrderPlaced, json: `{"totalCents":3,"customerName":"reordered","extra":true}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"dup","customerName":"twice","items":[],"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"CUSTOMERNAME":"case","items":[],"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"esc\u00e9\n","items":[],"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[{"sku":"x","quantity":1.5,"unitPriceCents":1}],"totalCents":0}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[],"totalCents":1e3}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[],"totalCents":99999999999999999999}`},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[],"totalCents":0} `},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"a","items":[],"totalCents":0}x`},
		{typ: domain.TypeOrderPlaced, json: `not json`},
		{typ: domain.TypeOrderPlaced, json: `{"customer_name":"Old","customer_email":"o@x"}`, schema: 1},
		{typ: domain.TypeOrderPlaced, json: `{"customerName":"future"}`, schema: 99},
		{typ: domain.TypePaymentFailed, json: `{"reason":"a","reason":"b"}`},
		{typ: domain.TypePaymentFailed, json: `{}`},
		{typ: domain.TypePaymentFailed, json: `{"reason":7}`},
		{typ: domain.TypeEmailSent, json: `{"to":"x"}`, schema: 99},
		{typ: domain.TypeEmailSent, json: `garbage`},
		{typ: domain.TypeEmailFailed, json: `{"reply":"reordered","to":"x"}`},
		{typ: domain.TypeEmailFailed, json: `{"to":"x","template":"t","reply":null}`},
		{typ: domain.TypeEmailFailed, json: `{"to":"x","template":"t","reply":5}`},
		{typ: "SomethingNew", json: `{}`},
	} {
		cases = append(cases, raw)
	}

	// One stream per case, so that an undecodable event stops only its own.
	for i, c := range cases {
		schema := c.schema
		if schema == 0 {
			schema = versions[c.typ]
			if schema == 0 {
				schema = 1
			}
		}
		placed := `{"customerName":"x","items":[],"totalCents":0}`
		env.MustExec(t, `INSERT INTO events (stream_id, version, event_type, schema_version, payload, metadata, occurred_at) VALUES
			(?, 1, 'OrderPlaced', ?, ?, '{}', UTC_TIMESTAMP(6)), (?, 2, ?, ?, ?, '{"correlationId":"c"}', UTC_TIMESTAMP(6))`,
			i+1, versions[domain.TypeOrderPlaced], placed, i+1, c.typ, schema, c.json)
	}
	dec, err := newDecoder(context.Background(), env.DB)
	if err != nil {
		t.Fatal(err)
	}
	query, err := rawQuery(func(np map[string]int) eventstore.RawQuery { return eventstore.RawOfStreams(1, np) })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fast := 0
	for i, c := range cases {
		id := domain.OrderID(i + 1)
		var want []eventstore.Record
		wantErr := eventstore.ScanStreamsOf(ctx, env.DB, []domain.OrderID{id}, func(r eventstore.Record) error {
			want = append(want, r)
			return nil
		})
		got, gotErr := readEvents(ctx, env.DB, dec, nil, query, id)
		if _, free := orders.PayloadFree[c.typ]; free && wantErr != nil && gotErr == nil {
			continue // a replay does not read, so does not check, a payload the fold ignores
		}
		if (gotErr != nil) != (wantErr != nil) {
			t.Errorf("case %d %s %s: replay error %v, eventstore error %v", i, c.typ, c.json, gotErr, wantErr)
			continue
		}
		if wantErr != nil {
			continue
		}
		if len(got) != 2 || len(want) != 2 {
			t.Fatalf("case %d: %d and %d records", i, len(got), len(want))
		}
		g, w := got[1], want[1]
		if g.Type != w.Type || g.SchemaVersion != w.SchemaVersion || g.Position != w.Position || !g.OccurredAt.Equal(w.OccurredAt) {
			t.Errorf("case %d %s %s: replay read %+v, eventstore %+v", i, c.typ, c.json, g, w)
		}
		if _, free := orders.PayloadFree[c.typ]; !free && !reflect.DeepEqual(g.Event, w.Event) {
			t.Errorf("case %d %s %s: replay decoded %#v, eventstore %#v", i, c.typ, c.json, g.Event, w.Event)
		}
		if _, ok := fastTypes[c.typ]; ok {
			fast++
		}
		if gr, wr := orders.FoldOrder(got), orders.FoldOrder(want); !reflect.DeepEqual(gr, wr) {
			t.Errorf("case %d %s %s: replay folds to\n %+v\neventstore's history to\n %+v", i, c.typ, c.json, gr, wr)
		}
	}
	if fast < 30 {
		t.Errorf("only %d cases exercised the fast decoders", fast)
	}
}

// TestRebuildRefoldsWhatArrivesLate: events that reach the fold after their stream's row
// went out (evicted under the memory bound), or out of version order (which the log's own
// appends never produce, but a hand-edited log might), are refolded stream by stream.
func TestRebuildRefoldsWhatArrivesLate(t *testing.T) {
	tiny(t)
	env := testenv.New(t)
	at := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	placed := `{"customerName":"late","items":[],"totalCents":0}`
	type ev struct {
		pos, stream, version int
		typ, payload         string
	}
	var evs []ev
	// Streams 1..6 are placed, then paid long after (beyond maxOpen other orders).
	for s := 1; s <= 6; s++ {
		evs = append(evs, ev{s, s, 1, domain.TypeOrderPlaced, placed})
	}
	for s := 1; s <= 6; s++ {
		evs = append(evs, ev{10 + s, s, 2, domain.TypePaymentCompleted, `{}`})
	}
	// Stream 7: its version 2 sits at a lower position than its version 1.
	evs = append(evs, ev{30, 7, 2, domain.TypePaymentFailed, `{"reason":"no"}`}, ev{31, 7, 1, domain.TypeOrderPlaced, placed})
	versions, err := currentSchemas()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		env.MustExec(t, `INSERT INTO events (position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
			VALUES (?, ?, ?, ?, ?, ?, '{}', ?)`, e.pos, e.stream, e.version, e.typ, versions[e.typ], e.payload, at.Add(time.Duration(e.pos)*time.Second))
	}
	stats := mustRebuild(t, env)
	if stats.Refolded == 0 || stats.Orders != 7 {
		t.Errorf("stats %+v: want 7 orders, some refolded", stats)
	}
	store, _ := eventstore.New(env.DB)
	rd, _ := orders.NewReader(env.DB)
	for s := domain.OrderID(1); s <= 7; s++ {
		history, _, err := store.Load(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		want := orders.FoldOrder(history)
		got, err := rd.Order(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if want.Items == nil {
			want.Items = []domain.Item{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("order %d:\n rebuilt %+v\n fold    %+v", s, got, want)
		}
	}
}

// TestRebuildIfStale rebuilds when the recorded version differs from the code's, waits for
// a replay lock held elsewhere, and does nothing once the version is current.
func TestRebuildIfStale(t *testing.T) {
	env := testenv.New(t)
	buildShop(t, env, 10, false)
	live := dump(t, env)
	ctx := context.Background()
	if rebuilt, err := RebuildIfStale(ctx, env.DB, Orders{}, nil); err != nil || rebuilt {
		t.Fatalf("fresh database (version %d recorded): rebuilt %v, %v; want no rebuild", orders.Version, rebuilt, err)
	}

	env.MustExec(t, `UPDATE projections SET version = ?, rebuilt_at = NULL WHERE name = 'orders'`, orders.Version+1)
	staleRetry = 50 * time.Millisecond
	t.Cleanup(func() { staleRetry = 5 * time.Second })
	// Another replay (or verify) holds the lock for a while: RebuildIfStale waits for it.
	other, err := TakeLock(ctx, env.DB, OrdersTable)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(300*time.Millisecond, func() { other.Release(ctx) })
	start := time.Now()
	rebuilt, err := RebuildIfStale(ctx, env.DB, Orders{}, nil)
	if err != nil || !rebuilt {
		t.Fatalf("stale version: rebuilt %v, %v", rebuilt, err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("rebuilt after %s, while the lock was held for 300ms", waited)
	}
	if v, err := StoredVersion(ctx, env.DB, OrdersTable); err != nil || v != orders.Version {
		t.Errorf("recorded version %d (%v), want %d", v, err, orders.Version)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM projections WHERE name = 'orders' AND rebuilt_at IS NOT NULL`); n != 1 {
		t.Error("rebuilt_at not recorded")
	}
	sameRows(t, "table after RebuildIfStale", dump(t, env), live)
	if rebuilt, err := RebuildIfStale(ctx, env.DB, Orders{}, nil); err != nil || rebuilt {
		t.Errorf("second call: rebuilt %v, %v; want no rebuild", rebuilt, err)
	}
}
