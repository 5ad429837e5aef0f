package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"orderd/internal/testenv"
	"orderd/pipeline"
)

// TestPoisonedMessagesAreDeadLettered puts messages no stage can handle on the queues — not
// JSON, an order that does not exist, an event the stage does not expect — and checks that
// each ends in the dead-letter queue with its reason (not retried forever, not dropped), that
// none of them is taken for what holds an order (they are not their order's trigger), and
// that `orderd dlq list|redrive` work.
func TestPoisonedMessagesAreDeadLettered(t *testing.T) {
	env := testenv.New(t).WithMessaging(t)
	// No payment stage: the placed order waits in PaymentStatusQueue, at version 1.
	srv := startOrderd(t, env, map[string]string{"ORDERD_COMPONENTS": "api,inventory,email,relay", "MAIL_FROM": "orders@" + env.ID + ".example"})
	ctx := context.Background()

	code, body := postJSON(t, srv.URL+"/place-order", `{"customerName":"Stuck"}`)
	var placed struct{ OrderID int }
	if err := json.Unmarshal(body, &placed); code != 200 || err != nil {
		t.Fatalf("place: %d %s", code, body)
	}
	var orderPlaced string
	if err := env.DB.QueryRow(`SELECT e.payload FROM events e WHERE stream_id = ? AND version = 1`, placed.OrderID).Scan(&orderPlaced); err != nil {
		t.Fatal(err)
	}

	send := queueSender(t, env)
	wire := func(orderID int, typ, data string) string {
		return fmt.Sprintf(`{"eventId":"%d-1","orderId":%d,"version":1,"type":%q,"data":%s}`, orderID, orderID, typ, data)
	}
	send(pipeline.InventoryQueue, "this is not JSON", nil)
	send(pipeline.InventoryQueue, wire(987654, "PaymentCompleted", `{}`), nil)
	send(pipeline.InventoryQueue, wire(placed.OrderID, "OrderPlaced", orderPlaced), nil) // the inventory stage does not handle OrderPlaced
	send(pipeline.EmailQueue, `{"orderId":0}`, nil)

	waitFor(t, 30*time.Second, "4 dead letters", func() (bool, string) {
		n := env.Count(t, `SELECT COUNT(*) FROM dead_letters`)
		return n == 4, fmt.Sprintf("%d recorded", n)
	})
	reasons := map[string]string{}
	rows, err := env.DB.Query(`SELECT COALESCE(order_id, 0), queue, reason FROM dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var q, r string
		if err := rows.Scan(&id, &q, &r); err != nil {
			t.Fatal(err)
		}
		reasons[fmt.Sprintf("%d %s", id, strings.TrimPrefix(q, env.QueuePrefix))] += r + "; "
	}
	rows.Close()
	// A message that is not its order's trigger is recorded against no order: one for an
	// order that does not exist (it may exist later: ids are sequential), and one sent to a
	// stage that does not act on its event (the order's real trigger went elsewhere).
	for _, c := range []struct{ key, want string }{
		{"0 InventoryStatusQueue", "is not a valid event message"},
		{"0 InventoryStatusQueue", "order 987654 does not exist"},
		{"0 InventoryStatusQueue", "does not handle OrderPlaced"},
		{"0 EmailNotificationQueue", "orderId: is missing"},
	} {
		if !strings.Contains(reasons[c.key], c.want) {
			t.Errorf("dead letter %s: reasons %q, want one to say %q (all: %v)", c.key, reasons[c.key], c.want, reasons)
		}
	}

	// The order is not held by the misrouted copy of its event: it is not shown stuck.
	resp, err := testenv.OperatorGet(fmt.Sprintf("%s/orders/%d", srv.URL, placed.OrderID))
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Stuck *struct{ Queue, Event, Reason string }
	}
	json.NewDecoder(resp.Body).Decode(&view) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != 200 || view.Stuck != nil {
		t.Errorf("GET /orders/%d: %d, stuck = %+v; want it not stuck", placed.OrderID, resp.StatusCode, view.Stuck)
	}

	// The dead-letter queues hold all four, with reasons; redrive sends them back.
	getenv := env.Getenv(nil)
	var out bytes.Buffer
	if err := run(ctx, []string{"dlq", "list"}, getenv, &out, io.Discard); err != nil {
		t.Fatalf("orderd dlq list: %v", err)
	}
	if !strings.Contains(out.String(), "4 dead-lettered message(s)") || strings.Count(out.String(), `"reason":"`) != 4 {
		t.Errorf("orderd dlq list printed:\n%s", out.String())
	}
	// Listing hid the messages for a few seconds; redrive picks each up once it is visible again.
	// Sent back to its stage, each is still poisonous and is dead-lettered again, so the next
	// redrive moves it once more: count what came back, not what was moved (a sum of moves
	// passes 4 without every message having gone round).
	if n := env.Count(t, `SELECT COUNT(*) FROM (SELECT DISTINCT queue, event_id, event_type FROM dead_letters) AS letters`); n != 4 {
		t.Fatalf("dead letters name %d distinct messages, want 4", n)
	}
	moved := 0
	waitFor(t, 30*time.Second, "every dead-lettered message redriven to its stage", func() (bool, string) {
		out.Reset()
		if err := run(ctx, []string{"dlq", "redrive"}, getenv, &out, io.Discard); err != nil {
			return false, err.Error()
		}
		var n int
		fmt.Sscanf(out.String(), "redrove %d", &n) //nolint:errcheck // n stays 0 on a mismatch
		moved += n
		back := env.Count(t, `SELECT COUNT(*) FROM (SELECT queue, event_id, event_type FROM dead_letters GROUP BY queue, event_id, event_type HAVING COUNT(*) >= 2) AS again`)
		return back == 4, fmt.Sprintf("%d moved in all; %d of 4 back at their stage and dead-lettered again", moved, back)
	})
	t.Logf("dead-lettered 4 poisoned messages with their reasons; order %d is not shown stuck by a misrouted copy of its event; dlq list and redrive sent all 4 back to their stages", placed.OrderID)
}
