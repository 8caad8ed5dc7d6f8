package resolver

import (
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/postern/postern/shared/dnstest"
)

func newStaleResolver(t *testing.T, clk *clock, stale time.Duration, servers ...string) *Resolver {
	t.Helper()
	r, err := New(Options{Servers: servers, Timeout: 250 * time.Millisecond, Attempts: 1,
		Clock: clk.Now, ServeStale: stale})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// staleZone: mail.test has an MX, plain.test is its own implicit MX, the
// client 192.0.2.1 has forward-confirmed reverse DNS (and no AAAA), and
// nx.test does not exist. Every TTL is 60 s.
func staleZone(t *testing.T) *dnstest.Server {
	s := dnstest.Start(t)
	s.TTL = 60
	s.AddMX("mail.test", 10, "mx.mail.test")
	s.AddA("mx.mail.test", "192.0.2.1")
	s.AddPTR("192.0.2.1", "mx.mail.test")
	s.AddA("plain.test", "192.0.2.2")
	return s
}

var staleNames = []string{"mail.test", "mx.mail.test", "plain.test", "nx.test", dnstest.ReverseName("192.0.2.1")}

func checkAnswers(t *testing.T, r *Resolver) {
	t.Helper()
	ctx := ctxT(t)
	mx, err := r.LookupMailHosts(ctx, "mail.test")
	if err != nil || len(mx) != 1 || mx[0].Host != "mx.mail.test" {
		t.Fatalf("MX of mail.test: %v, %v", mx, err)
	}
	mx, err = r.LookupMailHosts(ctx, "plain.test")
	if err != nil || len(mx) != 1 || !mx[0].Implicit {
		t.Fatalf("implicit MX of plain.test: %v, %v", mx, err)
	}
	f, err := r.FCrDNS(ctx, netip.MustParseAddr("192.0.2.1"))
	if err != nil || f.Name != "mx.mail.test" {
		t.Fatalf("FCrDNS of 192.0.2.1: %+v, %v", f, err)
	}
	if ok, err := r.MailDomainExists(ctx, "mail.test"); !ok || err != nil {
		t.Fatalf("MailDomainExists(mail.test): %v, %v", ok, err)
	}
}

// While the servers answer SERVFAIL, and then while they do not answer at
// all, answers the cache held are served stale for MX, implicit MX and
// FCrDNS (PTR + A with a negative AAAA) lookups; an expired negative
// answer is a temporary failure, never a permanent one; past the
// serve-stale bound every lookup fails temporarily.
func TestServeStale(t *testing.T) {
	s := staleZone(t)
	clk := newClock()
	r := newStaleResolver(t, clk, time.Hour, s.Addr)
	checkAnswers(t, r)
	if _, err := r.LookupMX(ctxT(t), "nx.test"); !errors.Is(err, ErrNXDomain) {
		t.Fatalf("nx.test: %v", err)
	}
	if st := r.Stats(); st.Stale != 0 {
		t.Fatalf("stale answers while the server works: %+v", st)
	}

	clk.Advance(2 * time.Minute) // every TTL (60 s) has run out
	for _, n := range staleNames {
		s.SetRcode(n, 0, dns.RcodeServerFailure)
	}
	checkAnswers(t, r)
	st := r.Stats()
	if st.Stale == 0 {
		t.Fatalf("no stale answer counted: %+v", st)
	}
	rrs, err := r.query(ctxT(t), "mx.mail.test.", dns.TypeA)
	if err != nil || len(rrs) != 1 || rrs[0].Header().Ttl != 30 {
		t.Fatalf("stale A record: %v, %v (want one record with TTL 30)", rrs, err)
	}
	// The expired NXDOMAIN is not relied on: temporary, not permanent.
	_, err = r.LookupMX(ctxT(t), "nx.test")
	var te *TempError
	if !IsTemporary(err) || errors.Is(err, ErrNotFound) || !errors.As(err, &te) || !errors.Is(te.Stale, ErrNXDomain) {
		t.Fatalf("expired NXDOMAIN while SERVFAIL: %v (want a temporary error naming the old answer)", err)
	}
	if ok, err := r.MailDomainExists(ctxT(t), "nx.test"); ok || !IsTemporary(err) {
		t.Fatalf("MailDomainExists(nx.test) while SERVFAIL: %v, %v (want false + temporary)", ok, err)
	}
	// Within 30 s of a failed refresh the stale answer is used at once.
	q := s.QueriesFor("mail.test", dns.TypeMX)
	checkAnswers(t, r)
	if n := s.QueriesFor("mail.test", dns.TypeMX); n != q {
		t.Errorf("%d MX queries within the recheck time, want 0", n-q)
	}
	clk.Advance(31 * time.Second)
	checkAnswers(t, r)
	if n := s.QueriesFor("mail.test", dns.TypeMX); n != q+1 {
		t.Errorf("%d MX queries after the recheck time, want 1", n-q)
	}

	// The server stops answering at all: timeouts, still served stale.
	s.Close()
	clk.Advance(10 * time.Minute)
	checkAnswers(t, r)

	// Past the bound (1 h after expiry) nothing is served: temporary.
	clk.Advance(time.Hour)
	ctx := ctxT(t)
	if _, err := r.LookupMailHosts(ctx, "mail.test"); !IsTemporary(err) {
		t.Errorf("MX past the bound: %v, want temporary", err)
	}
	if _, err := r.LookupMailHosts(ctx, "plain.test"); !IsTemporary(err) {
		t.Errorf("implicit MX past the bound: %v, want temporary", err)
	}
	if _, err := r.FCrDNS(ctx, netip.MustParseAddr("192.0.2.1")); !IsTemporary(err) {
		t.Errorf("FCrDNS past the bound: %v, want temporary", err)
	}
	if ok, err := r.MailDomainExists(ctx, "nx.test"); ok || !IsTemporary(err) {
		t.Errorf("MailDomainExists(nx.test) past the bound: %v, %v", ok, err)
	}
}

// A refresh that succeeds replaces the stale answer.
func TestServeStaleRecovers(t *testing.T) {
	s := staleZone(t)
	clk := newClock()
	r := newStaleResolver(t, clk, 0, s.Addr) // default bound: one day
	checkAnswers(t, r)
	clk.Advance(23 * time.Hour)
	s.SetRcode("mail.test", 0, dns.RcodeServerFailure)
	if mx, err := r.LookupMX(ctxT(t), "mail.test"); err != nil || mx[0].Host != "mx.mail.test" {
		t.Fatalf("stale MX within the default day: %v, %v", mx, err)
	}
	s.SetRcode("mail.test", 0, dns.RcodeSuccess)
	s.Remove("mail.test")
	s.AddMX("mail.test", 5, "new.mail.test")
	clk.Advance(31 * time.Second)
	if mx, err := r.LookupMX(ctxT(t), "mail.test"); err != nil || mx[0].Host != "new.mail.test" {
		t.Fatalf("after recovery: %v, %v (want the new MX)", mx, err)
	}
	st := r.Stats()
	if st.Stale != 1 {
		t.Errorf("stale answers %d, want 1", st.Stale)
	}
}

// With serve-stale off an expired answer is not used.
func TestServeStaleOff(t *testing.T) {
	s := staleZone(t)
	clk := newClock()
	r := newStaleResolver(t, clk, -1, s.Addr)
	checkAnswers(t, r)
	clk.Advance(2 * time.Minute)
	s.SetRcode("mail.test", 0, dns.RcodeServerFailure)
	if _, err := r.LookupMX(ctxT(t), "mail.test"); !IsTemporary(err) {
		t.Fatalf("serve_stale off: %v, want temporary", err)
	}
}

// A server slower than the client response timer (1.8 s) gets the stale
// answer to the caller first; the refresh still lands in the cache.
func TestServeStaleSlowServer(t *testing.T) {
	s := staleZone(t)
	clk := newClock()
	r, err := New(Options{Servers: []string{s.Addr}, Timeout: 5 * time.Second, Attempts: 1, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupMX(ctxT(t), "mail.test"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	s.Remove("mail.test")
	s.AddMX("mail.test", 5, "new.mail.test")
	s.SetDelay("mail.test", 3*time.Second)
	mx, err := r.LookupMX(ctxT(t), "mail.test")
	if err != nil || mx[0].Host != "mx.mail.test" {
		t.Fatalf("slow refresh: %v, %v (want the stale MX)", mx, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, fresh, _ := r.cache.get(cacheKey{"mail.test.", dns.TypeMX}, clk.Now()); fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow refresh never reached the cache")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if mx, err := r.LookupMX(ctxT(t), "mail.test"); err != nil || mx[0].Host != "new.mail.test" {
		t.Fatalf("after the refresh: %v, %v", mx, err)
	}
}

// NXDOMAIN without an SOA is cached for a minute, not asked again each time.
func TestNegativeWithoutSOACached(t *testing.T) {
	var n atomic.Int32
	srv := startOddServer(t, func(w dns.ResponseWriter, req *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNameError)
		w.WriteMsg(m)
	})
	clk := newClock()
	r := newStaleResolver(t, clk, -1, srv)
	for range 3 {
		if _, err := r.LookupMX(ctxT(t), "gone.test"); !errors.Is(err, ErrNXDomain) {
			t.Fatalf("gone.test: %v", err)
		}
	}
	if n.Load() != 1 {
		t.Errorf("%d queries for 3 lookups of an NXDOMAIN without SOA, want 1", n.Load())
	}
	clk.Advance(61 * time.Second)
	r.LookupMX(ctxT(t), "gone.test")
	if n.Load() != 2 {
		t.Errorf("%d queries after a minute, want 2", n.Load())
	}
	if !strings.Contains((&TempError{Name: "x.", Qtype: dns.TypeA, Rcode: -1, Err: errors.New("e"), Stale: ErrNoData}).Error(), "NODATA") {
		t.Error("TempError text does not name the stale answer")
	}
}
