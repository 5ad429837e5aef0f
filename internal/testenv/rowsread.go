package testenv

import (
	"database/sql"
	"strings"
	"testing"
)

// OneConnection opens a pool of exactly one connection to the test's database, so that
// RowsRead sees every statement run through it.
func (e *Env) OneConnection(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", e.DSN)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// RowsRead returns how many rows and index entries the server read for the statements f runs
// on db (a pool from OneConnection): the growth of the session's Handler_read_* counters,
// less what reading them costs. A statement that scans a table reads about as many as it
// holds; one that reads an index range, about as many as the range holds.
func RowsRead(t testing.TB, db *sql.DB, f func()) int64 {
	t.Helper()
	read := func() int64 {
		rows, err := db.Query(`SHOW SESSION STATUS LIKE 'Handler_read%'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var sum int64
		for rows.Next() {
			var name string
			var n int64
			if err := rows.Scan(&name, &n); err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(name, "_deleted") && !strings.HasSuffix(name, "_retry") {
				sum += n
			}
		}
		return sum
	}
	base := read()
	overhead := read() - base // what one read of the counters adds to them
	start := read()
	f()
	return read() - start - overhead
}

// FillOrders writes n orders straight into the orders projection, order_ids and the log
// (one OrderPlaced each; not a real history, only rows for readers to find), the newest
// pending of them pending and unconfirmed, the rest split 8:1:1 between completed,
// payment_failed and cancelled: a table big enough that a query scanning it shows.
func (e *Env) FillOrders(t testing.TB, n, pending int) {
	t.Helper()
	const numbers = `(SELECT a.d + 10*b.d + 100*c.d + 1000*x.d + 10000*y.d + 1 AS n FROM
		(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a,
		(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b,
		(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c,
		(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) x,
		(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) y) numbers`
	if n > 100_000 || pending > n {
		t.Fatalf("FillOrders: %d orders (at most 100,000), %d pending", n, pending)
	}
	e.MustExec(t, `INSERT INTO order_ids (order_id, created_at) SELECT n, UTC_TIMESTAMP(6) FROM `+numbers+` WHERE n <= ?`, n)
	e.MustExec(t, `INSERT INTO events (position, stream_id, version, event_type, schema_version, payload, metadata, occurred_at)
		SELECT n, n, 1, 'OrderPlaced', 1, '{}', '{}', UTC_TIMESTAMP(6) FROM `+numbers+` WHERE n <= ?`, n)
	e.MustExec(t, `INSERT INTO orders (order_id, customer_name, order_status, payment_status, inventory_status, email_sent,
		customer_email, items, total_cents, failure_reason, version, last_position, placed_at, updated_at)
		SELECT n, CONCAT('Customer ', n),
			CASE WHEN n > ? THEN 'pending' WHEN n % 10 = 1 THEN 'payment_failed' WHEN n % 10 = 2 THEN 'cancelled' ELSE 'completed' END,
			'completed', 'completed', n <= ?, CONCAT('c', n, '@example.com'), '[]', 0, NULL, 1, n, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
		FROM `+numbers+` WHERE n <= ?`, n-pending, n-pending, n)
	e.MustExec(t, `ANALYZE TABLE orders, order_ids, events`)
}
