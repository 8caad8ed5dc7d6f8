package address

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	// A domain of exactly n octets: labels of 63 'b's, then the rest, ".edu".
	domainOf := func(n int) string {
		var parts []string
		n -= len(".edu")
		for n > 0 {
			k := min(n, 63)
			parts = append(parts, strings.Repeat("b", k))
			n -= k + 1
		}
		return strings.Join(parts, ".") + ".edu"
	}
	cases := []struct {
		in      string
		local   string
		domain  string
		literal string // Literal.String() when the domain is an address literal
		err     error
		msg     string // substring the error text must contain
	}{
		// Plain forms.
		{in: "<user@example.edu>", local: "user", domain: "example.edu"},
		{in: "user@example.edu", local: "user", domain: "example.edu"},
		{in: "<User@EXAMPLE.Edu>", local: "User", domain: "example.edu"},
		{in: "<user@example.edu.>", local: "user", domain: "example.edu"},
		{in: "<first.last+tag@sub.example.edu>", local: "first.last+tag", domain: "sub.example.edu"},
		{in: "<!#$%&'*+-/=?^_`{|}~@example.edu>", local: "!#$%&'*+-/=?^_`{|}~", domain: "example.edu"},
		{in: "<scan-01@ab--cd.example.edu>", local: "scan-01", domain: "ab--cd.example.edu"},
		{in: "<u@localhost>", local: "u", domain: "localhost"},

		// Routing characters are plain local-part characters.
		{in: "<user%evil.com@example.edu>", local: "user%evil.com", domain: "example.edu"},
		{in: "<evil.com!user@example.edu>", local: "evil.com!user", domain: "example.edu"},
		{in: "<a!b%c@example.edu>", local: "a!b%c", domain: "example.edu"},

		// Quoted local parts: canonical form is quoted only when needed.
		{in: `<"user@evil.com"@example.edu>`, local: `"user@evil.com"`, domain: "example.edu"},
		{in: `<"user@evil.com@"@example.edu>`, local: `"user@evil.com@"`, domain: "example.edu"},
		{in: `<"john doe"@example.edu>`, local: `"john doe"`, domain: "example.edu"},
		{in: `<"plain"@example.edu>`, local: "plain", domain: "example.edu"},
		{in: `<"a\b"@example.edu>`, local: "ab", domain: "example.edu"},
		{in: `<"a\"b"@example.edu>`, local: `"a\"b"`, domain: "example.edu"},
		{in: `<"a\\b"@example.edu>`, local: `"a\\b"`, domain: "example.edu"},
		{in: `<"a..b"@example.edu>`, local: `"a..b"`, domain: "example.edu"},
		{in: `<".a"@example.edu>`, local: `".a"`, domain: "example.edu"},
		{in: `<""@example.edu>`, local: `""`, domain: "example.edu"},
		{in: `<"a\ b"@example.edu>`, local: `"a b"`, domain: "example.edu"},
		{in: `<"unterminated@example.edu>`, err: ErrSyntax, msg: "no closing"},
		{in: `<"a"b@example.edu>`, err: ErrSyntax, msg: "not allowed in local part"},
		{in: `<a"b"@example.edu>`, err: ErrSyntax, msg: "not allowed in local part"},
		{in: "<\"a\tb\"@example.edu>", err: ErrSyntax, msg: "0x09"},
		{in: "<\"a\\\x01\"@example.edu>", err: ErrSyntax, msg: "printable"},
		{in: `<"a\`, err: ErrSyntax},

		// Address literals.
		{in: "<user@[192.0.2.1]>", local: "user", domain: "[192.0.2.1]", literal: "192.0.2.1"},
		{in: "<user@[IPv6:2001:DB8::1]>", local: "user", domain: "[IPv6:2001:db8::1]", literal: "2001:db8::1"},
		{in: "<user@[ipv6:2001:db8:0:0:0:0:0:1]>", local: "user", domain: "[IPv6:2001:db8::1]", literal: "2001:db8::1"},
		{in: "<user@[127.0.0.1]>", local: "user", domain: "[127.0.0.1]", literal: "127.0.0.1"},
		{in: "<user@[IPv6:::ffff:192.0.2.1]>", err: ErrDomain, msg: "IPv4-mapped"},
		{in: "<user@[IPv6:fe80::1%eth0]>", err: ErrDomain},
		{in: "<user@[2001:db8::1]>", err: ErrDomain},
		{in: "<user@[IPv6:192.0.2.1]>", err: ErrDomain},
		{in: "<user@[192.0.2.01]>", err: ErrDomain},
		{in: "<user@[999.1.1.1]>", err: ErrDomain},
		{in: "<user@[tag:stuff]>", err: ErrDomain},
		{in: "<user@[192.0.2.1]x>", err: ErrDomain},
		{in: "<user@[[192.0.2.1]]>", err: ErrDomain},
		{in: "<user@[]>", err: ErrDomain},
		{in: "<user@[>", err: ErrDomain},
		// An IP address written as a domain is not a literal and not a name.
		{in: "<user@192.0.2.1>", err: ErrDomain, msg: "literal"},
		{in: "<user@127.1>", err: ErrDomain},
		{in: "<user@2130706433>", err: ErrDomain},

		// Internationalised domains and local parts.
		{in: "<user@bücher.example>", local: "user", domain: "xn--bcher-kva.example"},
		{in: "<user@BÜCHER.example>", err: ErrDomain, msg: "U+00DC"},
		{in: "<user@xn--bcher-kva.example>", local: "user", domain: "xn--bcher-kva.example"},
		{in: "<user@XN--BCHER-KVA.EXAMPLE>", local: "user", domain: "xn--bcher-kva.example"},
		{in: "<user@ｅｘａｍｐｌｅ.edu>", err: ErrDomain, msg: "U+FF45"},
		{in: "<user@example。edu>", err: ErrDomain, msg: "U+3002"},
		{in: "<user@ex\u0430mple.edu>", local: "user", domain: "xn--exmple-4nf.edu"},
		{in: "<用户@example.edu>", local: "用户", domain: "example.edu"},
		{in: `<"用户 x"@example.edu>`, local: `"用户 x"`, domain: "example.edu"},
		{in: "<a\xff@example.edu>", err: ErrSyntax, msg: "UTF-8"},
		{in: "<a\u202eb@example.edu>", err: ErrSyntax, msg: "U+202E"},
		{in: "<a\u0085b@example.edu>", err: ErrSyntax, msg: "U+0085"},
		{in: "<user@xn--zz.edu>", err: ErrDomain},
		{in: "<user@xn--abc.edu>", err: ErrDomain},
		{in: "<user@a\u202eb.edu>", err: ErrDomain},

		// Null path.
		{in: "<>", err: ErrNullSender},
		{in: "", err: ErrNullSender},

		// Source routes are refused, with or without brackets.
		{in: "<@relay.evil.com:user@example.edu>", err: ErrSourceRoute},
		{in: "<@a,@b:user@example.edu>", err: ErrSourceRoute, msg: "@relay:"},
		{in: "@a:user@example.edu", err: ErrSourceRoute},
		{in: "<@example.edu>", err: ErrSyntax, msg: "empty local part"},
		{in: "<@>", err: ErrSyntax},

		// More than one unquoted '@' is never guessed at.
		{in: "<user@evil.com@example.edu>", err: ErrSyntax, msg: "more than one unquoted '@'"},
		{in: "user@example.edu@evil.com", err: ErrSyntax},
		{in: "<a@@example.edu>", err: ErrSyntax},

		// Other syntax errors.
		{in: "<user>", err: ErrSyntax, msg: "missing @domain"},
		{in: "<user@>", err: ErrDomain, msg: "empty domain"},
		{in: "<user@.>", err: ErrDomain},
		{in: "<.user@example.edu>", err: ErrSyntax, msg: "dot"},
		{in: "<us..er@example.edu>", err: ErrSyntax},
		{in: "<user.@example.edu>", err: ErrSyntax},
		{in: "<user@example.edu", err: ErrSyntax, msg: "'<' without closing '>'"},
		{in: "user@example.edu>", err: ErrSyntax, msg: "'>' without opening '<'"},
		{in: "<", err: ErrSyntax},
		{in: ">", err: ErrSyntax},
		{in: "<<user@example.edu>>", err: ErrSyntax},
		{in: " <user@example.edu>", err: ErrSyntax},
		{in: "<user@example.edu> ", err: ErrSyntax},
		{in: "<user name@example.edu>", err: ErrSyntax, msg: "' '"},
		{in: "<user\r\n@example.edu>", err: ErrSyntax},
		{in: "<user\x00@example.edu>", err: ErrSyntax},
		{in: "<user(comment)@example.edu>", err: ErrSyntax},
		{in: "<user@exa mple.edu>", err: ErrDomain},
		{in: "<user@-bad.edu>", err: ErrDomain, msg: "'-'"},
		{in: "<user@bad-.edu>", err: ErrDomain},
		{in: "<user@under_score.edu>", err: ErrDomain, msg: "'_'"},
		{in: "<user@example..edu>", err: ErrDomain, msg: "empty label"},
		{in: "<user@.example.edu>", err: ErrDomain},
		{in: "<user@example.edu..>", err: ErrDomain},
		{in: "<user@example.edu:25>", err: ErrDomain},
		{in: "<user@example.edu\r\n>", err: ErrDomain},

		// Lengths (RFC 5321 §4.5.3.1).
		{in: "<" + long(64) + "@example.edu>", local: long(64), domain: "example.edu"},
		{in: "<" + long(65) + "@example.edu>", err: ErrTooLong, msg: "local part"},
		// The limit applies to the canonical local part: 66 octets quoted, 64 bare.
		{in: `<"` + long(64) + `"@example.edu>`, local: long(64), domain: "example.edu"},
		{in: `<"` + long(63) + ` "@example.edu>`, err: ErrTooLong},
		{in: "<a@" + strings.Repeat("b", 64) + ".edu>", err: ErrTooLong, msg: "label"},
		{in: "<" + long(64) + "@" + domainOf(189) + ">", local: long(64), domain: domainOf(189)},
		{in: "<" + long(64) + "@" + domainOf(190) + ">", err: ErrTooLong, msg: "path"},
		{in: long(64) + "@" + domainOf(190), err: ErrTooLong},
		// Short in UTF-8, too long once in punycode.
		// 25 labels "ü" are 50 octets in UTF-8 and 200 as xn--tda.
		{in: "<" + long(64) + "@" + strings.Repeat("ü.", 25) + "example.edu>", err: ErrTooLong, msg: "canonical"},
		{in: "<" + long(10) + "@" + strings.Repeat("ü.", 25) + "example.edu>", local: long(10), domain: strings.Repeat("xn--tda.", 25) + "example.edu"},
		{in: "<" + strings.Repeat("x", 5000) + ">", err: ErrTooLong},
	}
	for _, tc := range cases {
		a, err := ParsePath(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParsePath(%q) = %+v, %v; want error %v", tc.in, a, err, tc.err)
			} else if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("ParsePath(%q) error %q does not say %q", tc.in, err, tc.msg)
			}
			if a != (Address{}) {
				t.Errorf("ParsePath(%q) returned %+v with its error", tc.in, a)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePath(%q) error %v", tc.in, err)
			continue
		}
		if a.Local != tc.local || a.Domain != tc.domain || a.IsLiteral != (tc.literal != "") {
			t.Errorf("ParsePath(%q) = %+v, want local %q domain %q literal %q", tc.in, a, tc.local, tc.domain, tc.literal)
		}
		if tc.literal != "" && a.Literal.String() != tc.literal {
			t.Errorf("ParsePath(%q).Literal = %v, want %s", tc.in, a.Literal, tc.literal)
		}
		if !a.IsLiteral && a.Literal.IsValid() {
			t.Errorf("ParsePath(%q) set Literal for a domain name", tc.in)
		}
		// Parse accepts the bare mailbox and agrees with ParsePath.
		b, err := Parse(strings.TrimSuffix(strings.TrimPrefix(tc.in, "<"), ">"))
		if err != nil || b != a {
			t.Errorf("Parse(bare %q) = %+v, %v; want %+v", tc.in, b, err, a)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	// A domain error is also a syntax error, so a caller that maps
	// ErrSyntax to 501/553 catches it; the other sentinels are distinct.
	_, err := Parse("u@exa mple.edu")
	if !errors.Is(err, ErrDomain) || !errors.Is(err, ErrSyntax) {
		t.Errorf("domain error %v should be ErrDomain and ErrSyntax", err)
	}
	for _, e := range []error{ErrNullSender, ErrSourceRoute, ErrTooLong} {
		if errors.Is(e, ErrSyntax) || errors.Is(ErrSyntax, e) {
			t.Errorf("%v and ErrSyntax must be distinct", e)
		}
	}
	// Error texts quote the input but never echo more than a short prefix.
	_, err = Parse("<" + strings.Repeat("x", 300) + "@" + strings.Repeat("y", 100) + ">")
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("error for a long input is %d bytes: %v", len(err.Error()), err)
	}
}

func TestCanonicalDomain(t *testing.T) {
	same := [][]string{
		{"example.edu", "EXAMPLE.EDU", "Example.Edu.", "example.edu."},
		{"xn--bcher-kva.example", "bücher.example", "XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example."},
		{"xn--fa-hia.de", "faß.de", "FAß.de"}, // non-transitional: ß is not ss
		{"ab--cd.example.edu", "AB--CD.example.edu"},
		{"localhost", "LOCALHOST."},
	}
	for _, group := range same {
		want := group[0]
		for _, s := range group {
			got, err := CanonicalDomain(s)
			if err != nil || got != want {
				t.Errorf("CanonicalDomain(%q) = %q, %v; want %q", s, got, err, want)
				continue
			}
			if again, err := CanonicalDomain(got); again != got || err != nil {
				t.Errorf("not idempotent: %q -> %q, %v", got, again, err)
			}
		}
	}
	// Lookalikes are different domains.
	for _, s := range []string{"ex\u0430mple.edu", "\u0435xample.edu", "examp1e.edu", "fass.de", "exampl\u00e9.edu"} {
		got, err := CanonicalDomain(s)
		if err != nil {
			t.Errorf("CanonicalDomain(%q): %v", s, err)
		}
		if got == "example.edu" || got == "xn--fa-hia.de" {
			t.Errorf("lookalike %q canonicalised to %q", s, got)
		}
	}
	bad := []struct {
		in  string
		err error
	}{
		{"", ErrDomain}, {".", ErrDomain}, {"..", ErrDomain}, {"[192.0.2.1]", ErrDomain},
		{"a..b", ErrDomain}, {".a.b", ErrDomain}, {"a b", ErrDomain}, {"-a.edu", ErrDomain},
		{"a-.edu", ErrDomain}, {"a_b.edu", ErrDomain}, {"a@b.edu", ErrDomain}, {"a:b.edu", ErrDomain},
		{"192.0.2.1", ErrDomain}, {"1", ErrDomain}, {"example.123", ErrDomain},
		{"xn--zz.edu", ErrDomain}, {"xn--abc.edu", ErrDomain}, {"xn--.edu", ErrDomain},
		{"\xff.edu", ErrDomain}, {"a\u202eb.edu", ErrDomain}, {"a\x00b.edu", ErrDomain},
		{strings.Repeat("a", 64) + ".edu", ErrTooLong},
		{strings.Repeat("a.", 126) + "bc", ErrTooLong}, // 254 octets
		{strings.Repeat("ü", 2000), ErrTooLong},
		{strings.Repeat("ü", 127) + ".example", ErrTooLong},
		{strings.Repeat("ü", 60) + ".example", ErrTooLong}, // xn--tdaaaa… is 70 octets
		// Not IDNA2008 as sent: UTS #46 would map each of these to another
		// name; the relay refuses them instead of rewriting them.
		{"ｅｘａｍｐｌｅ.edu", ErrDomain},           // full-width letters
		{"example。edu", ErrDomain},           // ideographic full stop
		{"example．edu", ErrDomain},           // full-width full stop
		{"exa\u00admple.edu", ErrDomain},     // soft hyphen (ignored by UTS #46)
		{"exa\u200bmple.edu", ErrDomain},     // zero-width space
		{"BÜCHER.example", ErrDomain},        // upper-case U-label
		{"bu\u0308cher.example", ErrDomain},  // not NFC
		{"\u2168.example", ErrDomain},        // Roman numeral nine (maps to "ix")
		{"ex\ufb01.example", ErrDomain},      // ligature "fi"
		{"xn--bcher-kva.ｅxample", ErrDomain}, // mixed
	}
	for _, tc := range bad {
		if got, err := CanonicalDomain(tc.in); !errors.Is(err, tc.err) {
			t.Errorf("CanonicalDomain(%q) = %q, %v; want %v", tc.in, got, err, tc.err)
		}
	}
	// The limits themselves are accepted: 63-octet label, 253-octet name.
	for _, s := range []string{strings.Repeat("a", 63) + ".edu", strings.Repeat("a.", 125) + "edu", strings.Repeat("a.", 125) + "edu."} {
		if _, err := CanonicalDomain(s); err != nil {
			t.Errorf("CanonicalDomain(%d octets) = %v", len(s), err)
		}
	}
}

func TestParsePattern(t *testing.T) {
	cases := []struct {
		in   string
		want Pattern
		err  bool
	}{
		{in: "example.edu", want: Pattern{Domain: "example.edu"}},
		{in: " Example.EDU. ", want: Pattern{Domain: "example.edu"}},
		{in: ".example.edu", want: Pattern{Domain: "example.edu", Subdomains: true}},
		{in: "*.example.edu", want: Pattern{Domain: "example.edu", Subdomains: true}},
		{in: ".bücher.example", want: Pattern{Domain: "xn--bcher-kva.example", Subdomains: true}},
		{in: "localdomain", want: Pattern{Domain: "localdomain"}},
		{in: "", err: true}, {in: "*", err: true}, {in: ".", err: true}, {in: "*.", err: true},
		{in: ".edu", err: true}, {in: "*.edu", err: true}, {in: "..example.edu", err: true},
		{in: "**.example.edu", err: true}, {in: "*example.edu", err: true}, {in: "a*.example.edu", err: true},
		{in: "mail.*.example.edu", err: true}, {in: "user@example.edu", err: true}, {in: "@example.edu", err: true},
		{in: "[192.0.2.1]", err: true}, {in: "192.0.2.1", err: true}, {in: "192.0.2.0/24", err: true},
		{in: "example..edu", err: true}, {in: "exa mple.edu", err: true},
	}
	for _, tc := range cases {
		p, err := ParsePattern(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParsePattern(%q) = %+v, want error", tc.in, p)
			} else if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrTooLong) {
				t.Errorf("ParsePattern(%q) error %v wraps no sentinel", tc.in, err)
			}
			continue
		}
		if err != nil || p != tc.want {
			t.Errorf("ParsePattern(%q) = %+v, %v; want %+v", tc.in, p, err, tc.want)
			continue
		}
		if q, err := ParsePattern(p.String()); err != nil || q != p {
			t.Errorf("ParsePattern(%q.String()=%q) = %+v, %v", tc.in, p.String(), q, err)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pattern, domain string
		want            bool
	}{
		{"example.edu", "example.edu", true},
		{"example.edu", "EXAMPLE.EDU", true},
		{"example.edu", "example.edu.", true},      // same domain, trailing dot removed
		{"example.edu", "mail.example.edu", false}, // exact: no subdomains
		{"example.edu", "evilexample.edu", false},
		{"example.edu", "example.edu.evil.com", false},
		{"example.edu", "example.edu..", false},
		{"example.edu", "ex\u0430mple.edu", false},
		{"example.edu", "xn--exmple-4nf.edu", false},
		{"example.edu", "[192.0.2.1]", false},
		{"example.edu", "", false},
		{"example.edu", "user@example.edu", false},
		{".example.edu", "example.edu", false}, // subdomains only: not the apex
		{".example.edu", "mail.example.edu", true},
		{".example.edu", "A.B.EXAMPLE.EDU.", true},
		{".example.edu", "evilexample.edu", false},
		{".example.edu", "mail.evilexample.edu", false},
		{".example.edu", "example.edu.evil.com", false},
		{".example.edu", "mail.example.edu.evil.com", false},
		{".example.edu", ".example.edu", false},
		{".example.edu", "mail.ex\u0430mple.edu", false},
		{"*.example.edu", "x.example.edu", true},
		{"*.example.edu", "example.edu", false},
		{".bücher.example", "mail.xn--bcher-kva.example", true},
		{"xn--bcher-kva.example", "XN--BCHER-KVA.example", true},
	}
	for _, tc := range cases {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if got := p.Match(tc.domain); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.domain, got, tc.want)
		}
	}
	if (Pattern{}).Match("example.edu") || (Pattern{Subdomains: true}).Match("example.edu") {
		t.Error("zero Pattern matched")
	}
}

func TestDomainList(t *testing.T) {
	l, err := NewDomainList([]string{"example.edu", ".example.edu", ".dept.example.org", "*.lab.example.net", "bücher.example"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.Patterns()); n != 5 {
		t.Fatalf("Patterns() has %d entries", n)
	}
	cases := []struct {
		domain string
		want   bool
	}{
		{"example.edu", true},
		{"EXAMPLE.EDU.", true},
		{"mail.example.edu", true},
		{"evilexample.edu", false},
		{"example.edu.evil.com", false},
		{"ex\u0430mple.edu", false},
		{"xn--exmple-4nf.edu", false},
		{"dept.example.org", false},
		{"a.dept.example.org", true},
		{"a.b.dept.example.org", true},
		{"adept.example.org", false},
		{"example.org", false},
		{"x.lab.example.net", true},
		{"lab.example.net", false},
		{"xn--bcher-kva.example", true},
		{"XN--BCHER-KVA.EXAMPLE.", true},
		{"mail.bücher.example", false},
		{"[192.0.2.1]", false},
		{"[IPv6:::1]", false},
		{"192.0.2.1", false},
		{"", false},
		{".", false},
		{"example.edu@evil.com", false},
		{"evil.com!example.edu", false},
		{"evil.com%example.edu", false},
	}
	for _, tc := range cases {
		if got := l.Contains(tc.domain); got != tc.want {
			t.Errorf("Contains(%q) = %v, want %v", tc.domain, got, tc.want)
		}
	}
	if _, err := NewDomainList([]string{"example.edu", "*.edu"}); err == nil || !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("NewDomainList with a bad entry: %v", err)
	}
	var zero DomainList
	if zero.Contains("example.edu") {
		t.Error("zero DomainList contains example.edu")
	}
	empty, err := NewDomainList(nil)
	if err != nil || empty.Contains("example.edu") {
		t.Errorf("empty DomainList: %v", err)
	}
}

// Known open-relay tricks (percent hack, bang paths, quoted @, source
// routes, address literals and more). The affiliated list is example.edu
// and its subdomains. Whatever the spelling, either the path is refused, or
// the domain the policy sees is the one the mail would really be delivered
// to, and it is affiliated only when that domain truly is.
func TestOpenRelayTricks(t *testing.T) {
	l, err := NewDomainList([]string{"example.edu", ".example.edu"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, in   string
		domain     string // canonical domain when accepted
		affiliated bool
		err        error
	}{
		{"plain affiliated", "<victim@example.edu>", "example.edu", true, nil},
		{"plain external", "<victim@outside.com>", "outside.com", false, nil},
		{"percent hack", "<victim%outside.com@example.edu>", "example.edu", true, nil},
		{"percent hack outward", "<victim%example.edu@outside.com>", "outside.com", false, nil},
		{"double percent", "<victim%outside.com%other.net@example.edu>", "example.edu", true, nil},
		{"bang path", "<outside.com!victim@example.edu>", "example.edu", true, nil},
		{"bang path outward", "<example.edu!victim@outside.com>", "outside.com", false, nil},
		{"bang path without @", "<outside.com!victim>", "", false, ErrSyntax},
		{"percent without @", "<victim%outside.com>", "", false, ErrSyntax},
		{"quoted @", `<"victim@outside.com"@example.edu>`, "example.edu", true, nil},
		{"quoted @ outward", `<"victim@example.edu"@outside.com>`, "outside.com", false, nil},
		{"two unquoted @", "<victim@outside.com@example.edu>", "", false, ErrSyntax},
		{"two unquoted @ outward", "<victim@example.edu@outside.com>", "", false, ErrSyntax},
		{"source route", "<@example.edu:victim@outside.com>", "", false, ErrSourceRoute},
		{"source route list", "<@example.edu,@mail.example.edu:victim@outside.com>", "", false, ErrSourceRoute},
		{"IPv4 literal", "<victim@[192.0.2.1]>", "[192.0.2.1]", false, nil},
		{"loopback literal", "<victim@[127.0.0.1]>", "[127.0.0.1]", false, nil},
		{"IPv6 literal", "<victim@[IPv6:::1]>", "[IPv6:::1]", false, nil},
		{"IP as name", "<victim@192.0.2.1>", "", false, ErrDomain},
		{"trailing dot", "<victim@example.edu.>", "example.edu", true, nil},
		{"trailing dot subdomain", "<victim@mail.example.edu.>", "mail.example.edu", true, nil},
		{"two trailing dots", "<victim@example.edu..>", "", false, ErrDomain},
		{"mixed case", "<Victim@ExAmPlE.EdU>", "example.edu", true, nil},
		{"mixed case external", "<victim@OUTSIDE.COM>", "outside.com", false, nil},
		{"suffix without dot", "<victim@evilexample.edu>", "evilexample.edu", false, nil},
		{"affiliated as prefix", "<victim@example.edu.outside.com>", "example.edu.outside.com", false, nil},
		{"affiliated as label", "<victim@example.edu-outside.com>", "example.edu-outside.com", false, nil},
		{"Cyrillic a", "<victim@ex\u0430mple.edu>", "xn--exmple-4nf.edu", false, nil},
		{"Cyrillic e subdomain", "<victim@mail.\u0435xample.edu>", "mail.xn--xample-2of.edu", false, nil},
		{"punycode lookalike", "<victim@xn--exmple-4nf.edu>", "xn--exmple-4nf.edu", false, nil},
		{"punycode lookalike upper", "<victim@XN--EXMPLE-4NF.EDU>", "xn--exmple-4nf.edu", false, nil},
		{"fullwidth refused, not mapped", "<victim@ｅｘａｍｐｌｅ.edu>", "", false, ErrDomain},
		{"fullwidth outward refused", "<victim@ｏｕｔｓｉｄｅ.com>", "", false, ErrDomain},
		{"ideographic dot refused", "<victim@example。edu>", "", false, ErrDomain},
		{"ideographic dot outward refused", "<victim@outside。com>", "", false, ErrDomain},
		{"soft hyphen refused", "<victim@exa\u00admple.edu>", "", false, ErrDomain},
		{"invalid punycode", "<victim@xn--zz.example.edu>", "", false, ErrDomain},
		{"space in domain", "<victim@example.edu outside.com>", "", false, ErrDomain},
		{"comma in domain", "<victim@example.edu,outside.com>", "", false, ErrDomain},
		{"NUL in domain", "<victim@example.edu\x00.outside.com>", "", false, ErrDomain},
		{"CRLF injection", "<victim@example.edu>\r\nRCPT TO:<x@outside.com>", "", false, ErrSyntax},
		{"null recipient", "<>", "", false, ErrNullSender},
	}
	for _, tc := range cases {
		a, err := ParsePath(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: ParsePath(%q) = %+v, %v; want %v", tc.name, tc.in, a, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ParsePath(%q): %v", tc.name, tc.in, err)
			continue
		}
		if a.Domain != tc.domain {
			t.Errorf("%s: ParsePath(%q).Domain = %q, want %q", tc.name, tc.in, a.Domain, tc.domain)
		}
		if got := l.Contains(a.Domain); got != tc.affiliated {
			t.Errorf("%s: Contains(%q) = %v, want %v", tc.name, a.Domain, got, tc.affiliated)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	cases := []struct{ in, want string }{
		{"a@b.example", "a@b.example"},
		{"A.B@B.Example.", "A.B@b.example"},
		{`"a b"@c.example`, `"a b"@c.example`},
		{`"a\\b"@c.example`, `"a\\b"@c.example`},
		{`"a\"b"@c.example`, `"a\"b"@c.example`},
		{`"ab"@c.example`, "ab@c.example"},
		{`"a@b"@c.example`, `"a@b"@c.example`},
		{`""@c.example`, `""@c.example`},
		{"x@[IPv6:0:0:0:0:0:0:0:1]", "x@[IPv6:::1]"},
		{"x@[192.0.2.1]", "x@[192.0.2.1]"},
		{"用户@bücher.example", "用户@xn--bcher-kva.example"},
	}
	for _, tc := range cases {
		a, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if a.String() != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, a.String(), tc.want)
		}
		b, err := Parse(a.String())
		if err != nil || b != a {
			t.Errorf("round trip %q -> %q -> %+v, %v", tc.in, a.String(), b, err)
		}
	}
}

func TestUnicodeDomainAndSMTPUTF8(t *testing.T) {
	cases := []struct {
		in, unicode string
		utf8        bool
	}{
		{"u@xn--bcher-kva.example", "bücher.example", false},
		{"u@example.edu", "example.edu", false},
		{"u@[192.0.2.1]", "[192.0.2.1]", false},
		{"用户@example.edu", "example.edu", true},
		{`"ü x"@example.edu`, "example.edu", true},
		{"u@ex\u0430mple.edu", "ex\u0430mple.edu", false},
	}
	for _, tc := range cases {
		a, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if got := a.UnicodeDomain(); got != tc.unicode {
			t.Errorf("Parse(%q).UnicodeDomain() = %q, want %q", tc.in, got, tc.unicode)
		}
		if got := a.NeedsSMTPUTF8(); got != tc.utf8 {
			t.Errorf("Parse(%q).NeedsSMTPUTF8() = %v, want %v", tc.in, got, tc.utf8)
		}
	}
}
