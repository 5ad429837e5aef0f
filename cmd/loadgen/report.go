package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// runResult is what one measured run of one system produced.
type runResult struct {
	system    string
	round     int
	requested int
	placed    int // answered 2xx with an order id
	failed    int // placement requests that did not
	lost      int // placed but not terminal within the timeout
	// placeDur runs from the first request's start to the last placement's response;
	// e2eDur from the first request's start to the last order observed terminal.
	placeDur, e2eDur time.Duration
	placeLat         []time.Duration // per placed order: request start → response
	e2eLat           []time.Duration // per terminal order: request start → observed terminal
	outcomes         map[string]int  // terminal state → count
}

// systemSummary pools the measured rounds of one system.
type systemSummary struct {
	Name      string `json:"name"`
	Rounds    int    `json:"rounds"`
	Requested int    `json:"requested"`
	Placed    int    `json:"placed"`
	Failed    int    `json:"failed"`
	Lost      int    `json:"lost"`
	// Throughputs are the median over rounds; the per-round values are kept alongside.
	PlaceThroughput       num            `json:"placement_throughput_per_s"`
	PlaceThroughputRounds []num          `json:"placement_throughput_rounds"`
	E2EThroughput         num            `json:"end_to_end_throughput_per_s"`
	E2EThroughputRounds   []num          `json:"end_to_end_throughput_rounds"`
	PlaceLatency          latencies      `json:"placement_latency"`
	E2ELatency            latencies      `json:"end_to_end_latency"`
	Outcomes              map[string]int `json:"outcomes"`
	PeakRSSMiB            num            `json:"peak_rss_mib"`
	RSSPIDs               []int          `json:"rss_pids,omitempty"`
}

// num is a float64 that encodes NaN (a figure that could not be measured) as JSON null.
type num float64

// MarshalJSON encodes n, or null when it is NaN or infinite.
func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// summariseRuns pools every measured run of one system: latency samples are merged (so the
// percentiles are over all orders of all rounds) and throughput is the median of the rounds.
func summariseRuns(name string, runs []runResult) systemSummary {
	s := systemSummary{Name: name, Rounds: len(runs), Outcomes: map[string]int{}, PeakRSSMiB: num(math.NaN())}
	var place, e2e []time.Duration
	var pt, et []float64
	for _, r := range runs {
		s.Requested += r.requested
		s.Placed += r.placed
		s.Failed += r.failed
		s.Lost += r.lost
		place = append(place, r.placeLat...)
		e2e = append(e2e, r.e2eLat...)
		p, e := perSecond(r.placed, r.placeDur), perSecond(len(r.e2eLat), r.e2eDur)
		pt, et = append(pt, p), append(et, e)
		s.PlaceThroughputRounds = append(s.PlaceThroughputRounds, num(p))
		s.E2EThroughputRounds = append(s.E2EThroughputRounds, num(e))
		for k, v := range r.outcomes {
			s.Outcomes[k] += v
		}
	}
	s.PlaceThroughput, s.E2EThroughput = num(median(pt)), num(median(et))
	s.PlaceLatency, s.E2ELatency = summarise(place), summarise(e2e)
	return s
}

// figure is one row of the comparison table.
type figure struct {
	key   string // JSON name of the ratio
	label string
	get   func(*systemSummary) float64
}

// figures lists the table's rows in print order.
var figures = []figure{
	{"placement_throughput", "placement throughput (orders/s)", func(s *systemSummary) float64 { return float64(s.PlaceThroughput) }},
	{"placement_latency_p50", "placement latency p50 (ms)", func(s *systemSummary) float64 { return float64(s.PlaceLatency.P50) }},
	{"placement_latency_p95", "placement latency p95 (ms)", func(s *systemSummary) float64 { return float64(s.PlaceLatency.P95) }},
	{"placement_latency_p99", "placement latency p99 (ms)", func(s *systemSummary) float64 { return float64(s.PlaceLatency.P99) }},
	{"end_to_end_throughput", "end-to-end throughput (orders/s)", func(s *systemSummary) float64 { return float64(s.E2EThroughput) }},
	{"end_to_end_latency_p50", "end-to-end latency p50 (ms)", func(s *systemSummary) float64 { return float64(s.E2ELatency.P50) }},
	{"end_to_end_latency_p95", "end-to-end latency p95 (ms)", func(s *systemSummary) float64 { return float64(s.E2ELatency.P95) }},
	{"end_to_end_latency_p99", "end-to-end latency p99 (ms)", func(s *systemSummary) float64 { return float64(s.E2ELatency.P99) }},
	{"peak_rss", "peak RSS (MiB)", func(s *systemSummary) float64 { return float64(s.PeakRSSMiB) }},
}

// ratios returns orderd/peer for every figure, NaN where either side is missing.
func ratios(orderd, peer *systemSummary) map[string]num {
	out := make(map[string]num, len(figures))
	for _, f := range figures {
		out[f.key] = num(ratio(f.get(orderd), f.get(peer)))
	}
	return out
}

// printTable writes the comparison: one column per system and, when both ran, a ratio column
// orderd/peer. sums is in column order (peer first when present).
func printTable(w io.Writer, sums []*systemSummary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var orderd, peer *systemSummary
	header := []string{"figure"}
	for _, s := range sums {
		header = append(header, s.Name)
		switch s.Name {
		case "orderd":
			orderd = s
		case "peer":
			peer = s
		}
	}
	both := orderd != nil && peer != nil
	if both {
		header = append(header, "orderd/peer")
	}
	// AlignRight pads every cell on the left; the label column reads better left-aligned,
	// so pad it ourselves to a common width first.
	width := len("orders placed / failed / lost")
	for _, f := range figures {
		width = max(width, len(f.label))
	}
	row := func(cells ...string) {
		cells[0] = fmt.Sprintf("%-*s", width, cells[0])
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	row(header...)
	for _, f := range figures {
		cells := []string{f.label}
		for _, s := range sums {
			cells = append(cells, formatValue(f.get(s)))
		}
		if both {
			cells = append(cells, formatRatio(ratio(f.get(orderd), f.get(peer))))
		}
		row(cells...)
	}
	cells := []string{"orders placed / failed / lost"}
	for _, s := range sums {
		cells = append(cells, fmt.Sprintf("%d / %d / %d", s.Placed, s.Failed, s.Lost))
	}
	if both {
		cells = append(cells, "")
	}
	row(cells...)
	if err := tw.Flush(); err != nil {
		return err
	}
	if both {
		fmt.Fprintln(w, "orderd/peer: throughput > 1 means orderd is faster; latency and RSS < 1 mean orderd is lower.")
	}
	return nil
}

// printOutcomes writes how the orders of each system ended, so that a fast run made of
// declined payments is not mistaken for a fast pipeline.
func printOutcomes(w io.Writer, sums []*systemSummary) {
	for _, s := range sums {
		keys := make([]string, 0, len(s.Outcomes))
		for k := range s.Outcomes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, s.Outcomes[k]))
		}
		if len(parts) == 0 {
			parts = append(parts, "none terminal")
		}
		fmt.Fprintf(w, "%s outcomes: %s\n", s.Name, strings.Join(parts, ", "))
	}
}
