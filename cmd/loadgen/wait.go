package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"
	"time"
)

// terminalQuery says how to recognise a finished order in a system's orders table.
type terminalQuery struct {
	table    string // table name, in the DSN's database
	terminal string // SQL predicate true for a terminal row
	outcome  string // SQL expression naming the terminal state
}

var (
	// The seed never moves order_status off 'pending'; its last step sets email_sent.
	peerTerminal = terminalQuery{table: "orders", terminal: "email_sent = 1", outcome: "'completed'"}
	// orderd's projection keeps the seed's columns and really moves order_status.
	orderdTerminal = terminalQuery{
		table:    "orders",
		terminal: "order_status IN ('completed','payment_failed','cancelled')",
		outcome:  "order_status",
	}
)

// The poller spends at most 1/pollDuty of wall time in queries: a backlog of 1,000 orders
// (~3 ms per poll on the dev machine) is polled every ~30 ms.
const pollDuty = 10

// maxIDsPerQuery bounds an IN list: one statement stays a few KiB and a few ms of work.
const maxIDsPerQuery = 1000

// waiter watches placed orders until they are terminal, by polling the orders table directly.
// Each poll asks only about the outstanding ids, by primary key, so its cost follows the
// backlog, not the table; and the pause between polls grows with the time a poll takes
// (pollDuty), so that under a large backlog the observer costs the database it is measuring
// little, at the price of seeing completions a little later when latencies are long anyway.
type waiter struct {
	db      *sql.DB
	q       terminalQuery
	every   time.Duration // shortest pause between polls
	timeout time.Duration // an order not terminal this long after its placement is lost
	stderr  io.Writer
	label   string

	// What the observer cost, reported after each run so its share can be judged.
	queries int
	busy    time.Duration // time spent in poll statements
}

// check fails early, with a clear message, when the table cannot be read.
func (w *waiter) check(ctx context.Context) error {
	q := fmt.Sprintf("SELECT order_id, %s FROM %s WHERE %s LIMIT 1", w.q.outcome, w.q.table, w.q.terminal)
	rows, err := w.db.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("read %s: %w", w.q.table, err)
	}
	return rows.Close()
}

// wait receives the indexes of placed orders on placed until it is closed, and returns once
// every one of them is terminal, or once every order still outstanding is overdue; it returns
// those as lost. Each order's done time is the moment the poll that first saw it terminal was
// sent: the row was committed before that statement's snapshot, so this errs late by at most
// one poll interval. If notify is not nil, the index of each terminal order is sent on it; it
// must have room for every order.
func (w *waiter) wait(ctx context.Context, orders []order, placed <-chan int, notify chan<- int, c *counters) (lost []int, err error) {
	w.queries, w.busy = 0, 0
	var (
		pending  []int                 // indexes of placed orders not yet seen terminal
		byID     = map[int64]int{}     // order id → index, for pending orders
		outcomes = map[string]string{} // interned outcome names
		buf      []byte
		open     = true
		pause    = w.every
		lastErr  time.Time
		timer    = time.NewTimer(0)
	)
	defer timer.Stop()
	add := func(i int) {
		pending = append(pending, i)
		byID[orders[i].id] = i
	}
	for {
		// Take in everything placed so far; with nothing to watch, block for the next one.
	drain:
		for open {
			if len(pending) == 0 {
				select {
				case <-ctx.Done():
					return pending, ctx.Err()
				case i, ok := <-placed:
					if !ok {
						open = false
						break drain
					}
					add(i)
				}
				continue
			}
			select {
			case i, ok := <-placed:
				if !ok {
					open = false
					break drain
				}
				add(i)
			default:
				break drain
			}
		}
		if !open && len(pending) == 0 {
			return nil, nil
		}

		cycle := time.Now()
		for lo := 0; lo < len(pending); lo += maxIDsPerQuery {
			chunk := pending[lo:min(lo+maxIDsPerQuery, len(pending))]
			if buf, err = w.poll(ctx, orders, chunk, byID, outcomes, buf, notify, c); err != nil {
				if ctx.Err() != nil {
					return pending, ctx.Err()
				}
				// A database hiccup is not a lost order: report it, keep polling until the
				// orders' own deadlines run out.
				if time.Since(lastErr) > time.Second {
					fmt.Fprintf(w.stderr, "%s: poll: %v\n", w.label, err)
					lastErr = time.Now()
				}
				break
			}
		}
		pause = max(w.every, (pollDuty-1)*time.Since(cycle))

		// Drop the orders seen terminal; find out whether the rest have all run out of time.
		now, kept, youngest := time.Now(), pending[:0], time.Time{}
		for _, i := range pending {
			if orders[i].done.IsZero() {
				kept = append(kept, i)
				if orders[i].placed.After(youngest) {
					youngest = orders[i].placed
				}
			}
		}
		pending = kept
		if !open && len(pending) > 0 && now.Sub(youngest) > w.timeout {
			return pending, nil
		}

		timer.Reset(pause)
		select {
		case <-ctx.Done():
			return pending, ctx.Err()
		case <-timer.C:
		}
	}
}

// poll asks once which of the chunk's orders are terminal and marks them. The ids are written
// into the statement rather than bound: they are integers we parsed, and a statement without
// parameters is one round trip instead of the driver's prepare, execute and close.
func (w *waiter) poll(ctx context.Context, orders []order, chunk []int, byID map[int64]int, outcomes map[string]string, buf []byte, notify chan<- int, c *counters) ([]byte, error) {
	buf = append(buf[:0], "SELECT order_id, "...)
	buf = append(buf, w.q.outcome...)
	buf = append(buf, " FROM "...)
	buf = append(buf, w.q.table...)
	buf = append(buf, " WHERE "...)
	buf = append(buf, w.q.terminal...)
	buf = append(buf, " AND order_id IN ("...)
	for j, i := range chunk {
		if j > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, orders[i].id, 10)
	}
	buf = append(buf, ')')
	sent := time.Now()
	w.queries++
	defer func() { w.busy += time.Since(sent) }()
	rows, err := w.db.QueryContext(ctx, string(buf))
	if err != nil {
		return buf, err
	}
	defer rows.Close()
	var (
		id      int64
		outcome sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&id, &outcome); err != nil {
			return buf, err
		}
		i, ok := byID[id]
		if !ok {
			continue
		}
		delete(byID, id)
		name, ok := outcomes[string(outcome)]
		if !ok {
			name = string(outcome)
			outcomes[name] = name
		}
		orders[i].done, orders[i].outcome = sent, name
		c.terminal.Add(1)
		if notify != nil {
			notify <- i
		}
	}
	return buf, rows.Err()
}
