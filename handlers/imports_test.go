package handlers

import (
	"os/exec"
	"strings"
	"testing"
)

// TestHandlersDoNotKnowTheDriver keeps the HTTP layer off the database driver: storage
// errors reach it already classified (eventstore.Classify), and it asks only
// domain.ErrorKind. Its dependencies reach the driver through the storage packages, so it is
// the package's own imports that are checked.
func TestHandlersDoNotKnowTheDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, "orderd/handlers").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if strings.HasPrefix(imp, "github.com/go-sql-driver/") || imp == "database/sql/driver" {
			t.Errorf("handlers imports %s; storage errors should reach it as domain error kinds", imp)
		}
	}
}
