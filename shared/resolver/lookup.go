package resolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// MX is one mail exchanger of a domain.
type MX struct {
	Host string // lower case, no trailing dot
	Pref uint16
	// Implicit is true when the domain has no MX record and the domain
	// itself is used (RFC 5321 §5.1); only LookupMailHosts sets it.
	Implicit bool
}

// normName lower-cases name and checks it is a valid domain name. It
// returns the FQDN form.
func normName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if n == "" || len(n) > 253 || strings.HasPrefix(n, ".") || strings.Contains(n, "..") {
		return "", fmt.Errorf("%q: %w", name, ErrInvalidName)
	}
	if _, ok := dns.IsDomainName(n); !ok {
		return "", fmt.Errorf("%q: %w", name, ErrInvalidName)
	}
	return n + ".", nil
}

// plain turns a DNS name into the form callers see: lower case, no
// trailing dot.
func plain(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// lookup returns the records of qtype for name (an FQDN), following the
// CNAME chain in the answer and, when the chain leaves the answer, asking
// for its target.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	cur := name
	for range maxCNAME + 1 {
		rrs, err := r.query(ctx, cur, qtype)
		if err != nil {
			return nil, err
		}
		recs, next := chase(rrs, cur, qtype)
		if len(recs) > 0 {
			return recs, nil
		}
		if next == cur {
			// The answer had nothing for this name: NODATA in effect.
			return nil, fmt.Errorf("%s %s: %w", plain(cur), dns.TypeToString[qtype], ErrNoData)
		}
		cur = next
	}
	return nil, &TempError{Name: name, Qtype: qtype, Rcode: -1,
		Err: fmt.Errorf("CNAME chain longer than %d", maxCNAME)}
}

// chase walks the CNAME chain from name inside rrs and returns the records
// of qtype owned by the end of the chain, or none and the last name
// reached.
func chase(rrs []dns.RR, name string, qtype uint16) ([]dns.RR, string) {
	cur := name
	for range maxCNAME + 1 {
		var recs []dns.RR
		next := ""
		for _, rr := range rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) {
				continue
			}
			if h.Rrtype == qtype {
				recs = append(recs, rr)
			} else if c, ok := rr.(*dns.CNAME); ok && next == "" {
				next = strings.ToLower(dns.Fqdn(c.Target))
			}
		}
		if len(recs) > 0 || next == "" {
			return recs, cur
		}
		cur = next
	}
	return nil, cur
}

// LookupPTR returns the names in the PTR records of ip (in-addr.arpa for
// IPv4, ip6.arpa for IPv6; IPv4-mapped IPv6 counts as IPv4), lower case,
// without trailing dot, duplicates removed. CNAMEs (RFC 2317 classless
// delegation) are followed.
func (r *Resolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	if !ip.IsValid() {
		return nil, fmt.Errorf("PTR lookup of an invalid IP: %w", ErrInvalidName)
	}
	arpa, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("PTR of %s: %w", ip, ErrInvalidName)
	}
	rrs, err := r.lookup(ctx, strings.ToLower(arpa), dns.TypePTR)
	if err != nil {
		return nil, fmt.Errorf("reverse lookup of %s: %w", ip.Unmap(), err)
	}
	var names []string
	for _, rr := range rrs {
		if p, ok := rr.(*dns.PTR); ok {
			if n := plain(p.Ptr); n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("reverse lookup of %s: %w", ip.Unmap(), ErrNoData)
	}
	return names, nil
}

// family is the outcome of one of the A / AAAA lookups of a name.
type family struct {
	addrs []netip.Addr
	err   error
}

// lookupFamilies asks for A and AAAA of name in parallel.
func (r *Resolver) lookupFamilies(ctx context.Context, name string) (v4, v6 family) {
	var wg sync.WaitGroup
	wg.Go(func() { v4 = r.lookupAddrs(ctx, name, dns.TypeA) })
	v6 = r.lookupAddrs(ctx, name, dns.TypeAAAA)
	wg.Wait()
	return v4, v6
}

func (r *Resolver) lookupAddrs(ctx context.Context, name string, qtype uint16) family {
	rrs, err := r.lookup(ctx, name, qtype)
	if err != nil {
		return family{err: err}
	}
	var f family
	for _, rr := range rrs {
		var a netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(v.AAAA.To16())
		}
		if a.IsValid() && !slices.Contains(f.addrs, a) {
			f.addrs = append(f.addrs, a)
		}
	}
	if len(f.addrs) == 0 {
		f.err = fmt.Errorf("%s %s: %w", plain(name), dns.TypeToString[qtype], ErrNoData)
	}
	return f
}

// LookupIP returns the IPv4 then IPv6 addresses of name (A and AAAA asked
// in parallel, CNAME chains followed). If either family has addresses they
// are returned without error. Otherwise the error is temporary if either
// lookup failed temporarily, ErrNXDomain if the name does not exist, and
// ErrNoData if it has no address.
func (r *Resolver) LookupIP(ctx context.Context, name string) ([]netip.Addr, error) {
	fq, err := normName(name)
	if err != nil {
		return nil, err
	}
	v4, v6 := r.lookupFamilies(ctx, fq)
	return mergeFamilies(plain(fq), v4, v6)
}

func mergeFamilies(name string, v4, v6 family) ([]netip.Addr, error) {
	if addrs := append(v4.addrs, v6.addrs...); len(addrs) > 0 {
		return addrs, nil
	}
	switch {
	case IsTemporary(v4.err):
		return nil, fmt.Errorf("address lookup of %s: %w", name, v4.err)
	case IsTemporary(v6.err):
		return nil, fmt.Errorf("address lookup of %s: %w", name, v6.err)
	case errors.Is(v4.err, ErrNXDomain) || errors.Is(v6.err, ErrNXDomain):
		return nil, fmt.Errorf("address lookup of %s: %w", name, ErrNXDomain)
	}
	return nil, fmt.Errorf("address lookup of %s: %w", name, ErrNoData)
}

// LookupMX returns the MX records of domain sorted by preference (then
// host name, so the order is stable; delivery shuffles equal preferences
// itself). A null MX (RFC 7505: a single MX whose host is ".") returns
// ErrNullMX; a "." mixed with real MX records is ignored. A domain without
// MX records returns ErrNoData (see LookupMailHosts for the implicit MX),
// a domain that does not exist ErrNXDomain.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	fq, err := normName(domain)
	if err != nil {
		return nil, err
	}
	rrs, err := r.lookup(ctx, fq, dns.TypeMX)
	if err != nil {
		return nil, fmt.Errorf("MX lookup of %s: %w", plain(fq), err)
	}
	var out []MX
	null := false
	for _, rr := range rrs {
		m, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		h := plain(m.Mx)
		if h == "" {
			null = true
			continue
		}
		mx := MX{Host: h, Pref: m.Preference}
		if !slices.Contains(out, mx) {
			out = append(out, mx)
		}
	}
	if len(out) == 0 {
		if null {
			return nil, fmt.Errorf("MX lookup of %s: %w", plain(fq), ErrNullMX)
		}
		return nil, fmt.Errorf("MX lookup of %s: %w", plain(fq), ErrNoData)
	}
	slices.SortFunc(out, func(a, b MX) int {
		return cmp.Or(cmp.Compare(a.Pref, b.Pref), strings.Compare(a.Host, b.Host))
	})
	return out, nil
}

// LookupMailHosts returns where mail for domain goes: its MX records as
// LookupMX gives them, or, when the domain has no MX record but has an
// address, the domain itself as an implicit MX (RFC 5321 §5.1; one entry,
// Pref 0, Implicit true). ErrNullMX, ErrNXDomain and ErrNoData (no MX and
// no address) are permanent; other errors are temporary.
func (r *Resolver) LookupMailHosts(ctx context.Context, domain string) ([]MX, error) {
	mxs, err := r.LookupMX(ctx, domain)
	// An expired NODATA for MX while the servers fail still lets a domain
	// whose address is known (fresh or stale) be its own implicit MX.
	staleMX := staleNoData(err)
	if err == nil || !(errors.Is(err, ErrNoData) || staleMX) {
		return mxs, err
	}
	fq, _ := normName(domain) // LookupMX validated it
	v4, v6 := r.lookupFamilies(ctx, fq)
	if _, aerr := mergeFamilies(plain(fq), v4, v6); aerr != nil {
		if staleMX {
			return nil, err // never permanent on the strength of stale data
		}
		return nil, fmt.Errorf("no MX for %s, and no implicit MX: %w", plain(fq), aerr)
	}
	return []MX{{Host: plain(fq), Pref: 0, Implicit: true}}, nil
}

// MailDomainExists reports whether domain can receive mail: it has a
// (non-null) MX, or an A/AAAA record as implicit MX. NXDOMAIN, no records,
// a null MX or an invalid name give false with a nil error; a temporary
// failure (SERVFAIL, timeout) gives an error for which IsTemporary is true.
func (r *Resolver) MailDomainExists(ctx context.Context, domain string) (bool, error) {
	_, err := r.LookupMailHosts(ctx, domain)
	switch {
	case err == nil:
		return true, nil
	case IsTemporary(err):
		return false, err
	}
	return false, nil
}
