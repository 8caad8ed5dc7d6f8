package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// MaxFCrDNSNames is how many PTR names FCrDNS checks forward; further
// names are ignored (a cap against hostile reverse zones).
const MaxFCrDNSNames = 10

// FCrDNSResult is the outcome of a forward-confirmed reverse DNS check.
type FCrDNSResult struct {
	IP  netip.Addr
	PTR []string // names from the PTR records (lower case, no dot)
	// Forward holds the addresses (both families) each checked PTR name
	// resolves to; a name whose lookup failed or found nothing is
	// present with no addresses.
	Forward map[string][]netip.Addr
	// Name is the first PTR name whose addresses include IP: the
	// confirmed name. "" when none is.
	Name string
	// Names are all PTR names whose addresses include IP, in PTR order
	// (Names[0] == Name). PTR order is the server's and may rotate, so a
	// caller matching names against a list should try every one.
	Names []string
	// Temporary is set when the check could not be completed because of a
	// DNS failure (FCrDNS then also returns an error).
	Temporary bool
	// Failed lists the checked names whose forward lookup failed
	// temporarily.
	Failed []string
	// Skipped counts PTR names beyond MaxFCrDNSNames that were not checked.
	Skipped int
}

// FCrDNS checks forward-confirmed reverse DNS for ip: the PTR names of ip
// are looked up (up to MaxFCrDNSNames, in parallel), and the first name,
// in PTR order, whose A/AAAA records contain ip is confirmed.
//
// No PTR record, or no name that resolves back to ip, is a definite answer:
// the result has Name "" and the error is nil. The error is temporary
// (IsTemporary) when the PTR lookup fails temporarily, or when no name is
// confirmed and the forward lookup of at least one name failed
// temporarily — the caller must then answer 4xx, not 5xx.
func (r *Resolver) FCrDNS(ctx context.Context, ip netip.Addr) (FCrDNSResult, error) {
	ip = ip.Unmap()
	res := FCrDNSResult{IP: ip, Forward: map[string][]netip.Addr{}}
	ptr, err := r.LookupPTR(ctx, ip)
	if err != nil {
		if !IsTemporary(err) {
			return res, nil // no PTR record
		}
		res.Temporary = true
		return res, fmt.Errorf("FCrDNS of %s: %w", ip, err)
	}
	res.PTR = ptr
	check := ptr
	if len(check) > MaxFCrDNSNames {
		res.Skipped = len(check) - MaxFCrDNSNames
		check = check[:MaxFCrDNSNames]
	}

	addrs := make([][]netip.Addr, len(check))
	errs := make([]error, len(check))
	var wg sync.WaitGroup
	for i, name := range check {
		wg.Go(func() { addrs[i], errs[i] = r.LookupIP(ctx, name) })
	}
	wg.Wait()

	var tempErr error
	for i, name := range check {
		res.Forward[name] = addrs[i]
		if errs[i] != nil && IsTemporary(errs[i]) {
			res.Failed = append(res.Failed, name)
			if tempErr == nil {
				tempErr = errs[i]
			}
		}
		if slices.ContainsFunc(addrs[i], func(a netip.Addr) bool { return a.Unmap() == ip }) {
			res.Names = append(res.Names, name)
			if res.Name == "" {
				res.Name = name
			}
		}
	}
	if res.Name == "" && tempErr != nil {
		res.Temporary = true
		return res, fmt.Errorf("FCrDNS of %s: %w", ip, tempErr)
	}
	return res, nil
}

// Confirmed reports whether a name was forward-confirmed.
func (f FCrDNSResult) Confirmed() bool { return f.Name != "" }

// Explain says in plain English what the check found and, when it failed,
// what to fix. It is shown to device owners and staff.
func (f FCrDNSResult) Explain() string {
	ip := f.IP.String()
	rec := "A"
	if f.IP.Is6() {
		rec = "AAAA"
	}
	switch {
	case f.Name != "":
		return fmt.Sprintf("reverse DNS of %s is %s; forward lookup matches", ip, f.Name)
	case f.Temporary && len(f.PTR) == 0:
		return fmt.Sprintf("the reverse DNS (PTR) lookup of %s failed temporarily: try again later; if it keeps failing, ask your DNS administrator to check the reverse zone", ip)
	case len(f.PTR) == 0:
		return fmt.Sprintf("%s has no reverse DNS (PTR) record: ask your DNS administrator to add one", ip)
	}

	var parts []string
	for _, name := range f.PTR {
		addrs, checked := f.Forward[name]
		if !checked {
			continue
		}
		if len(addrs) == 0 && slices.Contains(f.Failed, name) {
			parts = append(parts, fmt.Sprintf("the address lookup of %s failed temporarily", name))
			continue
		}
		if len(addrs) == 0 {
			parts = append(parts, fmt.Sprintf("%s has no address (%s record): add one pointing to %s", name, rec, ip))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s resolves to %s, not %s: fix the %s record", name, joinAddrs(addrs), ip, rec))
	}
	s := fmt.Sprintf("reverse DNS of %s is %s but %s", ip, strings.Join(f.PTR, ", "), strings.Join(parts, "; "))
	if len(parts) == 0 {
		s = fmt.Sprintf("reverse DNS of %s is %s but no name was checked", ip, strings.Join(f.PTR, ", "))
	}
	if f.Temporary {
		s += " (some forward lookups failed temporarily: try again later)"
	}
	return s
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
