package eventstore_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/outbox"
)

// planted is a creation put straight into the store, past the HTTP boundary's checks, with
// what it should come to.
type planted struct {
	name   string
	req    eventstore.CreateRequest
	event  domain.OrderPlaced
	bad    bool // refused with a KindInvalid error, nothing written
	queued bool // joins the group (a request refused before it does is not)
}

// runPlanted queues reqs behind a held group on a store with the outbox writer (whose
// correlation_id column is VARCHAR(100)), lets the group run, and checks every outcome:
// each good request is appended and its outbox row written, each bad one fails alone with
// a KindInvalid error and leaves no row anywhere. It returns the good requests' ids and
// the rig.
func runPlanted(t *testing.T, reqs []planted) ([]domain.OrderID, *groupRig) {
	t.Helper()
	box, err := outbox.NewWriter(func(string) string { return "q" })
	if err != nil {
		t.Fatal(err)
	}
	g := newGroupRig(t, box)
	ctx := ctxFor(t)
	holder := mustCreate(t, g.store, eventstore.Metadata{})
	release, held := g.holdWorkers(t, holder)
	type result struct {
		id  domain.OrderID
		err error
	}
	results := make([]chan result, len(reqs))
	queued := 0
	for i, p := range reqs {
		results[i] = make(chan result, 1)
		go func() {
			id, err := g.store.Create(ctx, p.req, []domain.Event{p.event})
			results[i] <- result{id, err}
		}()
		if p.queued {
			queued++
			g.waitQueued(t, queued)
			continue
		}
		select { // refused before it joins a group, it does not wait for the held one
		case r := <-results[i]:
			results[i] <- r
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: still waiting for the held group after 20 s", p.name)
		}
	}
	release()
	for range 2 {
		if err := <-held; err != nil {
			t.Fatal(err)
		}
	}
	var good []domain.OrderID
	for i, p := range reqs {
		r := <-results[i]
		if !p.bad {
			if r.err != nil {
				t.Errorf("%s: %v; a good request must not fail with a bad one in its group", p.name, r.err)
				continue
			}
			if n := g.env.Count(t, `SELECT COUNT(*) FROM events WHERE stream_id = ?`, r.id); n != 1 {
				t.Errorf("%s: order %d has %d events, want 1", p.name, r.id, n)
			}
			if n := g.env.Count(t, `SELECT COUNT(*) FROM outbox WHERE event_id = ?`, eventstore.EventID(r.id, 1)); n != 1 {
				t.Errorf("%s: order %d has %d outbox rows, want 1", p.name, r.id, n)
			}
			good = append(good, r.id)
			continue
		}
		var de *domain.Error
		if !errors.As(r.err, &de) || de.Kind != domain.KindInvalid || de.Field == "" {
			t.Errorf("%s: id %d, error %v; want a KindInvalid error naming a field (a 400, not a 500)", p.name, r.id, r.err)
		}
		if strings.Contains(de.Message, "order_ids") || strings.Contains(de.Message, "outbox") {
			t.Errorf("%s: message %q names a table; a client is shown it", p.name, de.Message)
		}
	}
	// The holder, the held creation and the good ones: nothing of the bad ones stays behind.
	want := 2 + len(good)
	for _, table := range []string{"order_ids", "events", "outbox"} {
		if n := g.env.Count(t, `SELECT COUNT(*) FROM `+table); n != want {
			t.Errorf("%s holds %d rows, want %d: a refused request left something behind", table, n, want)
		}
	}
	return good, g
}

// TestBadValueFailsOnlyItself is the commit group's defence in depth: requests that got past
// the HTTP boundary with a value the database cannot store share a group with good ones.
// Only the bad ones fail, each with a KindInvalid error (a 400, not a 500); the others commit.
func TestBadValueFailsOnlyItself(t *testing.T) {
	good := func(name string) planted {
		return planted{name: name, event: placed, queued: true}
	}
	t.Run("refused before its group", func(t *testing.T) {
		// A key the store cannot hold is refused before it joins a group, which then commits
		// whole: one transaction for all the good ones.
		ids, g := runPlanted(t, []planted{
			good("good 1"),
			{name: "invalid UTF-8 key", req: eventstore.CreateRequest{IdempotencyKey: "k\xff", RequestHash: "h"}, event: placed, bad: true},
			good("good 2"),
			{name: "key of 256 characters", req: eventstore.CreateRequest{IdempotencyKey: strings.Repeat("ü", 256), RequestHash: "h"}, event: placed, bad: true},
			good("good 3"),
		})
		if len(ids) == 3 && !g.commits.together(ids...) {
			t.Error("the good requests did not commit in one transaction: the refused ones failed their group")
		}
	})
	t.Run("refused by the database", func(t *testing.T) {
		runPlanted(t, []planted{
			good("good 1"),
			// events.payload is TEXT: 65,535 bytes.
			{name: "payload too long", event: domain.OrderPlaced{CustomerName: strings.Repeat("n", 70000), Items: []domain.Item{}}, bad: true, queued: true},
			good("good 2"),
			// outbox.correlation_id is VARCHAR(100).
			{name: "correlation id of 101 characters", req: eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: strings.Repeat("c", 101)}}, event: placed, bad: true, queued: true},
			good("good 3"),
			// The outbox keeps the id as it came; utf8mb4 refuses the byte.
			{name: "correlation id with invalid UTF-8", req: eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: "c\xff"}}, event: placed, bad: true, queued: true},
			good("good 4"),
		})
	})
}

// A data error carries the database's words for the log and the dead letter's reason.
func TestDataErrorKeepsTheCause(t *testing.T) {
	box, err := outbox.NewWriter(func(string) string { return "q" })
	if err != nil {
		t.Fatal(err)
	}
	f := openMySQL(t, box)
	_, err = f.Store.Create(ctxFor(t), eventstore.CreateRequest{Metadata: eventstore.Metadata{CorrelationID: strings.Repeat("c", 101)}}, placeWith(placed))
	var me *mysql.MySQLError
	if domain.ErrorKind(err) != domain.KindInvalid || !errors.As(err, &me) || me.Number != 1406 {
		t.Fatalf("error %v: want KindInvalid with MySQL's 1406 in its chain", err)
	}
}
