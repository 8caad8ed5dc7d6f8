package smtpd

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/edge/policy"
)

// gate counts connections in total and per client IP.
type gate struct {
	maxTotal, maxIP int

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

func newGate(maxTotal, maxIP int) *gate {
	return &gate{maxTotal: maxTotal, maxIP: maxIP, perIP: map[netip.Addr]int{}}
}

// acquire takes a slot for ip, or returns the refusal.
func (g *gate) acquire(ip netip.Addr) *policy.Reply {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.maxTotal {
		return policy.TooManyConnections("to this relay")
	}
	if g.perIP[ip] >= g.maxIP {
		return policy.TooManyConnections("from " + ip.String())
	}
	g.total++
	g.perIP[ip]++
	return nil
}

func (g *gate) release(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// gatedListener admits only local clients within the connection limits.
// Refused clients get their reply (554 or 421) and are closed without
// reaching the SMTP server; for an implicit-TLS listener the reply is sent
// after the TLS handshake.
type gatedListener struct {
	net.Listener
	srv     *Server
	tlsConf *tls.Config // set for implicit-TLS listeners
}

func (l *gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		r := l.srv.pol.Connect(ip)
		if r == nil {
			r = l.srv.gate.acquire(ip)
		} else {
			l.srv.report.refusal("", ip.String(), r)
		}
		if r != nil {
			l.srv.log.Info("connection refused", "client_ip", ip.String(), "reply", r.Error())
			go l.reject(c, r)
			continue
		}
		return &gatedConn{Conn: c, ip: ip, release: func() { l.srv.gate.release(ip) }}, nil
	}
}

// reject answers a refused client and closes the connection, within a few
// seconds whatever the client does.
func (l *gatedListener) reject(c net.Conn, r *policy.Reply) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var w net.Conn = c
	if l.tlsConf != nil {
		tc := tls.Server(c, l.tlsConf)
		if err := tc.Handshake(); err != nil {
			return
		}
		w = tc
		defer tc.Close()
	}
	w.Write([]byte(r.Error() + "\r\n"))
}

// gatedConn releases its gate slot once on Close. closeAfterWrite lets a
// session end the connection right after its last reply was written (too
// many errors), whatever go-smtp does next.
type gatedConn struct {
	net.Conn
	ip      netip.Addr
	once    sync.Once
	release func()

	closeAfterWrite atomic.Bool
	state           connState
}

func (c *gatedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	return n, err
}

func (c *gatedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// connState is what a connection keeps across the sessions go-smtp creates
// for it (a new one after STARTTLS).
type connState struct {
	mu         sync.Mutex
	identified bool
	identity   policy.Identity
	errors     int
	tlsNoted   bool
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// underlying finds our gatedConn below a go-smtp connection (which may be a
// *tls.Conn after STARTTLS or on an implicit-TLS listener).
func underlying(c net.Conn) *gatedConn {
	for {
		switch x := c.(type) {
		case *gatedConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		default:
			return nil
		}
	}
}

// slogWriter adapts go-smtp's ErrorLog to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Printf(format string, v ...any) {
	w.log.Debug("smtp", "msg", fmt.Sprintf(format, v...))
}
func (w slogWriter) Println(v ...any) { w.log.Debug("smtp", "msg", fmt.Sprint(v...)) }
