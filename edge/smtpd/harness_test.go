package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/edge/ratelimit"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/resolver"
)

// testEdge is an intake on loopback with a real spool on disk.
type testEdge struct {
	t      testing.TB
	srv    *Server
	spool  *spool.Spool
	reg    *devices.Table
	addr   string // plain listener
	tlsAdr string // implicit-TLS listener, if configured
	events *eventSink
	cancel context.CancelFunc
	done   chan error
}

type eventSink struct {
	mu  sync.Mutex
	evs []event.Event
}

func (s *eventSink) Emit(e event.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
}

func (s *eventSink) all() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.evs...)
}

type edgeOpts struct {
	cfg     func(*config.Config)
	dns     DNS
	minFree int64
	tls     bool
	tlsMin  string
}

// testEdgeID is the edge id the test intake puts in its events.
const testEdgeID = "edge-7f3a"

func testConfig() config.Config {
	cfg := config.Default(true)
	cfg.Hostname = "edge.test.example.edu"
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.LocalNetworks = []string{"127.0.0.0/25"} // 127.0.0.200 is "outside"
	cfg.SMTP.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	cfg.SMTP.MaxMessageSize = 64 << 10
	cfg.SMTP.MaxRecipients = 5
	cfg.SMTP.CommandTimeout = 5 * time.Second
	cfg.SMTP.DataTimeout = 5 * time.Second
	cfg.Policy.MessagesPerHour = 20
	cfg.Policy.RecipientsPerHour = 50
	cfg.Policy.RegisterURL = "https://postern.example.edu/register"
	cfg.Policy.BulkURL = "https://lists.example.edu/"
	cfg.Policy.Contact = "helpdesk@example.edu"
	cfg.Devices = []config.Device{
		{Name: "scanner.example.edu", Senders: []string{"scanner@example.edu"}},
		{Name: "copier.example.edu", Status: "suspended"},
		{Name: "limited.example.edu", MessagesPerHour: 2},
	}
	return cfg
}

func startEdge(t testing.TB, o edgeOpts) *testEdge {
	t.Helper()
	cfg := testConfig()
	if o.tls {
		cfg.SMTP.TLSListen = []string{"127.0.0.1:0"}
		if o.tlsMin != "" {
			cfg.SMTP.TLSMinVersion = o.tlsMin
		}
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sp, err := spool.Open(spool.Options{Dir: dir + "/spool", ValueLogFileSize: 4 << 20, GCInterval: -1, Log: log, MinFree: o.minFree})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(cfg.Devices, sp.KV("susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := policy.NewConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.New(pc, reg, ratelimit.New(nil), ratelimit.New(nil))
	var tc *tls.Config
	tc, err = TLSConfig("", "", cfg.SMTP.TLSMinVersion, dir, cfg.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	if o.dns == nil {
		o.dns = testZone(t)
	}
	sink := &eventSink{}
	srv, err := New(Options{
		Hostname: cfg.Hostname, EdgeID: testEdgeID, SMTP: cfg.SMTP, TLS: tc, Policy: pol, DNS: o.dns, Spool: sp,
		Events: sink, Log: log, ReportInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &testEdge{t: t, srv: srv, spool: sp, reg: reg, events: sink, cancel: cancel, done: make(chan error, 1)}
	addrs := srv.Addrs()
	e.addr = addrs[0].String()
	if o.tls {
		e.tlsAdr = addrs[1].String()
	}
	go func() { e.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-e.done
		sp.Close()
	})
	return e
}

// testZone serves the test names on a real DNS server on loopback and
// returns the intake's DNS view through the shared resolver:
//
//	127.0.0.10 <-> scanner.example.edu   registered, sender list
//	127.0.0.11  -> scanner.example.edu   PTR present, forward mismatch
//	127.0.0.12     PTR query dropped     DNS timeout
//	127.0.0.13 <-> copier.example.edu    registered, suspended
//	127.0.0.14 <-> limited.example.edu   registered, 2 messages/hour
//	others         no PTR                unregistered
func testZone(t testing.TB) DNS {
	t.Helper()
	dns, _ := testZoneServer(t)
	return dns
}

// testZoneServer is testZone that also returns the DNS server, for tests
// that add names or stop it.
func testZoneServer(t testing.TB) (DNS, *dnstest.Server) {
	t.Helper()
	d := dnstest.Start(t)
	for ip, name := range map[string]string{
		"127.0.0.10": "scanner.example.edu",
		"127.0.0.13": "copier.example.edu",
		"127.0.0.14": "limited.example.edu",
	} {
		d.AddPTR(ip, name)
		d.AddA(name, ip)
	}
	d.AddPTR("127.0.0.11", "scanner.example.edu")
	d.Drop(dnstest.ReverseName("127.0.0.12"))
	d.AddMX("example.edu", 10, "mx.example.edu")
	d.AddA("mx.example.edu", "127.0.0.99")
	d.Drop("slow.example.org")
	r, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: 300 * time.Millisecond, CacheSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return NewDNS(r), d
}

// client is a minimal raw SMTP client, so tests can send exact bytes.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dial connects from source address 127.0.0.<src>.
func (e *testEdge) dial(src int) *client {
	e.t.Helper()
	return dialFrom(e.t, e.addr, src, false)
}

func dialFrom(t testing.TB, addr string, src int, implicitTLS bool) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if implicitTLS {
		conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	return c
}

// reply reads one (possibly multi-line) reply and returns it joined by \n.
func (c *client) reply() string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			if len(lines) == 0 {
				return "EOF: " + err.Error()
			}
			return strings.Join(lines, "\n")
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command line and returns the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.reply()
}

// expect sends line and fails unless the reply starts with prefix.
func (c *client) expect(line, prefix string) string {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("%q: got %q, want %q...", line, r, prefix)
	}
	return r
}

// hello reads the banner and sends EHLO.
func (c *client) hello() string {
	c.t.Helper()
	if b := c.reply(); !strings.HasPrefix(b, "220 ") {
		c.t.Fatalf("banner: %q", b)
	}
	return c.expect("EHLO device.example.edu", "250")
}

// message is a minimal valid message.
func message(subject string) string {
	return "From: Device <scanner@example.edu>\r\nTo: x@example.edu\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@example.edu>\r\n\r\nbody line 1\r\n..dot-stuffed line\r\nlast\r\n"
}

// sendMail runs one whole transaction and returns the final reply (or
// the first refusal).
func (c *client) sendMail(from string, rcpts []string, body string) string {
	c.t.Helper()
	if r := c.cmd("MAIL FROM:<" + from + ">"); !strings.HasPrefix(r, "250") {
		return r
	}
	ok := 0
	var last string
	for _, rc := range rcpts {
		last = c.cmd("RCPT TO:<" + rc + ">")
		if strings.HasPrefix(last, "250") {
			ok++
		}
	}
	if ok == 0 {
		c.cmd("RSET")
		return last
	}
	if r := c.cmd("DATA"); !strings.HasPrefix(r, "354") {
		return r
	}
	c.send(body + ".\r\n")
	return c.reply()
}

// queued extracts the queue id from "250 2.0.0 Ok: queued as ID".
func queued(t testing.TB, reply string) string {
	t.Helper()
	const p = "250 2.0.0 Ok: queued as "
	if !strings.HasPrefix(reply, p) {
		t.Fatalf("not queued: %q", reply)
	}
	return strings.TrimPrefix(reply, p)
}

func (e *testEdge) spooled(id string) (*spool.Envelope, string) {
	e.t.Helper()
	env, err := e.spool.Get(id)
	if err != nil {
		e.t.Fatalf("spool get %s: %v", id, err)
	}
	data, err := e.spool.Data(id)
	if err != nil {
		e.t.Fatalf("spool data %s: %v", id, err)
	}
	return env, string(data)
}

func (e *testEdge) count() int {
	n := 0
	if err := e.spool.Iterate(func(*spool.Envelope) error { n++; return nil }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

type configT = config.Config

type spoolEnv = *spool.Envelope

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func itoa(n int) string { return fmt.Sprint(n) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
