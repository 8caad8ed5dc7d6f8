//go:build !linux

package spool

// trimMappings is a no-op outside Linux.
func trimMappings(string) int { return 0 }
