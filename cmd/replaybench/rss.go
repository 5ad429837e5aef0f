package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// peakRSS returns the process's peak resident set size (VmHWM) in bytes, or 0 where
// /proc is not available.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:")); ok {
			kb, _ := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB")))), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS starts VmHWM afresh from the current resident size (Linux ≥ 4.0), so that the
// fill's memory does not count against the rebuild's.
func resetPeakRSS() {
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) //nolint:errcheck // best effort: the peak then covers the fill too
}
