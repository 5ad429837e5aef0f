package main

import (
	"slices"
	"testing"

	"orderd/internal/testenv"
	"orderd/projections/customers"
)

// checkCustomers waits until the customers component has consumed the log's feed, then checks
// the per-customer read model against the orders table: one row per order with its customer,
// status, total and stream version, and per customer the orders placed, completed and what the
// completed ones came to — each order counted once however often the stages' messages came.
func checkCustomers(t *testing.T, env *testenv.Env) {
	t.Helper()
	env.WaitFeedDrained(t, customers.Topic.Name)
	diff := func(what, got, want string) {
		g, w := env.Strings(t, got), env.Strings(t, want)
		if !slices.Equal(g, w) {
			t.Errorf("%s: %d rows, %d expected from the orders table; first differences:\n got  %s\n want %s", what, len(g), len(w), firstFew(g), firstFew(w))
		}
	}
	diff("customer_orders",
		`SELECT CONCAT_WS('|', order_id, HEX(customer_name), HEX(customer_email), order_status, total_cents, version) FROM customer_orders ORDER BY order_id`,
		`SELECT CONCAT_WS('|', order_id, HEX(customer_name), HEX(COALESCE(customer_email, '')), order_status, total_cents, version) FROM orders ORDER BY order_id`)
	diff("customers",
		`SELECT CONCAT_WS('|', HEX(customer_name), HEX(customer_email), orders_placed, orders_completed, completed_cents)
			FROM customers ORDER BY customer_name, customer_email`,
		`SELECT CONCAT_WS('|', HEX(customer_name), HEX(COALESCE(customer_email, '')), COUNT(*), SUM(order_status = 'completed'),
			SUM(IF(order_status = 'completed', total_cents, 0))) FROM orders GROUP BY customer_name, COALESCE(customer_email, '')
			ORDER BY customer_name, COALESCE(customer_email, '')`)
}
