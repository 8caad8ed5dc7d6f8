package address

import (
	"fmt"
	"strings"
)

// Pattern is one affiliated-domain entry: an exact domain, or the
// subdomains of a domain.
//
//	"example.edu"     matches example.edu only (not mail.example.edu)
//	".example.edu"    matches a.example.edu, a.b.example.edu, …
//	"*.example.edu"   the same as ".example.edu"
//
// A subdomain pattern does NOT include the domain itself: list both
// "example.edu" and ".example.edu" to get both. Matching is on label
// boundaries of canonical names, so "evilexample.edu" and
// "example.edu.evil.com" never match, and a lookalike or address literal
// never matches anything.
type Pattern struct {
	Domain     string // canonical (see CanonicalDomain)
	Subdomains bool   // match strict subdomains of Domain, not Domain itself
}

// ParsePattern parses an affiliated-domain entry. Surrounding space is
// ignored; the domain is canonicalised (so Unicode and punycode spellings
// are one pattern). A subdomain pattern of a single label (".edu", "*.")
// is refused: it would make a whole top-level domain affiliated.
func ParsePattern(s string) (Pattern, error) {
	t := strings.TrimSpace(s)
	var p Pattern
	switch {
	case strings.HasPrefix(t, "*."):
		p.Subdomains, t = true, t[2:]
	case strings.HasPrefix(t, "."):
		p.Subdomains, t = true, t[1:]
	}
	if strings.ContainsAny(t, "*@[]") {
		return Pattern{}, errf(ErrDomain, "pattern %s: want example.edu, .example.edu or *.example.edu", quote(s))
	}
	d, err := CanonicalDomain(t)
	if err != nil {
		return Pattern{}, fmt.Errorf("pattern %s: %w", quote(s), err)
	}
	if p.Subdomains && !strings.Contains(d, ".") {
		return Pattern{}, errf(ErrDomain, "pattern %s would match a whole top-level domain", quote(s))
	}
	p.Domain = d
	return p, nil
}

// String returns the pattern in its "example.edu" / ".example.edu" form;
// ParsePattern(p.String()) == p.
func (p Pattern) String() string {
	if p.Subdomains {
		return "." + p.Domain
	}
	return p.Domain
}

// Match reports whether domain (any spelling: case, trailing dot, U- or
// A-labels) is covered by the pattern. Names that do not canonicalise,
// including address literals, never match.
func (p Pattern) Match(domain string) bool {
	d, err := CanonicalDomain(domain)
	if err != nil {
		return false
	}
	return p.matchCanonical(d)
}

func (p Pattern) matchCanonical(d string) bool {
	if p.Domain == "" {
		return false // zero Pattern matches nothing
	}
	if p.Subdomains {
		return len(d) > len(p.Domain)+1 && strings.HasSuffix(d, p.Domain) && d[len(d)-len(p.Domain)-1] == '.'
	}
	return d == p.Domain
}

// DomainList is the affiliated-domain list. The zero value is empty and
// contains nothing.
type DomainList struct {
	patterns []Pattern
}

// NewDomainList parses every pattern; the first bad one is the error.
func NewDomainList(patterns []string) (DomainList, error) {
	l := DomainList{patterns: make([]Pattern, 0, len(patterns))}
	for i, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			return DomainList{}, fmt.Errorf("entry %d: %w", i, err)
		}
		l.patterns = append(l.patterns, p)
	}
	return l, nil
}

// Patterns returns a copy of the parsed entries.
func (l DomainList) Patterns() []Pattern { return append([]Pattern(nil), l.patterns...) }

// Contains reports whether domain is affiliated. It is canonicalised
// first; address literals ("[192.0.2.1]"), empty and invalid names are
// never affiliated.
func (l DomainList) Contains(domain string) bool {
	d, err := CanonicalDomain(domain)
	if err != nil {
		return false
	}
	for _, p := range l.patterns {
		if p.matchCanonical(d) {
			return true
		}
	}
	return false
}
