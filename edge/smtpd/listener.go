package smtpd

import (
	"bytes"
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

// gate counts connections in total and per client: an IPv4 address, or
// the IPv6 prefix of length v6Bits (one IPv6 host can use every address
// of its /64, so counting addresses would not limit it).
type gate struct {
	maxTotal, maxIP int
	v6Bits          int

	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int
}

func newGate(maxTotal, maxIP, v6Bits int) *gate {
	return &gate{maxTotal: maxTotal, maxIP: maxIP, v6Bits: v6Bits, perIP: map[netip.Prefix]int{}}
}

// key is what ip is counted under.
func (g *gate) key(ip netip.Addr) netip.Prefix {
	bits := ip.BitLen()
	if ip.Is6() && g.v6Bits > 0 && g.v6Bits < bits {
		bits = g.v6Bits
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}

// acquire takes a slot for ip, or returns the refusal.
func (g *gate) acquire(ip netip.Addr) *policy.Reply {
	k := g.key(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.maxTotal {
		return policy.TooManyConnections("to this relay")
	}
	if g.perIP[k] >= g.maxIP {
		from := ip.String()
		if k.Bits() < ip.BitLen() {
			from = k.String()
		}
		return policy.TooManyConnections("from " + from)
	}
	g.total++
	g.perIP[k]++
	return nil
}

func (g *gate) release(ip netip.Addr) {
	k := g.key(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[k]--; g.perIP[k] <= 0 {
		delete(g.perIP, k)
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
			l.srv.report.connectRefusal(ip.String(), r)
		}
		if r != nil {
			l.srv.countRefused(r)
			l.srv.log.Info("connection refused", "client_ip", ip.String(), "reply", r.Error())
			go l.reject(c, r)
			continue
		}
		gc := &gatedConn{Conn: c, ip: ip, release: func() { l.srv.gate.release(ip) }}
		gc.sessionEnd = time.Now().Add(l.srv.opts.SMTP.MaxSessionDuration) // real time: network deadlines
		return gc, nil
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
// many errors), whatever go-smtp does next; ended holds the reply every
// later command gets. No read deadline goes beyond sessionEnd, so an idle
// or slow connection ends at smtp.max_session_duration whatever timeout
// go-smtp sets.
type gatedConn struct {
	net.Conn
	ip         netip.Addr
	once       sync.Once
	release    func()
	sessionEnd time.Time

	closeAfterWrite atomic.Bool
	ended           atomic.Pointer[policy.Reply]
	state           connState
	ra              readAhead // see readahead.go

	wmu  sync.Mutex
	pend []byte // continuation lines of a reply not yet written
}

// maxHeldReply bounds the continuation lines held for one reply.
const maxHeldReply = 4 << 10

// Write sends b, together with the continuation lines held before it.
// go-smtp writes a multi-line reply (EHLO's, a policy refusal's) one line
// per write call, each its own system call and TCP segment: a complete
// continuation line ("250-SIZE ...\r\n") is held instead and goes out
// with the reply's final line, which go-smtp always writes right after
// it. Read also sends what is held, so nothing waits while the client is
// waited for. Anything else is written at once.
func (c *gatedConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	if continuationLine(b) && len(c.pend)+len(b) <= maxHeldReply {
		c.pend = append(c.pend, b...)
		c.wmu.Unlock()
		return len(b), nil // the reply is not complete: no closeAfterWrite yet
	}
	var n int
	var err error
	if held := len(c.pend); held > 0 {
		c.pend = append(c.pend, b...)
		n, err = c.Conn.Write(c.pend)
		n = max(0, n-held)
		c.pend = c.pend[:0]
	} else {
		n, err = c.Conn.Write(b)
	}
	c.wmu.Unlock()
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	return n, err
}

// flushPending writes the continuation lines held, if any.
func (c *gatedConn) flushPending() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pend) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pend)
	c.pend = c.pend[:0]
	return err
}

// continuationLine reports whether b is exactly one reply line that is
// not a reply's last: three digits, a hyphen, text, CRLF.
func continuationLine(b []byte) bool {
	n := len(b)
	return n >= 6 && b[3] == '-' && b[n-2] == '\r' && b[n-1] == '\n' &&
		isDigit(b[0]) && isDigit(b[1]) && isDigit(b[2]) &&
		bytes.IndexByte(b[:n-1], '\n') < 0
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// end makes r the answer to every later command and closes the connection
// after the next reply is written.
func (c *gatedConn) end(r *policy.Reply) {
	c.ended.CompareAndSwap(nil, r)
	c.closeAfterWrite.Store(true)
}

// endReply is the reply that ended the connection, or nil.
func (c *gatedConn) endReply() *policy.Reply { return c.ended.Load() }

func (c *gatedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *gatedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *gatedConn) clamp(t time.Time) time.Time {
	if !c.sessionEnd.IsZero() && (t.IsZero() || t.After(c.sessionEnd)) {
		return c.sessionEnd
	}
	return t
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
	// transactions counts accepted MAIL commands.
	transactions int
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
