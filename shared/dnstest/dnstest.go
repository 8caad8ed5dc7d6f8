// Package dnstest runs a real DNS server (miekg/dns) on loopback for tests.
//
// Start listens on 127.0.0.1 with UDP and TCP on the same port and serves
// whatever records the test configured, authoritatively. It is not a mock:
// clients speak the DNS wire protocol to it over real sockets, so timeouts,
// truncation, TCP fallback and caching are exercised for real.
//
// Behaviour it guarantees:
//   - a name that was never configured answers NXDOMAIN with an SOA in the
//     authority section;
//   - a configured name without records of the asked type answers
//     NOERROR/NODATA with an SOA in the authority section (so negative
//     caching per RFC 2308 can be tested; see SetNegTTL);
//   - CNAMEs are followed inside the server's own data, as a recursive
//     resolver would present them (CNAME chain then the target's records),
//     unless SetCNAMEChase(false);
//   - UDP answers larger than the client's buffer (512, or the EDNS0 size)
//     are truncated with TC set, so the client must retry over TCP;
//   - SetRcode, SetDelay, Drop and SetTruncate inject failures per name;
//   - every method is safe for concurrent use, also while queries run.
//
// The server stops when the test ends (t.Cleanup).
package dnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL given to records added with the Add* helpers unless
// Server.TTL is changed.
const DefaultTTL = 300

// DefaultNegTTL is the SOA minimum (and SOA TTL) sent with negative answers
// unless SetNegTTL changes it.
const DefaultNegTTL = 60

// Server is a loopback DNS server. Configure it with the Add* and Set*
// methods; they may be called at any time, also while queries run.
type Server struct {
	// Addr is "127.0.0.1:PORT"; UDP and TCP listen on the same port.
	Addr string

	// TTL is the TTL (seconds) of records added by AddA, AddPTR, AddMX,
	// AddTXT and AddCNAME. It is read by those calls (on the caller's
	// goroutine); set it before adding records. Use AddRR for per-record
	// TTLs.
	TTL uint32

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	rcodes   map[rcodeKey]int
	delays   map[string]time.Duration
	drops    map[string]bool
	truncate map[string]bool
	negTTL   uint32
	noChase  bool
	queries  int
	tcp      int
	perQ     map[rcodeKey]int
	dnssec   dnssecState

	udpSrv, tcpSrv *dns.Server
	stop           chan struct{}
	stopOnce       sync.Once
}

type rcodeKey struct {
	name  string
	qtype uint16
}

// Start starts a server on 127.0.0.1 (UDP and TCP on one free port) and
// registers its shutdown with t.Cleanup. It fails the test if it cannot
// listen.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		TTL:      DefaultTTL,
		records:  map[string][]dns.RR{},
		rcodes:   map[rcodeKey]int{},
		delays:   map[string]time.Duration{},
		drops:    map[string]bool{},
		truncate: map[string]bool{},
		negTTL:   DefaultNegTTL,
		perQ:     map[rcodeKey]int{},
		stop:     make(chan struct{}),
	}
	pc, l, err := listenPair()
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	s.Addr = pc.LocalAddr().String()

	udpUp := make(chan struct{})
	tcpUp := make(chan struct{})
	s.udpSrv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(udpUp) }}
	s.tcpSrv = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(tcpUp) }}
	go func() { _ = s.udpSrv.ActivateAndServe() }()
	go func() { _ = s.tcpSrv.ActivateAndServe() }()
	<-udpUp
	<-tcpUp
	t.Cleanup(s.Close)
	return s
}

// listenPair opens a UDP socket on a free loopback port and a TCP listener
// on the same port, retrying when the TCP port happens to be taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		lastErr = err
		pc.Close()
	}
	return nil, nil, fmt.Errorf("no port free for both udp and tcp: %w", lastErr)
}

// Close stops the server. Delayed answers still pending are abandoned. It
// is called automatically at the end of the test; calling it earlier makes
// the address unreachable (useful to test a dead server).
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.udpSrv.ShutdownContext(ctx)
		_ = s.tcpSrv.ShutdownContext(ctx)
	})
}

func fqdn(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

// AddRR adds records in zone-file syntax, for example
// "a.example. 5 IN A 192.0.2.1". It fails loudly (panics) on a syntax error
// because that is a bug in the test.
func (s *Server) AddRR(rrs ...string) {
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			panic(fmt.Sprintf("dnstest: bad RR %q: %v", text, err))
		}
		s.add(rr)
	}
}

func (s *Server) add(rr dns.RR) {
	name := fqdn(rr.Header().Name)
	rr.Header().Name = name
	s.mu.Lock()
	s.records[name] = append(s.records[name], rr)
	s.mu.Unlock()
}

func (s *Server) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: s.TTL}
}

// AddA adds A records for name, or AAAA records for IPv6 addresses. It
// panics on an unparsable IP (a bug in the test).
func (s *Server) AddA(name string, ips ...string) {
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			panic(fmt.Sprintf("dnstest: bad IP %q: %v", ip, err))
		}
		a = a.Unmap()
		if a.Is4() {
			s.add(&dns.A{Hdr: s.hdr(name, dns.TypeA), A: net.IP(a.AsSlice())})
		} else {
			s.add(&dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: net.IP(a.AsSlice())})
		}
	}
}

// ReverseName returns the in-addr.arpa or ip6.arpa name of ip (FQDN,
// lower case). It panics on an unparsable IP.
func ReverseName(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		panic(fmt.Sprintf("dnstest: bad IP %q: %v", ip, err))
	}
	arpa, err := dns.ReverseAddr(a.Unmap().String())
	if err != nil {
		panic(fmt.Sprintf("dnstest: reverse of %q: %v", ip, err))
	}
	return fqdn(arpa)
}

// AddPTR adds PTR records for ip (v4 under in-addr.arpa, v6 under ip6.arpa)
// pointing at names.
func (s *Server) AddPTR(ip string, names ...string) {
	arpa := ReverseName(ip)
	for _, n := range names {
		s.add(&dns.PTR{Hdr: s.hdr(arpa, dns.TypePTR), Ptr: dns.Fqdn(n)})
	}
}

// AddMX adds an MX record. host "." makes a null MX (RFC 7505) when used
// with preference 0.
func (s *Server) AddMX(domain string, pref uint16, host string) {
	s.add(&dns.MX{Hdr: s.hdr(domain, dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)})
}

// AddTXT adds one TXT record made of the given strings.
func (s *Server) AddTXT(name string, txt ...string) {
	s.add(&dns.TXT{Hdr: s.hdr(name, dns.TypeTXT), Txt: txt})
}

// AddCNAME makes name an alias of target.
func (s *Server) AddCNAME(name, target string) {
	s.add(&dns.CNAME{Hdr: s.hdr(name, dns.TypeCNAME), Target: dns.Fqdn(target)})
}

// Remove deletes every record of name and any failure injected for it;
// afterwards the name answers NXDOMAIN.
func (s *Server) Remove(name string) {
	n := fqdn(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, n)
	delete(s.delays, n)
	delete(s.drops, n)
	delete(s.truncate, n)
	for k := range s.rcodes {
		if k.name == n {
			delete(s.rcodes, k)
		}
	}
}

// SetRcode makes queries for name and qtype answer with rcode (for example
// dns.RcodeServerFailure) and no records. qtype 0 or dns.TypeANY applies to
// every type. rcode dns.RcodeSuccess removes the override.
func (s *Server) SetRcode(name string, qtype uint16, rcode int) {
	if qtype == dns.TypeANY {
		qtype = 0
	}
	k := rcodeKey{fqdn(name), qtype}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, k)
		return
	}
	s.rcodes[k] = rcode
}

// SetDelay makes every answer about name wait d before it is sent. 0
// removes the delay.
func (s *Server) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.delays, fqdn(name))
		return
	}
	s.delays[fqdn(name)] = d
}

// Drop makes the server never answer queries about name (the client times
// out). The queries are still counted.
func (s *Server) Drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops[fqdn(name)] = true
}

// Undrop reverses Drop.
func (s *Server) Undrop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.drops, fqdn(name))
}

// SetTruncate makes every UDP answer about name empty with the TC bit set,
// so the client has to repeat the query over TCP, which answers in full.
// (Answers too large for the client's UDP buffer are truncated anyway.)
func (s *Server) SetTruncate(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.truncate[fqdn(name)] = true
	} else {
		delete(s.truncate, fqdn(name))
	}
}

// SetNegTTL sets the TTL and the MINIMUM field of the SOA record sent with
// NXDOMAIN and NODATA answers (the negative-caching TTL of RFC 2308).
func (s *Server) SetNegTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = ttl
}

// SetCNAMEChase controls whether answers include the records a CNAME
// points to (on by default, as a recursive resolver answers). Off, a query
// for an alias gets only the CNAME, and the client must ask for the
// target itself.
func (s *Server) SetCNAMEChase(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noChase = !on
}

// Queries returns the number of queries received so far (UDP and TCP,
// answered or not).
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// TCPQueries returns how many of Queries arrived over TCP.
func (s *Server) TCPQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp
}

// QueriesFor returns how many queries asked about name with type qtype.
func (s *Server) QueriesFor(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perQ[rcodeKey{fqdn(name), qtype}]
}

// ResetQueries sets all query counters back to zero.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries, s.tcp = 0, 0
	s.perQ = map[rcodeKey]int{}
}

// soa is the SOA placed in the authority section of negative answers. Its
// owner is the query's last label (a stand-in zone apex).
func (s *Server) soa(qname string) dns.RR {
	labels := dns.SplitDomainName(qname)
	zone := "."
	if len(labels) > 0 {
		zone = labels[len(labels)-1] + "."
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
		Ns:      "ns." + strings.TrimPrefix(zone, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(zone, "."),
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.negTTL,
	}
}

// plan is what serve decided under the lock; the reply is written outside.
type plan struct {
	msg      *dns.Msg
	delay    time.Duration
	drop     bool
	truncate bool
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	isTCP := false
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		isTCP = true
	}
	p := s.answer(req, isTCP)
	if p.drop {
		return
	}
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
	}
	m := p.msg
	if !isTCP {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		if p.truncate {
			m.Answer, m.Ns, m.Extra = nil, nil, nil
			m.Truncated = true
		} else {
			m.Truncate(size)
		}
	}
	_ = w.WriteMsg(m)
}

func (s *Server) answer(req *dns.Msg, isTCP bool) plan {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	if isTCP {
		s.tcp++
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return plan{msg: m}
	}
	q := req.Question[0]
	qname := fqdn(q.Name)
	s.perQ[rcodeKey{qname, q.Qtype}]++

	p := plan{msg: m, delay: s.delays[qname], drop: s.drops[qname], truncate: s.truncate[qname]}
	m.AuthenticatedData = s.signed(qname)
	if rc, ok := s.rcodes[rcodeKey{qname, q.Qtype}]; ok {
		m.Rcode = rc
		return p
	}
	if rc, ok := s.rcodes[rcodeKey{qname, 0}]; ok {
		m.Rcode = rc
		return p
	}

	name := qname
	for range 10 { // follow CNAMEs inside our own data
		rrs, exists := s.records[name]
		if !exists {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, s.soa(name))
			return p
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			if !found {
				m.Ns = append(m.Ns, s.soa(name)) // NODATA
			}
			return p
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		if s.noChase {
			return p
		}
		name = fqdn(cname.Target)
	}
	m.Rcode = dns.RcodeServerFailure // CNAME loop
	m.Answer = nil
	return p
}
