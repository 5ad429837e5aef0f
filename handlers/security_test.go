package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"orderd/internal/testenv"
)

// Who may see what, one test per class: anonymous reads refused, capability links working
// (for their own order only), wrong operator credentials refused, no personal data to other
// origins, security headers on every answer, health bodies that name no internals. Each runs
// the real API over real sockets on a database of its own.

// asOperator is r with the operator's credentials.
func asOperator(r request) request {
	return withHeader(r, "Authorization", basicAuth("operator", testenv.OperatorPassword))
}

func withHeader(r request, k, v string) request {
	h := map[string]string{k: v}
	for k2, v2 := range r.header {
		h[k2] = v2
	}
	r.header = h
	return r
}

func basicAuth(user, password string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, password)
	return req.Header.Get("Authorization")
}

// placeTwo places an order through each placement endpoint and returns their answers' links.
func placeTwo(t *testing.T, s *apiServer) (first, second map[string]string) {
	t.Helper()
	a := s.do(t, post("/orders", validOrder))
	b := s.do(t, post("/place-order", `{"customerName":"Bea"}`))
	if a.status != http.StatusAccepted || b.status != http.StatusOK {
		t.Fatalf("placing: %d %s; %d %s", a.status, a.body, b.status, b.body)
	}
	return links(t, a), links(t, b)
}

// operatorPaths are every operator endpoint, with a path that exists.
var operatorPaths = []string{
	"/", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css",
	"/api/dashboard/orders", "/api/dashboard/stock", "/api/dashboard/dead-letters", "/api/dashboard/lag", "/api/dashboard/customers", "/metrics",
}

func TestAnonymousReadsAreRefused(t *testing.T) {
	s := newAPIServer(t)
	first, second := placeTwo(t, s)
	id := strings.TrimPrefix(strings.SplitN(first["self"], "?", 2)[0], "/orders/")
	_, token, _ := strings.Cut(first["self"], "?access=")
	_, otherToken, _ := strings.Cut(second["self"], "?access=")

	// An order that exists, read without its capability, and one that does not exist: the
	// same 404, byte for byte, for the order and for its events.
	for _, sub := range []string{"", "/events"} {
		missing := s.do(t, get("/orders/999999"+sub))
		assertError(t, missing, http.StatusNotFound, "not_found", "")
		for name, path := range map[string]string{
			"no capability":                    "/orders/" + id + sub,
			"empty capability":                 "/orders/" + id + sub + "?access=",
			"a capability of another order":    "/orders/" + id + sub + "?access=" + otherToken,
			"its capability with one change":   "/orders/" + id + sub + "?access=" + flipLast(token),
			"its capability in lower case":     "/orders/" + id + sub + "?access=" + strings.ToLower(token),
			"not a capability at all":          "/orders/" + id + sub + "?access=%00%ff" + strings.Repeat("x", 300),
			"its capability under another key": "/orders/" + id + sub + "?token=" + token,
		} {
			r := s.do(t, get(path))
			if r.status != http.StatusNotFound || !bytes.Equal(r.body, missing.body) || r.header.Get("WWW-Authenticate") != "" {
				t.Errorf("GET %s (%s): %d %s, want exactly the answer for an order that does not exist: %d %s",
					path, name, r.status, r.body, missing.status, missing.body)
			}
		}
	}
	for _, path := range operatorPaths {
		r := s.do(t, get(path))
		assertError(t, r, http.StatusUnauthorized, "unauthorized", "")
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="orderd"`) {
			t.Errorf("GET %s: WWW-Authenticate %q, want a Basic challenge", path, got)
		}
	}
}

func TestCapabilityLinksWork(t *testing.T) {
	s := newAPIServer(t)
	first, second := placeTwo(t, s)
	for i, l := range []map[string]string{first, second} {
		order := s.do(t, get(l["self"]))
		if order.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", l["self"], order.status, order.body)
		}
		// The order's own answer links to its events with the same capability.
		if got := links(t, order)["events"]; got != l["events"] {
			t.Errorf("order %d: links.events %q, want %q", i, got, l["events"])
		}
		events := s.do(t, get(l["events"]))
		if events.status != http.StatusOK || !bytes.Contains(events.body, []byte(`"OrderPlaced"`)) {
			t.Errorf("GET %s: %d %s, want the order's history", l["events"], events.status, events.body)
		}
	}
	// One order's capability on the other order is refused, both ways and on both resources.
	for _, pair := range [][2]map[string]string{{first, second}, {second, first}} {
		path, _, _ := strings.Cut(pair[0]["self"], "?")
		_, query, _ := strings.Cut(pair[1]["self"], "?")
		for _, p := range []string{path + "?" + query, path + "/events?" + query} {
			assertError(t, s.do(t, get(p)), http.StatusNotFound, "not_found", "")
		}
	}
	// Only hashes are stored.
	_, token, _ := strings.Cut(first["self"], "access=")
	if n := s.env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE access_hash = UNHEX(SHA2(?, 256))`, token); n != 1 {
		t.Errorf("%d order_ids rows hold the SHA-256 of the capability, want 1", n)
	}
	if n := s.env.Count(t, `SELECT COUNT(*) FROM order_ids WHERE LOCATE(?, access_hash) > 0`, token); n != 0 {
		t.Errorf("the capability itself is stored")
	}
}

func TestWrongOperatorCredentialsAreRefused(t *testing.T) {
	s := newAPIServer(t)
	first, _ := placeTwo(t, s)
	byID, _, _ := strings.Cut(first["self"], "?")
	pw := testenv.OperatorPassword
	wrong := map[string]string{
		"wrong password":         basicAuth("operator", "not-the-password"),
		"password with a suffix": basicAuth("operator", pw+"x"),
		"password's prefix":      basicAuth("operator", pw[:len(pw)-1]),
		"password in upper case": basicAuth("operator", strings.ToUpper(pw)),
		"empty password":         basicAuth("operator", ""),
		"another user":           basicAuth("admin", pw),
		"no user":                basicAuth("", pw),
		"not Basic":              "Bearer " + pw,
		"malformed Basic":        "Basic !!!",
	}
	for _, path := range append(operatorPaths, byID, byID+"/events") {
		for name, auth := range wrong {
			r := s.do(t, withHeader(get(path), "Authorization", auth))
			assertError(t, r, http.StatusUnauthorized, "unauthorized", "")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s with %s: no WWW-Authenticate", path, name)
			}
		}
		if r := s.do(t, asOperator(get(path))); r.status != http.StatusOK {
			t.Errorf("GET %s as the operator: %d %s, want 200", path, r.status, r.body)
		}
	}
	// An operator is told plainly that an order does not exist.
	assertError(t, s.do(t, asOperator(get("/orders/999999"))), http.StatusNotFound, "not_found", "")
	if r := s.do(t, asOperator(get("/orders/999999"))); !strings.Contains(string(r.body), "999999 does not exist") {
		t.Errorf("operator's 404: %s", r.body)
	}
}

func TestForeignOriginGetsNoPersonalData(t *testing.T) {
	for name, origins := range map[string][]string{"shop origin listed": {shopOrigin}, "default: none": nil} {
		t.Run(name, func(t *testing.T) {
			s := newAPIServer(t, func(c *Config) { c.AllowedOrigins = origins })
			first, _ := placeTwo(t, s)
			for _, r := range []request{get(first["self"]), get(first["events"]), asOperator(get("/api/dashboard/orders")),
				post("/orders", validOrder), post("/place-order", `{"customerName":"Eve"}`)} {
				got := s.do(t, withHeader(r, "Origin", "https://evil.example"))
				if got.status >= 300 {
					t.Errorf("%s %s: %d %s", r.method, r.path, got.status, got.body)
				}
				for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials"} {
					if v := got.header.Get(h); v != "" {
						t.Errorf("%s %s from a foreign origin: %s %q", r.method, r.path, h, v)
					}
				}
			}
			// The operator's login never crosses origins, even to a listed one.
			got := s.do(t, withHeader(asOperator(get("/api/dashboard/orders")), "Origin", shopOrigin))
			if v := got.header.Get("Access-Control-Allow-Credentials"); v != "" {
				t.Errorf("Access-Control-Allow-Credentials %q for the listed origin", v)
			}
			preflight := s.do(t, request{method: http.MethodOptions, path: "/place-order", header: map[string]string{
				"Origin": shopOrigin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
			}})
			allowed := preflight.header.Get("Access-Control-Allow-Origin")
			switch {
			case origins == nil && allowed != "":
				t.Errorf("with no origin configured, the preflight allowed %q", allowed)
			case origins != nil && (allowed != shopOrigin || preflight.status >= 300):
				t.Errorf("preflight from the listed origin: %d, Access-Control-Allow-Origin %q", preflight.status, allowed)
			}
			if origins != nil {
				cross := s.do(t, withHeader(get(first["self"]), "Origin", shopOrigin))
				if cross.status != http.StatusOK || cross.header.Get("Access-Control-Allow-Origin") != shopOrigin {
					t.Errorf("the shop front end reading its customer's order: %d, Access-Control-Allow-Origin %q",
						cross.status, cross.header.Get("Access-Control-Allow-Origin"))
				}
			}
		})
	}
	// A wildcard is refused outright.
	if _, err := New(Config{AllowedOrigins: []string{"*"}}); err == nil {
		t.Errorf(`New accepted the allowed origin "*"`)
	}
}

func TestSecurityHeaders(t *testing.T) {
	s := newAPIServer(t)
	first, _ := placeTwo(t, s)
	for _, r := range []request{
		asOperator(get("/")), asOperator(get("/dashboard/static/dashboard.js")), asOperator(get("/api/dashboard/stock")),
		asOperator(get("/metrics")), get("/"), get(first["self"]), get(first["events"]), get("/orders/1"), get("/nope"),
		post("/orders", validOrder), post("/place-order", `{"customerName":"Hal"}`), post("/orders", `{}`), get("/healthz"),
	} {
		got := s.do(t, r)
		csp := got.header.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, directive) {
				t.Errorf("%s %s (%d): Content-Security-Policy %q lacks %s", r.method, r.path, got.status, csp, directive)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s %s: Content-Security-Policy %q allows inline code", r.method, r.path, csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if v := got.header.Get(h); v != want {
				t.Errorf("%s %s (%d): %s = %q, want %q", r.method, r.path, got.status, h, v, want)
			}
		}
	}
	// The policy holds because the page has nothing inline: no script or style element
	// without a source, no style or event-handler attribute.
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<style|\sstyle\s*=|\son[a-z]+\s*=|javascript:`)
	err := fs.WalkDir(webFiles, "web", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".html") {
			return err
		}
		b, err := webFiles.ReadFile(path)
		if m := inline.Find(b); m != nil {
			t.Errorf("%s holds inline code the policy would block: %q", path, m)
		}
		return err
	})
	must(t, err)
}

func TestHealthBodiesNameOnlyTheFailingCheck(t *testing.T) {
	// What a driver really says when the database is gone: an address and the driver's text.
	internal := errors.New("dial tcp 10.1.2.3:3306: connect: connection refused (user orderd@tcp(db.internal:3306)/orderd)")
	var logs testenv.Buffer
	s := newAPIServer(t, func(c *Config) {
		failing := func(context.Context) map[string]error { return map[string]error{"mysql": internal, "sqs": nil} }
		c.Health, c.Ready = failing, failing
		c.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		r := s.do(t, get(path))
		got := decodeJSON(t, r)
		want := fmt.Sprint(map[string]any{"status": "unavailable", "checks": map[string]any{"mysql": "unavailable", "sqs": "ok"}})
		if r.status != http.StatusServiceUnavailable || fmt.Sprint(got) != want {
			t.Errorf("GET %s = %d %s, want 503 %s", path, r.status, r.body, want)
		}
		for _, leak := range []string{"10.1.2.3", "db.internal", "dial tcp", "orderd@"} {
			if strings.Contains(string(r.body), leak) {
				t.Errorf("GET %s: the body shows %q: %s", path, leak, r.body)
			}
		}
	}
	if !strings.Contains(logs.String(), "10.1.2.3:3306") || !strings.Contains(logs.String(), `"check":"mysql"`) {
		t.Errorf("the log does not say why the check failed:\n%s", logs.String())
	}
}

// flipLast returns s with its last character changed (within the capability alphabet).
func flipLast(s string) string {
	if s == "" {
		return "A"
	}
	last := s[len(s)-1]
	if last == 'A' {
		return s[:len(s)-1] + "B"
	}
	return s[:len(s)-1] + "A"
}
