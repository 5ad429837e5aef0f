package eventstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"net"

	"github.com/go-sql-driver/mysql"

	"orderd/domain"
)

// errDatabaseUnavailable is what a caller is told when the database could not answer; the
// driver's own words (an address, an error number) stay in the chain for the log.
var errDatabaseUnavailable = domain.Unavailable("the order database is unavailable or busy; try again shortly")

// unavailableError is a storage error that retrying later can cure: the database could not
// be reached, or stayed too busy to answer. It is domain.KindUnavailable, so the edges (a 503
// over HTTP, a retry in a stage) react to it without knowing the driver.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string   { return e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{errDatabaseUnavailable, e.cause} }

// Classify gives *errp a domain kind when it is a storage error that has none yet: the
// database unreachable (a network error, a dead connection, a timeout) or busy (a deadlock or
// a lock wait timeout that outlasted the store's retries) becomes domain.KindUnavailable.
// Every package that reads or writes the database calls it on what it returns (defer
// eventstore.Classify(&err)), so that callers ask domain.ErrorKind and never the driver.
func Classify(errp *error) {
	err := *errp
	if err == nil || domain.ErrorKind(err) != domain.KindInternal {
		return
	}
	if unreachable(err) || isRetryable(err) {
		*errp = &unavailableError{cause: err}
	}
}

// unreachable reports whether err means the database could not be reached or did not answer
// in time.
func unreachable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, context.DeadlineExceeded)
}
