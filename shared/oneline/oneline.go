// Package oneline keeps text that came from elsewhere (remote SMTP
// replies, client input) on a single line before it goes into a log line,
// a header or a history entry.
package oneline

import "strings"

// Fold replaces every run of white space (spaces, tabs, CR, LF) with one
// space and trims both ends. The result never contains a line break, so a
// multi-line reply cannot start a new log line or header.
func Fold(s string) string { return strings.Join(strings.Fields(s), " ") }
