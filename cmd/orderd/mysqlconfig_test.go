package main

import (
	"testing"

	"github.com/go-sql-driver/mysql"

	"orderd/eventstore"
)

// TestMySQLConfigUsesTheSharedDriverOptions checks that serve's pool is opened with exactly the
// options eventstore.WithDriverOptions gives (as the Lambda functions' is: their test is the
// same), and that a DSN's own timeout is kept.
func TestMySQLConfigUsesTheSharedDriverOptions(t *testing.T) {
	for _, dsn := range []string{"u:p@tcp(db:3306)/orderd", "u:p@tcp(db:3306)/orderd?timeout=30s&readTimeout=1m"} {
		cfg, err := loadConfig(func(k string) string {
			if k == "MYSQL_DSN" {
				return dsn
			}
			return ""
		})
		if err != nil {
			t.Fatal(err)
		}
		mc, err := cfg.mysqlConfig()
		if err != nil {
			t.Fatal(err)
		}
		want, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := mc.FormatDSN(), eventstore.WithDriverOptions(want).FormatDSN(); got != want {
			t.Errorf("MYSQL_DSN=%s: serve opens %s, want %s", dsn, got, want)
		}
		if !mc.ParseTime || !mc.InterpolateParams || mc.Timeout == 0 {
			t.Errorf("MYSQL_DSN=%s: %s lacks the driver options", dsn, mc.FormatDSN())
		}
	}
}
