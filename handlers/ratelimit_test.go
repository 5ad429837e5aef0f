package handlers

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is the limiter's clock in tests, so that refills need no sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// placeFrom places an order over a real connection from the loopback address local
// (127.0.0.0/8 is all loopback on Linux, so each address is a client of its own), with
// X-Forwarded-For set when xff is not empty.
func placeFrom(t *testing.T, s *apiServer, local, path, xff string) response {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer client.CloseIdleConnections()
	body := validOrder
	if path == "/place-order" {
		body = `{"customerName":"Seed"}`
	}
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	res, err := client.Do(req)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("cannot send from %s: this test needs the whole of 127.0.0.0/8 on loopback (Linux has it): %v", local, err)
	}
	must(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	must(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// TestPlacementRateLimit: a client over its limit gets 429 with Retry-After and nothing is
// written; another client is unaffected; X-Forwarded-For counts only from a trusted proxy
// (and then its rightmost untrusted address); the bucket refills; 0 turns the limit off.
func TestPlacementRateLimit(t *testing.T) {
	s := newAPIServer(t, func(c *Config) {
		c.PlacementLimit = RateLimit{PerSecond: 0.1, Burst: 2, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}}
	})
	clock := &fakeClock{t: time.Now()}
	s.api.limiter.now = clock.Now
	orders := func() int { return s.env.Count(t, `SELECT COUNT(*) FROM orders`) }
	expect := func(what string, res response, status int) {
		t.Helper()
		if res.status != status {
			t.Fatalf("%s: status %d, want %d: %s", what, res.status, status, res.body)
		}
	}
	refused := func(what string, res response) {
		t.Helper()
		expect(what, res, http.StatusTooManyRequests)
		// 2 per 10 s used up a moment ago: the next token is 10 s away.
		if ra := res.header.Get("Retry-After"); ra != "10" {
			t.Errorf("%s: Retry-After %q, want 10 (whole seconds until the next token)", what, ra)
		}
		if !strings.Contains(string(res.body), `"code":"rate_limited"`) || res.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: want a JSON error with code rate_limited, got %s %s", what, res.header.Get("Content-Type"), res.body)
		}
	}

	// One client: its burst of 2 is placed, the third is refused and writes nothing; both
	// placement endpoints share its bucket.
	expect("client A, 1st", placeFrom(t, s, "127.0.0.2", "/orders", ""), http.StatusAccepted)
	expect("client A, 2nd", placeFrom(t, s, "127.0.0.2", "/place-order", ""), http.StatusOK)
	before := orders()
	refused("client A, 3rd", placeFrom(t, s, "127.0.0.2", "/orders", ""))
	refused("client A, 4th on /place-order", placeFrom(t, s, "127.0.0.2", "/place-order", ""))
	if n := orders(); n != before {
		t.Fatalf("refused placements wrote %d orders", n-before)
	}

	// Another client is unaffected.
	expect("client B", placeFrom(t, s, "127.0.0.3", "/orders", ""), http.StatusAccepted)

	// From an untrusted peer X-Forwarded-For is the client's own word: ignored.
	for i := range 2 {
		expect("client C", placeFrom(t, s, "127.0.0.4", "/orders", fmt.Sprintf("203.0.113.%d", i)), http.StatusAccepted)
	}
	refused("client C claiming a fresh address", placeFrom(t, s, "127.0.0.4", "/orders", "203.0.113.77"))

	// From the trusted proxy, the client is the rightmost address it did not append itself
	// (a client may write anything to the left of what the proxy adds).
	const proxy = "127.0.0.9"
	expect("via proxy, client D 1st", placeFrom(t, s, proxy, "/orders", "198.51.100.1"), http.StatusAccepted)
	expect("via proxy, client D 2nd", placeFrom(t, s, proxy, "/orders", "198.51.100.1"), http.StatusAccepted)
	refused("via proxy, client D 3rd", placeFrom(t, s, proxy, "/orders", "198.51.100.1"))
	refused("via proxy, client D spoofing a left entry", placeFrom(t, s, proxy, "/orders", "192.0.2.200, 198.51.100.1"))
	refused("via two proxies, client D", placeFrom(t, s, proxy, "/orders", "198.51.100.1, 127.0.0.9"))
	expect("via proxy, client E", placeFrom(t, s, proxy, "/orders", "198.51.100.2"), http.StatusAccepted)
	// The proxy itself is not held back by the clients behind it.
	expect("the proxy's own request", placeFrom(t, s, proxy, "/orders", ""), http.StatusAccepted)

	// Ten seconds later client A has a token again (and only one).
	clock.Advance(10 * time.Second)
	expect("client A after Retry-After", placeFrom(t, s, "127.0.0.2", "/orders", ""), http.StatusAccepted)
	res := placeFrom(t, s, "127.0.0.2", "/orders", "")
	expect("client A again", res, http.StatusTooManyRequests)

	// PerSecond 0: no limit at all.
	off := newAPIServer(t, func(c *Config) { c.PlacementLimit = RateLimit{} })
	if off.api.limiter != nil {
		t.Fatal("PerSecond 0 built a limiter")
	}
	for i := range 12 {
		expect(fmt.Sprintf("limit off, order %d", i+1), placeFrom(t, off, "127.0.0.2", "/orders", ""), http.StatusAccepted)
	}
	t.Logf("429 with Retry-After 10 and nothing written over the limit; other clients unaffected; X-Forwarded-For ignored from an untrusted peer, its rightmost untrusted hop used from a trusted proxy; refilled after 10 s; 12 orders in a row with the limit off")
}

// TestRateLimiterTableIsBounded: a flood from more addresses than MaxClients never grows the
// table past it, idle clients are forgotten once their bucket has refilled, and an IPv6
// client is its /64.
func TestRateLimiterTableIsBounded(t *testing.T) {
	l := newClientLimiter(RateLimit{PerSecond: 5, MaxClients: 100})
	clock := &fakeClock{t: time.Now()}
	l.now = clock.Now
	for i := range 10_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.wait(netip.PrefixFrom(a, 32))
		if len(l.clients) > 100 {
			t.Fatalf("%d clients tracked after %d addresses, cap 100", len(l.clients), i+1)
		}
		clock.Advance(time.Millisecond)
	}
	// Burst 10 at 5/s refills in 2 s: after that every bucket is full, and forgotten.
	clock.Advance(2 * time.Second)
	l.wait(netip.MustParsePrefix("192.0.2.1/32"))
	if len(l.clients) != 1 {
		t.Fatalf("%d clients tracked after all but one went idle, want 1", len(l.clients))
	}

	r := &http.Request{RemoteAddr: "[2001:db8:1:2:aaaa::1]:5000", Header: http.Header{}}
	other := &http.Request{RemoteAddr: "[2001:db8:1:2:bbbb::9]:5001", Header: http.Header{}}
	if l.clientOf(r) != l.clientOf(other) || l.clientOf(r).String() != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 clients %s and %s, want both 2001:db8:1:2::/64", l.clientOf(r), l.clientOf(other))
	}
	mapped := &http.Request{RemoteAddr: "[::ffff:192.0.2.7]:80", Header: http.Header{}}
	if got := l.clientOf(mapped).String(); got != "192.0.2.7/32" {
		t.Errorf("IPv4-mapped peer is client %s, want 192.0.2.7/32", got)
	}
}

// TestRetryAfterIsWholeSeconds: Retry-After rounds up, and is never 0.
func TestRetryAfterIsWholeSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 10 * time.Second: 10} {
		if got := (&rateLimited{retryAfter: d}).seconds(); got != want {
			t.Errorf("retry after %s: %d s, want %d", d, got, want)
		}
	}
	status, code := statusOf(fmt.Errorf("place: %w", &rateLimited{retryAfter: time.Second}))
	if status != http.StatusTooManyRequests || code != "rate_limited" {
		t.Errorf("statusOf(rateLimited) = %d %s", status, code)
	}
}
