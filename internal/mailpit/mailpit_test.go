package mailpit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI serves /api/v1/messages and /api/v1/search from a list held in
// memory, newest first, paged by start and limit as Mailpit does.
type fakeAPI struct {
	mu       sync.Mutex
	messages []Summary
	requests int
	// onRequest, if set, runs before each list request is answered.
	onRequest func(f *fakeAPI)
}

func (f *fakeAPI) add(n int) {
	for i := 0; i < n; i++ {
		id := strconv.Itoa(len(f.messages))
		s := Summary{ID: id, MessageID: "m" + id + "@test", Subject: "subject " + id}
		f.messages = append([]Summary{s}, f.messages...)
	}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.onRequest != nil {
		f.onRequest(f)
	}
	match := f.messages
	switch r.URL.Path {
	case "/api/v1/messages":
	case "/api/v1/search":
		// Enough of the search syntax for these tests: a subject prefix.
		prefix := strings.TrimPrefix(r.URL.Query().Get("query"), "subject:")
		match = nil
		for _, s := range f.messages {
			if strings.HasPrefix(s.Subject, prefix) {
				match = append(match, s)
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("start"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	page := match[min(start, len(match)):min(start+limit, len(match))]
	_ = json.NewEncoder(w).Encode(map[string]any{"messages_count": len(match), "messages": page})
}

func startFake(t *testing.T, f *fakeAPI) *Client {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return New(srv.URL + "/")
}

func TestMessagesPages(t *testing.T) {
	f := &fakeAPI{}
	f.add(2*pageSize + 3)
	c := startFake(t, f)
	got, err := c.Messages(context.Background())
	if err != nil {
		t.Fatalf("Messages: %v", err)
	}
	if len(got) != 2*pageSize+3 || f.requests != 3 {
		t.Errorf("got %d messages in %d requests, want %d in 3", len(got), f.requests, 2*pageSize+3)
	}
	if got[0].ID != strconv.Itoa(2*pageSize+2) || got[len(got)-1].ID != "0" {
		t.Errorf("got IDs %s..%s, want newest first", got[0].ID, got[len(got)-1].ID)
	}
}

// A message arriving between pages shifts older ones to later offsets; none
// may be reported twice or lost.
func TestMessagesPagesWhileArriving(t *testing.T) {
	f := &fakeAPI{}
	f.add(pageSize + 10)
	f.onRequest = func(f *fakeAPI) {
		if f.requests == 2 {
			f.add(1)
		}
	}
	c := startFake(t, f)
	got, err := c.Messages(context.Background())
	if err != nil {
		t.Fatalf("Messages: %v", err)
	}
	seen := map[string]bool{}
	for _, s := range got {
		if seen[s.ID] {
			t.Errorf("message %s reported twice", s.ID)
		}
		seen[s.ID] = true
	}
	for i := 0; i < pageSize+10; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Errorf("message %d missing", i)
		}
	}
}

func TestWaitForPollsUntilEnough(t *testing.T) {
	f := &fakeAPI{}
	f.onRequest = func(f *fakeAPI) {
		if f.requests == 3 { // messages show up on the third poll
			f.add(2)
		}
	}
	c := startFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.WaitFor(ctx, "subject:subject", 2)
	if err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	if len(got) != 2 || f.requests != 3 {
		t.Errorf("got %d messages after %d polls, want 2 after 3", len(got), f.requests)
	}
}

func TestWaitForGivesUpWithCtx(t *testing.T) {
	f := &fakeAPI{}
	f.add(1)
	c := startFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	got, err := c.WaitFor(ctx, "", 2)
	if err == nil {
		t.Fatal("WaitFor succeeded, want error")
	}
	if want := `wait for 2 mailpit messages matching "", saw 1: context deadline exceeded`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if len(got) != 1 {
		t.Errorf("got %d messages, want the 1 last seen", len(got))
	}
}

func TestErrorCarriesStatusAndBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Error: no search query", http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	_, err := New(srv.URL).Search(context.Background(), "")
	want := fmt.Sprintf(`search mailpit for "": GET /api/v1/search: 400 Bad Request: Error: no search query`)
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}
