// Package tlspolicy decides, per destination domain and MX host, what TLS
// outbound delivery requires and how the server's certificate is
// verified. It is the delivery.TLSPolicy of an edge that delivers to MX
// hosts (a smarthost keeps the static delivery.tls).
//
// The decision, in order:
//
//  1. A per-domain override ([[delivery.tls_policy]], Postfix's
//     smtp_tls_policy_maps) is authoritative for its domain: "none",
//     "may", "encrypt", "verify" or "dane", and an optional list of MX
//     hosts to pin (other MX hosts are not used).
//  2. DANE (RFC 7672), when a DNSSEC-validating resolver is configured:
//     for an MX host of an authenticated MX answer, DNSSEC-signed TLSA
//     records at _25._tcp.<mx> make TLS mandatory and authenticate the
//     certificate (DANE-EE 3 x x: the certificate or key matches, name and
//     expiry are not checked; DANE-TA 2 x x: the chain leads to the
//     matching trust anchor and the leaf is valid for the MX host name).
//     PKIX-TA/EE records (usages 0 and 1) are not usable for SMTP (RFC
//     7672 §3.1.3); a set of only unusable records still makes TLS
//     mandatory, unauthenticated. A TLSA lookup that fails (a validating
//     resolver's SERVFAIL) refuses the host rather than downgrading.
//  3. MTA-STS (RFC 8461), see sts.go: in "enforce" mode only MX hosts the
//     policy lists, with a certificate valid (WebPKI) for their name; in
//     "testing" mode the same checks are made and a failure is recorded,
//     not enforced.
//  4. Otherwise delivery.tls (opportunistic by default).
//
// A refused host is an error from Requirement: delivery records a
// temporary failure (4.7.x) for it and tries the next MX; when none is
// usable the message stays queued. Nothing in here ever turns a required
// TLS into plaintext.
package tlspolicy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/shared/resolver"
)

// DNSSEC is the authenticated DNS DANE needs (*resolver.Validating).
type DNSSEC interface {
	LookupMX(ctx context.Context, domain string) ([]resolver.MX, bool, error)
	LookupTLSA(ctx context.Context, host string, port int) ([]*dns.TLSA, bool, error)
}

// Rule is one per-domain override (config.TLSPolicy).
type Rule struct {
	// Domain is "example.com", or ".example.com" for its subdomains.
	Domain string
	// Mode is "none", "may", "encrypt", "verify" or "dane".
	Mode string
	// MX pins the MX hosts (names or "*.example.com" patterns).
	MX []string
}

// Options configure a Policy.
type Options struct {
	// Default applies where no rule, DANE or MTA-STS policy does
	// (delivery.tls).
	Default delivery.TLSMode
	Rules   []Rule
	// DNSSEC enables DANE; nil: no DANE.
	DNSSEC DNSSEC
	// STS enables MTA-STS; nil: no MTA-STS.
	STS *STS
	// RootCAs verify WebPKI certificates (verify mode, MTA-STS, DANE is
	// independent of them); nil: the system roots.
	RootCAs *x509.CertPool
	// Clock is the time DANE-TA chains are checked at; nil: time.Now.
	Clock func() time.Time
	Log   *slog.Logger
}

// Policy implements delivery.TLSPolicy.
type Policy struct {
	o     Options
	rules map[string]Rule // by lower-case domain, ".example.com" for subdomain rules
}

// New checks the rules and returns a Policy.
func New(o Options) (*Policy, error) {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &Policy{o: o, rules: map[string]Rule{}}
	for _, r := range o.Rules {
		d := normHost(r.Domain)
		if d == "" || d == "." {
			return nil, fmt.Errorf("tlspolicy: empty domain in a rule")
		}
		switch r.Mode {
		case "none", "may", "encrypt", "verify":
		case "dane":
			if o.DNSSEC == nil {
				return nil, fmt.Errorf("tlspolicy: %s: mode \"dane\" needs a DNSSEC-validating resolver", r.Domain)
			}
		default:
			return nil, fmt.Errorf("tlspolicy: %s: unknown mode %q", r.Domain, r.Mode)
		}
		p.rules[d] = r
	}
	return p, nil
}

// rule returns the override for domain: an exact entry, else the
// ".parent" entry of the nearest parent.
func (p *Policy) rule(domain string) (Rule, bool) {
	d := normHost(domain)
	if r, ok := p.rules[d]; ok {
		return r, true
	}
	for {
		_, rest, ok := strings.Cut(d, ".")
		if !ok || rest == "" {
			return Rule{}, false
		}
		if r, ok := p.rules["."+rest]; ok {
			return r, true
		}
		d = rest
	}
}

// Requirement implements delivery.TLSPolicy.
func (p *Policy) Requirement(ctx context.Context, domain, host string) (delivery.TLSRequirement, error) {
	domain, host = normHost(domain), normHost(host)
	if r, ok := p.rule(domain); ok {
		return p.fromRule(ctx, r, domain, host)
	}
	if p.o.DNSSEC != nil {
		d, err := p.dane(ctx, domain, host)
		if err != nil {
			return delivery.TLSRequirement{}, err
		}
		if d.present {
			return d.req, nil
		}
	}
	req := p.static(p.o.Default, host, "delivery.tls")
	req.Report = &delivery.ReportPolicy{Type: delivery.PolicyNotFound, Domain: domain}
	if p.o.STS != nil {
		if pol := p.o.STS.Policy(ctx, domain); pol != nil {
			return p.fromSTS(pol, domain, host)
		}
		if f := p.o.STS.FetchFailure(domain); f != "" {
			// The domain announces a policy the edge could not get:
			// delivered as without one, reported as an STS failure.
			req.Report = &delivery.ReportPolicy{Type: delivery.PolicySTS, Domain: domain}
			req.ReportFailure, req.ReportDetail = f, "the MTA-STS policy of "+domain+" could not be fetched"
		}
	}
	return req, nil
}

func (p *Policy) static(m delivery.TLSMode, host, from string) delivery.TLSRequirement {
	return delivery.TLSRequirement{Mode: m, ServerName: host, RootCAs: p.o.RootCAs, Policy: from}
}

func (p *Policy) fromRule(ctx context.Context, r Rule, domain, host string) (delivery.TLSRequirement, error) {
	if len(r.MX) > 0 && !matchAny(r.MX, host) {
		return delivery.TLSRequirement{}, fmt.Errorf("%s is not among the MX hosts delivery.tls_policy pins for %s", host, domain)
	}
	switch r.Mode {
	case "none":
		return p.static(delivery.NoTLS, host, "tls_policy"), nil
	case "may":
		return p.static(delivery.Opportunistic, host, "tls_policy"), nil
	case "encrypt":
		return p.static(delivery.Required, host, "tls_policy"), nil
	case "verify":
		return p.static(delivery.Verify, host, "tls_policy"), nil
	}
	// The override is the operator's, not a published policy: it is not
	// reported (TLSRPT) and not set aside by "TLS-Required: No".
	d, err := p.dane(ctx, domain, host)
	switch {
	case err != nil:
		return delivery.TLSRequirement{}, errors.New(err.Error())
	case !d.present || d.req.Verify == nil:
		return delivery.TLSRequirement{}, fmt.Errorf("%s has no usable DNSSEC-signed TLSA records, and delivery.tls_policy requires DANE for %s (%s)", host, domain, d.why)
	}
	d.req.Policy = "tls_policy dane"
	d.req.Report = nil
	return d.req, nil
}

// daneResult is the DANE decision for one MX host.
type daneResult struct {
	present bool // TLSA records apply: TLS is mandatory
	req     delivery.TLSRequirement
	why     string // why DANE does not apply, for messages
}

// TLSAPort is the port in the TLSA owner name of MX hosts (_25._tcp),
// whatever port delivery connects to.
const TLSAPort = 25

func (p *Policy) dane(ctx context.Context, domain, host string) (daneResult, error) {
	mxs, ad, err := p.o.DNSSEC.LookupMX(ctx, domain)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		// No MX: the domain is its own MX, secure if the denial is.
		if host != domain || !ad {
			return daneResult{why: "the MX answer is not DNSSEC-signed"}, nil
		}
	case err != nil && resolver.IsTemporary(err):
		return daneResult{}, fmt.Errorf("DNSSEC MX lookup for %s failed, so DANE cannot be ruled out: %w", domain, err)
	case err != nil:
		return daneResult{why: err.Error()}, nil
	case !ad:
		return daneResult{why: "the MX answer is not DNSSEC-signed"}, nil
	default:
		found := false
		for _, mx := range mxs {
			found = found || normHost(mx.Host) == host
		}
		if !found {
			return daneResult{why: "the host is not in the authenticated MX answer"}, nil
		}
	}
	recs, ad, err := p.o.DNSSEC.LookupTLSA(ctx, host, TLSAPort)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		return daneResult{why: "no TLSA records"}, nil
	case err != nil && resolver.IsTemporary(err):
		// RFC 7672 §2.2: a failed TLSA lookup in a signed zone makes
		// the host unusable, it must not be taken as "no TLSA".
		return daneResult{}, &delivery.ReportError{Type: delivery.ResultDNSSECInvalid,
			Policy: &delivery.ReportPolicy{Type: delivery.PolicyTLSA, Domain: domain},
			Err:    fmt.Errorf("TLSA lookup for %s failed (DNSSEC-signed MX): %w", host, err)}
	case err != nil:
		return daneResult{why: err.Error()}, nil
	case !ad:
		return daneResult{why: "the TLSA records are not DNSSEC-signed"}, nil
	}
	usable := Usable(recs)
	report := &delivery.ReportPolicy{Type: delivery.PolicyTLSA, Domain: domain}
	for _, r := range recs {
		report.String = append(report.String, tlsaString(r))
	}
	if len(usable) == 0 {
		// RFC 7672 §2.2: records present but none usable: mandatory
		// TLS, without authentication.
		return daneResult{present: true, why: "no usable TLSA records (only PKIX or unknown parameters)",
			req: delivery.TLSRequirement{Mode: delivery.Required, ServerName: host, Policy: "dane (no usable TLSA)", Report: report,
				ReportFailure: delivery.ResultTLSAInvalid, ReportDetail: "no usable TLSA records for " + host + " (only PKIX usages or unknown parameters)"}}, nil
	}
	return daneResult{present: true, req: delivery.TLSRequirement{
		Report:     report,
		Mode:       delivery.Verify,
		ServerName: host,
		Verify:     VerifyDANE(usable, host, p.o.Clock),
		VerifyID:   tlsaID(usable),
		Verified:   delivery.VerifDANE,
		Policy:     "dane",
	}}, nil
}

func (p *Policy) fromSTS(pol *STSPolicy, domain, host string) (delivery.TLSRequirement, error) {
	listed := pol.Match(host)
	report := pol.report()
	if pol.Mode == STSEnforce {
		if !listed {
			return delivery.TLSRequirement{}, &delivery.ReportError{Type: delivery.ResultValidationFailure, Policy: report,
				Err: fmt.Errorf("%s is not listed in the MTA-STS policy of %s (mode enforce)", host, domain)}
		}
		return delivery.TLSRequirement{Mode: delivery.Verify, ServerName: host, RootCAs: p.o.RootCAs,
			Verified: delivery.VerifMTASTS, Policy: "mta-sts", Report: report}, nil
	}
	// testing: check as enforce would, record, deliver anyway.
	roots := p.o.RootCAs
	return delivery.TLSRequirement{Mode: delivery.Opportunistic, ServerName: host, RootCAs: roots,
		Verify: func(cs tls.ConnectionState) error {
			if !listed {
				return fmt.Errorf("mta-sts testing: %s is not listed in the policy of %s", host, domain)
			}
			if err := verifyPKIX(cs, host, roots, p.o.Clock()); err != nil {
				return fmt.Errorf("mta-sts testing: %w", err)
			}
			return nil
		},
		VerifyID:   "sts-testing " + pol.ID,
		ReportOnly: true,
		Verified:   delivery.VerifMTASTS,
		Policy:     "mta-sts testing",
		Report:     report,
	}, nil
}

// normHost lower-cases a name and drops a trailing dot.
func normHost(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// matchAny reports whether host matches one of the patterns: a name, or
// "*.example.com" matching exactly one label in front of example.com
// (RFC 8461 §4.1).
func matchAny(patterns []string, host string) bool {
	host = normHost(host)
	for _, p := range patterns {
		p = normHost(p)
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if p == host {
			return true
		}
	}
	return false
}
