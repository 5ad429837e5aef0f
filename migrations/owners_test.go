package migrations_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"orderd/internal/testenv"
)

// owners names, for every table the migrations create, the packages (directories from the
// module root) whose production code may run SQL on it. docs/architecture.md, section 2,
// says the same in prose; a new table must be added here.
var owners = map[string][]string{
	"events":            {"eventstore"},
	"order_ids":         {"eventstore"},
	"order_access":      {"eventstore"},
	"event_log_barrier": {"eventstore"},
	"outbox":            {"outbox"},
	"orders":            {"projections/orders"},
	"projections":       {"projections"},
	"stock":             {"ordering"},
	"order_redrives":    {"outbox"},
	"dead_letters":      {"deadletter"},
	"event_feed":        {"feed"},
	"customers":         {"projections/customers"},
	"customer_orders":   {"projections/customers"},
	"schema_migrations": {"migrations"},
}

// sqlTable finds the table a statement names after a keyword that precedes one. The
// project writes SQL keywords in capitals, and only string literals are searched, so prose
// in comments does not count.
var sqlTable = regexp.MustCompile("\\b(?:FROM|JOIN|INTO|UPDATE|TABLE|TABLES|EXISTS)\\s+`?([a-z_]+)`?")

// TestEachTableHasOneOwner reads every production Go file of the module (tests, internal/
// and the migrations' own SQL files aside) and fails where a string literal runs SQL on a
// table outside the packages that own it, or on a table nobody is listed as owning.
func TestEachTableHasOneOwner(t *testing.T) {
	root := testenv.ModuleRoot(t)
	for _, name := range createdTables(t, root) {
		if _, ok := owners[name]; !ok {
			t.Errorf("migrations create table %s, which has no owner in owners", name)
		}
	}
	seen := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "internal" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(rel))
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			if slices.Contains(owners[s], pkg) {
				seen[s] = true // the owner names its table in a constant (customers' shadow tables)
			}
			for _, m := range sqlTable.FindAllStringSubmatch(s, -1) {
				table := m[1]
				allowed, known := owners[table]
				switch {
				case !known:
					continue // not a table of ours (a column, a keyword, a Watermill table)
				case slices.Contains(allowed, pkg):
					seen[table] = true
				default:
					t.Errorf("%s: SQL on %s, which %v own: call the owner instead", fset.Position(lit.Pos()), table, allowed)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The search must find each table's own SQL, or it is searching for nothing.
	for table := range owners {
		if !seen[table] {
			t.Errorf("found no SQL on %s in %v: is the owner list out of date?", table, owners[table])
		}
	}
}

// createdTables returns the tables the migrations create.
func createdTables(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found: %v", err)
	}
	create := regexp.MustCompile("CREATE TABLE (?:IF NOT EXISTS )?`?([a-z_]+)")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range create.FindAllStringSubmatch(string(b), -1) {
			out = append(out, m[1])
		}
	}
	return out
}
