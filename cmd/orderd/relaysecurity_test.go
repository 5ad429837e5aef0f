package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"orderd/app"
	"orderd/deadletter"
	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/strictsqs"
	"orderd/internal/testenv"
	"orderd/outbox"
	"orderd/pipeline"
	"orderd/queues"
	"orderd/router"
)

// plantStore is the event store as another release of orderd would have it: it writes the
// log, the projection and the outbox, checking nothing the HTTP boundary checks.
func plantStore(t *testing.T, env *testenv.Env) *eventstore.Store {
	t.Helper()
	a, err := app.Build(app.Config{DB: env.DB, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Queues: queues.Config{Prefix: env.QueuePrefix}})
	if err != nil {
		t.Fatal(err)
	}
	return a.Store
}

// TestRelayNeverJams plants an order whose customer name holds U+FFFF — a character Amazon
// SQS refuses — among nine good orders, so that its message is one of a batch of ten, then
// runs orderd against a strict SQS front (real SQS's rules, which goaws lacks). The relay must
// deliver the nine (they complete), take the bad row out of the outbox as a dead letter
// naming SQS's reason, show the order stuck, stay ready, leave the order to a person (the
// sweeper does not re-drive it), and go on relaying what comes later.
func TestRelayNeverJams(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	front := strictsqs.Start(t, env.SQSEndpoint)
	mailDomain := env.ID + ".example"
	settings := map[string]string{"SQS_ENDPOINT": front, "MAIL_FROM": "orders@" + mailDomain, "READY_MAX_LAG": "1s", "REDRIVE_AFTER": "1s"}
	ctx := context.Background()

	// Nothing relays while the batch is laid out: an API-only instance takes the good orders.
	settings["ORDERD_COMPONENTS"] = "api"
	api := startOrderd(t, env, settings)
	var orders []placed
	for i := range 4 {
		if p, ok := placeOne(t, api.URL, mailDomain, i); ok {
			orders = append(orders, p)
		}
	}
	planted := time.Now()
	bad, err := plantStore(t, env).Create(ctx, eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "planted"}},
		[]domain.Event{domain.OrderPlaced{CustomerName: "Ada\uFFFF", CustomerEmail: "ada@" + mailDomain,
			Items: []domain.Item{{SKU: "SKU-BOOK", Quantity: 1, UnitPriceCents: 1299}}, TotalCents: 1299}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 9; i++ {
		if p, ok := placeOne(t, api.URL, mailDomain, i); ok {
			orders = append(orders, p)
		}
	}
	api.Stop(t)
	if n := env.Count(t, `SELECT COUNT(*) FROM outbox WHERE queue = ?`, env.QueuePrefix+pipeline.PaymentQueue); n != 10 {
		t.Fatalf("the outbox holds %d payment messages, want the 10 of one batch", n)
	}

	settings["ORDERD_COMPONENTS"] = strings.Join(allComponents, ",")
	srv := startOrderd(t, env, settings)
	waitFinished(t, env, len(orders), 90*time.Second)
	waitFor(t, 10*time.Second, "the outbox to empty", func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM outbox`)
		return n == 0, fmt.Sprintf("%d rows", n)
	})

	dead, err := deadletter.NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	stuck, err := dead.Stuck(ctx, bad, 1)
	if err != nil {
		t.Fatal(err)
	}
	if stuck == nil || !strings.Contains(stuck.Reason, "InvalidMessageContents") || !strings.Contains(stuck.Reason, "'#xFFFF'") ||
		stuck.EventID != eventstore.EventID(bad, 1) || stuck.Queue != env.QueuePrefix+pipeline.PaymentQueue {
		t.Errorf("order %d stuck = %+v, want the payment message refused by SQS (InvalidMessageContents, #xFFFF)", bad, stuck)
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`); n != 1 {
		t.Errorf("%d dead letters, want the one refused message", n)
	}
	if status := env.Strings(t, `SELECT order_status FROM orders WHERE order_id = ?`, bad); len(status) != 1 || status[0] != domain.StatusPending {
		t.Errorf("the refused order's status: %v, want pending", status)
	}

	// Ready although the refused message was written longer ago than READY_MAX_LAG.
	waitFor(t, 5*time.Second, "READY_MAX_LAG to pass since the refused message was written", func() (bool, string) {
		return time.Since(planted) > 1500*time.Millisecond, ""
	})
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz after a refused message: %d %s", resp.StatusCode, body)
	}

	metric := fmt.Sprintf(`orderd_relay_refused_total{queue="%s"}`, env.QueuePrefix+pipeline.PaymentQueue)
	if got := scrape(t, srv.URL)[metric]; got != "1" {
		t.Errorf("%s = %q, want 1", metric, got)
	}

	// Later orders go through.
	if p, ok := placeOne(t, srv.URL, mailDomain, 9); ok {
		orders = append(orders, p)
	}
	waitFinished(t, env, len(orders), 60*time.Second)
	srv.Stop(t)

	// The sweeper leaves the refused order to a person, as driving it again would meet the
	// same wall; an unfinished order without a dead letter it does re-drive.
	store := plantStore(t, env)
	waiting, err := store.Create(ctx, eventstore.CreateRequest{}, []domain.Event{domain.OrderPlaced{CustomerName: "Waiting", Items: []domain.Item{}}})
	if err != nil {
		t.Fatal(err)
	}
	sweeper, err := newSweeper(env.DB, store, mustWriter(t, env), slog.New(slog.NewTextHandler(io.Discard, nil)), outbox.SweeperConfig{StuckAfter: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sweeper.Sweep(ctx); n != 1 || err != nil {
		t.Errorf("Sweep = %d, %v; want the one waiting order re-driven", n, err)
	}
	// Good orders may have been re-driven while slow (REDRIVE_AFTER is 1 s here); never the bad one.
	if got := env.Strings(t, `SELECT order_id FROM order_redrives WHERE order_id IN (?, ?)`, waiting, bad); len(got) != 1 || got[0] != fmt.Sprint(waiting) {
		t.Errorf("re-driven of %d and %d: %v, want only the waiting %d (never the refused %d)", waiting, bad, got, waiting, bad)
	}
	t.Logf("%d orders completed around order %d, whose message SQS refused (%s); /readyz 200; not re-driven", len(orders), bad, stuck.Reason)
}

// TestUnrecordableMessagesAreDeadLettered sends messages whose fields do not fit the
// dead_letters table — an order id beyond INT, an event id longer than 40 characters, event
// types longer than 64 (one of 100 KiB) — and checks that each is still recorded, cut to the
// columns with a bounded reason, and listed by `orderd dlq list`, rather than failing to be
// recorded and coming round again for ever.
func TestUnrecordableMessagesAreDeadLettered(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	startOrderd(t, env, map[string]string{"ORDERD_COMPONENTS": "api,inventory,email,relay", "MAIL_FROM": "orders@" + env.ID + ".example"})
	send := queueSender(t, env)
	longID, longType, hugeType := strings.Repeat("i", 100), strings.Repeat("T", 100), strings.Repeat("H", 100<<10)
	send(pipeline.InventoryQueue, `{"eventId":"99999999999-2","orderId":99999999999,"version":2,"type":"PaymentCompleted","data":{}}`, nil)
	send(pipeline.InventoryQueue, "not JSON, with a long event id", map[string]string{outbox.MetaEventID: longID, outbox.MetaEventType: "PaymentCompleted"})
	send(pipeline.EmailQueue, fmt.Sprintf(`{"orderId":3,"version":2,"type":%q,"data":{}}`, longType), map[string]string{outbox.MetaEventType: longType})
	send(pipeline.EmailQueue, fmt.Sprintf(`{"orderId":4,"version":2,"type":%q,"data":{}}`, hugeType), map[string]string{outbox.MetaEventType: hugeType})

	waitFor(t, 30*time.Second, "4 dead letters", func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`)
		return n == 4, fmt.Sprintf("%d recorded", n)
	})
	rows := env.Strings(t, `SELECT CONCAT_WS('|', COALESCE(order_id, '-'), event_id, event_type, LEFT(reason, 60)) FROM dead_letters ORDER BY id`)
	for _, want := range []string{
		"-|99999999999-2|PaymentCompleted|inventory stage, order 99999999999: stale, forged or misrout",
		"-|" + longID[:39] + "…|PaymentCompleted|body: is not a valid event message",
		"-||" + longType[:63] + "…|type: unknown event type",
		"-||" + hugeType[:63] + "…|type: unknown event type",
	} {
		if !slices.ContainsFunc(rows, func(r string) bool { return strings.HasPrefix(r, want) }) {
			t.Errorf("no dead letter starts %q; got:\n%s", want, strings.Join(rows, "\n"))
		}
	}
	if n := env.Count(t, `SELECT MAX(CHAR_LENGTH(reason)) FROM dead_letters`); n > 200 {
		t.Errorf("a reason of %d characters was recorded: it quotes the message whole", n)
	}

	var out strings.Builder
	waitFor(t, 20*time.Second, "orderd dlq list to show all 4", func() (bool, string) {
		out.Reset()
		if err := run(context.Background(), []string{"dlq", "list"}, env.Getenv(nil), &out, io.Discard); err != nil {
			return false, err.Error()
		}
		return strings.Contains(out.String(), "4 dead-lettered message(s)"), out.String()
	})
	if !strings.Contains(out.String(), "order 99999999999 does not exist") || !strings.Contains(out.String(), "unknown event type") {
		t.Errorf("orderd dlq list does not give the reasons:\n%.2000s", out.String())
	}
	t.Logf("4 messages that do not fit the table recorded cut to it:\n%s", strings.Join(rows, "\n"))
}

// TestForgedMessagesChangeNothing sends, for a healthy order waiting for its payment, messages
// that claim events its log does not hold as its latest — another type at its version, a
// version beyond its stream, an id that is not the event's, a copy of its event sent to a
// stage that does not act on it — and one for an order not placed yet (ids are sequential).
// Each must be dead-lettered without being attached to an order: no order is shown stuck,
// nothing is appended, and the sweeper goes on re-driving the waiting order.
func TestForgedMessagesChangeNothing(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	// No payment stage: the order waits at version 1, as if its message were lost.
	srv := startOrderd(t, env, map[string]string{"ORDERD_COMPONENTS": "api,inventory,email,relay", "REDRIVE_AFTER": "1s",
		"MAIL_FROM": "orders@" + env.ID + ".example"})
	ctx := context.Background()
	order := placeSeed(t, srv.URL, "Healthy")
	var orderPlaced string
	if err := env.DB.QueryRow(`SELECT payload FROM events WHERE stream_id = ? AND version = 1`, order).Scan(&orderPlaced); err != nil {
		t.Fatal(err)
	}
	next := order + 1
	msg := func(id domain.OrderID, eventID string, version int, typ, data string) string {
		return fmt.Sprintf(`{"eventId":%q,"orderId":%d,"version":%d,"type":%q,"schemaVersion":1,"data":%s}`, eventID, id, version, typ, data)
	}
	paid := `{"paymentId":"forged","amountCents":0}`
	send := queueSender(t, env)
	send(pipeline.InventoryQueue, msg(order, fmt.Sprintf("%d-1", order), 1, "PaymentCompleted", paid), nil)
	send(pipeline.InventoryQueue, msg(order, fmt.Sprintf("%d-2", order), 2, "PaymentCompleted", paid), nil)
	send(pipeline.EmailQueue, msg(order, fmt.Sprintf("%d-7", order), 1, "PaymentFailed", `{"reason":"forged"}`), nil)
	send(pipeline.InventoryQueue, fmt.Sprintf(`{"eventId":"%d-1","orderId":%d,"version":1,"type":"OrderPlaced","schemaVersion":2,"data":%s}`, order, order, orderPlaced), nil)
	send(pipeline.InventoryQueue, msg(next, fmt.Sprintf("%d-1", next), 1, "PaymentCompleted", paid), nil)
	for _, want := range []string{"whose log has OrderPlaced there", "which has only 1 events", "is not the id of version 1",
		"does not handle OrderPlaced", fmt.Sprintf("order %d does not exist", next)} {
		waitFor(t, 30*time.Second, "a dead letter saying "+want, func() (bool, string) {
			n := env.Count(t, `SELECT COUNT(*) FROM dead_letters WHERE order_id IS NULL AND reason LIKE CONCAT('%', ?, '%')`, want)
			return n == 1, strings.Join(env.Strings(t, `SELECT CONCAT_WS(' ', COALESCE(order_id, '-'), reason) FROM dead_letters`), "; ")
		})
	}
	lastDead := time.Now().UTC()

	if got := placeSeed(t, srv.URL, "Next"); got != next {
		t.Fatalf("the next order got id %d, want %d", got, next)
	}
	dead, err := deadletter.NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []domain.OrderID{order, next} {
		if l, err := dead.Stuck(ctx, id, 1); err != nil || l != nil {
			t.Errorf("order %d is shown stuck: %+v, %v", id, l, err)
		}
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM events WHERE stream_id = ?`, order); n != 1 {
		t.Errorf("order %d has %d events, want its OrderPlaced only", order, n)
	}
	waitFor(t, 20*time.Second, fmt.Sprintf("the sweeper to re-drive order %d after the forged messages", order), func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM order_redrives WHERE order_id = ? AND redriven_at > ?`, order, lastDead)
		return n == 1, ""
	})
	t.Logf("5 stale, forged or misrouted messages dead-lettered against no order; orders %d and %d not stuck; %d re-driven", order, next, order)
}

// TestStagesRefuseUnsignedMessages runs orderd with MESSAGE_SIGNING_KEY: orders complete
// (every message the relay sends is signed and checked), while a copy of a real message
// without its signature, or signed with another key, is dead-lettered against no order and
// changes nothing.
func TestStagesRefuseUnsignedMessages(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	mailDomain := env.ID + ".example"
	srv := startOrderd(t, env, map[string]string{"MAIL_FROM": "orders@" + mailDomain, "MESSAGE_SIGNING_KEY": strings.Repeat("s3cret", 8)})
	p, ok := placeOne(t, srv.URL, mailDomain, 1)
	if !ok {
		t.FailNow()
	}
	waitFinished(t, env, 1, 30*time.Second)
	id := domain.OrderID(p.id)
	rec, _, err := plantStore(t, env).Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	paid, err := json.Marshal(rec[1]) // the message the relay sent the inventory stage
	if err != nil {
		t.Fatal(err)
	}
	eventID := eventstore.EventID(id, 2)
	send := queueSender(t, env)
	send(pipeline.InventoryQueue, string(paid), map[string]string{outbox.MetaEventID: eventID, outbox.MetaEventType: domain.TypePaymentCompleted})
	send(pipeline.InventoryQueue, string(paid), map[string]string{outbox.MetaEventID: eventID, outbox.MetaEventType: domain.TypePaymentCompleted,
		outbox.MetaSignature: outbox.Signature([]byte(strings.Repeat("other", 8)), eventID, domain.TypePaymentCompleted, paid)})
	for _, want := range []string{"signature: is missing", "signature: does not match"} {
		waitFor(t, 30*time.Second, "a dead letter saying "+want, func() (bool, string) {
			n := env.Count(t, `SELECT COUNT(*) FROM dead_letters WHERE order_id IS NULL AND event_id = ? AND reason LIKE CONCAT('%', ?, '%')`, eventID, want)
			return n == 1, strings.Join(env.Strings(t, `SELECT reason FROM dead_letters`), "; ")
		})
	}
	if n := env.Count(t, `SELECT COUNT(*) FROM events WHERE stream_id = ?`, id); n != len(rec) {
		t.Errorf("order %d has %d events, want the %d it had", id, n, len(rec))
	}
	dead, err := deadletter.NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := dead.Stuck(context.Background(), id, len(rec)); err != nil || l != nil {
		t.Errorf("order %d is shown stuck: %+v, %v", id, l, err)
	}
	t.Logf("order %d completed on signed messages; an unsigned copy and a copy signed with another key were dead-lettered against no order", id)
}

// placeSeed places an order through the seed's call and returns its id.
func placeSeed(t *testing.T, baseURL, name string) domain.OrderID {
	t.Helper()
	code, body := postJSON(t, baseURL+"/place-order", fmt.Sprintf(`{"customerName":%q}`, name))
	var placed struct{ OrderID domain.OrderID }
	if err := json.Unmarshal(body, &placed); code != http.StatusOK || err != nil || placed.OrderID <= 0 {
		t.Fatalf("POST /place-order: %d %s", code, body)
	}
	return placed.OrderID
}

// queueSender returns a function that sends a message with body and attrs (and a "source"
// attribute) to one of env's stage queues, as another producer would.
func queueSender(t *testing.T, env *testenv.Env) func(queue, body string, attrs map[string]string) {
	t.Helper()
	ctx := context.Background()
	qcfg := queues.Config{Endpoint: env.SQSEndpoint, Emulator: queues.Emulator(env.SQSEmulator), Region: "us-east-1", Prefix: env.QueuePrefix}
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	client := queues.NewClient(awsCfg, qcfg)
	return func(queue, body string, attrs map[string]string) {
		t.Helper()
		url, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(qcfg.Name(queue))})
		if err != nil {
			t.Fatal(err)
		}
		// At least one attribute, as every producer through Watermill sends: goaws answers a
		// message with none with an attribute checksum that the SDK rejects, and the receive fails.
		values := map[string]types.MessageAttributeValue{"source": {DataType: aws.String("String"), StringValue: aws.String("test")}}
		for k, v := range attrs {
			values[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
		}
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url.QueueUrl, MessageBody: aws.String(body), MessageAttributes: values}); err != nil {
			t.Fatal(err)
		}
	}
}

func mustWriter(t *testing.T, env *testenv.Env) *outbox.Writer {
	t.Helper()
	w, err := outbox.NewWriter(router.Route(queues.Config{Prefix: env.QueuePrefix}))
	if err != nil {
		t.Fatal(err)
	}
	return w
}
