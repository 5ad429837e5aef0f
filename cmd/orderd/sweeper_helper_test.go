package main

import (
	"database/sql"
	"log/slog"

	"orderd/app"
	"orderd/eventstore"
	"orderd/outbox"
)

// newSweeper returns a sweeper over db wired as serve wires it: stuck orders found through
// the orders read model, held ones through the dead-letter log.
func newSweeper(db *sql.DB, store *eventstore.Store, writer *outbox.Writer, log *slog.Logger, cfg outbox.SweeperConfig) (*outbox.Sweeper, error) {
	return outbox.NewSweeper(db, store, writer, app.SweepReads, log, cfg)
}
