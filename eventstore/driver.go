package eventstore

import (
	"time"

	"github.com/go-sql-driver/mysql"
)

// defaultDialTimeout bounds connecting when the DSN names no timeout: without one the driver
// waits for the operating system's (minutes), and a request or a Lambda invocation with it.
const defaultDialTimeout = 5 * time.Second

// WithDriverOptions sets on mc, and returns it, the driver options every process's pool relies
// on: parseTime (DATETIME columns as time.Time), UTC, client-side interpolation (one round trip
// per statement, not three) and a dial timeout when the DSN gives none. `orderd`, the Lambda
// functions and the tests open their pools with it, so that they read the same values.
func WithDriverOptions(mc *mysql.Config) *mysql.Config {
	mc.ParseTime, mc.Loc, mc.InterpolateParams = true, time.UTC, true
	if mc.Timeout == 0 {
		mc.Timeout = defaultDialTimeout
	}
	return mc
}
