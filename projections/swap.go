package projections

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Table is one table of a projection as a rebuild sees it: the live one, the new one it is
// built in, and the name the live one has between the swap and its drop.
type Table struct{ Live, New, Old string }

// ShadowOf returns the Table of live, with the names every rebuild uses.
func ShadowOf(live string) Table {
	return Table{Live: live, New: live + "_rebuild", Old: live + "_old"}
}

// swapLockWait bounds, in seconds, how long the swap's RENAME waits for transactions still
// reading an old table: writers are held off meanwhile, so it fails rather than wait longer.
const swapLockWait = 5

// SwapTables swaps every new table in, and every live one out, with one atomic RENAME, on a
// connection that gives up after swapLockWait seconds if a transaction still holds a live
// table: the caller holds the writers off while it waits, and readers queue behind it.
func SwapTables(ctx context.Context, db *sql.DB, tables ...Table) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var renames []string
	for _, t := range tables {
		if _, err := conn.ExecContext(ctx, `DROP TABLE IF EXISTS `+t.Old); err != nil {
			return err
		}
		renames = append(renames, t.Live+` TO `+t.Old, t.New+` TO `+t.Live)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`SET SESSION lock_wait_timeout = %d`, swapLockWait)); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SET SESSION lock_wait_timeout = DEFAULT`) //nolint:errcheck // the pool reuses it
	_, err = conn.ExecContext(ctx, `RENAME TABLE `+strings.Join(renames, ", "))
	return err
}

// PrepareTables (re)creates each new table empty, like its live one.
func PrepareTables(ctx context.Context, db *sql.DB, tables ...Table) error {
	for _, t := range tables {
		for _, stmt := range []string{`DROP TABLE IF EXISTS ` + t.New, `CREATE TABLE ` + t.New + ` LIKE ` + t.Live} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("prepare %s: %w", t.New, err)
			}
		}
	}
	return nil
}

// DropTables drops what a rebuild leaves behind: the old tables after a swap (which), or
// the new ones after a failure.
func DropTables(ctx context.Context, db *sql.DB, names ...string) error {
	for _, name := range names {
		if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS `+name); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
	}
	return nil
}

// CatchUp calls pass, which refolds what changed in the log since a rebuild's snapshot and
// returns how many streams it refolded, until few are left (or five passes), while the
// service runs: what remains for the swap, when writers wait, is then small. It returns the
// streams refolded in all.
func CatchUp(pass func() (int, error)) (int, error) {
	total := 0
	for range 5 {
		n, err := pass()
		total += n
		if err != nil || n < 100 {
			return total, err
		}
	}
	return total, nil
}
