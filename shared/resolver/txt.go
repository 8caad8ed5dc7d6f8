package resolver

import (
	"context"
	"strings"

	"github.com/miekg/dns"
)

// LookupTXT returns the TXT records of name, each with its strings
// joined (RFC 7208 §3.3 style, as MTA-STS and TLSRPT records are read).
// No TXT record is ErrNotFound; failures are *TempError.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	n, err := normName(name)
	if err != nil {
		return nil, err
	}
	rrs, err := r.lookup(ctx, n, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
