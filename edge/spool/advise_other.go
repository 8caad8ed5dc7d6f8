//go:build !linux

package spool

// adviseLogs is a no-op outside Linux.
func adviseLogs(string) int { return 0 }
