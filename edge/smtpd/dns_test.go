package smtpd

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

// TestResolverDNS checks the adapter from the shared resolver to the
// policy's view against a real DNS server on loopback: confirmed names,
// mismatches, missing PTRs and DNS failures (never permanent).
func TestResolverDNS(t *testing.T) {
	d := dnstest.Start(t)
	d.AddPTR("127.0.0.10", "scanner.example.edu")
	d.AddA("scanner.example.edu", "127.0.0.10")
	d.AddPTR("127.0.0.11", "scanner.example.edu")
	d.Drop(dnstest.ReverseName("127.0.0.12"))
	d.SetRcode(dnstest.ReverseName("127.0.0.14"), dns.TypePTR, dns.RcodeServerFailure)
	d.AddMX("example.edu", 10, "mx.example.edu")
	d.AddA("mx.example.edu", "127.0.0.99")
	d.AddA("implicit.example.org", "127.0.0.98")
	d.AddMX("nullmx.example.org", 0, ".")
	d.SetRcode("servfail.example.org", dns.TypeMX, dns.RcodeServerFailure)
	d.Drop("timeout.example.org")
	r, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: 300 * time.Millisecond, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	dns := NewDNS(r)
	ctx := context.Background()
	ids := []struct {
		ip       string
		name     string
		temp     bool
		explains string
	}{
		{"127.0.0.10", "scanner.example.edu", false, ""},
		{"127.0.0.11", "", false, "scanner.example.edu"},
		{"127.0.0.12", "", true, ""},
		{"127.0.0.13", "", false, ""},
		{"127.0.0.14", "", true, ""},
	}
	for _, tc := range ids {
		id := dns.Identify(ctx, netip.MustParseAddr(tc.ip))
		if id.Name != tc.name || id.TempFail != tc.temp || !strings.Contains(id.Explain, tc.explains) {
			t.Errorf("Identify(%s) = %+v", tc.ip, id)
		}
		if id.Name == "" && id.Explain == "" {
			t.Errorf("Identify(%s): no explanation for the refusal", tc.ip)
		}
	}
	doms := []struct {
		domain string
		want   policy.DomainStatus
	}{
		{"example.edu", policy.DomainOK},
		{"implicit.example.org", policy.DomainOK},
		{"nxdomain.example.org", policy.DomainNoMail},
		{"nullmx.example.org", policy.DomainNoMail},
		{"servfail.example.org", policy.DomainTempFail},
		{"timeout.example.org", policy.DomainTempFail},
	}
	for _, tc := range doms {
		if got := dns.MailDomain(ctx, tc.domain); got != tc.want {
			t.Errorf("MailDomain(%s) = %v, want %v", tc.domain, got, tc.want)
		}
	}
}
