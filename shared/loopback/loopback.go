// Package loopback tells whether an address stays on this machine.
package loopback

import (
	"net"
	"net/netip"
)

// HostPort reports whether hostport ("host:port") names a loopback host:
// "localhost" or an IP in 127.0.0.0/8 or ::1. Anything else, including a
// string that is not host:port, is not loopback.
func HostPort(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}
