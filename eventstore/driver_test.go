package eventstore_test

import (
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"orderd/eventstore"
)

func TestWithDriverOptions(t *testing.T) {
	for _, tc := range []struct {
		dsn     string
		timeout time.Duration
	}{
		{"u:p@tcp(db:3306)/orderd", 5 * time.Second},
		{"u:p@tcp(db:3306)/orderd?timeout=30s&parseTime=false&loc=Local&interpolateParams=false", 30 * time.Second},
	} {
		mc, err := mysql.ParseDSN(tc.dsn)
		if err != nil {
			t.Fatal(err)
		}
		mc = eventstore.WithDriverOptions(mc)
		if !mc.ParseTime || mc.Loc != time.UTC || !mc.InterpolateParams || mc.Timeout != tc.timeout {
			t.Errorf("%s: parseTime=%v loc=%v interpolateParams=%v timeout=%v, want true UTC true %v",
				tc.dsn, mc.ParseTime, mc.Loc, mc.InterpolateParams, mc.Timeout, tc.timeout)
		}
		if mc.User != "u" || mc.Passwd != "p" || mc.Addr != "db:3306" || mc.DBName != "orderd" {
			t.Errorf("%s: the DSN's own parts changed: %s", tc.dsn, mc.FormatDSN())
		}
	}
}
