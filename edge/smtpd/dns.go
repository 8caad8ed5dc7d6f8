package smtpd

import (
	"context"
	"net/netip"

	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/shared/resolver"
)

// Resolver is the part of the shared resolver the intake uses
// (*resolver.Resolver).
type Resolver interface {
	FCrDNS(ctx context.Context, ip netip.Addr) (resolver.FCrDNSResult, error)
	MailDomainExists(ctx context.Context, domain string) (bool, error)
}

// NewDNS adapts r to the policy's view of DNS: a temporary failure
// (timeout, SERVFAIL) becomes TempFail / DomainTempFail so the policy
// answers 4xx, never 5xx.
func NewDNS(r Resolver) DNS { return resolverDNS{r} }

type resolverDNS struct{ r Resolver }

func (d resolverDNS) Identify(ctx context.Context, ip netip.Addr) policy.Identity {
	res, err := d.r.FCrDNS(ctx, ip)
	if err != nil && resolver.IsTemporary(err) {
		return policy.Identity{TempFail: true, Explain: "DNS failure: " + err.Error()}
	}
	if err == nil && res.Name != "" {
		return policy.Identity{Name: res.Name, Names: res.Names}
	}
	why := res.Explain()
	if why == "" && err != nil {
		why = err.Error()
	}
	if why == "" {
		why = "no forward-confirmed DNS name"
	}
	return policy.Identity{Explain: why}
}

func (d resolverDNS) MailDomain(ctx context.Context, domain string) policy.DomainStatus {
	ok, err := d.r.MailDomainExists(ctx, domain)
	switch {
	case err != nil && resolver.IsTemporary(err):
		return policy.DomainTempFail
	case err != nil || !ok:
		return policy.DomainNoMail
	}
	return policy.DomainOK
}
