// Package fcrdns runs the live forward-confirmed reverse DNS check of a
// registration request and says in plain English what it found and how to
// fix it. A device is registered by its DNS name; the edges identify a
// client by FCrDNS, so a registration only works once, for each IP the
// device uses, the PTR of the IP gives the registered name and that name's
// A/AAAA records contain the IP. This package checks exactly that, with
// the same resolver code the edges use (shared/resolver).
package fcrdns

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/postern/postern/shared/resolver"
)

// Resolver is the part of shared/resolver the check needs.
type Resolver interface {
	FCrDNS(ctx context.Context, ip netip.Addr) (resolver.FCrDNSResult, error)
	LookupIP(ctx context.Context, name string) ([]netip.Addr, error)
}

// Line is the outcome for one IP.
type Line struct {
	IP   netip.Addr
	OK   bool
	Text string
}

// Result is the outcome of a whole check.
type Result struct {
	Name  string
	Lines []Line
	// OK: every IP checked confirms Name.
	OK bool
	// Temporary: a DNS failure kept the check from finishing; try again.
	Temporary bool
}

// Summary is all lines in one paragraph (stored with the device).
func (r Result) Summary() string {
	var s []string
	for _, l := range r.Lines {
		s = append(s, l.Text)
	}
	return strings.Join(s, ". ")
}

// Check checks name against each of ips; with no ips it checks every
// address the name resolves to.
func Check(ctx context.Context, r Resolver, name string, ips []netip.Addr) Result {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	res := Result{Name: name}
	if len(ips) == 0 {
		addrs, err := r.LookupIP(ctx, name)
		switch {
		case err != nil && resolver.IsTemporary(err):
			res.Temporary = true
			res.Lines = []Line{{Text: fmt.Sprintf("the address lookup of %s failed temporarily: try again in a minute", name)}}
			return res
		case len(addrs) == 0:
			res.Lines = []Line{{Text: fmt.Sprintf("%s has no address (A or AAAA record) and no IP address was given: ask your DNS administrator to add one, or enter the device's IP address", name)}}
			return res
		}
		ips = addrs
	}
	res.OK = true
	for _, ip := range ips {
		l := checkOne(ctx, r, name, ip)
		if !l.OK {
			res.OK = false
		}
		res.Lines = append(res.Lines, l)
		if strings.Contains(l.Text, "temporarily") {
			res.Temporary = true
		}
	}
	return res
}

func checkOne(ctx context.Context, r Resolver, name string, ip netip.Addr) Line {
	ip = ip.Unmap()
	f, err := r.FCrDNS(ctx, ip)
	if err != nil && !f.Temporary {
		return Line{IP: ip, Text: fmt.Sprintf("the DNS check of %s failed: %v", ip, err)}
	}
	if slices.Contains(f.Names, name) {
		if f.Name == name {
			return Line{IP: ip, OK: true, Text: f.Explain()}
		}
		return Line{IP: ip, OK: true, Text: fmt.Sprintf("reverse DNS of %s includes %s; forward lookup matches", ip, name)}
	}
	if f.Confirmed() {
		return Line{IP: ip, Text: fmt.Sprintf("reverse DNS of %s is %s (forward lookup matches), not %s: register %s instead, or ask your DNS administrator to point the PTR record of %s to %s",
			ip, f.Name, name, f.Name, ip, name)}
	}
	return Line{IP: ip, Text: f.Explain()}
}
