package eventstore_test

import (
	"crypto/sha256"
	"sync"
	"testing"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/internal/testenv"
)

// TestAccessHashes stores capability hashes with concurrent creations (which share commit
// groups, so one multi-row allocation carries several, each its own) and with a later grant,
// and checks that each hash opens its own order only.
func TestAccessHashes(t *testing.T) {
	env := testenv.New(t)
	s, err := eventstore.New(env.DB)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	hash := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	const n = 8
	ids := make([]domain.OrderID, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var h []byte
			if i > 0 { // the first has none: only operators read it
				h = hash(string(rune('a' + i)))
			}
			id, err := s.Create(ctx, eventstore.CreateRequest{AccessHash: h}, placeWith(placed))
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	has := func(id domain.OrderID, h []byte) bool {
		t.Helper()
		ok, err := s.HasAccess(ctx, id, h)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for i, id := range ids {
		for j := range ids {
			h := hash(string(rune('a' + j)))
			if got, want := has(id, h), i == j && i > 0; got != want {
				t.Errorf("order %d (#%d) with the hash of #%d: access %v, want %v", id, i, j, got, want)
			}
		}
	}
	if has(ids[0], nil) || has(ids[0], make([]byte, 32)) {
		t.Errorf("an order placed without a capability opens to an empty or zero hash")
	}
	if has(999999, hash("b")) {
		t.Errorf("a missing order opens")
	}
	// A later grant adds a capability; the first keeps working.
	if err := s.GrantAccess(ctx, ids[1], hash("again")); err != nil {
		t.Fatal(err)
	}
	if !has(ids[1], hash("again")) || !has(ids[1], hash(string(rune('b')))) || has(ids[2], hash("again")) {
		t.Errorf("after a grant: the new hash must open order %d only, and the first still open it", ids[1])
	}
	if got := env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE access_hash IS NULL`); got != 1 {
		t.Errorf("%d orders without a capability hash, want 1", got)
	}
}
