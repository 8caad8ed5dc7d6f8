package resolver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/shared/dnstest"
)

func newValidating(t *testing.T, d *dnstest.Server) *Validating {
	t.Helper()
	v, err := NewValidating(ValidatingOptions{Servers: []string{d.Addr}, Timeout: 300 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The AD bit of the validating server is reported per answer: signed zone
// authenticated, unsigned zone not, and denials too.
func TestValidatingReportsAD(t *testing.T) {
	d := dnstest.Start(t)
	d.AddMX("signed.example", 10, "mx.signed.example")
	d.AddMX("plain.example", 10, "mx.plain.example")
	d.AddRR("_25._tcp.mx.signed.example. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	d.AddA("mx.signed.example", "127.0.0.2")
	d.Sign("signed.example")
	v := newValidating(t, d)
	ctx := context.Background()

	mx, ad, err := v.LookupMX(ctx, "signed.example")
	if err != nil || !ad || len(mx) != 1 || mx[0].Host != "mx.signed.example" {
		t.Errorf("signed MX = %v, ad %v, %v", mx, ad, err)
	}
	if _, ad, err := v.LookupMX(ctx, "plain.example"); err != nil || ad {
		t.Errorf("unsigned MX: ad %v, %v (want not authenticated)", ad, err)
	}
	tl, ad, err := v.LookupTLSA(ctx, "mx.signed.example", 25)
	if err != nil || !ad || len(tl) != 1 || tl[0].Usage != 3 || tl[0].Selector != 1 || tl[0].MatchingType != 1 {
		t.Errorf("TLSA = %v, ad %v, %v", tl, ad, err)
	}
	// Signed denial: no TLSA records, authenticated.
	if _, ad, err := v.LookupTLSA(ctx, "mx2.signed.example", 25); !errors.Is(err, ErrNotFound) || !ad {
		t.Errorf("signed denial: ad %v, %v", ad, err)
	}
	// A second lookup is answered from the cache.
	before := d.QueriesFor("_25._tcp.mx.signed.example", dns.TypeTLSA)
	if _, _, err := v.LookupTLSA(ctx, "mx.signed.example", 25); err != nil {
		t.Fatal(err)
	}
	if d.QueriesFor("_25._tcp.mx.signed.example", dns.TypeTLSA) != before {
		t.Error("cached TLSA answer was asked again")
	}
	// SERVFAIL (what a validator returns for a bogus record) is temporary.
	d.SetRcode("_25._tcp.bogus.signed.example", dns.TypeTLSA, dns.RcodeServerFailure)
	if _, _, err := v.LookupTLSA(ctx, "bogus.signed.example", 25); !IsTemporary(err) {
		t.Errorf("SERVFAIL TLSA: %v, want temporary", err)
	}
}

func TestLookupTXT(t *testing.T) {
	d := dnstest.Start(t)
	d.AddTXT("_mta-sts.example.com", "v=STSv1; ", "id=20261201;")
	r, err := New(Options{Servers: []string{d.Addr}, Timeout: 300 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	txt, err := r.LookupTXT(context.Background(), "_mta-sts.example.com")
	if err != nil || len(txt) != 1 || txt[0] != "v=STSv1; id=20261201;" {
		t.Errorf("TXT = %q, %v", txt, err)
	}
	if _, err := r.LookupTXT(context.Background(), "_mta-sts.nothing.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing TXT: %v", err)
	}
}
