package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func msList(vals ...int) []time.Duration {
	out := make([]time.Duration, len(vals))
	for i, v := range vals {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1ms … 100ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", msList(7), 50, 7 * time.Millisecond},
		{"single p99", msList(7), 99, 7 * time.Millisecond},
		{"100 p50", hundred, 50, 50 * time.Millisecond},
		{"100 p95", hundred, 95, 95 * time.Millisecond},
		{"100 p99", hundred, 99, 99 * time.Millisecond},
		{"100 p100", hundred, 100, 100 * time.Millisecond},
		{"100 p0 clamps to min", hundred, 0, 1 * time.Millisecond},
		// ten samples: p95 needs 9.5 of them at or below, so the 10th
		{"10 p95", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 95, 10 * time.Millisecond},
		{"10 p50", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5 * time.Millisecond},
		{"4 p50", msList(10, 20, 30, 40), 50, 20 * time.Millisecond},
		{"4 p51", msList(10, 20, 30, 40), 51, 30 * time.Millisecond},
		// 1000 samples: p99.9 is exactly the 999th; binary rounding must not push it to 1000th
		{"1000 p99.9", func() []time.Duration {
			s := make([]time.Duration, 1000)
			for i := range s {
				s[i] = time.Duration(i + 1)
			}
			return s
		}(), 99.9, 999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummariseSortsAndReadsPercentiles(t *testing.T) {
	// unsorted on purpose: summarise must sort before reading ranks
	ds := msList(90, 10, 50, 30, 70, 20, 100, 60, 40, 80)
	l := summarise(ds)
	if l.P50 != 50 || l.P95 != 100 || l.P99 != 100 || l.Max != 100 || l.N != 10 {
		t.Errorf("summarise = %+v, want p50 50, p95 100, p99 100, max 100, n 10", l)
	}
	if ds[0] != 10*time.Millisecond {
		t.Errorf("summarise did not sort in place: first = %v", ds[0])
	}
	if z := summarise(nil); !math.IsNaN(float64(z.P50)) || !math.IsNaN(float64(z.P99)) || z.N != 0 {
		t.Errorf("summarise(nil) = %+v, want NaN figures and no samples", z)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{100, 1, 2}, 2}, // one outlier round does not move it
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Errorf("median reordered its argument: %v", in)
	}
}

func TestRatioAndFormat(t *testing.T) {
	tests := []struct {
		a, b float64
		want string
	}{
		{1500, 600, "2.50x"},
		{30, 120, "0.25x"},
		{1, 3, "0.33x"},
		{2000, 100, "20.0x"},
		{25000, 100, "250x"},
		{5, 5, "1.00x"},
		{5, 0, "n/a"},
		{0, 5, "0.00x"},
		{math.NaN(), 5, "n/a"},
		{5, math.NaN(), "n/a"},
		{math.Inf(1), 5, "n/a"},
	}
	for _, tt := range tests {
		if got := formatRatio(ratio(tt.a, tt.b)); got != tt.want {
			t.Errorf("formatRatio(ratio(%v, %v)) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{1234.56, "1235"},
		{381.94, "381.9"},
		{10, "10.0"},
		{3.14159, "3.14"},
		{0, "0.00"},
		{math.NaN(), "n/a"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.v); got != tt.want {
			t.Errorf("formatValue(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestPerSecond(t *testing.T) {
	if got := perSecond(500, 2*time.Second); got != 250 {
		t.Errorf("perSecond(500, 2s) = %v, want 250", got)
	}
	if got := perSecond(5, 0); !math.IsNaN(got) {
		t.Errorf("perSecond(5, 0) = %v, want NaN", got)
	}
}

func TestMeasure(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	orders := []order{
		{start: at(0), placed: at(10), done: at(100), id: 1, outcome: "completed"},
		{start: at(5), placed: at(25), done: at(400), id: 2, outcome: "payment_failed"},
		{},                                     // placement failed
		{start: at(20), placed: at(30), id: 4}, // placed, never terminal
	}
	r := measure("orderd", 2, orders, 1, 1)
	if r.requested != 4 || r.placed != 3 || r.failed != 1 || r.lost != 1 {
		t.Fatalf("counts: %+v", r)
	}
	if r.placeDur != 30*time.Millisecond { // first start 0 → last placed 30
		t.Errorf("placeDur = %v, want 30ms", r.placeDur)
	}
	if r.e2eDur != 400*time.Millisecond { // first start 0 → last done 400
		t.Errorf("e2eDur = %v, want 400ms", r.e2eDur)
	}
	wantPlace := msList(10, 20, 10)
	for i, d := range r.placeLat {
		if d != wantPlace[i] {
			t.Errorf("placeLat[%d] = %v, want %v", i, d, wantPlace[i])
		}
	}
	wantE2E := msList(100, 395)
	if len(r.e2eLat) != 2 || r.e2eLat[0] != wantE2E[0] || r.e2eLat[1] != wantE2E[1] {
		t.Errorf("e2eLat = %v, want %v", r.e2eLat, wantE2E)
	}
	if r.outcomes["completed"] != 1 || r.outcomes["payment_failed"] != 1 || len(r.outcomes) != 2 {
		t.Errorf("outcomes = %v", r.outcomes)
	}
}

func TestSummariseRunsPoolsLatencyAndTakesMedianThroughput(t *testing.T) {
	runs := []runResult{
		{requested: 2, placed: 2, placeDur: time.Second, e2eDur: 2 * time.Second,
			placeLat: msList(1, 2), e2eLat: msList(10, 20), outcomes: map[string]int{"completed": 2}},
		{requested: 2, placed: 2, placeDur: 4 * time.Second, e2eDur: 4 * time.Second,
			placeLat: msList(3, 4), e2eLat: msList(30, 40), outcomes: map[string]int{"completed": 1, "cancelled": 1}},
		{requested: 2, placed: 2, failed: 0, lost: 1, placeDur: 2 * time.Second, e2eDur: 1 * time.Second,
			placeLat: msList(5, 6), e2eLat: msList(50), outcomes: map[string]int{"completed": 1}},
	}
	s := summariseRuns("peer", runs)
	// placement per round: 2/1s=2, 2/4s=0.5, 2/2s=1 → median 1
	if s.PlaceThroughput != 1 {
		t.Errorf("placement throughput = %v, want 1", s.PlaceThroughput)
	}
	// end-to-end per round: 2/2s=1, 2/4s=0.5, 1/1s=1 → median 1
	if s.E2EThroughput != 1 {
		t.Errorf("end-to-end throughput = %v, want 1", s.E2EThroughput)
	}
	if s.PlaceLatency.N != 6 || s.PlaceLatency.P50 != 3 || s.PlaceLatency.Max != 6 {
		t.Errorf("placement latency = %+v, want 6 pooled samples, p50 3, max 6", s.PlaceLatency)
	}
	if s.E2ELatency.N != 5 || s.E2ELatency.P50 != 30 || s.E2ELatency.P99 != 50 {
		t.Errorf("end-to-end latency = %+v, want 5 pooled samples, p50 30, p99 50", s.E2ELatency)
	}
	if s.Placed != 6 || s.Lost != 1 || s.Outcomes["completed"] != 4 || s.Outcomes["cancelled"] != 1 {
		t.Errorf("totals = %+v", s)
	}
}

func TestPrintTableShowsRatioOrderdOverPeer(t *testing.T) {
	peer := systemSummary{Name: "peer", PlaceThroughput: 400, E2EThroughput: 250,
		PlaceLatency: latencies{P50: 40, P95: 80, P99: 120}, E2ELatency: latencies{P50: 3000, P95: 3500, P99: 3600},
		PeakRSSMiB: 280, Placed: 2000}
	orderd := systemSummary{Name: "orderd", PlaceThroughput: 1000, E2EThroughput: 1000,
		PlaceLatency: latencies{P50: 10, P95: 20, P99: 30}, E2ELatency: latencies{P50: 300, P95: 350, P99: 360},
		PeakRSSMiB: num(math.NaN()), Placed: 2000, Lost: 3}
	var buf bytes.Buffer
	if err := printTable(&buf, []*systemSummary{&peer, &orderd}); err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(buf.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[strings.Join(f[:len(f)-min(3, len(f))], " ")] = strings.Join(f[max(0, len(f)-3):], " ")
		}
	}
	want := map[string]string{
		"placement throughput (orders/s)":  "400.0 1000 2.50x",
		"end-to-end throughput (orders/s)": "250.0 1000 4.00x",
		"placement latency p99 (ms)":       "120.0 30.0 0.25x",
		"end-to-end latency p50 (ms)":      "3000 300.0 0.10x",
		"peak RSS (MiB)":                   "280.0 n/a n/a",
	}
	for label, cells := range want {
		if lines[label] != cells {
			t.Errorf("row %q = %q, want %q\n%s", label, lines[label], cells, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "2000 / 0 / 3") {
		t.Errorf("counts row missing orderd's lost orders:\n%s", buf.String())
	}
}

func TestNumEncodesNaNAsNull(t *testing.T) {
	b, err := json.Marshal(struct {
		A num `json:"a"`
		B num `json:"b"`
	}{num(math.NaN()), 2.5})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"a":null,"b":2.5}` {
		t.Errorf("got %s", b)
	}
}
