package handlers

import (
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is the per-client limit on placing orders (POST /orders, POST /place-order). The
// zero value places no limit.
type RateLimit struct {
	// PerSecond is how many orders one client may place per second, on average; 0 turns the
	// limit off.
	PerSecond float64
	// Burst is how many one client may place at once after a quiet spell (default twice
	// PerSecond, at least 1).
	Burst int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For header is believed. From
	// any other peer the header is ignored: anyone can write it.
	TrustedProxies []netip.Prefix
	// MaxClients bounds how many clients are tracked at once (default 65,536, a few MiB), so a
	// flood from many addresses cannot grow the table without bound.
	MaxClients int
}

// defaultMaxClients is RateLimit.MaxClients's default: each tracked client costs about 150 bytes.
const defaultMaxClients = 1 << 16

// clientLimiter holds a token bucket per client. A bucket left alone long enough to fill up
// again is the same as a new one, so forgetting it changes nothing: that is what keeps the
// table small without letting anyone around the limit.
type clientLimiter struct {
	limit   rate.Limit
	burst   int
	refill  time.Duration // an empty bucket is full again after this long
	max     int
	trusted []netip.Prefix
	now     func() time.Time

	mu        sync.Mutex
	clients   map[netip.Prefix]*bucket
	lastPrune time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// newClientLimiter returns the limiter for c, or nil when c places no limit.
func newClientLimiter(c RateLimit) *clientLimiter {
	if c.PerSecond <= 0 {
		return nil
	}
	if c.Burst <= 0 {
		c.Burst = max(1, int(math.Ceil(2*c.PerSecond)))
	}
	if c.MaxClients <= 0 {
		c.MaxClients = defaultMaxClients
	}
	refill := time.Duration(float64(c.Burst) / c.PerSecond * float64(time.Second))
	return &clientLimiter{limit: rate.Limit(c.PerSecond), burst: c.Burst, refill: max(refill, time.Second), max: c.MaxClients,
		trusted: c.TrustedProxies, now: time.Now, clients: map[netip.Prefix]*bucket{}}
}

// wait takes one token from the client's bucket and returns 0, or, when the bucket is empty,
// takes nothing and returns how long until a token is there.
func (l *clientLimiter) wait(client netip.Prefix) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[client]
	if b == nil {
		if len(l.clients) >= l.max || now.Sub(l.lastPrune) >= l.refill {
			l.prune(now)
		}
		// Still full: every tracked client was seen within the refill time (a flood from
		// more addresses than MaxClients). Forget one at random; at worst it gets a full
		// bucket back early.
		for k := range l.clients {
			if len(l.clients) < l.max {
				break
			}
			delete(l.clients, k)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[client] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// prune forgets the clients whose bucket is full again. It runs at most once per refill
// time, so its cost (a walk over the table) is spread over many requests.
func (l *clientLimiter) prune(now time.Time) {
	if now.Sub(l.lastPrune) < l.refill {
		return
	}
	l.lastPrune = now
	for k, b := range l.clients {
		if now.Sub(b.seen) >= l.refill {
			delete(l.clients, k)
		}
	}
}

// clientOf returns who sent r, as the key its bucket is kept under: the peer's address or,
// when the peer is a trusted proxy, the nearest address in X-Forwarded-For that is not
// itself a trusted proxy (the rightmost: a client can write anything to the left of what
// its proxy appends). An IPv6 client is its /64, which one subscriber usually holds whole.
func (l *clientLimiter) clientOf(r *http.Request) netip.Prefix {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{} // not an IP peer (a unix socket): such peers share one bucket
	}
	addr := ap.Addr().Unmap()
	if l.trustedProxy(addr) {
		addr = l.forwardedClient(r.Header.Values("X-Forwarded-For"), addr)
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p
	}
	return netip.PrefixFrom(addr, addr.BitLen())
}

// forwardedClient walks the X-Forwarded-For hops from the right, starting after peer, and
// returns the first one that is not a trusted proxy; an unreadable hop ends the walk at the
// last trusted address seen, which is the furthest anyone trustworthy vouched for.
func (l *clientLimiter) forwardedClient(headers []string, peer netip.Addr) netip.Addr {
	addr := peer
	for i := len(headers) - 1; i >= 0; i-- {
		hops := strings.Split(headers[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, ok := parseHop(hops[j])
			if !ok {
				return addr
			}
			if addr = hop; !l.trustedProxy(hop) {
				return hop
			}
		}
	}
	return addr
}

// parseHop reads one X-Forwarded-For entry: an address, possibly with a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func (l *clientLimiter) trustedProxy(a netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// limitPlacement refuses a placement over the client's rate limit with 429 and Retry-After,
// before its body is read. It costs a map lookup and a token bucket under one mutex.
func (a *API) limitPlacement(next http.HandlerFunc) http.HandlerFunc {
	if a.limiter == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if d := a.limiter.wait(a.limiter.clientOf(r)); d > 0 {
			a.writeError(w, r, &rateLimited{retryAfter: d})
			return
		}
		next(w, r)
	}
}
