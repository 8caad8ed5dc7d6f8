// Package address parses and normalises RFC 5321 mailboxes as they appear in
// MAIL FROM and RCPT TO, and matches domains against the organisation's
// affiliated-domain list.
//
// Guarantees that the relay policy relies on:
//   - The domain of an Address is the text after the local part's '@' in
//     one canonical form (lower case, IDNA A-labels, no trailing dot), so
//     two spellings of one domain compare equal and a lookalike never does.
//   - '%' and '!' are ordinary local-part characters: they are never
//     interpreted as routing ("percent hack", bang paths).
//   - Source routes (<@a,@b:user@d>) are refused, not silently stripped.
//   - Address literals ([192.0.2.1], [IPv6:…]) are flagged and never match
//     an affiliated domain.
package address

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321 §4.5.3.1.
const (
	MaxLocalPart = 64
	MaxDomain    = 255
	MaxPath      = 256
)

// Errors returned by the parsers; test with errors.Is. The wrapped message
// says what exactly is wrong.
var (
	ErrNullSender  = errors.New("null reverse-path <>")
	ErrSourceRoute = errors.New("source routes are not accepted")
	ErrSyntax      = errors.New("malformed address")
	ErrTooLong     = errors.New("address too long")
	ErrDomain      = errors.New("invalid domain")
)

// Address is a parsed RFC 5321 mailbox.
type Address struct {
	// Local is the local part in canonical RFC 5321 form: quoted only when
	// it is not a valid dot-atom. Its case is kept (local parts are
	// case-sensitive to the receiving system).
	Local string
	// Domain is canonical: lower case, IDNA A-labels, no trailing dot. For
	// address literals it is the bracketed literal, e.g. "[192.0.2.1]" or
	// "[IPv6:2001:db8::1]".
	Domain    string
	IsLiteral bool
	Literal   netip.Addr
}

// String returns local@domain in canonical form.
func (a Address) String() string { return a.Local + "@" + a.Domain }

// UnicodeDomain returns the domain with U-labels, for display.
func (a Address) UnicodeDomain() string {
	if a.IsLiteral {
		return a.Domain
	}
	u, err := idna.Display.ToUnicode(a.Domain)
	if err != nil {
		return a.Domain
	}
	return u
}

func errf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", base, fmt.Sprintf(format, args...))
}

// Parse parses a mailbox, with or without angle brackets. "" and "<>" give
// ErrNullSender.
func Parse(s string) (Address, error) { return ParsePath(s) }

// ParsePath parses a MAIL FROM or RCPT TO path. The angle brackets are
// expected but tolerated when missing; source routes are refused.
func ParsePath(s string) (Address, error) {
	if len(s) > MaxPath+2 {
		return Address{}, errf(ErrTooLong, "path longer than %d octets", MaxPath)
	}
	p := s
	if strings.HasPrefix(p, "<") {
		if !strings.HasSuffix(p, ">") || len(p) < 2 {
			return Address{}, errf(ErrSyntax, "unbalanced angle brackets")
		}
		p = p[1 : len(p)-1]
	} else if strings.HasSuffix(p, ">") {
		return Address{}, errf(ErrSyntax, "unbalanced angle brackets")
	}
	if p == "" {
		return Address{}, ErrNullSender
	}
	if len(p)+2 > MaxPath {
		return Address{}, errf(ErrTooLong, "path longer than %d octets", MaxPath)
	}
	if p[0] == '@' {
		return Address{}, ErrSourceRoute
	}
	local, rest, err := parseLocal(p)
	if err != nil {
		return Address{}, err
	}
	if !strings.HasPrefix(rest, "@") {
		return Address{}, errf(ErrSyntax, "missing @domain")
	}
	rest = rest[1:]
	a := Address{Local: local}
	if strings.HasPrefix(rest, "[") {
		lit, ip, err := parseLiteral(rest)
		if err != nil {
			return Address{}, err
		}
		a.Domain, a.IsLiteral, a.Literal = lit, true, ip
		return a, nil
	}
	d, err := CanonicalDomain(rest)
	if err != nil {
		return Address{}, err
	}
	a.Domain = d
	return a, nil
}

// isAtext reports whether c may appear in an atom (RFC 5322 atext, plus
// UTF-8 octets for SMTPUTF8, RFC 6531).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// parseLocal reads a local part from the start of p and returns its
// canonical form and the rest of p (starting at '@').
func parseLocal(p string) (string, string, error) {
	var local string
	var rest string
	if strings.HasPrefix(p, `"`) {
		var b strings.Builder
		i := 1
		closed := false
		for i < len(p) {
			c := p[i]
			switch {
			case c == '"':
				closed = true
			case c == '\\':
				if i+1 >= len(p) || p[i+1] < 32 || p[i+1] > 126 {
					return "", "", errf(ErrSyntax, "bad quoted-pair in local part")
				}
				b.WriteByte(p[i+1])
				i += 2
				continue
			case c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126) || c >= 0x80:
				b.WriteByte(c)
			default:
				return "", "", errf(ErrSyntax, "character 0x%02x not allowed in quoted local part", c)
			}
			if closed {
				break
			}
			i++
		}
		if !closed {
			return "", "", errf(ErrSyntax, "unterminated quoted local part")
		}
		local = canonicalLocal(b.String())
		rest = p[i+1:]
	} else {
		i := 0
		for i < len(p) && (isAtext(p[i]) || p[i] == '.') {
			i++
		}
		dot := p[:i]
		if dot == "" {
			return "", "", errf(ErrSyntax, "empty local part")
		}
		if !isDotAtom(dot) {
			return "", "", errf(ErrSyntax, "local part %q is not a dot-atom (leading, trailing or double dot)", dot)
		}
		local = dot
		rest = p[i:]
	}
	if !utf8.ValidString(local) {
		return "", "", errf(ErrSyntax, "local part is not valid UTF-8")
	}
	if len(local) > MaxLocalPart {
		return "", "", errf(ErrTooLong, "local part longer than %d octets", MaxLocalPart)
	}
	return local, rest, nil
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// canonicalLocal gives the shortest RFC 5321 form of an unquoted local part
// value: bare when it is a dot-atom, else quoted with '"' and '\' escaped.
func canonicalLocal(v string) string {
	if isDotAtom(v) {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

func parseLiteral(s string) (string, netip.Addr, error) {
	if !strings.HasSuffix(s, "]") || strings.Count(s, "[") != 1 || strings.Count(s, "]") != 1 {
		return "", netip.Addr{}, errf(ErrDomain, "malformed address literal %q", s)
	}
	body := s[1 : len(s)-1]
	if len(body) > 5 && strings.EqualFold(body[:5], "IPv6:") {
		ip, err := netip.ParseAddr(body[5:])
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return "", netip.Addr{}, errf(ErrDomain, "bad IPv6 address literal %q", s)
		}
		return "[IPv6:" + ip.String() + "]", ip, nil
	}
	ip, err := netip.ParseAddr(body)
	if err != nil || !ip.Is4() {
		return "", netip.Addr{}, errf(ErrDomain, "bad address literal %q", s)
	}
	return "[" + ip.String() + "]", ip, nil
}

var profile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.StrictDomainName(true),
	idna.VerifyDNSLength(true),
)

// CanonicalDomain returns the canonical form of a domain name: IDNA
// A-labels (punycode), lower case, without a trailing dot. It refuses empty
// names, address literals and names that are not valid host names.
func CanonicalDomain(s string) (string, error) {
	d := strings.TrimSuffix(s, ".")
	if d == "" {
		return "", errf(ErrDomain, "empty domain")
	}
	if len(d) > MaxDomain {
		return "", errf(ErrTooLong, "domain longer than %d octets", MaxDomain)
	}
	if strings.HasPrefix(d, "[") {
		return "", errf(ErrDomain, "%q is an address literal, not a domain name", s)
	}
	a, err := profile.ToASCII(d)
	if err != nil {
		return "", errf(ErrDomain, "%q: %v", s, err)
	}
	a = strings.ToLower(a)
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 {
			return "", errf(ErrDomain, "%q has an empty or over-long label", s)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", errf(ErrDomain, "%q has a label starting or ending with '-'", s)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", errf(ErrDomain, "%q contains %q", s, c)
			}
		}
		if strings.HasPrefix(l, "xn--") {
			if _, err := idna.Lookup.ToUnicode(l); err != nil {
				return "", errf(ErrDomain, "%q has an invalid punycode label: %v", s, err)
			}
		}
	}
	if len(a) > MaxDomain {
		return "", errf(ErrTooLong, "domain longer than %d octets", MaxDomain)
	}
	return a, nil
}

// Pattern is one affiliated-domain entry: an exact domain ("example.edu")
// or its subdomains (".example.edu" or "*.example.edu", which do not
// include example.edu itself: list both to get both).
type Pattern struct {
	Domain     string // canonical
	Subdomains bool
}

// ParsePattern parses an affiliated-domain entry.
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
		return Pattern{}, errf(ErrDomain, "pattern %q: want example.edu, .example.edu or *.example.edu", s)
	}
	d, err := CanonicalDomain(t)
	if err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", s, err)
	}
	if p.Subdomains && !strings.Contains(d, ".") {
		return Pattern{}, errf(ErrDomain, "pattern %q would match a whole top-level domain", s)
	}
	p.Domain = d
	return p, nil
}

// String returns the pattern in its ".example.edu" / "example.edu" form.
func (p Pattern) String() string {
	if p.Subdomains {
		return "." + p.Domain
	}
	return p.Domain
}

// Match reports whether domain (any spelling) is covered by the pattern.
// Matching is on label boundaries only: "evilexample.edu" and
// "example.edu.evil.com" never match "example.edu".
func (p Pattern) Match(domain string) bool {
	d, err := CanonicalDomain(domain)
	if err != nil {
		return false
	}
	return p.matchCanonical(d)
}

func (p Pattern) matchCanonical(d string) bool {
	if p.Subdomains {
		return strings.HasSuffix(d, "."+p.Domain)
	}
	return d == p.Domain
}

// DomainList is the affiliated-domain list.
type DomainList struct {
	patterns []Pattern
}

// NewDomainList parses every pattern.
func NewDomainList(patterns []string) (DomainList, error) {
	l := DomainList{}
	for _, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			return DomainList{}, err
		}
		l.patterns = append(l.patterns, p)
	}
	return l, nil
}

// Patterns returns the parsed entries.
func (l DomainList) Patterns() []Pattern { return append([]Pattern(nil), l.patterns...) }

// Contains reports whether domain is affiliated. Address literals, empty
// and invalid names are never affiliated.
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
