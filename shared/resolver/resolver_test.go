package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/postern/postern/shared/dnstest"
)

// clock is a settable clock for cache expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newResolver makes a resolver against srv with short timeouts and a
// controllable clock.
func newResolver(t *testing.T, clk *clock, servers ...string) *Resolver {
	t.Helper()
	opts := Options{Servers: servers, Timeout: 250 * time.Millisecond, Attempts: 1}
	if clk != nil {
		opts.Clock = clk.Now
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLookupIP(t *testing.T) {
	s := dnstest.Start(t)
	s.AddA("v4.test", "192.0.2.1", "192.0.2.2")
	s.AddA("v6.test", "2001:db8::1")
	s.AddA("both.test", "192.0.2.3", "2001:db8::3")
	s.AddCNAME("alias.test", "alias2.test")
	s.AddCNAME("alias2.test", "both.test")
	s.AddA("mixed.Case.TEST", "192.0.2.4")
	s.AddTXT("txtonly.test", "hello")
	r := newResolver(t, nil, s.Addr)

	tests := []struct {
		name string
		want []netip.Addr
		err  error
	}{
		{"v4.test", addrs("192.0.2.1", "192.0.2.2"), nil},
		{"v6.test", addrs("2001:db8::1"), nil},
		{"both.test.", addrs("192.0.2.3", "2001:db8::3"), nil},
		{"alias.test", addrs("192.0.2.3", "2001:db8::3"), nil},
		{"MIXED.case.test", addrs("192.0.2.4"), nil},
		{"txtonly.test", nil, ErrNoData},
		{"missing.test", nil, ErrNXDomain},
		{"", nil, ErrInvalidName},
		{"a..b", nil, ErrInvalidName},
	}
	for _, tc := range tests {
		got, err := r.LookupIP(ctxT(t), tc.name)
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("LookupIP(%q) error %v, want %v", tc.name, err, tc.err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("LookupIP(%q) = %v, want %v", tc.name, got, tc.want)
		}
		if tc.err != nil && (IsTemporary(err) || !errors.Is(err, ErrNotFound) && tc.err != ErrInvalidName) {
			t.Errorf("LookupIP(%q): %v must be permanent ErrNotFound", tc.name, err)
		}
	}
}

// A CNAME whose target is not in the answer is asked for separately.
func TestCNAMEChainOutsideAnswer(t *testing.T) {
	s := dnstest.Start(t)
	s.SetCNAMEChase(false)
	s.AddCNAME("a.test", "b.test")
	s.AddCNAME("b.test", "c.test")
	s.AddA("c.test", "192.0.2.7")
	s.AddCNAME("loop1.test", "loop2.test")
	s.AddCNAME("loop2.test", "loop1.test")
	r := newResolver(t, nil, s.Addr)

	got, err := r.LookupIP(ctxT(t), "a.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.7")) {
		t.Fatalf("LookupIP(a.test) = %v, %v", got, err)
	}
	if n := s.QueriesFor("c.test", dns.TypeA); n != 1 {
		t.Errorf("c.test A asked %d times, want 1", n)
	}
	_, err = r.LookupIP(ctxT(t), "loop1.test")
	if err == nil || !IsTemporary(err) {
		t.Errorf("CNAME loop: err %v, want a temporary error", err)
	}
}

func TestLookupPTR(t *testing.T) {
	s := dnstest.Start(t)
	s.AddPTR("192.0.2.10", "Scanner.Dept.Example.EDU.", "alias.example.edu")
	s.AddPTR("2001:db8::10", "v6host.example.edu")
	// RFC 2317 classless delegation: the PTR lives behind a CNAME.
	s.AddCNAME(dnstest.ReverseName("198.51.100.5"), "5.0-25.100.51.198.in-addr.arpa")
	s.AddRR("5.0-25.100.51.198.in-addr.arpa. 300 IN PTR classless.example.edu.")
	s.AddTXT(dnstest.ReverseName("192.0.2.11"), "not a ptr")
	r := newResolver(t, nil, s.Addr)

	tests := []struct {
		ip   string
		want []string
		err  error
	}{
		{"192.0.2.10", []string{"scanner.dept.example.edu", "alias.example.edu"}, nil},
		{"::ffff:192.0.2.10", []string{"scanner.dept.example.edu", "alias.example.edu"}, nil},
		{"2001:db8::10", []string{"v6host.example.edu"}, nil},
		{"198.51.100.5", []string{"classless.example.edu"}, nil},
		{"192.0.2.11", nil, ErrNoData},
		{"192.0.2.99", nil, ErrNXDomain},
		{"2001:db8::99", nil, ErrNXDomain},
	}
	for _, tc := range tests {
		got, err := r.LookupPTR(ctxT(t), netip.MustParseAddr(tc.ip))
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("LookupPTR(%s) error %v, want %v", tc.ip, err, tc.err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("LookupPTR(%s) = %q, want %q", tc.ip, got, tc.want)
		}
	}
	if _, err := r.LookupPTR(ctxT(t), netip.Addr{}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("invalid IP: %v", err)
	}
}

func TestLookupMX(t *testing.T) {
	s := dnstest.Start(t)
	s.AddMX("example.test", 20, "MX2.example.test")
	s.AddMX("example.test", 10, "mx1.example.test")
	s.AddMX("example.test", 20, "mx0.example.test")
	s.AddMX("example.test", 5, "mx-first.example.test.")
	s.AddMX("null.test", 0, ".")
	s.AddA("null.test", "192.0.2.1") // an address does not override a null MX
	s.AddA("implicit.test", "192.0.2.2", "2001:db8::2")
	s.AddTXT("nothing.test", "no mail here")
	s.AddMX("mixednull.test", 0, ".")
	s.AddMX("mixednull.test", 10, "mx.mixednull.test")
	s.SetRcode("broken.test", dns.TypeMX, dns.RcodeServerFailure)
	s.AddA("broken.test", "192.0.2.3")
	s.SetRcode("noaddr-broken.test", dns.TypeAAAA, dns.RcodeServerFailure)
	s.AddTXT("noaddr-broken.test", "x")
	r := newResolver(t, nil, s.Addr)

	got, err := r.LookupMX(ctxT(t), "Example.Test")
	want := []MX{{"mx-first.example.test", 5, false}, {"mx1.example.test", 10, false},
		{"mx0.example.test", 20, false}, {"mx2.example.test", 20, false}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupMX = %v, %v; want %v", got, err, want)
	}

	tests := []struct {
		domain    string
		mx        []MX
		mxErr     error
		hosts     []MX
		hostsErr  error
		exists    bool
		temporary bool
	}{
		{"null.test", nil, ErrNullMX, nil, ErrNullMX, false, false},
		{"implicit.test", nil, ErrNoData, []MX{{"implicit.test", 0, true}}, nil, true, false},
		{"nothing.test", nil, ErrNoData, nil, ErrNoData, false, false},
		{"nxdomain.test", nil, ErrNXDomain, nil, ErrNXDomain, false, false},
		{"mixednull.test", []MX{{"mx.mixednull.test", 10, false}}, nil, []MX{{"mx.mixednull.test", 10, false}}, nil, true, false},
		{"broken.test", nil, nil, nil, nil, false, true},
		{"noaddr-broken.test", nil, ErrNoData, nil, nil, false, true},
		{"bad..name", nil, ErrInvalidName, nil, ErrInvalidName, false, false},
	}
	for _, tc := range tests {
		mx, err := r.LookupMX(ctxT(t), tc.domain)
		if !slices.Equal(mx, tc.mx) || (tc.mxErr != nil && !errors.Is(err, tc.mxErr)) {
			t.Errorf("LookupMX(%s) = %v, %v; want %v, %v", tc.domain, mx, err, tc.mx, tc.mxErr)
		}
		hosts, err := r.LookupMailHosts(ctxT(t), tc.domain)
		if !slices.Equal(hosts, tc.hosts) || (tc.hostsErr != nil && !errors.Is(err, tc.hostsErr)) {
			t.Errorf("LookupMailHosts(%s) = %v, %v; want %v, %v", tc.domain, hosts, err, tc.hosts, tc.hostsErr)
		}
		if tc.temporary != IsTemporary(err) {
			t.Errorf("LookupMailHosts(%s) error %v: temporary=%v, want %v", tc.domain, err, IsTemporary(err), tc.temporary)
		}
		ok, err := r.MailDomainExists(ctxT(t), tc.domain)
		if ok != tc.exists || (err != nil) != tc.temporary || (err != nil && !IsTemporary(err)) {
			t.Errorf("MailDomainExists(%s) = %v, %v; want %v, temporary error %v", tc.domain, ok, err, tc.exists, tc.temporary)
		}
	}
}

// Errors are classified as permanent (definite answers) or temporary.
func TestErrorClassification(t *testing.T) {
	s := dnstest.Start(t)
	s.AddTXT("nodata.test", "x")
	s.SetRcode("servfail.test", 0, dns.RcodeServerFailure)
	s.SetRcode("refused.test", 0, dns.RcodeRefused)
	s.SetRcode("notimp.test", 0, dns.RcodeNotImplemented)
	s.AddA("slow.test", "192.0.2.1")
	s.Drop("slow.test")
	r := newResolver(t, nil, s.Addr)

	tests := []struct {
		name      string
		is        error
		temporary bool
		rcode     int
		timeout   bool
	}{
		{"nxdomain.test", ErrNXDomain, false, 0, false},
		{"nodata.test", ErrNoData, false, 0, false},
		{"servfail.test", nil, true, dns.RcodeServerFailure, false},
		{"refused.test", nil, true, dns.RcodeRefused, false},
		{"notimp.test", nil, true, dns.RcodeNotImplemented, false},
		{"slow.test", nil, true, -1, true},
	}
	for _, tc := range tests {
		_, err := r.LookupMX(ctxT(t), tc.name)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if IsTemporary(err) != tc.temporary {
			t.Errorf("%s: %v temporary=%v, want %v", tc.name, err, IsTemporary(err), tc.temporary)
		}
		if tc.is != nil && (!errors.Is(err, tc.is) || !errors.Is(err, ErrNotFound)) {
			t.Errorf("%s: %v is not %v / ErrNotFound", tc.name, err, tc.is)
		}
		var te *TempError
		if tc.temporary {
			if !errors.As(err, &te) {
				t.Errorf("%s: %v is not a *TempError", tc.name, err)
				continue
			}
			if te.Rcode != tc.rcode || te.Timeout() != tc.timeout {
				t.Errorf("%s: rcode %d timeout %v, want %d %v (%v)", tc.name, te.Rcode, te.Timeout(), tc.rcode, tc.timeout, err)
			}
		}
	}
	if IsTemporary(nil) || IsTemporary(ErrNullMX) || !IsTemporary(errors.New("other")) {
		t.Error("IsTemporary of nil / ErrNullMX / unknown is wrong")
	}
	if st := r.Stats(); st.Errors != 4 {
		t.Errorf("Stats.Errors = %d, want 4", st.Errors)
	}
}

// A caller's context ends the wait even if the server is slow.
func TestContextDeadline(t *testing.T) {
	s := dnstest.Start(t)
	s.AddA("slow.test", "192.0.2.1")
	s.SetDelay("slow.test", 2*time.Second)
	r, err := New(Options{Servers: []string{s.Addr}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r.LookupIP(ctx, "slow.test")
	if !IsTemporary(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want temporary deadline exceeded", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("returned after %v, want ~100ms", el)
	}
}

func TestCachePositiveTTL(t *testing.T) {
	s := dnstest.Start(t)
	s.AddRR("short.test. 60 IN A 192.0.2.1", "short.test. 30 IN A 192.0.2.2") // min TTL 30
	s.AddRR("long.test. 86400 IN A 192.0.2.3")                                // capped at 1h
	clk := newClock()
	r := newResolver(t, clk, s.Addr)
	ask := func(name string) {
		t.Helper()
		if _, err := r.LookupIP(ctxT(t), name); err != nil {
			t.Fatal(err)
		}
	}

	ask("short.test")
	ask("short.test")
	if n := s.QueriesFor("short.test", dns.TypeA); n != 1 {
		t.Fatalf("after 2 lookups within TTL: %d A queries, want 1", n)
	}
	clk.Advance(29 * time.Second)
	ask("short.test")
	if n := s.QueriesFor("short.test", dns.TypeA); n != 1 {
		t.Fatalf("at 29s: %d A queries, want 1 (cached)", n)
	}
	clk.Advance(2 * time.Second)
	ask("short.test")
	if n := s.QueriesFor("short.test", dns.TypeA); n != 2 {
		t.Fatalf("at 31s: %d A queries, want 2 (min TTL of the RRset expired)", n)
	}

	ask("long.test")
	clk.Advance(59 * time.Minute)
	ask("long.test")
	if n := s.QueriesFor("long.test", dns.TypeA); n != 1 {
		t.Fatalf("long TTL at 59m: %d queries, want 1", n)
	}
	clk.Advance(2 * time.Minute)
	ask("long.test")
	if n := s.QueriesFor("long.test", dns.TypeA); n != 2 {
		t.Fatalf("long TTL at 61m: %d queries, want 2 (capped at MaxTTL)", n)
	}

	st := r.Stats()
	if st.Lookups != st.CacheHits+st.CacheMisses || st.CacheHits == 0 || st.Errors != 0 {
		t.Errorf("stats inconsistent: %+v", st)
	}
}

func TestNegativeCache(t *testing.T) {
	s := dnstest.Start(t)
	s.SetNegTTL(30)
	s.AddTXT("nodata.test", "x")
	s.SetRcode("fail.test", 0, dns.RcodeServerFailure)
	clk := newClock()
	r := newResolver(t, clk, s.Addr)

	for _, tc := range []struct {
		name string
		err  error
	}{{"nx.test", ErrNXDomain}, {"nodata.test", ErrNoData}} {
		for range 3 {
			if _, err := r.LookupMX(ctxT(t), tc.name); !errors.Is(err, tc.err) {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		if n := s.QueriesFor(tc.name, dns.TypeMX); n != 1 {
			t.Errorf("%s: %d queries within negative TTL, want 1", tc.name, n)
		}
		clk.Advance(31 * time.Second)
		if _, err := r.LookupMX(ctxT(t), tc.name); !errors.Is(err, tc.err) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if n := s.QueriesFor(tc.name, dns.TypeMX); n != 2 {
			t.Errorf("%s: %d queries after negative TTL, want 2", tc.name, n)
		}
	}

	// The SOA minimum is capped at MaxNegTTL (15 min).
	s.SetNegTTL(86400)
	r.LookupMX(ctxT(t), "capped.test")
	clk.Advance(14 * time.Minute)
	r.LookupMX(ctxT(t), "capped.test")
	clk.Advance(2 * time.Minute)
	r.LookupMX(ctxT(t), "capped.test")
	if n := s.QueriesFor("capped.test", dns.TypeMX); n != 2 {
		t.Errorf("capped negative TTL: %d queries, want 2", n)
	}

	// Temporary failures are not cached: each lookup asks again.
	for range 3 {
		if _, err := r.LookupMX(ctxT(t), "fail.test"); !IsTemporary(err) {
			t.Fatalf("fail.test: %v", err)
		}
	}
	if n := s.QueriesFor("fail.test", dns.TypeMX); n != 3 {
		t.Errorf("SERVFAIL: %d queries for 3 lookups, want 3 (not cached)", n)
	}
	// And a name that recovers is seen at once.
	s.SetRcode("fail.test", 0, dns.RcodeSuccess)
	s.AddMX("fail.test", 10, "mx.fail.test")
	if mx, err := r.LookupMX(ctxT(t), "fail.test"); err != nil || len(mx) != 1 {
		t.Errorf("after recovery: %v, %v", mx, err)
	}
}

func TestCacheEviction(t *testing.T) {
	s := dnstest.Start(t)
	for i := range 3 {
		s.AddMX(fmt.Sprintf("d%d.test", i), 10, "mx.test")
	}
	r, err := New(Options{Servers: []string{s.Addr}, CacheSize: 2, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"d0.test", "d1.test", "d0.test", "d2.test", "d0.test", "d1.test"} {
		if _, err := r.LookupMX(ctxT(t), d); err != nil {
			t.Fatal(err)
		}
	}
	// d0 stays (recently used); d1 was evicted by d2 and asked again.
	for d, want := range map[string]int{"d0.test": 1, "d1.test": 2, "d2.test": 1} {
		if n := s.QueriesFor(d, dns.TypeMX); n != want {
			t.Errorf("%s: %d queries, want %d", d, n, want)
		}
	}
	if n := r.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}

	off, err := New(Options{Servers: []string{s.Addr}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.ResetQueries()
	off.LookupMX(ctxT(t), "d0.test")
	off.LookupMX(ctxT(t), "d0.test")
	if n := s.Queries(); n != 2 {
		t.Errorf("cache disabled: %d queries, want 2", n)
	}
}

// Concurrent identical lookups share one query.
func TestConcurrentLookupsCollapse(t *testing.T) {
	s := dnstest.Start(t)
	s.AddA("busy.test", "192.0.2.1")
	s.SetDelay("busy.test", 200*time.Millisecond)
	// A timeout well above the delay, so only a hang fails: the query
	// clients take it from Options when the resolver is made.
	r, err := New(Options{Servers: []string{s.Addr}, Timeout: 5 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			got, err := r.LookupIP(ctxT(t), "busy.test")
			if err == nil && !slices.Equal(got, addrs("192.0.2.1")) {
				err = fmt.Errorf("got %v", got)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if a, aaaa := s.QueriesFor("busy.test", dns.TypeA), s.QueriesFor("busy.test", dns.TypeAAAA); a != 1 || aaaa != 1 {
		t.Errorf("20 concurrent lookups sent %d A and %d AAAA queries, want 1 each", a, aaaa)
	}
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	s := dnstest.Start(t)
	s.AddA("tc.test", "192.0.2.1")
	s.SetTruncate("tc.test", true)
	var big []string
	for i := range 120 { // 120 A records do not fit 1232 bytes
		big = append(big, fmt.Sprintf("10.0.%d.%d", i/250, i%250))
	}
	s.AddA("big.test", big...)
	r := newResolver(t, nil, s.Addr)

	got, err := r.LookupIP(ctxT(t), "tc.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.1")) {
		t.Fatalf("tc.test: %v, %v", got, err)
	}
	if s.TCPQueries() == 0 {
		t.Error("no TCP query after a truncated UDP answer")
	}
	tcpBefore := s.TCPQueries()
	got, err = r.LookupIP(ctxT(t), "big.test")
	if err != nil || len(got) != 120 {
		t.Fatalf("big.test: %d addresses, %v", len(got), err)
	}
	if s.TCPQueries() == tcpBefore {
		t.Error("big answer did not go over TCP")
	}
}

// A failing server is skipped for the next one.
func TestServerFailover(t *testing.T) {
	bad := dnstest.Start(t)
	bad.SetRcode("ok.test", 0, dns.RcodeServerFailure)
	dead := dnstest.Start(t)
	dead.Drop("ok.test")
	good := dnstest.Start(t)
	good.AddA("ok.test", "192.0.2.8")
	r := newResolver(t, nil, bad.Addr, dead.Addr, good.Addr)

	got, err := r.LookupIP(ctxT(t), "ok.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.8")) {
		t.Fatalf("got %v, %v", got, err)
	}
	if bad.Queries() == 0 || dead.Queries() == 0 {
		t.Error("servers were not tried in order")
	}

	// Every server failing is temporary, with the last rcode/error.
	r2 := newResolver(t, nil, bad.Addr, dead.Addr)
	_, err = r2.LookupMX(ctxT(t), "ok.test")
	var te *TempError
	if !errors.As(err, &te) || !te.Timeout() {
		t.Errorf("all servers failing: %v, want a timeout TempError", err)
	}
}

func TestNewServers(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("# test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n"), 0o644)
	r, err := New(Options{ResolvConf: conf})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Servers(), []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("from resolv.conf: %q, want %q", got, want)
	}

	r, err = New(Options{Servers: []string{"192.0.2.1", "192.0.2.2:5353", "2001:db8::1", "[2001:db8::2]:54", "dns.example:53"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::1]:53", "[2001:db8::2]:54", "dns.example:53"}
	if got := r.Servers(); !slices.Equal(got, want) {
		t.Errorf("Servers() = %q, want %q", got, want)
	}
	for _, bad := range []string{"not a server", "host-without-port", ":53"} {
		if _, err := New(Options{Servers: []string{bad}}); err == nil {
			t.Errorf("New accepted server %q", bad)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty.conf")
	os.WriteFile(empty, []byte("search example\n"), 0o644)
	if _, err := New(Options{ResolvConf: empty}); err == nil {
		t.Error("New accepted a resolv.conf without nameservers")
	}
}

func TestFCrDNS(t *testing.T) {
	s := dnstest.Start(t)
	// Match.
	s.AddPTR("127.0.0.11", "scanner.dept.example.edu")
	s.AddA("scanner.dept.example.edu", "127.0.0.11")
	// Mismatch.
	s.AddPTR("10.1.2.3", "x.example.edu")
	s.AddA("x.example.edu", "10.9.9.9")
	// PTR name without address.
	s.AddPTR("10.1.2.4", "ghost.example.edu")
	// Second PTR name confirms.
	s.AddPTR("10.1.2.5", "wrong.example.edu", "right.example.edu")
	s.AddA("wrong.example.edu", "10.9.9.8")
	s.AddA("right.example.edu", "10.1.2.5", "10.1.2.6")
	// IPv6.
	s.AddPTR("2001:db8::25", "copier.example.edu")
	s.AddA("copier.example.edu", "192.0.2.25", "2001:db8::25")
	// PTR lookup fails temporarily.
	s.SetRcode(dnstest.ReverseName("10.1.2.7"), 0, dns.RcodeServerFailure)
	// Forward lookup fails temporarily.
	s.AddPTR("10.1.2.8", "flaky.example.edu")
	s.SetRcode("flaky.example.edu", dns.TypeA, dns.RcodeServerFailure)
	// A forward failure does not matter when another name confirms.
	s.AddPTR("10.1.2.9", "flaky.example.edu", "good9.example.edu")
	s.AddA("good9.example.edu", "10.1.2.9")
	// More PTR names than checked.
	var many []string
	for i := range MaxFCrDNSNames + 2 {
		many = append(many, fmt.Sprintf("n%02d.example.edu", i))
	}
	s.AddPTR("10.1.2.10", many...)
	s.AddA(many[len(many)-1], "10.1.2.10") // only the unchecked last name matches
	r := newResolver(t, nil, s.Addr)

	tests := []struct {
		ip        string
		name      string
		temporary bool
		explain   string
	}{
		{"127.0.0.11", "scanner.dept.example.edu", false,
			"reverse DNS of 127.0.0.11 is scanner.dept.example.edu; forward lookup matches"},
		{"::ffff:127.0.0.11", "scanner.dept.example.edu", false,
			"reverse DNS of 127.0.0.11 is scanner.dept.example.edu; forward lookup matches"},
		{"10.1.2.3", "", false,
			"reverse DNS of 10.1.2.3 is x.example.edu but x.example.edu resolves to 10.9.9.9, not 10.1.2.3: fix the A record"},
		{"10.1.2.4", "", false,
			"reverse DNS of 10.1.2.4 is ghost.example.edu but ghost.example.edu has no address (A record): add one pointing to 10.1.2.4"},
		{"10.1.2.5", "right.example.edu", false,
			"reverse DNS of 10.1.2.5 is right.example.edu; forward lookup matches"},
		{"2001:db8::25", "copier.example.edu", false,
			"reverse DNS of 2001:db8::25 is copier.example.edu; forward lookup matches"},
		{"10.1.2.6", "", false,
			"10.1.2.6 has no reverse DNS (PTR) record: ask your DNS administrator to add one"},
		{"2001:db8::99", "", false,
			"2001:db8::99 has no reverse DNS (PTR) record: ask your DNS administrator to add one"},
		{"10.1.2.7", "", true,
			"the reverse DNS (PTR) lookup of 10.1.2.7 failed temporarily: try again later; if it keeps failing, ask your DNS administrator to check the reverse zone"},
		{"10.1.2.8", "", true,
			"reverse DNS of 10.1.2.8 is flaky.example.edu but the address lookup of flaky.example.edu failed temporarily (some forward lookups failed temporarily: try again later)"},
		{"10.1.2.9", "good9.example.edu", false,
			"reverse DNS of 10.1.2.9 is good9.example.edu; forward lookup matches"},
	}
	for _, tc := range tests {
		res, err := r.FCrDNS(ctxT(t), netip.MustParseAddr(tc.ip))
		if (err != nil) != tc.temporary || (err != nil && !IsTemporary(err)) || res.Temporary != tc.temporary {
			t.Errorf("FCrDNS(%s): err %v, Temporary %v; want temporary %v", tc.ip, err, res.Temporary, tc.temporary)
		}
		if res.Name != tc.name || res.Confirmed() != (tc.name != "") {
			t.Errorf("FCrDNS(%s).Name = %q, want %q", tc.ip, res.Name, tc.name)
		}
		if got := res.Explain(); got != tc.explain {
			t.Errorf("FCrDNS(%s).Explain():\n got %q\nwant %q", tc.ip, got, tc.explain)
		}
	}

	res, err := r.FCrDNS(ctxT(t), netip.MustParseAddr("10.1.2.10"))
	if err != nil || res.Name != "" || res.Skipped != 2 || len(res.Forward) != MaxFCrDNSNames || len(res.PTR) != MaxFCrDNSNames+2 {
		t.Errorf("capped names: %+v, %v", res, err)
	}
	if s.QueriesFor(many[len(many)-1], dns.TypeA) != 0 {
		t.Error("a name beyond the cap was looked up")
	}
	s.AddPTR("10.1.2.20", "one.example.edu", "nomatch.example.edu", "two.example.edu")
	s.AddA("one.example.edu", "10.1.2.20")
	s.AddA("two.example.edu", "10.1.2.20")
	res, err = r.FCrDNS(ctxT(t), netip.MustParseAddr("10.1.2.20"))
	if err != nil || res.Name != "one.example.edu" || !slices.Equal(res.Names, []string{"one.example.edu", "two.example.edu"}) {
		t.Errorf("two confirmed names: Name %q Names %q, %v", res.Name, res.Names, err)
	}
	res, _ = r.FCrDNS(ctxT(t), netip.MustParseAddr("10.1.2.3"))
	if got := res.Forward["x.example.edu"]; !slices.Equal(got, addrs("10.9.9.9")) {
		t.Errorf("Forward[x.example.edu] = %v", got)
	}
}

// FCrDNS against a server that never answers the reverse zone is a
// temporary failure within the resolver's timeout.
func TestFCrDNSTimeout(t *testing.T) {
	s := dnstest.Start(t)
	s.Drop(dnstest.ReverseName("10.1.2.3"))
	s.AddPTR("10.1.2.4", "slowfwd.example.edu")
	s.Drop("slowfwd.example.edu")
	r := newResolver(t, nil, s.Addr)
	for _, ip := range []string{"10.1.2.3", "10.1.2.4"} {
		start := time.Now()
		res, err := r.FCrDNS(ctxT(t), netip.MustParseAddr(ip))
		var te *TempError
		if !errors.As(err, &te) || !te.Timeout() || !res.Temporary {
			t.Errorf("%s: %v, want a timeout", ip, err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("%s: took %v", ip, el)
		}
		if !strings.Contains(res.Explain(), "temporarily") {
			t.Errorf("%s: Explain %q does not say temporary", ip, res.Explain())
		}
	}
}

// EDNS0 is sent, so a 1232-byte answer fits in UDP without TCP.
func TestEDNS0(t *testing.T) {
	s := dnstest.Start(t)
	var list []string
	for i := range 40 { // ~40*16 bytes: more than 512, less than 1232
		list = append(list, fmt.Sprintf("10.0.0.%d", i))
	}
	s.AddA("mid.test", list...)
	r := newResolver(t, nil, s.Addr)
	got, err := r.LookupIP(ctxT(t), "mid.test")
	if err != nil || len(got) != 40 {
		t.Fatalf("%d, %v", len(got), err)
	}
	if s.TCPQueries() != 0 {
		t.Errorf("%d TCP queries; EDNS0 should have made UDP enough", s.TCPQueries())
	}
}

// startOddServer runs a UDP-only miekg/dns server with handler h on
// loopback and returns its address.
func startOddServer(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(up) }}
	go srv.ActivateAndServe()
	<-up
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// An answer to a different question is rejected and the next server used.
func TestQuestionMismatchRejected(t *testing.T) {
	liar := startOddServer(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Question[0].Name = "evil.test."
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "evil.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(6, 6, 6, 6)})
		w.WriteMsg(m)
	})
	good := dnstest.Start(t)
	good.AddA("ok.test", "192.0.2.8")
	r := newResolver(t, nil, liar, good.Addr)
	got, err := r.LookupIP(ctxT(t), "ok.test")
	if err != nil || !slices.Equal(got, addrs("192.0.2.8")) {
		t.Fatalf("got %v, %v; want the good server's answer", got, err)
	}
	if _, err := newResolver(t, nil, liar).LookupIP(ctxT(t), "ok.test"); !IsTemporary(err) {
		t.Errorf("only a lying server: %v, want temporary", err)
	}
}

// A server that answers FORMERR to EDNS0 is asked again without it.
func TestNoEDNSServer(t *testing.T) {
	var mu sync.Mutex
	var withEDNS, without int
	old := startOddServer(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		mu.Lock()
		defer mu.Unlock()
		if req.IsEdns0() != nil {
			withEDNS++
			m.SetRcodeFormatError(req)
		} else {
			without++
			m.SetReply(req)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 9)})
		}
		w.WriteMsg(m)
	})
	r := newResolver(t, nil, old)
	rrs, err := r.lookup(ctxT(t), "old.test.", dns.TypeA)
	if err != nil || len(rrs) != 1 {
		t.Fatalf("%v, %v", rrs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if withEDNS != 1 || without != 1 {
		t.Errorf("queries with/without EDNS0: %d/%d, want 1/1", withEDNS, without)
	}
}

func TestExplainSeveralNames(t *testing.T) {
	f := FCrDNSResult{
		IP:  netip.MustParseAddr("2001:db8::5"),
		PTR: []string{"a.example.edu", "b.example.edu"},
		Forward: map[string][]netip.Addr{
			"a.example.edu": addrs("2001:db8::6"),
			"b.example.edu": nil,
		},
	}
	want := "reverse DNS of 2001:db8::5 is a.example.edu, b.example.edu but a.example.edu resolves to 2001:db8::6, not 2001:db8::5: fix the AAAA record; b.example.edu has no address (AAAA record): add one pointing to 2001:db8::5"
	if got := f.Explain(); got != want {
		t.Errorf("Explain:\n got %q\nwant %q", got, want)
	}
}

func TestCancelledContext(t *testing.T) {
	s := dnstest.Start(t)
	s.AddA("x.test", "192.0.2.1")
	r := newResolver(t, nil, s.Addr)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.LookupIP(ctx, "x.test"); !IsTemporary(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if s.Queries() != 0 {
		t.Errorf("%d queries sent for a cancelled context", s.Queries())
	}
}
