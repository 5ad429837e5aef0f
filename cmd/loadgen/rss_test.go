package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const statusSample = `Name:	orderd
Umask:	0022
State:	S (sleeping)
Pid:	4242
VmPeak:	 1266012 kB
VmSize:	 1265948 kB
VmLck:	       0 kB
VmHWM:	   48128 kB
VmRSS:	   40960 kB
RssAnon:	   30000 kB
Threads:	9
`

func TestParseStatus(t *testing.T) {
	rss, hwm, err := parseStatus(strings.NewReader(statusSample))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 40960<<10 || hwm != 48128<<10 {
		t.Errorf("rss, hwm = %d, %d; want %d, %d", rss, hwm, 40960<<10, 48128<<10)
	}
}

func TestParseStatusRejectsKernelThreadAndGarbage(t *testing.T) {
	if _, _, err := parseStatus(strings.NewReader("Name:\tkthreadd\nState:\tS (sleeping)\n")); err == nil {
		t.Error("no VmRSS/VmHWM: want an error")
	}
	if _, _, err := parseStatus(strings.NewReader("VmHWM:\t12 MB\nVmRSS:\t10 kB\n")); err == nil {
		t.Error("unit MB: want an error")
	}
}

func TestRSSSamplerReadsThisProcess(t *testing.T) {
	s := newRSSSampler([]int{os.Getpid(), 1 << 30}) // the second pid does not exist
	s.sample()
	mib, ok := s.peakMiB()
	if !ok || mib < 1 || mib > 4096 {
		t.Errorf("peak of the test binary = %.1f MiB (ok %v); want a plausible figure", mib, ok)
	}
	if _, ok := newRSSSampler([]int{1 << 30}).peakMiB(); ok {
		t.Error("a sampler that never read a process must say so")
	}
}

func TestReadPIDs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("123\n456\n\n"), 0o644)
	pids, err := readPIDs(good)
	if err != nil || !reflect.DeepEqual(pids, []int{123, 456}) {
		t.Errorf("readPIDs = %v, %v; want [123 456]", pids, err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("123\nabc\n"), 0o644)
	if _, err := readPIDs(bad); err == nil {
		t.Error("a non-numeric line: want an error")
	}
}
