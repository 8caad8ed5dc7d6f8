package resolver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Authenticated lookups for DANE (RFC 7672).
//
// The edge does not validate DNSSEC itself: it trusts the AD (Authentic
// Data) bit of resolvers the configuration marks as validating
// (dns.validating_resolvers, typically a local unbound), and of no other.
// A Validating asks only those servers, sets AD in the query (RFC 6840
// §5.7) so that they report it, and returns with every answer whether it
// was authenticated. Its cache is its own: AD-carrying answers never mix
// with the main Resolver's, whose servers may not validate.

// Validating is a stub resolver for lookups whose authenticity matters
// (MX and TLSA for DANE). It is safe for concurrent use.
type Validating struct {
	servers  []string
	timeout  time.Duration
	attempts int
	maxTTL   time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[cacheKey]secureEntry
}

// ValidatingOptions configure a Validating; zero values take the
// Resolver defaults.
type ValidatingOptions struct {
	// Servers are DNSSEC-validating resolvers, "IP" or "IP:port".
	Servers  []string
	Timeout  time.Duration
	Attempts int
	// MaxTTL caps how long an answer is cached.
	MaxTTL time.Duration
	Clock  func() time.Time
}

// secureCacheSize bounds the Validating cache; when full it is emptied
// (the lookups are a few per destination domain).
const secureCacheSize = 4096

type secureEntry struct {
	ans     SecureAnswer
	expires time.Time
}

// SecureAnswer is the answer to one authenticated lookup.
type SecureAnswer struct {
	// Records of the asked type (CNAMEs in the answer followed).
	Records []dns.RR
	// Authenticated reports that the validating server set AD: the
	// answer, or the denial of existence, is DNSSEC-signed.
	Authenticated bool
}

// NewValidating makes a Validating for the given servers.
func NewValidating(o ValidatingOptions) (*Validating, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("resolver: no validating server")
	}
	v := &Validating{timeout: o.Timeout, attempts: o.Attempts, maxTTL: o.MaxTTL, now: o.Clock, cache: map[cacheKey]secureEntry{}}
	if v.timeout <= 0 {
		v.timeout = DefaultTimeout
	}
	if v.attempts <= 0 {
		v.attempts = DefaultAttempts
	}
	if v.maxTTL <= 0 {
		v.maxTTL = DefaultMaxTTL
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, s := range o.Servers {
		a, err := serverAddr(s)
		if err != nil {
			return nil, fmt.Errorf("resolver: validating server %q: %w", s, err)
		}
		v.servers = append(v.servers, a)
	}
	return v, nil
}

// LookupMX returns the MX hosts of domain and whether the answer was
// authenticated. A domain without MX records gives ErrNoData (the domain
// is its own implicit MX) with Authenticated telling whether that denial
// was signed.
func (v *Validating) LookupMX(ctx context.Context, domain string) ([]MX, bool, error) {
	name, err := normName(domain)
	if err != nil {
		return nil, false, err
	}
	ans, err := v.Lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, ans.Authenticated, err
	}
	var out []MX
	for _, rr := range ans.Records {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, MX{Host: plain(mx.Mx), Pref: mx.Preference})
		}
	}
	return out, ans.Authenticated, nil
}

// LookupTLSA returns the TLSA records of _port._tcp.host (RFC 6698 §3)
// and whether they were authenticated. No records is ErrNotFound (with
// Authenticated telling whether the denial was signed); a SERVFAIL, as a
// validating resolver gives for a record that fails validation, is a
// *TempError.
func (v *Validating) LookupTLSA(ctx context.Context, host string, port int) ([]*dns.TLSA, bool, error) {
	name, err := normName(host)
	if err != nil {
		return nil, false, err
	}
	ans, err := v.Lookup(ctx, "_"+strconv.Itoa(port)+"._tcp."+name, dns.TypeTLSA)
	if err != nil {
		return nil, ans.Authenticated, err
	}
	var out []*dns.TLSA
	for _, rr := range ans.Records {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, t)
		}
	}
	return out, ans.Authenticated, nil
}

// Lookup asks for name (an FQDN) and qtype. Negative answers are
// ErrNXDomain/ErrNoData (wrapped) with the SecureAnswer's Authenticated
// set as the server said; failures are *TempError.
func (v *Validating) Lookup(ctx context.Context, name string, qtype uint16) (SecureAnswer, error) {
	k := cacheKey{strings.ToLower(dns.Fqdn(name)), qtype}
	v.mu.Lock()
	e, ok := v.cache[k]
	v.mu.Unlock()
	if !ok || !v.now().Before(e.expires) {
		ans, negErr, ttl, err := v.resolve(ctx, k)
		if err != nil {
			return SecureAnswer{}, err
		}
		e = secureEntry{ans: ans, expires: v.now().Add(ttl)}
		if negErr != nil {
			e.ans.Records = nil
		}
		if ttl > 0 {
			v.mu.Lock()
			if len(v.cache) >= secureCacheSize {
				clear(v.cache)
			}
			v.cache[k] = e
			v.mu.Unlock()
		}
		if negErr != nil {
			return e.ans, wrapNeg(k, negErr)
		}
	}
	if len(e.ans.Records) == 0 {
		return e.ans, wrapNeg(k, ErrNoData)
	}
	return e.ans, nil
}

// resolve asks the validating servers in turn. negErr is ErrNXDomain or
// ErrNoData for a negative answer.
func (v *Validating) resolve(ctx context.Context, k cacheKey) (ans SecureAnswer, negErr error, ttl time.Duration, err error) {
	te := &TempError{Name: k.name, Qtype: k.qtype, Rcode: -1}
	for range v.attempts {
		for _, srv := range v.servers {
			resp, err := v.exchange(ctx, srv, k)
			if err != nil {
				te.Err, te.Rcode = err, -1
				continue
			}
			ad := resp.AuthenticatedData
			switch resp.Rcode {
			case dns.RcodeSuccess:
				recs, _ := chase(resp.Answer, k.name, k.qtype)
				if len(recs) == 0 {
					return SecureAnswer{Authenticated: ad}, ErrNoData, negTTLOf(resp, v.maxTTL), nil
				}
				return SecureAnswer{Records: recs, Authenticated: ad}, nil, minTTL(recs, v.maxTTL), nil
			case dns.RcodeNameError:
				return SecureAnswer{Authenticated: ad}, ErrNXDomain, negTTLOf(resp, v.maxTTL), nil
			default:
				te.Rcode, te.Err = resp.Rcode, nil
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return SecureAnswer{}, nil, 0, te
}

func (v *Validating) exchange(ctx context.Context, server string, k cacheKey) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(k.name, k.qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(ednsSize, false)
	c := &dns.Client{Net: "udp", Timeout: v.timeout, UDPSize: ednsSize}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("query to %s: %w", server, err)
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != k.qtype || !strings.EqualFold(resp.Question[0].Name, k.name) {
		return nil, fmt.Errorf("server %s answered a different question", server)
	}
	return resp, nil
}

func minTTL(rrs []dns.RR, limit time.Duration) time.Duration {
	ttl := limit
	for _, rr := range rrs {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	return ttl
}

func negTTLOf(resp *dns.Msg, limit time.Duration) time.Duration {
	soa := soaOf(resp)
	if soa == nil {
		return 0
	}
	return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, limit, DefaultMaxNegTTL)
}
