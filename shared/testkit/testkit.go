// Package testkit is support for tests shared by several packages: loopback
// ports, polling for a condition, a fake clock, memory figures from /proc
// and small tmpfs mounts. It is imported only by tests and test-support
// packages, never by production code (a test in this package checks the
// commands' dependency graphs).
package testkit

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// FreeAddr returns "ip:port" with a TCP port on the loopback address ip
// that was free a moment ago ("" means 127.0.0.1). The probe listener is
// closed before FreeAddr returns, so two calls can return the same port:
// callers that need several distinct ports must compare them. It fails the
// test for an address outside 127.0.0.0/8 and ::1: tests talk only to
// loopback.
func FreeAddr(tb testing.TB, ip string) string {
	tb.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	if a, err := netip.ParseAddr(ip); err != nil || !a.IsLoopback() {
		tb.Fatalf("testkit: %q is not a loopback address", ip)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreePort is FreeAddr(tb, "127.0.0.1")'s port number.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ap, err := netip.ParseAddrPort(FreeAddr(tb, ""))
	if err != nil {
		tb.Fatal(err)
	}
	return int(ap.Port())
}

// WaitFor polls cond every few milliseconds until it holds, and fails the
// test naming what when d passes first.
func WaitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
