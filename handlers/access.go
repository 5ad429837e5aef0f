package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"orderd/domain"
)

// Who may see what. A customer reads their own order, and nothing else, with the capability
// its placement answered (links carrying ?access=<token>). An operator authenticates with
// HTTP Basic and may read everything: the dashboard, its API, /metrics and any order by plain
// id. Anyone else asking for an order gets the same 404 whether it exists or not, and nothing
// is open because a setting was left empty: there is always an operator password.

// OperatorUser is the user name of HTTP Basic operator credentials.
const OperatorUser = "operator"

// accessParam is the query parameter that carries an order's capability.
const accessParam = "access"

// basicChallenge is the WWW-Authenticate header of a 401.
const basicChallenge = `Basic realm="orderd", charset="UTF-8"`

// Operators checks operator credentials: HTTP Basic, user OperatorUser, one password.
type Operators struct {
	user, password [sha256.Size]byte
	log            *slog.Logger
}

// NewOperators returns the check for password, which must not be empty.
func NewOperators(password string, log *slog.Logger) (*Operators, error) {
	if password == "" || log == nil {
		return nil, errors.New("handlers: NewOperators needs a password (nothing is served open) and a logger")
	}
	return &Operators{user: sha256.Sum256([]byte(OperatorUser)), password: sha256.Sum256([]byte(password)), log: log}, nil
}

// check reports whether r presents credentials at all (an Authorization header) and whether
// they are the operator's.
func (o *Operators) check(r *http.Request) (presented, ok bool) {
	if _, presented = r.Header["Authorization"]; !presented {
		return false, false
	}
	user, password, _ := r.BasicAuth()
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	// Digests of equal length, compared in constant time and both always: the time taken
	// tells neither the password's length nor how much of a guess was right.
	match := subtle.ConstantTimeCompare(u[:], o.user[:]) & subtle.ConstantTimeCompare(p[:], o.password[:])
	return true, match == 1
}

// Require serves next to operators only; anyone else gets 401 with a Basic challenge.
func (o *Operators) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := o.check(r); !ok {
			respondError(w, r, o.log, errUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// orderAccess decides whether r may read order id. Credentials, when presented, must be the
// operator's (401 otherwise, as on every operator endpoint); without them the request must
// carry a capability of this very order, or it gets errNoSuchOrder. It returns the query
// that keeps the answer's links working for the same reader ("" for an operator).
func (a *API) orderAccess(r *http.Request, id domain.OrderID) (linkQuery string, err error) {
	if presented, ok := a.operators.check(r); presented {
		if !ok {
			return "", errUnauthorized
		}
		return "", nil
	}
	token := r.URL.Query().Get(accessParam)
	if token == "" {
		return "", errNoSuchOrder
	}
	ok, err := a.placer.CanRead(r.Context(), id, token)
	switch {
	case err != nil:
		return "", err
	case !ok:
		return "", errNoSuchOrder
	}
	return accessQuery(token), nil
}

// accessQuery is the query of a link that carries capability token.
func accessQuery(token string) string { return "?" + accessParam + "=" + url.QueryEscape(token) }

// orderLinks are the URLs of an order and its history, with query (a capability, or nothing
// for an operator) on each.
func orderLinks(id domain.OrderID, query string) map[string]string {
	self := fmt.Sprintf("/orders/%d", id)
	return map[string]string{"self": self + query, "events": self + "/events" + query}
}

// securityHeaders are set on every answer. The policy suits the dashboard (its scripts and
// styles are files of its own origin, nothing inline) and forbids everything else, framing
// included; answers carry personal data or capabilities, so no cache keeps them and no
// Referer takes a capability link elsewhere.
var securityHeaders = http.Header{
	"Content-Security-Policy": {"default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
	"X-Content-Type-Options":  {"nosniff"},
	"X-Frame-Options":         {"DENY"},
	"Referrer-Policy":         {"no-referrer"},
	"Cache-Control":           {"no-store"},
}

// withSecurityHeaders sets securityHeaders on every answer of next. The values are shared,
// not copied: a handler that changes one replaces it (Set) or appends to a full slice (Add),
// which never writes into the shared array.
func withSecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range securityHeaders {
			h[k] = v
		}
		next.ServeHTTP(w, r)
	})
}
