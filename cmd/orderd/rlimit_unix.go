//go:build unix

package main

import "syscall"

// openFileLimit returns the process's limit on open file descriptors (RLIMIT_NOFILE), 0 if
// it cannot be read. The Go runtime has already raised the soft limit to the hard one.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return uint64(l.Cur)
}
