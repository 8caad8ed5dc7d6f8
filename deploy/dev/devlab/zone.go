package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The dev zone. Everything points at loopback.
//
//	example.edu           MX 10 mx.example.edu; A 127.0.0.1
//	mx.example.edu        A 127.0.0.1
//	scanner.example.edu   A 127.0.0.2  <->  PTR 127.0.0.2   (register this one)
//	copier.example.edu    A 127.0.0.3  <->  PTR 127.0.0.3
//	example.com/.org/.net and every name under them:
//	                      MX 10 mx.<domain>; A 127.0.0.1
//	anything else         NXDOMAIN
var (
	zoneA = map[string]string{
		"example.edu.":         "127.0.0.1",
		"mx.example.edu.":      "127.0.0.1",
		"scanner.example.edu.": "127.0.0.2",
		"copier.example.edu.":  "127.0.0.3",
	}
	zoneMX = map[string]string{
		"example.edu.": "mx.example.edu.",
	}
	zonePTR = map[string]string{
		"2.0.0.127.in-addr.arpa.": "scanner.example.edu.",
		"3.0.0.127.in-addr.arpa.": "copier.example.edu.",
	}
	// externalDomains get a catch-all: they and all their subdomains exist,
	// receive mail at mx.<domain>, and have the address 127.0.0.1.
	externalDomains = []string{"example.com.", "example.org.", "example.net."}
)

const ttl = 60

// lookup answers one question from the dev zone. ok is false for a name
// that does not exist (NXDOMAIN); a name that exists without records of the
// asked type gives ok with no records (NODATA).
func lookup(name string, qtype uint16) (rrs []dns.RR, ok bool) {
	name = strings.ToLower(dns.Fqdn(name))
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	a, mx, ptr := zoneA[name], zoneMX[name], zonePTR[name]
	if ext := externalDomain(name); ext != "" {
		a, mx = "127.0.0.1", "mx."+ext
	}
	if a == "" && mx == "" && ptr == "" {
		return nil, false
	}
	switch qtype {
	case dns.TypeA:
		if a != "" {
			rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP(a).To4()})
		}
	case dns.TypeMX:
		if mx != "" {
			rrs = append(rrs, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: mx})
		}
	case dns.TypePTR:
		if ptr != "" {
			rrs = append(rrs, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: ptr})
		}
	}
	return rrs, true
}

// externalDomain returns the catch-all domain name is equal to or under,
// or "".
func externalDomain(name string) string {
	for _, d := range externalDomains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return d
		}
	}
	return ""
}

// soa is sent in the authority section of negative answers (RFC 2308).
func soa(name string) dns.RR {
	zone := "example.edu."
	switch {
	case strings.HasSuffix(name, ".arpa."):
		zone = "127.in-addr.arpa."
	case externalDomain(name) != "":
		zone = externalDomain(name)
	}
	return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: "ns.devlab.invalid.", Mbox: "hostmaster.devlab.invalid.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl}
}

func handle(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	rrs, ok := lookup(q.Name, q.Qtype)
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(strings.ToLower(q.Name))}
	case len(rrs) == 0:
		m.Ns = []dns.RR{soa(strings.ToLower(q.Name))}
	default:
		m.Answer = rrs
	}
	_ = w.WriteMsg(m)
}

// dnsServer is the UDP and TCP server pair.
type dnsServer struct {
	udp, tcp *dns.Server
	addr     string
}

func (d *dnsServer) Addr() string { return d.addr }

// startDNS listens on addr over UDP and TCP and serves the dev zone.
func startDNS(addr string, log *slog.Logger) (*dnsServer, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns: %w", err)
	}
	d := &dnsServer{addr: pc.LocalAddr().String()}
	h := dns.HandlerFunc(handle)
	up := make(chan struct{}, 2)
	started := func() { up <- struct{}{} }
	d.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: started}
	d.tcp = &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: started}
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				log.Error("dns server stopped", "err", err)
			}
		}()
	}
	<-up
	<-up
	return d, nil
}

// Close stops both servers.
func (d *dnsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.udp.ShutdownContext(ctx)
	_ = d.tcp.ShutdownContext(ctx)
}
