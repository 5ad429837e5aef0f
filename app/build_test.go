package app_test

import (
	"database/sql"
	"io"
	"log/slog"
	"strings"
	"testing"

	"orderd/app"
	"orderd/pipeline"
)

// TestBuildRefusesPipelinesThatCannotRun: what pipeline.New cannot see is checked when the
// pipeline is assembled, before anything is built: a stage named like one of the service's
// own components, and a trigger or a product the event store does not know (a misspelt
// trigger would leave the event before it without a route).
func TestBuildRefusesPipelinesThatCannotRun(t *testing.T) {
	db, err := sql.Open("mysql", "nobody@tcp(127.0.0.1:1)/none") // never connected: Build refuses first
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, c := range map[string]struct {
		change func(st *pipeline.Stage)
		want   string
	}{
		"a stage named like the feed consumer": {func(st *pipeline.Stage) { st.Component = app.ComponentCustomers }, "own components"},
		"a misspelt trigger":                   {func(st *pipeline.Stage) { st.Triggers = []string{"ParcelShiped"} }, "ParcelShiped"},
		"an unknown product":                   {func(st *pipeline.Stage) { st.Produces = []string{"ParcelLost"} }, "ParcelLost"},
	} {
		st := shipping
		st.Triggers = []string{typeParcelShipped} // beside the default pipeline, not inside it
		c.change(&st)
		p, err := pipeline.New(append(pipeline.Default().Stages(), st)...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = app.Build(app.Config{DB: db, Log: log, Pipeline: p})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Build = %v, want an error naming %q", name, err, c.want)
		}
	}
}
