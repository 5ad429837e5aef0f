package deadletter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"orderd/internal/testenv"
	"orderd/outbox"
	"orderd/queues"
)

// TestRecordFitsAnyLetter records letters whose fields do not fit dead_letters' columns and
// checks that each is stored, cut to them, rather than refused by MySQL (which would leave the
// message to come round again for ever).
func TestRecordFitsAnyLetter(t *testing.T) {
	env := testenv.New(t)
	lg, err := NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	long := strings.Repeat("x", 300)
	for _, l := range []Letter{
		{OrderID: 1 << 40, Version: 1, Queue: long, EventID: long, EventType: long + "\xff", Reason: strings.Repeat("r", 100<<10), DeadAt: now},
		{OrderID: 7, Version: 1 << 40, Queue: "q", EventID: "7-x", EventType: "T", Reason: "version out of range", DeadAt: now},
		{OrderID: 8, Version: 2, Queue: "q", EventID: "8-2", EventType: "PaymentCompleted", Reason: "bad \xfe byte", DeadAt: now},
	} {
		if err := lg.Record(ctx, l); err != nil {
			t.Fatalf("Record(%.60s…): %v", fmt.Sprint(l), err)
		}
	}
	rows := env.Strings(t, `SELECT CONCAT_WS('|', COALESCE(order_id, '-'), COALESCE(version, '-'), CHAR_LENGTH(queue), CHAR_LENGTH(event_id),
		CHAR_LENGTH(event_type), CHAR_LENGTH(reason), RIGHT(reason, 3)) FROM dead_letters ORDER BY id`)
	want := []string{
		"-|-|80|40|64|2000|rr…", // an order id beyond INT names no order
		"-|-|1|3|1|20|nge",      // nor does a version beyond INT
		"8|2|1|3|16|10|yte",     // invalid UTF-8 replaced
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("recorded:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	if l, err := lg.Stuck(ctx, 8, 2); err != nil || l == nil || l.Reason != "bad \uFFFD byte" {
		t.Errorf("Stuck(8, 2) = %+v, %v", l, err)
	}
}

// TestRecordRefused: a row the queue refused is recorded in the relay's transaction, attached
// to the order its body is about.
func TestRecordRefused(t *testing.T) {
	env := testenv.New(t)
	lg, err := NewLog(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := env.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"eventId":"12-1","orderId":12,"version":1,"type":"OrderPlaced","schemaVersion":2,"data":{"customerName":"Ada\uffff","items":[],"totalCents":0}}`
	if err := lg.RecordRefused(ctx, tx, outbox.Refusal{Queue: "PaymentStatusQueue", EventID: "12-1", EventType: "OrderPlaced", Body: []byte(body),
		Reason: "InvalidMessageContents: Invalid binary character '#xFFFF'"}); err != nil {
		t.Fatal(err)
	}
	if l, _ := lg.Stuck(ctx, 12, 1); l != nil {
		t.Fatal("the letter is visible before the relay's transaction commits")
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	l, err := lg.Stuck(ctx, 12, 1)
	if err != nil || l == nil || l.Reason != "refused by SQS: InvalidMessageContents: Invalid binary character '#xFFFF'" || l.Queue != "PaymentStatusQueue" {
		t.Errorf("Stuck(12, 1) = %+v, %v", l, err)
	}
}

// TestFitForSQS: a poisoned message's metadata is made what SQS takes as attributes, so that
// the dead-letter queue never refuses the letter.
func TestFitForSQS(t *testing.T) {
	m := message.NewMessage("u", []byte("{}"))
	m.Metadata.Set(outbox.MetaEventID, "5-1")
	m.Metadata.Set(outbox.MetaEventType, "OrderPlaced")
	m.Metadata.Set(middleware.CorrelationIDMetadataKey, "")
	m.Metadata.Set(middleware.ReasonForPoisonedKey, "type: unknown event type \"\uFFFF\x01\""+strings.Repeat("!", 10<<10))
	m.Metadata.Set(middleware.PoisonedTopicKey, "q")
	m.Metadata.Set(MetaDetached, "true")
	for i := range 8 {
		m.Metadata.Set(fmt.Sprint("extra", i), "v")
	}
	fitForSQS(m)
	if n := len(m.Metadata); n > queues.MaxAttributes-1 {
		t.Errorf("%d attributes, with Watermill's uuid %d: over SQS's %d", n, n+1, queues.MaxAttributes)
	}
	for _, k := range []string{outbox.MetaEventID, outbox.MetaEventType, middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey} {
		if m.Metadata.Get(k) == "" {
			t.Errorf("%s was dropped", k)
		}
	}
	for k, v := range m.Metadata {
		if v == "" || k == MetaDetached {
			t.Errorf("attribute %s = %q left in", k, v)
		}
		if queues.Sanitize(v) != v {
			t.Errorf("attribute %s holds characters SQS refuses: %q", k, v)
		}
	}
	if r := m.Metadata.Get(middleware.ReasonForPoisonedKey); utf8.RuneCountInString(r) > MaxReasonLen || !strings.Contains(r, "\"\uFFFD\uFFFD\"") {
		t.Errorf("reason %d characters, starting %.40q", utf8.RuneCountInString(r), r)
	}
}
