// Package resolver is the DNS stub resolver that edge intake (FCrDNS of
// clients, sender-domain checks), edge delivery (MX routing) and central
// (the live FCrDNS check on the registration form) share.
//
// It speaks DNS itself with miekg/dns to the configured recursive servers
// (dns.resolvers, or /etc/resolv.conf) instead of using the system
// resolver, so that it can tell a definite negative answer from a failure:
//
//   - ErrNotFound (NXDOMAIN, NODATA), ErrNullMX and ErrInvalidName are
//     permanent answers;
//   - everything else (SERVFAIL, REFUSED, timeouts, network errors) is a
//     *TempError, and IsTemporary reports true, so a DNS problem is never
//     turned into a permanent SMTP refusal.
//
// Queries go over UDP with EDNS0 (1232-byte buffer), are repeated over TCP
// when the answer is truncated, and are tried on each server in turn.
// Responses whose question does not match are rejected (miekg/dns already
// uses random IDs and drops mismatched IDs). The two dns.Clients are made
// once; each exchange still dials its own UDP socket, so every query has a
// fresh random source port (a shared socket would leave only the 16-bit
// ID against spoofed answers).
//
// Answers are cached in a bounded LRU for their TTL (the smallest TTL in
// the answer, capped at MaxTTL); NXDOMAIN and NODATA are cached for the
// SOA's negative TTL (RFC 2308, capped at MaxNegTTL), or for a minute when
// the server sent no SOA. Temporary failures are not cached. Identical
// concurrent lookups share one query. Expiry follows Options.Clock, so
// tests control time.
//
// Serve-stale (RFC 8767): an answer is kept for Options.ServeStale (default
// one day) past its TTL. When a refresh fails temporarily, or gives no
// answer within 1.8 s, the expired positive answer is returned with a TTL
// of 30 s, and for 30 s no refresh is tried again, so an outage costs one
// timeout per name and not one per lookup. This covers every lookup (MX,
// PTR and A/AAAA for FCrDNS, sender domains). An expired negative answer is
// never relied on: it gives a *TempError (its Stale field holds the old
// answer), so stale data cannot turn into a permanent refusal. Past the
// bound the lookup fails temporarily as without a cache.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Options fields left zero.
const (
	DefaultTimeout   = 2 * time.Second
	DefaultAttempts  = 2
	DefaultCacheSize = 10000
	DefaultMaxTTL    = time.Hour
	DefaultMaxNegTTL = 15 * time.Minute
	// DefaultServeStale is how long past its TTL an answer may be served
	// while the servers fail (dns.serve_stale).
	DefaultServeStale = 24 * time.Hour
	// StaleTTL is the TTL of a stale answer and how long after a failed
	// refresh the stale answer is used without asking again (RFC 8767 §4,
	// §5: 30 s).
	StaleTTL = 30 * time.Second
	// staleWait is how long a lookup holding a stale answer waits for the
	// refresh before it takes the stale answer (RFC 8767's client response
	// timer, 1.8 s); the refresh goes on and updates the cache.
	staleWait = 1800 * time.Millisecond
	// noSOANegTTL is how long NXDOMAIN/NODATA without an SOA is cached
	// (capped at MaxNegTTL). RFC 2308 §5 advises against caching it
	// because of forwarding loops between caches; a stub that asks
	// recursive servers has no such loop, and not caching at all would
	// send a query for every repeat of a common negative (a sender domain
	// without MX, a client without AAAA).
	noSOANegTTL = time.Minute
	// EDNS0 UDP buffer size recommended by DNS Flag Day 2020: avoids IP
	// fragmentation.
	ednsSize = 1232
	// maxCNAME bounds the CNAME chain a lookup follows.
	maxCNAME = 8
)

// Options configures a Resolver. Zero values take the defaults above.
type Options struct {
	// Servers are recursive resolvers as "host:port" or bare IPs (port 53).
	// Empty means the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server (per UDP or TCP exchange).
	Timeout time.Duration
	// Attempts is how many rounds over all servers a query makes before it
	// fails temporarily.
	Attempts int
	// CacheSize is the number of questions cached; negative disables the
	// cache.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached.
	MaxTTL time.Duration
	// MaxNegTTL caps how long NXDOMAIN/NODATA is cached.
	MaxNegTTL time.Duration
	// ServeStale is how long past its TTL a cached answer is kept and
	// served while the servers fail (RFC 8767); 0 = DefaultServeStale,
	// negative = never serve stale.
	ServeStale time.Duration
	// Clock returns the current time for cache expiry; nil = time.Now.
	Clock func() time.Time
	// Log receives debug lines about failed queries; nil = discard.
	Log *slog.Logger
	// ResolvConf is the file read when Servers is empty; "" =
	// /etc/resolv.conf.
	ResolvConf string
}

// Resolver is a caching DNS stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers   []string
	timeout   time.Duration
	attempts  int
	maxTTL    time.Duration
	maxNegTTL time.Duration
	stale     time.Duration // serve-stale bound; 0 = off
	now       func() time.Time
	log       *slog.Logger
	cache     *cache
	udp, tcp  *dns.Client

	mu      sync.Mutex
	flights map[cacheKey]*flight

	lookups, hits, misses, errs, queries, staleServed atomic.Uint64
}

// Stats are counters since the Resolver was made, for metrics.
type Stats struct {
	Lookups     uint64 // questions asked (hits + misses)
	CacheHits   uint64 // answered from the cache
	CacheMisses uint64 // not in the cache (a query was made or joined)
	Errors      uint64 // questions that failed temporarily
	Queries     uint64 // messages sent to servers (UDP and TCP)
	Stale       uint64 // answers served stale because the servers failed
}

// New makes a Resolver. It fails when no server is configured or a server
// address does not parse.
func New(opts Options) (*Resolver, error) {
	r := &Resolver{
		timeout:   opts.Timeout,
		attempts:  opts.Attempts,
		maxTTL:    opts.MaxTTL,
		maxNegTTL: opts.MaxNegTTL,
		now:       opts.Clock,
		log:       opts.Log,
		flights:   map[cacheKey]*flight{},
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.attempts <= 0 {
		r.attempts = DefaultAttempts
	}
	if r.maxTTL <= 0 {
		r.maxTTL = DefaultMaxTTL
	}
	if r.maxNegTTL <= 0 {
		r.maxNegTTL = DefaultMaxNegTTL
	}
	switch {
	case opts.ServeStale == 0:
		r.stale = DefaultServeStale
	case opts.ServeStale > 0:
		r.stale = opts.ServeStale
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	size := opts.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	r.cache = newCache(size)

	servers := opts.Servers
	if len(servers) == 0 {
		path := opts.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("resolver: reading nameservers: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("resolver: no nameserver in %s", path)
		}
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, fmt.Errorf("resolver: server %q: %w", s, err)
		}
		r.servers = append(r.servers, addr)
	}
	return r, nil
}

// serverAddr normalises "IP", "IP:port", "[v6]:port" or "host:port" to a
// dialable address with a port.
func serverAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return "", errors.New("want IP, IP:port or host:port")
	}
	return s, nil
}

// Servers returns the server addresses in the order they are tried.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Lookups:     r.lookups.Load(),
		CacheHits:   r.hits.Load(),
		CacheMisses: r.misses.Load(),
		Errors:      r.errs.Load(),
		Queries:     r.queries.Load(),
		Stale:       r.staleServed.Load(),
	}
}

// flight is one query in progress; concurrent askers of the same question
// wait for it instead of sending their own.
type flight struct {
	done chan struct{}
	res  result
	err  error // temporary failure
}

// query answers one question from the cache or the network. It returns the
// answer section (CNAMEs included, not yet chased), or ErrNXDomain /
// ErrNoData (wrapped), or a *TempError. An expired answer still inside the
// serve-stale window is refreshed, and served stale when the refresh fails.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	k := cacheKey{strings.ToLower(dns.Fqdn(name)), qtype}
	if err := ctx.Err(); err != nil {
		return nil, &TempError{Name: k.name, Qtype: qtype, Rcode: -1, Err: err}
	}
	r.lookups.Add(1)
	now := r.now()
	cached, fresh, have := r.cache.get(k, now)
	if have && fresh {
		r.hits.Add(1)
		return cached.rrs, wrapNeg(k, cached.err)
	}
	if have && now.Before(cached.recheck) {
		// A refresh failed moments ago: do not wait for another timeout.
		r.hits.Add(1)
		return r.serveStale(k, cached, nil)
	}
	r.misses.Add(1)

	r.mu.Lock()
	f, joined := r.flights[k]
	if !joined {
		f = &flight{done: make(chan struct{})}
		r.flights[k] = f
	}
	r.mu.Unlock()

	if !joined {
		// The shared query must not die with the first caller's context:
		// others may be waiting on it. It is bounded by the per-exchange
		// timeouts instead.
		go func() {
			f.res, f.err = r.resolve(context.WithoutCancel(ctx), k)
			if f.err == nil {
				r.store(k, f.res)
			} else {
				r.errs.Add(1)
				r.cache.markRecheck(k, r.now().Add(StaleTTL))
			}
			r.mu.Lock()
			delete(r.flights, k)
			r.mu.Unlock()
			close(f.done)
		}()
	}
	var early <-chan time.Time
	if have && cached.err == nil {
		t := time.NewTimer(staleWait)
		defer t.Stop()
		early = t.C
	}
	select {
	case <-f.done:
		if f.err != nil {
			if have {
				return r.serveStale(k, cached, f.err)
			}
			return nil, f.err
		}
		return f.res.rrs, wrapNeg(k, f.res.err)
	case <-early:
		return r.serveStale(k, cached, nil)
	case <-ctx.Done():
		err := &TempError{Name: k.name, Qtype: qtype, Rcode: -1, Err: ctx.Err()}
		if have {
			return r.serveStale(k, cached, err)
		}
		return nil, err
	}
}

// serveStale answers with res, an expired cache entry, because refreshing
// it failed (cause; nil when the failure was earlier or the refresh is
// still running). A positive answer is returned with its TTLs set to
// StaleTTL; a negative one becomes a temporary failure.
func (r *Resolver) serveStale(k cacheKey, res result, cause error) ([]dns.RR, error) {
	if res.err != nil {
		te := &TempError{Name: k.name, Qtype: k.qtype, Rcode: -1,
			Err: errors.New("servers are failing; the last answer is past its TTL")}
		var c *TempError
		if errors.As(cause, &c) {
			cp := *c
			te = &cp
		}
		te.Stale = res.err
		return nil, te
	}
	r.staleServed.Add(1)
	r.log.Debug("dns: serving stale answer", "name", k.name, "type", dns.TypeToString[k.qtype], "cause", errString(cause))
	rrs := make([]dns.RR, len(res.rrs))
	for i, rr := range res.rrs {
		rrs[i] = dns.Copy(rr)
		rrs[i].Header().Ttl = uint32(StaleTTL / time.Second)
	}
	return rrs, nil
}

func errString(err error) string {
	if err == nil {
		return "refresh failed recently or is slow"
	}
	return err.Error()
}

func wrapNeg(k cacheKey, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", strings.TrimSuffix(k.name, "."), dns.TypeToString[k.qtype], err)
}

// store caches res: fresh until now + res.ttl, then kept for the
// serve-stale window.
func (r *Resolver) store(k cacheKey, res result) {
	if res.ttl <= 0 && r.stale <= 0 {
		return
	}
	res.expires = r.now().Add(res.ttl)
	res.staleUntil = res.expires.Add(r.stale)
	r.cache.put(k, res)
}

// resolve asks the servers in turn, for r.attempts rounds, until one gives
// a definite answer. The result's ttl says how long it may be cached.
func (r *Resolver) resolve(ctx context.Context, k cacheKey) (result, error) {
	te := &TempError{Name: k.name, Qtype: k.qtype, Rcode: -1}
	for range r.attempts {
		for _, srv := range r.servers {
			resp, err := r.exchange(ctx, srv, k.name, k.qtype)
			if err != nil {
				te.Err, te.Rcode = err, -1
				r.log.Debug("dns query failed", "server", srv, "name", k.name,
					"type", dns.TypeToString[k.qtype], "err", err)
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess:
				if len(resp.Answer) == 0 && soaOf(resp) == nil && hasNS(resp) {
					// A referral: the server does not recurse for us.
					te.Err, te.Rcode = fmt.Errorf("server %s sent a referral (not a recursive resolver)", srv), -1
					continue
				}
				if len(resp.Answer) == 0 {
					return result{err: ErrNoData, ttl: r.negTTL(resp)}, nil
				}
				return result{rrs: resp.Answer, ttl: r.posTTL(resp.Answer)}, nil
			case dns.RcodeNameError:
				return result{err: ErrNXDomain, ttl: r.negTTL(resp)}, nil
			default:
				te.Rcode, te.Err = resp.Rcode, nil
				r.log.Debug("dns server error", "server", srv, "name", k.name,
					"type", dns.TypeToString[k.qtype], "rcode", dns.RcodeToString[resp.Rcode])
			}
		}
	}
	return result{}, te
}

// exchange sends one question to one server: UDP with EDNS0, TCP when the
// UDP answer is truncated, and without EDNS0 when the server answers
// FORMERR to it.
func (r *Resolver) exchange(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	resp, err := r.exchangeNet(ctx, "udp", server, m)
	if err == nil && resp.Rcode == dns.RcodeFormatError {
		m.Extra = nil // an old server that does not understand EDNS0
		resp, err = r.exchangeNet(ctx, "udp", server, m)
	}
	if err == nil && resp.Truncated {
		resp, err = r.exchangeNet(ctx, "tcp", server, m)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype ||
		resp.Question[0].Qclass != dns.ClassINET || !strings.EqualFold(resp.Question[0].Name, name) {
		return nil, fmt.Errorf("server %s answered a different question", server)
	}
	return resp, nil
}

func (r *Resolver) exchangeNet(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	r.queries.Add(1)
	c := r.udp
	if network == "tcp" {
		c = r.tcp
	}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, fmt.Errorf("%s query to %s: %w", network, server, err)
	}
	return resp, nil
}

// posTTL is the smallest TTL in the answer, capped at MaxTTL.
func (r *Resolver) posTTL(rrs []dns.RR) time.Duration {
	minTTL := uint32(1<<32 - 1)
	for _, rr := range rrs {
		minTTL = min(minTTL, rr.Header().Ttl)
	}
	return min(time.Duration(minTTL)*time.Second, r.maxTTL)
}

// negTTL is the negative-caching TTL of RFC 2308 §5: the smaller of the
// SOA's TTL and its MINIMUM field, capped at MaxNegTTL. Without an SOA it
// is noSOANegTTL (see there), also capped.
func (r *Resolver) negTTL(resp *dns.Msg) time.Duration {
	soa := soaOf(resp)
	if soa == nil {
		return min(noSOANegTTL, r.maxNegTTL)
	}
	ttl := min(soa.Hdr.Ttl, soa.Minttl)
	return min(time.Duration(ttl)*time.Second, r.maxNegTTL)
}

func soaOf(m *dns.Msg) *dns.SOA {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

func hasNS(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if rr.Header().Rrtype == dns.TypeNS {
			return true
		}
	}
	return false
}
