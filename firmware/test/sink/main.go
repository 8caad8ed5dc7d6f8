// Command sink is the host side of the firmware boot test: an SMTP server
// that writes every message it receives to a folder (the appliance's
// smarthost) and a DNS server that makes every domain mail-capable (so the
// appliance's sender check passes without the internet). Both listen on
// loopback only; QEMU's user-mode network lets the guest reach them as
// 10.0.2.2.
//
//	sink -dir OUT -smtp 127.0.0.1:0 -dns 127.0.0.1:0 -ports FILE
//
// FILE receives "SMTP_PORT=n" and "DNS_PORT=n" lines once both listen.
// Each message is stored as OUT/msg-N.eml, its envelope in the first lines
// ("X-Sink-From:", "X-Sink-To:"), written to a temp name and renamed so a
// reader never sees half a message.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/postern/postern/shared/atomicfile"
)

func main() {
	dir := flag.String("dir", "", "folder for received messages")
	smtpAddr := flag.String("smtp", "127.0.0.1:0", "SMTP listen address")
	dnsAddr := flag.String("dns", "127.0.0.1:0", "DNS listen address (UDP and TCP)")
	portsFile := flag.String("ports", "", "file to write the bound ports to")
	answerA := flag.String("a", "10.0.2.2", "address every A query answers")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "sink: -dir is required")
		os.Exit(2)
	}
	if err := run(*dir, *smtpAddr, *dnsAddr, *portsFile, net.ParseIP(*answerA), log); err != nil {
		log.Error("sink failed", "err", err)
		os.Exit(1)
	}
}

func run(dir, smtpAddr, dnsAddr, portsFile string, a net.IP, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	sl, err := net.Listen("tcp", smtpAddr)
	if err != nil {
		return fmt.Errorf("sink: smtp listen: %w", err)
	}
	srv := smtp.NewServer(&backend{dir: dir, log: log})
	srv.Domain = "sink.test"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.AllowInsecureAuth = true
	go func() { _ = srv.Serve(sl) }()

	udp, err := net.ListenPacket("udp", dnsAddr)
	if err != nil {
		return fmt.Errorf("sink: dns listen: %w", err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	tcp, err := net.Listen("tcp", net.JoinHostPort(udp.LocalAddr().(*net.UDPAddr).IP.String(), fmt.Sprint(port)))
	if err != nil {
		return fmt.Errorf("sink: dns tcp listen: %w", err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { answer(w, r, a) })
	go func() { _ = (&dns.Server{PacketConn: udp, Handler: h}).ActivateAndServe() }()
	go func() { _ = (&dns.Server{Listener: tcp, Handler: h}).ActivateAndServe() }()

	ports := fmt.Sprintf("SMTP_PORT=%d\nDNS_PORT=%d\n", sl.Addr().(*net.TCPAddr).Port, port)
	if portsFile != "" {
		if err := atomicfile.Write(portsFile, []byte(ports), 0o644); err != nil {
			return fmt.Errorf("sink: %w", err)
		}
	}
	log.Info("sink listening", "smtp", sl.Addr().String(), "dns", udp.LocalAddr().String(), "dir", dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return srv.Close()
}

// answer makes every name mail-capable: MX points at the name itself and
// every A query answers a; PTR and everything else is NXDOMAIN/empty.
func answer(w dns.ResponseWriter, r *dns.Msg, a net.IP) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) == 1 {
		q := r.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Rrtype: q.Qtype, Ttl: 60}
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.To4()})
		case dns.TypeMX:
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Preference: 10, Mx: q.Name})
		case dns.TypePTR:
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

type backend struct {
	dir string
	log *slog.Logger
	n   atomic.Int64
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{b: b}, nil
}

type session struct {
	b    *backend
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n := s.b.n.Add(1)
	name := filepath.Join(s.b.dir, fmt.Sprintf("msg-%d.eml", n))
	head := fmt.Sprintf("X-Sink-From: <%s>\r\nX-Sink-To: %s\r\n", s.from, strings.Join(s.to, ", "))
	if err := atomicfile.Write(name, append([]byte(head), body...), 0o644); err != nil {
		return err
	}
	s.b.log.Info("message received", "file", name, "from", s.from, "rcpts", len(s.to))
	return nil
}
