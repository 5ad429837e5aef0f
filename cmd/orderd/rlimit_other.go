//go:build !unix

package main

// openFileLimit reports no known limit where the system has no RLIMIT_NOFILE.
func openFileLimit() uint64 { return 0 }
