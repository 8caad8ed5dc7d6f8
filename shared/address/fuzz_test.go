package address

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func isSentinel(err error) bool {
	return errors.Is(err, ErrNullSender) || errors.Is(err, ErrSourceRoute) || errors.Is(err, ErrSyntax) || errors.Is(err, ErrTooLong)
}

// FuzzParsePath checks, for any input: no panic; every error wraps a
// sentinel; an accepted address is within the limits, round-trips through
// String, has a canonical domain, and that domain is the canonical form of
// the text after the last '@' of the input (no routing is interpreted).
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<a@b.example>", `<"x@y"@b.example>`, "<@a,@b:c@d.example>", "<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>",
		"<a%b!c@d.example.>", "<用户@bücher.example>", "<>", `<"a\"b\\"@xn--bcher-kva.example>`, "u@ＥＸＡＭＰＬＥ。edu",
		"<u@ｅｘａｍｐｌｅ.edu>", "<u@example．edu>", "<u@exa\u00admple.edu>", "<u@bu\u0308cher.example>",
		"<u@BÜCHER.example>", "<u@\u2168.example>", "<a@b@example.edu>", `<"a@b"@example.edu>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParsePath(s)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("ParsePath(%q) error %v wraps no sentinel", s, err)
			}
			if a != (Address{}) {
				t.Fatalf("ParsePath(%q) returned %+v with error", s, a)
			}
			return
		}
		for _, again := range []string{a.String(), "<" + a.String() + ">"} {
			b, err := ParsePath(again)
			if err != nil {
				t.Fatalf("%q parsed to %q which does not re-parse: %v", s, again, err)
			}
			if a != b {
				t.Fatalf("round trip of %q changed %+v to %+v", s, a, b)
			}
		}
		if n := len(a.String()) + 2; n > MaxPath {
			t.Fatalf("%q: accepted a %d-octet path", s, n)
		}
		if len(a.Local) > MaxLocalPart || !utf8.ValidString(a.Local) {
			t.Fatalf("%q: bad local part accepted: %q", s, a.Local)
		}
		if strings.Contains(a.Domain, "@") {
			t.Fatalf("%q: domain %q contains '@'", s, a.Domain)
		}
		// The domain is what follows the last '@' of the input.
		p := strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
		if strings.HasPrefix(p, "@") {
			t.Fatalf("%q: source route accepted", s)
		}
		tail := p[strings.LastIndexByte(p, '@')+1:]
		if a.IsLiteral {
			if !a.Literal.IsValid() || !strings.HasPrefix(a.Domain, "[") || !strings.HasSuffix(a.Domain, "]") {
				t.Fatalf("%q: bad literal %+v", s, a)
			}
			if l, _ := NewDomainList([]string{"example.edu", ".example.edu"}); l.Contains(a.Domain) {
				t.Fatalf("%q: literal %q in a domain list", s, a.Domain)
			}
			return
		}
		if a.Literal.IsValid() {
			t.Fatalf("%q: Literal set for a domain name", s)
		}
		d, err := CanonicalDomain(tail)
		if err != nil || d != a.Domain {
			t.Fatalf("%q: domain %q is not the canonical form of the text after the last '@' %q (%q, %v)", s, a.Domain, tail, d, err)
		}
		if d, err := CanonicalDomain(a.Domain); err != nil || d != a.Domain {
			t.Fatalf("%q: domain %q not canonical: %q %v", s, a.Domain, d, err)
		}
		// Nothing was rewritten: the domain is the input with ASCII
		// letters lower-cased and a trailing dot dropped, as an A-label
		// or as its U-label.
		sent := lowerASCII(strings.TrimSuffix(tail, "."))
		if sent != a.Domain && sent != a.UnicodeDomain() {
			t.Fatalf("%q: domain %q (%q) is a rewrite of %q", s, a.Domain, a.UnicodeDomain(), tail)
		}
	})
}

// FuzzPattern checks CanonicalDomain (idempotent, ASCII, within limits,
// errors wrap a sentinel) and Pattern matching (on label boundaries only,
// consistent with DomainList, independent of the spelling of the domain).
func FuzzPattern(f *testing.F) {
	f.Add("example.edu", "mail.example.edu")
	f.Add(".example.edu", "evilexample.edu")
	f.Add("*.example.edu", "example.edu.evil.com")
	f.Add(".bücher.example", "A.XN--BCHER-KVA.example.")
	f.Add("example.edu", "ex\u0430mple.edu")
	f.Add("example.edu", "[192.0.2.1]")
	f.Add("example.edu", "ｅｘａｍｐｌｅ.edu")
	f.Add(".example.edu", "mail.example。edu")
	f.Fuzz(func(t *testing.T, pat, domain string) {
		d, derr := CanonicalDomain(domain)
		if derr != nil {
			if !isSentinel(derr) {
				t.Fatalf("CanonicalDomain(%q) error %v wraps no sentinel", domain, derr)
			}
		} else {
			if again, err := CanonicalDomain(d); err != nil || again != d {
				t.Fatalf("CanonicalDomain not idempotent: %q -> %q -> %q, %v", domain, d, again, err)
			}
			if !isASCII(d) || len(d) > MaxDNSName || d != strings.ToLower(d) || strings.HasSuffix(d, ".") {
				t.Fatalf("CanonicalDomain(%q) = %q is not canonical", domain, d)
			}
		}

		p, err := ParsePattern(pat)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("ParsePattern(%q) error %v wraps no sentinel", pat, err)
			}
			return
		}
		if q, err := ParsePattern(p.String()); err != nil || q != p {
			t.Fatalf("ParsePattern(%q) = %+v does not round-trip: %+v, %v", pat, p, q, err)
		}
		l, err := NewDomainList([]string{pat})
		if err != nil {
			t.Fatalf("NewDomainList(%q): %v", pat, err)
		}
		m := p.Match(domain)
		if l.Contains(domain) != m {
			t.Fatalf("DomainList and Pattern %v disagree on %q", p, domain)
		}
		if !m {
			return
		}
		if derr != nil || strings.HasPrefix(domain, "[") {
			t.Fatalf("%v matched non-domain %q", p, domain)
		}
		if !p.Match(d) {
			t.Fatalf("%v matched %q but not its canonical form %q", p, domain, d)
		}
		if p.Subdomains {
			if d == p.Domain || !strings.HasSuffix(d, "."+p.Domain) {
				t.Fatalf("%v matched %q without a label boundary", p, d)
			}
		} else if d != p.Domain {
			t.Fatalf("exact %v matched %q", p, d)
		}
	})
}
