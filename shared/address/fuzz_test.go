package address

import "testing"

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"<a@b.c>", `<"x@y"@b.c>`, "<@a:b@c>", "<a@[1.2.3.4]>", "<a%b!c@d.e.>", "<用户@bücher.example>", "<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParsePath(s)
		if err != nil {
			return
		}
		b, err := ParsePath("<" + a.String() + ">")
		if err != nil {
			t.Fatalf("%q parsed to %q which does not re-parse: %v", s, a.String(), err)
		}
		if a != b {
			t.Fatalf("round trip changed %+v to %+v", a, b)
		}
		if !a.IsLiteral {
			d, err := CanonicalDomain(a.Domain)
			if err != nil || d != a.Domain {
				t.Fatalf("domain %q not canonical: %q %v", a.Domain, d, err)
			}
		}
		if len(a.Local) > MaxLocalPart {
			t.Fatalf("local part too long accepted: %q", a.Local)
		}
	})
}

func FuzzPattern(f *testing.F) {
	f.Add("example.edu", "mail.example.edu")
	f.Add(".example.edu", "evilexample.edu")
	f.Add("*.example.edu", "example.edu.evil.com")
	f.Fuzz(func(t *testing.T, pat, domain string) {
		p, err := ParsePattern(pat)
		if err != nil {
			return
		}
		if !p.Match(domain) {
			return
		}
		d, err := CanonicalDomain(domain)
		if err != nil {
			t.Fatalf("matched a non-domain %q", domain)
		}
		if d != p.Domain && !(p.Subdomains && len(d) > len(p.Domain) && d[len(d)-len(p.Domain)-1:] == "."+p.Domain) {
			t.Fatalf("%v matched %q without a label boundary", p, d)
		}
		if !p.Subdomains && d != p.Domain {
			t.Fatalf("exact %v matched %q", p, d)
		}
	})
}
