package eventstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"

	"orderd/domain"
	"orderd/eventstore"
)

// TestStorageErrorsBecomeDomainKinds: the store turns a database it cannot reach into
// domain.KindUnavailable, keeping the driver's error in the chain for the log; errors that
// already have a kind, or that retrying cannot cure, keep theirs.
func TestStorageErrorsBecomeDomainKinds(t *testing.T) {
	db, err := sql.Open("mysql", "nobody@tcp(127.0.0.1:1)/none") // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := eventstore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = store.Load(context.Background(), 1)
	if domain.ErrorKind(err) != domain.KindUnavailable {
		t.Errorf("Load from an unreachable database: %v (kind %d), want KindUnavailable", err, domain.ErrorKind(err))
	}

	// A deadlock that outlasted the store's retries is an InnoDB answer that no emulator can
	// be made to give on demand, so the driver's error value stands in for it here.
	deadlock := fmt.Errorf("append: %w", &mysql.MySQLError{Number: 1213, Message: "Deadlock found"})
	for _, tc := range []struct {
		name string
		err  error
		want domain.Kind
	}{
		{"deadlock", deadlock, domain.KindUnavailable},
		{"lock wait timeout", &mysql.MySQLError{Number: 1205}, domain.KindUnavailable},
		{"dead connection", mysql.ErrInvalidConn, domain.KindUnavailable},
		{"timeout", context.DeadlineExceeded, domain.KindUnavailable},
		{"syntax error", &mysql.MySQLError{Number: 1064}, domain.KindInternal},
		{"already classified", domain.Invalid("f", "bad"), domain.KindInvalid},
	} {
		err := tc.err
		eventstore.Classify(&err)
		if domain.ErrorKind(err) != tc.want {
			t.Errorf("%s: kind %d, want %d", tc.name, domain.ErrorKind(err), tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: the cause left the chain: %v", tc.name, err)
		}
	}
	var nilErr error
	if eventstore.Classify(&nilErr); nilErr != nil {
		t.Errorf("Classify(nil) = %v", nilErr)
	}
}
