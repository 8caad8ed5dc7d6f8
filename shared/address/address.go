// Package address parses and normalises RFC 5321 mailboxes as they appear in
// MAIL FROM and RCPT TO, and matches domains against the organisation's
// affiliated-domain list.
//
// Guarantees that the relay policy relies on:
//   - The Domain of an Address is exactly the text after the local part and
//     its '@', in one canonical form (lower case, IDNA A-labels, no trailing
//     dot), so two spellings of one domain compare equal, and a lookalike
//     (Cyrillic 'а' for Latin 'a', say) is a different A-label that never
//     matches. Mail for the Address goes to that domain and nowhere else.
//   - Addresses are refused, never rewritten: a domain must be valid
//     IDNA2008 as sent (RFC 5891). Nothing is mapped the way UTS #46
//     lookup processing would (full-width letters, ideographic full
//     stops, soft hyphens, upper-case or non-NFC U-labels are errors), so
//     the domain that was sent is the domain mail goes to; only ASCII
//     letters are lower-cased.
//   - '%' and '!' are ordinary local-part characters: they are never
//     interpreted as routing (the "percent hack", bang paths). An '@' inside
//     a quoted local part ("user@evil.com"@example.edu) is part of the local
//     part. A second unquoted '@' (user@evil.com@example.edu) is a syntax
//     error, never guessed at.
//   - Source routes (<@a,@b:user@d>) are refused with ErrSourceRoute, not
//     silently stripped.
//   - Address literals ([192.0.2.1], [IPv6:2001:db8::1]) are flagged, and
//     are never members of a DomainList.
//   - Every accepted Address is within the RFC 5321 §4.5.3.1 limits in its
//     canonical form (local part 64 octets, domain 253, path 256), and
//     re-parses to itself: Parse(a.String()) == a.
//   - Every error wraps one of the exported sentinels (test with errors.Is)
//     and its text says what exactly is wrong.
package address

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits from RFC 5321 §4.5.3.1. MaxDomain is the SMTP limit; a DNS name
// (without its trailing dot) is further limited to MaxDNSName octets, which
// CanonicalDomain enforces.
const (
	MaxLocalPart = 64
	MaxDomain    = 255
	MaxDNSName   = 253
	MaxLabel     = 63
	MaxPath      = 256 // including the angle brackets
)

// sentinel is an error that can sit under another sentinel, so that
// errors.Is(ErrDomain-based error, ErrSyntax) holds.
type sentinel struct {
	msg    string
	parent error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.parent }

// Errors returned by the parsers; test with errors.Is. The returned error
// wraps one of these and adds what exactly is wrong.
var (
	// ErrNullSender: the path is empty ("" or "<>"). It is valid as a
	// MAIL FROM reverse-path (bounces), never as a mailbox.
	ErrNullSender error = &sentinel{msg: "null path <>"}
	// ErrSourceRoute: the path carries an RFC 5321 source route
	// (<@relay:user@domain>), which Postern does not honour.
	ErrSourceRoute error = &sentinel{msg: "source route not accepted"}
	// ErrSyntax: the address is malformed.
	ErrSyntax error = &sentinel{msg: "address syntax error"}
	// ErrDomain: the domain (or address literal) is malformed. It is also
	// an ErrSyntax.
	ErrDomain error = &sentinel{msg: "invalid domain", parent: ErrSyntax}
	// ErrTooLong: a length limit of RFC 5321 §4.5.3.1 is exceeded.
	ErrTooLong error = &sentinel{msg: "address too long"}
)

func errf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", base, fmt.Sprintf(format, args...))
}

// Address is a parsed RFC 5321 mailbox.
type Address struct {
	// Local is the local part in canonical RFC 5321 form: bare when its
	// value is a dot-string, otherwise quoted with '"' and '\' escaped
	// ("john doe", "a\"b"). Case is kept: local parts are case-sensitive
	// to the receiving system. It may contain UTF-8 (SMTPUTF8, RFC 6531).
	Local string
	// Domain is canonical: lower case, IDNA A-labels, no trailing dot. For
	// an address literal it is the bracketed literal in canonical form,
	// e.g. "[192.0.2.1]" or "[IPv6:2001:db8::1]".
	Domain string
	// IsLiteral is set when Domain is an address literal.
	IsLiteral bool
	// Literal is the literal's IP address when IsLiteral.
	Literal netip.Addr
}

// String returns local@domain in canonical form (no angle brackets).
func (a Address) String() string { return a.Local + "@" + a.Domain }

// UnicodeDomain returns the domain with U-labels, for display. Literals
// and names that cannot be converted are returned unchanged.
func (a Address) UnicodeDomain() string {
	if a.IsLiteral {
		return a.Domain
	}
	return unicodeDomain(a.Domain)
}

// NeedsSMTPUTF8 reports whether the address can only be sent with the
// SMTPUTF8 extension (RFC 6531), i.e. the local part is not ASCII. The
// domain never needs it: it is always in A-label form.
func (a Address) NeedsSMTPUTF8() bool {
	for i := 0; i < len(a.Local); i++ {
		if a.Local[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// Parse parses a mailbox, with or without angle brackets. It is the same
// as ParsePath: "" and "<>" give ErrNullSender, source routes
// ErrSourceRoute.
func Parse(s string) (Address, error) { return ParsePath(s) }

// ParsePath parses a MAIL FROM or RCPT TO path, "<local@domain>". Missing
// angle brackets are tolerated (some clients and libraries drop them);
// unbalanced ones are not. No surrounding space is allowed. Source routes
// are refused with ErrSourceRoute; the null path ("<>" or "") gives
// ErrNullSender, which the caller accepts or refuses as its context
// requires.
func ParsePath(s string) (Address, error) {
	p := s
	if strings.HasPrefix(p, "<") {
		if len(p) < 2 || !strings.HasSuffix(p, ">") {
			return Address{}, errf(ErrSyntax, "%s: '<' without closing '>'", quote(s))
		}
		p = p[1 : len(p)-1]
	} else if strings.HasSuffix(p, ">") {
		return Address{}, errf(ErrSyntax, "%s: '>' without opening '<'", quote(s))
	}
	if p == "" {
		return Address{}, ErrNullSender
	}
	if len(p)+2 > MaxPath {
		return Address{}, errf(ErrTooLong, "path is %d octets, the limit is %d", len(p)+2, MaxPath)
	}
	if p[0] == '@' {
		if strings.IndexByte(p, ':') > 0 {
			return Address{}, errf(ErrSourceRoute, "%s: send to the final mailbox without the @relay: prefix", quote(s))
		}
		return Address{}, errf(ErrSyntax, "%s: empty local part", quote(s))
	}
	local, rest, err := parseLocal(p)
	if err != nil {
		return Address{}, fmt.Errorf("%w (in %s)", err, quote(s))
	}
	switch {
	case rest == "":
		return Address{}, errf(ErrSyntax, "%s: missing @domain", quote(s))
	case rest[0] != '@':
		r, _ := utf8.DecodeRuneInString(rest)
		return Address{}, errf(ErrSyntax, "%s: character %q not allowed in local part (quote the local part)", quote(s), r)
	}
	dom := rest[1:]
	if strings.IndexByte(dom, '@') >= 0 {
		return Address{}, errf(ErrSyntax, "%s: more than one unquoted '@' (an '@' in the local part must be quoted)", quote(s))
	}
	a := Address{Local: local}
	if strings.HasPrefix(dom, "[") {
		a.Domain, a.Literal, err = parseLiteral(dom)
		if err != nil {
			return Address{}, err
		}
		a.IsLiteral = true
	} else {
		if dom == "" {
			return Address{}, errf(ErrDomain, "%s: empty domain", quote(s))
		}
		a.Domain, err = CanonicalDomain(dom)
		if err != nil {
			return Address{}, err
		}
	}
	// The canonical form can be longer than the input (U-labels become
	// punycode); it is what goes on the wire, so it must fit too.
	if n := len(a.Local) + 1 + len(a.Domain) + 2; n > MaxPath {
		return Address{}, errf(ErrTooLong, "canonical path <%s> is %d octets, the limit is %d", a.String(), n, MaxPath)
	}
	return a, nil
}

// quote renders user input for an error text: quoted, escaped, and cut
// short so that an error never carries a huge or control-laden string.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// isAtext reports whether c may appear in an atom: RFC 5322 atext, plus
// any UTF-8 octet for SMTPUTF8 (RFC 6531 §3.3); UTF-8 validity is checked
// on the whole local part afterwards.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c >= utf8.RuneSelf:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isQtext reports whether c may appear unescaped in a quoted string
// (RFC 5321 qtextSMTP, plus UTF-8 octets).
func isQtext(c byte) bool {
	return c == ' ' || c == '!' || ('#' <= c && c <= '[') || (']' <= c && c <= '~') || c >= utf8.RuneSelf
}

// parseLocal reads a local part (dot-string or quoted-string) from the
// start of p and returns its canonical form and the rest of p.
func parseLocal(p string) (local, rest string, err error) {
	var value string
	if p[0] == '"' {
		var b strings.Builder
		i, closed := 1, false
		for i < len(p) && !closed {
			c := p[i]
			switch {
			case c == '"':
				closed = true
			case c == '\\':
				if i+1 >= len(p) || p[i+1] < ' ' || p[i+1] > '~' {
					return "", "", errf(ErrSyntax, "'\\' in quoted local part must be followed by a printable ASCII character")
				}
				b.WriteByte(p[i+1])
				i++
			case isQtext(c):
				b.WriteByte(c)
			default:
				return "", "", errf(ErrSyntax, "character 0x%02x not allowed in quoted local part", c)
			}
			i++
		}
		if !closed {
			return "", "", errf(ErrSyntax, "quoted local part has no closing '\"'")
		}
		value, rest = b.String(), p[i:]
	} else {
		i := 0
		for i < len(p) && (isAtext(p[i]) || p[i] == '.') {
			i++
		}
		value, rest = p[:i], p[i:]
		if value == "" {
			return "", "", errf(ErrSyntax, "empty local part")
		}
		if !isDotString(value) {
			return "", "", errf(ErrSyntax, "local part %s has a leading, trailing or double dot (quote it if it is meant)", quote(value))
		}
	}
	if !utf8.ValidString(value) {
		return "", "", errf(ErrSyntax, "local part is not valid UTF-8")
	}
	for _, r := range value {
		if r >= utf8.RuneSelf && unsafeRune(r) {
			return "", "", errf(ErrSyntax, "local part contains control or bidirectional-override character %U", r)
		}
	}
	local = canonicalLocal(value)
	if len(local) > MaxLocalPart {
		return "", "", errf(ErrTooLong, "local part is %d octets, the limit is %d", len(local), MaxLocalPart)
	}
	return local, rest, nil
}

// unsafeRune reports non-ASCII runes refused in a local part although
// RFC 6532 would let them through: C1 controls, line and paragraph
// separators, and the bidirectional controls that make text display in
// a different order than it is stored ("Trojan Source"), so that an
// address shown in a log or the central console reads as what it is.
func unsafeRune(r rune) bool {
	switch {
	case unicode.Is(unicode.Cc, r):
		return true
	case r == '\u2028', r == '\u2029', r == '\u061c', r == '\u200e', r == '\u200f':
		return true
	case '\u202a' <= r && r <= '\u202e', '\u2066' <= r && r <= '\u2069':
		return true
	}
	return false
}

// isDotString reports whether s is an RFC 5321 Dot-string: atoms
// separated by single dots.
func isDotString(s string) bool {
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

// canonicalLocal gives the shortest RFC 5321 form of a local part value:
// bare when it is a Dot-string, else quoted with '"' and '\' escaped
// (RFC 5321 §4.1.2 recommends not quoting when not needed).
func canonicalLocal(v string) string {
	if isDotString(v) {
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

// parseLiteral parses an RFC 5321 address literal, "[192.0.2.1]" or
// "[IPv6:2001:db8::1]", and returns its canonical text and address.
// General address literals ("[tag:content]"), IPv4-mapped IPv6 addresses,
// zones and IPv4 with leading zeros are refused.
func parseLiteral(s string) (string, netip.Addr, error) {
	if len(s) < 2 || s[len(s)-1] != ']' || strings.Count(s, "[") != 1 || strings.Count(s, "]") != 1 {
		return "", netip.Addr{}, errf(ErrDomain, "malformed address literal %s", quote(s))
	}
	body := s[1 : len(s)-1]
	if len(body) > 5 && strings.EqualFold(body[:5], "IPv6:") {
		ip, err := netip.ParseAddr(body[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", netip.Addr{}, errf(ErrDomain, "%s is not an IPv6 address literal", quote(s))
		}
		if ip.Is4In6() {
			return "", netip.Addr{}, errf(ErrDomain, "%s: IPv4-mapped IPv6 literal not accepted, write [%s]", quote(s), ip.Unmap())
		}
		return "[IPv6:" + ip.String() + "]", ip, nil
	}
	ip, err := netip.ParseAddr(body)
	if err != nil || !ip.Is4() {
		return "", netip.Addr{}, errf(ErrDomain, "%s is not an address literal ([192.0.2.1] or [IPv6:2001:db8::1])", quote(s))
	}
	return "[" + ip.String() + "]", ip, nil
}
