package dnstest

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func query(t *testing.T, s *Server, net string, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAnswers(t *testing.T) {
	s := Start(t)
	s.AddA("host.example.test", "192.0.2.10", "2001:db8::10")
	s.AddPTR("192.0.2.10", "host.example.test")
	s.AddPTR("2001:db8::10", "host.example.test")
	s.AddMX("example.test", 10, "mx1.example.test")
	s.AddMX("null.test", 0, ".")
	s.AddCNAME("alias.example.test", "alias2.example.test")
	s.AddCNAME("alias2.example.test", "host.example.test")
	s.AddCNAME("dangling.example.test", "nowhere.example.test")
	s.AddTXT("example.test", "v=spf1 -all")
	s.AddRR("short.example.test. 5 IN A 192.0.2.5")
	s.SetNegTTL(42)

	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
		soa     bool
	}{
		{"host.example.test", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"HOST.Example.Test.", dns.TypeAAAA, dns.RcodeSuccess, 1, false},
		{"host.example.test", dns.TypeMX, dns.RcodeSuccess, 0, true}, // NODATA
		{"missing.example.test", dns.TypeA, dns.RcodeNameError, 0, true},
		{"10.2.0.192.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, 1, false},
		{ReverseName("2001:db8::10"), dns.TypePTR, dns.RcodeSuccess, 1, false},
		{"example.test", dns.TypeMX, dns.RcodeSuccess, 1, false},
		{"null.test", dns.TypeMX, dns.RcodeSuccess, 1, false},
		{"alias.example.test", dns.TypeA, dns.RcodeSuccess, 3, false}, // 2 CNAME + A
		{"dangling.example.test", dns.TypeA, dns.RcodeNameError, 1, true},
		{"example.test", dns.TypeTXT, dns.RcodeSuccess, 1, false},
		{"short.example.test", dns.TypeA, dns.RcodeSuccess, 1, false},
	}
	for _, tc := range tests {
		r := query(t, s, "udp", tc.name, tc.qtype, 1232)
		if r.Rcode != tc.rcode || len(r.Answer) != tc.answers {
			t.Errorf("%s %s: rcode %s, %d answers; want %s, %d", tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode], tc.answers)
		}
		gotSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
		if gotSOA != tc.soa {
			t.Errorf("%s: SOA in authority = %v, want %v", tc.name, gotSOA, tc.soa)
		}
		if gotSOA && r.Ns[0].(*dns.SOA).Minttl != 42 {
			t.Errorf("%s: SOA minimum %d, want 42", tc.name, r.Ns[0].(*dns.SOA).Minttl)
		}
	}
	if r := query(t, s, "udp", "short.example.test", dns.TypeA, 0); r.Answer[0].Header().Ttl != 5 {
		t.Errorf("AddRR TTL = %d, want 5", r.Answer[0].Header().Ttl)
	}
	if r := query(t, s, "tcp", "host.example.test", dns.TypeA, 0); r.Answer[0].Header().Ttl != DefaultTTL {
		t.Errorf("default TTL = %d", r.Answer[0].Header().Ttl)
	}
	if got := s.QueriesFor("host.example.test", dns.TypeA); got != 2 {
		t.Errorf("QueriesFor = %d, want 2", got)
	}
	if got := s.TCPQueries(); got != 1 {
		t.Errorf("TCPQueries = %d, want 1", got)
	}
	if got := s.Queries(); got != len(tests)+2 {
		t.Errorf("Queries = %d, want %d", got, len(tests)+2)
	}
	s.Remove("host.example.test")
	if r := query(t, s, "udp", "host.example.test", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestFailures(t *testing.T) {
	s := Start(t)
	s.AddA("fail.test", "192.0.2.1")
	s.SetRcode("fail.test", dns.TypeA, dns.RcodeServerFailure)
	s.SetRcode("refuse.test", 0, dns.RcodeRefused)
	if r := query(t, s, "udp", "fail.test", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("fail.test A: %s", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, s, "udp", "fail.test", dns.TypeAAAA, 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("fail.test AAAA: %s (override must be per type)", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, s, "udp", "refuse.test", dns.TypeMX, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("refuse.test: %s", dns.RcodeToString[r.Rcode])
	}

	s.AddA("slow.test", "192.0.2.2")
	s.SetDelay("slow.test", 300*time.Millisecond)
	start := time.Now()
	query(t, s, "udp", "slow.test", dns.TypeA, 0)
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("delayed answer came after %v", el)
	}

	s.AddA("black.test", "192.0.2.3")
	s.Drop("black.test")
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("black.test.", dns.TypeA)
	_, _, err := c.Exchange(m, s.Addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dropped query: err %v, want timeout", err)
	}
}

func TestTruncation(t *testing.T) {
	s := Start(t)
	for i := range 100 {
		s.AddA("big.test", net.IPv4(10, 0, byte(i/256), byte(i%256)).String())
	}
	r := query(t, s, "udp", "big.test", dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("plain UDP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
	r = query(t, s, "udp", "big.test", dns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("EDNS 4096: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
	r = query(t, s, "tcp", "big.test", dns.TypeA, 0)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}

	s.AddA("tc.test", "192.0.2.9")
	s.SetTruncate("tc.test", true)
	if r := query(t, s, "udp", "tc.test", dns.TypeA, 1232); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("forced TC over UDP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
	if r := query(t, s, "tcp", "tc.test", dns.TypeA, 1232); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("forced TC over TCP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
}

func TestConcurrentUse(t *testing.T) {
	s := Start(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			s.AddA("race.test", net.IPv4(10, 1, 0, byte(i)).String())
			s.SetDelay("race.test", 0)
		}
	}()
	for range 20 {
		query(t, s, "udp", "race.test", dns.TypeA, 0)
	}
	<-done
}
