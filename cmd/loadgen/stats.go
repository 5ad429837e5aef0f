package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted, an ascending slice, by the
// nearest-rank method: the smallest sample that at least p% of the samples are <= to. It is
// exact (no interpolation, no buckets) because a run keeps every sample; N is at most ~100k.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// p*n/100 rather than p/100*n: 95*100/100 is exactly 95, 0.95*100 is not. The epsilon keeps
	// a rank that is an integer in decimal from being pushed up by binary rounding.
	rank := int(math.Ceil(p*float64(len(sorted))/100 - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// median returns the median of xs (the mean of the two middle values for an even count), or
// NaN for none. Throughput over several rounds is summarised by it because a shared, noisy
// machine produces the odd slow round that a mean would let pull the figure down.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// latencies summarises one latency distribution in milliseconds.
type latencies struct {
	P50 num `json:"p50_ms"`
	P95 num `json:"p95_ms"`
	P99 num `json:"p99_ms"`
	Max num `json:"max_ms"`
	N   int `json:"samples"`
}

// summarise sorts ds in place and reads its percentiles; with no samples every figure is NaN,
// so that a run where nothing finished shows "n/a", not a flattering zero.
func summarise(ds []time.Duration) latencies {
	if len(ds) == 0 {
		nan := num(math.NaN())
		return latencies{P50: nan, P95: nan, P99: nan, Max: nan}
	}
	slices.Sort(ds)
	return latencies{
		P50: num(ms(percentile(ds, 50))),
		P95: num(ms(percentile(ds, 95))),
		P99: num(ms(percentile(ds, 99))),
		Max: num(ms(ds[len(ds)-1])),
		N:   len(ds),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio returns a/b, or NaN when it has no meaning (b is zero or either side is missing), so
// that a system that did not run never shows up as an infinitely good or bad one.
func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return math.NaN()
	}
	return a / b
}

// formatRatio renders a ratio for the table: two decimals and an "x", "n/a" when undefined.
// Ratios well away from 1 keep fewer decimals so the column stays narrow and readable.
func formatRatio(r float64) string {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return "n/a"
	case r >= 100:
		return fmt.Sprintf("%.0fx", r)
	case r >= 10:
		return fmt.Sprintf("%.1fx", r)
	default:
		return fmt.Sprintf("%.2fx", r)
	}
}

// formatValue renders a figure for the table, "n/a" for a missing one.
func formatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// perSecond returns count/d in events per second, NaN for an empty interval.
func perSecond(count int, d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return float64(count) / d.Seconds()
}
