package handlers

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"orderd/domain"
)

// errorBody is the JSON every error answer carries.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// writeError answers r with err, through respondError.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	respondError(w, r, a.log, err)
}

// respondError is the one place that turns an error into an HTTP status. Only server-side
// failures (5xx) are logged: a client's mistake is the client's to read in the answer.
func respondError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, code := statusOf(err)
	detail := errorDetail{Code: code, Message: err.Error()}
	var de *domain.Error
	var he *httpError
	switch {
	case errors.As(err, &de):
		detail.Field, detail.Message = de.Field, de.Message
	case errors.As(err, &he):
		detail.Field = he.field
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.Itoa(rl.seconds()))
	}
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
		// The cause is in the log; the answer names no internal address or query. An
		// unavailable dependency's domain error (eventstore.Classify) says so in its message.
		if status == http.StatusInternalServerError {
			detail.Message = "internal error; it has been logged"
		}
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", basicChallenge)
	}
	writeJSON(w, status, errorBody{Error: detail})
}

func statusOf(err error) (int, string) {
	switch domain.ErrorKind(err) {
	case domain.KindInvalid:
		return http.StatusBadRequest, "invalid"
	case domain.KindNotFound:
		return http.StatusNotFound, "not_found"
	case domain.KindConflict:
		return http.StatusConflict, "conflict"
	case domain.KindUnavailable:
		return http.StatusServiceUnavailable, "unavailable"
	}
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.code
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		return http.StatusTooManyRequests, "rate_limited"
	}
	return http.StatusInternalServerError, "internal"
}

// httpError is a transport-level refusal (wrong content type, body too large) that has no
// domain kind.
type httpError struct {
	status  int
	code    string
	field   string
	message string
}

func (e *httpError) Error() string { return e.message }

// errUnauthorized refuses a request for what only operators may see, made without their
// credentials or with wrong ones; the answer carries a Basic challenge.
var errUnauthorized = &httpError{status: http.StatusUnauthorized, code: "unauthorized",
	message: `operator credentials required: HTTP Basic, user "operator"`}

// errNoSuchOrder answers whoever may not read the order they asked for. It is the same
// whether the order exists or not, and names no id, so it tells nothing about which exist.
var errNoSuchOrder = &httpError{status: http.StatusNotFound, code: "not_found",
	message: "no such order; a customer reads their order with the link its placement answered"}

// rateLimited refuses a client that placed orders faster than its limit; it may try again
// after retryAfter.
type rateLimited struct{ retryAfter time.Duration }

func (e *rateLimited) Error() string {
	return fmt.Sprintf("too many orders from this client; try again in %d s", e.seconds())
}

// seconds is retryAfter in whole seconds, rounded up and at least 1, as Retry-After takes it.
func (e *rateLimited) seconds() int { return max(1, int(math.Ceil(e.retryAfter.Seconds()))) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := jsonEncode(w, v); err != nil {
		slog.Default().Warn("write response", "error", err)
	}
}
