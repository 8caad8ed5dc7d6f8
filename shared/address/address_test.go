package address

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		in      string
		local   string
		domain  string
		literal bool
		err     error
	}{
		{"<user@example.edu>", "user", "example.edu", false, nil},
		{"user@example.edu", "user", "example.edu", false, nil},
		{"<User@EXAMPLE.Edu>", "User", "example.edu", false, nil},
		{"<user@example.edu.>", "user", "example.edu", false, nil},
		{"<first.last+tag@sub.example.edu>", "first.last+tag", "sub.example.edu", false, nil},
		{"<user%evil.com@example.edu>", "user%evil.com", "example.edu", false, nil},
		{"<evil.com!user@example.edu>", "evil.com!user", "example.edu", false, nil},
		{`<"user@evil.com"@example.edu>`, `"user@evil.com"`, "example.edu", false, nil},
		{`<"john doe"@example.edu>`, `"john doe"`, "example.edu", false, nil},
		{`<"plain"@example.edu>`, "plain", "example.edu", false, nil},
		{`<"a\"b"@example.edu>`, `"a\"b"`, "example.edu", false, nil},
		{"<user@[192.0.2.1]>", "user", "[192.0.2.1]", true, nil},
		{"<user@[IPv6:2001:DB8::1]>", "user", "[IPv6:2001:db8::1]", true, nil},
		{"<user@bücher.example>", "user", "xn--bcher-kva.example", false, nil},
		{"<user@xn--bcher-kva.example>", "user", "xn--bcher-kva.example", false, nil},
		{"<用户@example.edu>", "用户", "example.edu", false, nil},
		{"<>", "", "", false, ErrNullSender},
		{"", "", "", false, ErrNullSender},
		{"<@relay.evil.com:user@example.edu>", "", "", false, ErrSourceRoute},
		{"<@a,@b:user@example.edu>", "", "", false, ErrSourceRoute},
		{"<user@evil.com@example.edu>", "", "", false, ErrDomain},
		{"<user>", "", "", false, ErrSyntax},
		{"<user@>", "", "", false, ErrDomain},
		{"<.user@example.edu>", "", "", false, ErrSyntax},
		{"<us..er@example.edu>", "", "", false, ErrSyntax},
		{"<user.@example.edu>", "", "", false, ErrSyntax},
		{"<user@example.edu", "", "", false, ErrSyntax},
		{"user@example.edu>", "", "", false, ErrSyntax},
		{"<user name@example.edu>", "", "", false, ErrSyntax},
		{`<"unterminated@example.edu>`, "", "", false, ErrSyntax},
		{"<user@exa mple.edu>", "", "", false, ErrDomain},
		{"<user@-bad.edu>", "", "", false, ErrDomain},
		{"<user@bad-.edu>", "", "", false, ErrDomain},
		{"<user@under_score.edu>", "", "", false, ErrDomain},
		{"<user@example..edu>", "", "", false, ErrDomain},
		{"<user@[999.1.1.1]>", "", "", false, ErrDomain},
		{"<user@[tag:stuff]>", "", "", false, ErrDomain},
		{"<user@xn--zz.edu>", "", "", false, ErrDomain},
		{"<" + strings.Repeat("a", 65) + "@example.edu>", "", "", false, ErrTooLong},
		{"<" + strings.Repeat("a", 64) + "@example.edu>", strings.Repeat("a", 64), "example.edu", false, nil},
		{"<a@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("e", 60) + ".edu>", "", "", false, ErrTooLong},
		{"<a@" + strings.Repeat("b", 64) + ".edu>", "", "", false, ErrDomain},
		{"<user\r\n@example.edu>", "", "", false, ErrSyntax},
	}
	for _, tc := range cases {
		a, err := ParsePath(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParsePath(%q) err = %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePath(%q) err = %v", tc.in, err)
			continue
		}
		if a.Local != tc.local || a.Domain != tc.domain || a.IsLiteral != tc.literal {
			t.Errorf("ParsePath(%q) = %+v, want local %q domain %q literal %v", tc.in, a, tc.local, tc.domain, tc.literal)
		}
	}
}

func TestCanonicalDomain(t *testing.T) {
	same := [][]string{
		{"example.edu", "EXAMPLE.EDU", "Example.Edu.", "example.edu."},
		{"xn--bcher-kva.example", "bücher.example", "BÜCHER.example", "XN--BCHER-KVA.EXAMPLE"},
	}
	for _, group := range same {
		want, err := CanonicalDomain(group[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range group {
			got, err := CanonicalDomain(s)
			if err != nil || got != want {
				t.Errorf("CanonicalDomain(%q) = %q, %v; want %q", s, got, err, want)
			}
			again, _ := CanonicalDomain(got)
			if again != got {
				t.Errorf("not idempotent: %q -> %q", got, again)
			}
		}
	}
	// A Cyrillic 'а' lookalike is a different domain.
	look, err := CanonicalDomain("exаmple.edu")
	if err != nil {
		t.Fatal(err)
	}
	if look == "example.edu" || !strings.HasPrefix(look, "xn--") {
		t.Errorf("lookalike canonicalised to %q", look)
	}
	for _, bad := range []string{"", ".", "[1.2.3.4]", "a..b", "a b", "-a.edu", "a_b.edu", strings.Repeat("a", 64) + ".edu"} {
		if _, err := CanonicalDomain(bad); err == nil {
			t.Errorf("CanonicalDomain(%q) accepted", bad)
		}
	}
}

func TestDomainList(t *testing.T) {
	l, err := NewDomainList([]string{"example.edu", ".dept.example.org", "*.lab.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		domain string
		want   bool
	}{
		{"example.edu", true},
		{"EXAMPLE.EDU.", true},
		{"mail.example.edu", false}, // exact entry: subdomains not included
		{"evilexample.edu", false},
		{"example.edu.evil.com", false},
		{"exаmple.edu", false}, // Cyrillic а
		{"xn--exmple-4nf.edu", false},
		{"dept.example.org", false}, // ".dept" means subdomains only
		{"a.dept.example.org", true},
		{"a.b.dept.example.org", true},
		{"adept.example.org", false},
		{"x.lab.example.net", true},
		{"lab.example.net", false},
		{"[192.0.2.1]", false},
		{"", false},
		{"example.edu@evil.com", false},
	}
	for _, tc := range cases {
		if got := l.Contains(tc.domain); got != tc.want {
			t.Errorf("Contains(%q) = %v, want %v", tc.domain, got, tc.want)
		}
	}
	for _, bad := range []string{"*", ".", ".edu", "*.edu", "a*.example.edu", "user@example.edu", "[1.2.3.4]"} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("ParsePattern(%q) accepted", bad)
		}
	}
}

// The open-relay tricks of issue 3: whatever the spelling, the domain the
// policy sees is the one mail would really be delivered to.
func TestRoutingTricksResolveToRealDomain(t *testing.T) {
	l, _ := NewDomainList([]string{"example.edu"})
	for _, in := range []string{
		"<victim%outside.com@example.edu>",
		"<outside.com!victim@example.edu>",
		`<"victim@outside.com"@example.edu>`,
		"<victim@EXAMPLE.edu.>",
	} {
		a, err := ParsePath(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !l.Contains(a.Domain) {
			t.Errorf("%s: domain %q should be the affiliated one", in, a.Domain)
		}
	}
	for _, in := range []string{
		"<victim@outside.com>",
		"<victim@example.edu.outside.com>",
		"<victim@outsideexample.edu>",
		"<victim@[127.0.0.1]>",
		"<victim@exаmple.edu>",
	} {
		a, err := ParsePath(in)
		if err != nil {
			continue
		}
		if l.Contains(a.Domain) {
			t.Errorf("%s: domain %q must not be affiliated", in, a.Domain)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, in := range []string{"a@b.c", `"a b"@c.d`, `"a\\b"@c.d`, "x@[IPv6:::1]", "用户@bücher.example"} {
		a, err := Parse(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		b, err := Parse(a.String())
		if err != nil || b != a {
			t.Errorf("round trip %q -> %q -> %+v, %v", in, a.String(), b, err)
		}
	}
	a, _ := Parse("u@xn--bcher-kva.example")
	if a.UnicodeDomain() != "bücher.example" {
		t.Errorf("UnicodeDomain = %q", a.UnicodeDomain())
	}
}
