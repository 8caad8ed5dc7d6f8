package smtpd

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/shared/event"
)

// TestRelayByBounceRefusedAtMail: an unregistered client (no PTR) cannot
// use an outside sender, so no NDR of its transaction can leave the
// organisation; the refusal says why and where to register. Affiliated
// senders still work for it.
func TestRelayByBounceRefusedAtMail(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	r := c.expect("MAIL FROM:<victim@example.com> RET=FULL", "550 5.7.1")
	for _, want := range []string{"victim@example.com", "not a registered device", "https://postern.example.edu/register"} {
		if !strings.Contains(r, want) {
			t.Errorf("refusal %q does not mention %q", r, want)
		}
	}
	c.expect("RCPT TO:<nosuch@example.edu>", "502 5.5.1") // no transaction
	// A confirmed name that is not registered is no better.
	c2 := e.dial(11) // PTR names the device, forward mismatch
	c2.hello()
	c2.expect("MAIL FROM:<victim@example.com>", "550 5.7.1")
	// The same client with an affiliated sender: accepted.
	queued(t, c.sendMail("anyone@example.edu", []string{"nosuch@example.edu"}, message("inside")))
	if n := e.count(); n != 1 {
		t.Fatalf("%d stored, want 1", n)
	}
}

// TestUnlistedSenderNotTheDevices: a registered device sending with a
// sender outside its list is an unregistered client for that
// transaction: outside senders refused, affiliated recipients only, and
// the stored envelope names no device (its NDRs can never suspend the
// device). With its registered sender the envelope names it.
func TestUnlistedSenderNotTheDevices(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(10) // scanner.example.edu, senders [scanner@example.edu]
	c.hello()
	c.expect("MAIL FROM:<victim@example.com>", "550 5.7.1")
	c.expect("MAIL FROM:<nobody@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")
	c.expect("RSET", "250")
	env, _ := e.spooled(queued(t, c.sendMail("nobody@example.edu", []string{"nosuch@example.edu"}, message("unlisted"))))
	if env.Device != "" {
		t.Errorf("unlisted sender's envelope names device %q", env.Device)
	}
	if env.ClientName != "scanner.example.edu" {
		t.Errorf("client name %q", env.ClientName)
	}
	env, _ = e.spooled(queued(t, c.sendMail("scanner@example.edu", []string{"x@gmail.com"}, message("listed"))))
	if env.Device != "scanner.example.edu" {
		t.Errorf("registered sender's envelope names device %q", env.Device)
	}
}

// TestAffiliatedSenderWithoutDNS: MAIL with an affiliated sender needs no
// DNS lookup: the server sees no query for the sender's domain, and with
// the resolver dead an unregistered client still sends to an affiliated
// recipient.
func TestAffiliatedSenderWithoutDNS(t *testing.T) {
	z, d := testZoneServer(t)
	e := startEdge(t, edgeOpts{dns: z})
	c := e.dial(20)
	c.hello()
	queued(t, c.sendMail("x@example.edu", []string{"ok@example.edu"}, message("live")))
	queued(t, c.sendMail("x@dept.example.edu", []string{"ok@example.edu"}, message("live2")))
	for _, q := range []uint16{dns.TypeMX, dns.TypeA, dns.TypeAAAA} {
		if n := d.QueriesFor("example.edu", q) + d.QueriesFor("dept.example.edu", q); n != 0 {
			t.Errorf("%d %s queries for an affiliated sender domain", n, dns.TypeToString[q])
		}
	}
	d.Close() // the resolver stops answering
	c = e.dial(21)
	c.hello()
	queued(t, c.sendMail("x@example.edu", []string{"ok@example.edu"}, message("dead")))
	// What needs DNS stays temporary.
	c.expect("MAIL FROM:<x@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "451 4.4.3")
	c.expect("MAIL FROM:<x@example.org>", "451 4.4.3")
}

// TestNoAllowlistYetIs4xx: an edge that takes its devices from central and
// has no allowlist yet answers a named client it cannot decide on with
// 451 4.7.0, for outside recipients and outside senders; affiliated mail
// flows, static devices are decided as usual, and a client without a
// confirmed name gets its certain 550.
func TestNoAllowlistYetIs4xx(t *testing.T) {
	z, d := testZoneServer(t)
	d.AddPTR("127.0.0.30", "mfp.example.edu")
	d.AddA("mfp.example.edu", "127.0.0.30")
	e := startEdge(t, edgeOpts{dns: z, cfg: func(c *configT) { c.Sync.Enabled = true }})
	c := e.dial(30)
	c.hello()
	c.expect("MAIL FROM:<scans@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "451 4.7.0")
	c.expect("MAIL FROM:<scans@partner.example.org>", "451 4.7.0")
	c.expect("NOOP", "250")

	c = e.dial(10) // static device
	c.hello()
	queued(t, c.sendMail("scanner@example.edu", []string{"x@gmail.com"}, message("static")))
	c = e.dial(20) // no PTR
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")
}

// TestAddressesRefusedNotRewritten: a domain that is not IDNA2008 as sent
// is refused (553 5.1.3 for recipients, 553 5.1.7 for senders), and an
// '@' in the sender's local part is refused at MAIL as at RCPT.
func TestAddressesRefusedNotRewritten(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	c := e.dial(20)
	c.hello()
	for _, s := range []string{"a@ｅｘａｍｐｌｅ.edu", "a@example。edu", "a@exa\u00admple.edu"} {
		c.expect("MAIL FROM:<"+s+">", "553 5.1.7")
	}
	for _, s := range []string{"victim@example.com@example.edu", `"victim@example.com"@example.edu`} {
		c.expect("MAIL FROM:<"+s+">", "550 5.7.1")
	}
	c.expect("MAIL FROM:<a@example.edu>", "250")
	for _, s := range []string{"x@ｅｘａｍｐｌｅ.edu", "x@example。edu", "x@ＥＸＡＭＰＬＥ.EDU", "x@exa\u200bmple.edu"} {
		c.expect("RCPT TO:<"+s+">", "553 5.1.3")
	}
	for _, s := range []string{"victim@example.com@example.edu", `"victim@example.com"@example.edu`} {
		c.expect("RCPT TO:<"+s+">", "550 5.7.1")
	}
}

// TestInflightBudget: messages in transfer reserve their declared SIZE
// (or their first buffer, growing) from smtp.max_inflight_bytes; beyond it the edge
// answers 452 4.3.1, at MAIL when the declared SIZE cannot fit and at
// DATA otherwise, and the reservations are returned afterwards.
func TestInflightBudget(t *testing.T) {
	const size = 60000 // under max_message_size (64 KiB)
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.MaxInflightBytes = 3 * (size + 2<<10) // three declared messages
		c.SMTP.MaxConnectionsIP = 20
	}})
	msg := message("big") + strings.Repeat("0123456789012345678901234567890123456789012345678\r\n", size/51-10)
	open := func(src int, sizeParam string) *client {
		c := e.dial(src)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>"+sizeParam, "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
		c.expect("DATA", "354")
		c.send(msg[:1000]) // the transfer is under way
		return c
	}
	var held []*client
	for i := range 3 {
		held = append(held, open(20+i, fmt.Sprintf(" SIZE=%d", size)))
	}
	waitFor(t, func() bool { return e.srv.Stats().InflightBytes >= 3*size })
	// A fourth declared message cannot fit: refused at MAIL.
	c := e.dial(30)
	c.hello()
	c.expect(fmt.Sprintf("MAIL FROM:<a@example.edu> SIZE=%d", size), "452 4.3.1")
	// Without SIZE it reserves its first buffer, which does not fit
	// either: refused at DATA.
	if r := c.sendMail("a@example.edu", []string{"x@example.edu"}, msg); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("undeclared message over the budget: %q", r)
	}
	// The held transfers complete and free the budget.
	for _, h := range held {
		h.send(msg[1000:] + ".\r\n")
		queued(t, h.reply())
	}
	waitFor(t, func() bool { return e.srv.Stats().InflightBytes == 0 })
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, msg))
	// A message bigger than it declared grows its reservation while the
	// budget allows.
	c.expect("MAIL FROM:<a@example.edu> SIZE=100", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("DATA", "354")
	c.send(msg + ".\r\n")
	queued(t, c.reply())
	if got := e.srv.Stats().InflightBytes; got != 0 {
		t.Fatalf("%d bytes still reserved", got)
	}
	if n := e.count(); n != 5 {
		t.Fatalf("%d stored, want 5", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSessionLimits: a connection may send smtp.max_transactions_per_session
// messages, then gets 421 4.7.0 and is closed; and it ends
// smtp.max_session_duration after it opened, idle or not (421 4.4.2).
func TestSessionLimits(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.MaxTransactions = 2
		c.SMTP.MaxSessionDuration = 2 * time.Second
	}})
	c := e.dial(20)
	c.hello()
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message("t1")))
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message("t2")))
	c.expect("MAIL FROM:<a@example.edu>", "421 4.7.0")
	if r := c.reply(); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("connection open after the transaction limit: %q", r)
	}

	// Idle: the session ends at its time limit, well before the 5s
	// command timeout.
	start := time.Now()
	c = e.dial(21)
	c.hello()
	if r := c.reply(); !strings.HasPrefix(r, "421 4.4.2") {
		t.Fatalf("idle session past its limit: %q", r)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("session ended after %v (limit 2s)", el)
	}
	// Busy: a client that keeps talking is cut off at the limit too.
	c = e.dial(22)
	c.hello()
	var last string
	for i := 0; i < 40; i++ {
		if last = c.cmd("NOOP"); !strings.HasPrefix(last, "250") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(last, "421 4.4.2") && !strings.HasPrefix(last, "EOF") {
		t.Fatalf("busy session past its limit: %q", last)
	}
	c = e.dial(23)
	c.hello()
	time.Sleep(2100 * time.Millisecond)
	if r := c.cmd("MAIL FROM:<a@example.edu>"); !strings.HasPrefix(r, "421 4.4.2") {
		t.Fatalf("MAIL past the session limit: %q", r)
	}
}

// TestBDATBoundedByDataTimeout: a chunked transfer that trickles chunks
// (each BDAT command well within the command timeout) is cut off at
// smtp.data_timeout with 421 4.4.2, like DATA, and nothing is stored.
func TestBDATBoundedByDataTimeout(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) { c.SMTP.DataTimeout = time.Second }})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	start := time.Now()
	var last string
	for i := 0; i < 30; i++ {
		c.send("BDAT 5\r\nFrom:")
		if last = c.reply(); !strings.HasPrefix(last, "250") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.HasPrefix(last, "421 4.4.2") {
		t.Fatalf("trickled BDAT: %q", last)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("cut off after %v (data_timeout 1s)", el)
	}
	if r := c.reply(); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("connection open after the timeout: %q", r)
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d stored", n)
	}
}

// TestEventsNameTheEdgeID: intake events carry the edge's id, not its
// hostname (central attributes events by edge id).
func TestEventsNameTheEdgeID(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<victim@example.com>", "550")
	var evs []event.Event
	waitFor(t, func() bool { evs = e.events.all(); return len(evs) > 0 })
	for _, ev := range evs {
		if ev.Edge != testEdgeID {
			t.Errorf("event %s names edge %q, want %q (hostname is %q)", ev.Kind, ev.Edge, testEdgeID, "edge.test.example.edu")
		}
	}
}

// TestGateCountsIPv6PerPrefix: IPv6 clients are counted per prefix for the
// connection limit, IPv4 clients per address.
func TestGateCountsIPv6PerPrefix(t *testing.T) {
	g := newGate(100, 2, 64)
	a := netip.MustParseAddr
	for _, ip := range []string{"fd00::1", "fd00::2"} {
		if r := g.acquire(a(ip)); r != nil {
			t.Fatal(r)
		}
	}
	r := g.acquire(a("fd00::ffff:3"))
	if r == nil || !strings.HasPrefix(r.Error(), "421 4.7.0") || !strings.Contains(r.Text, "fd00::/64") {
		t.Fatalf("third connection from one /64: %v", r)
	}
	if r := g.acquire(a("fd00:0:0:1::1")); r != nil {
		t.Fatalf("another /64: %v", r)
	}
	g.release(a("fd00::2"))
	if r := g.acquire(a("fd00::9")); r != nil {
		t.Fatalf("after a release: %v", r)
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"} {
		if r := g.acquire(a(ip)); r != nil {
			t.Fatalf("IPv4 %s: %v", ip, r)
		}
	}
	if r := g.acquire(a("10.0.0.1")); r == nil {
		t.Fatal("third connection from one IPv4 address admitted")
	}
	per := newGate(100, 1, 128)
	for _, ip := range []string{"fd00::1", "fd00::2"} {
		if r := per.acquire(a(ip)); r != nil {
			t.Fatalf("/128 %s: %v", ip, r)
		}
	}
}

// TestBudgetOneClientManyConnections: one client opening every connection
// it may, each with a maximum-size message in transfer, cannot reserve
// more than the budget.
func TestBudgetOneClientManyConnections(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.MaxInflightBytes = 4 * (c.SMTP.MaxMessageSize + 2<<10)
		c.SMTP.MaxConnectionsIP = 10
	}})
	limit := e.srv.opts.SMTP.MaxInflightBytes
	maxSize := e.srv.opts.SMTP.MaxMessageSize
	refused0 := e.srv.Stats().Refused
	var conns []*client
	for range 10 {
		c := e.dial(20)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
		c.expect("DATA", "354")
		// A slow upload: most of the message, then hold.
		c.send("From: a@example.edu\r\n\r\n" + strings.Repeat("x\r\n", 20000))
		conns = append(conns, c)
	}
	// No transfer ends (and returns its reservation) before every one of
	// them has reserved or been refused: each admitted transfer holds a
	// little more than the maximum size (the size, its Received header,
	// one octet), so the reservations are InflightBytes/maxSize.
	peak := int64(0)
	waitFor(t, func() bool {
		st := e.srv.Stats()
		peak = max(peak, st.InflightBytes)
		return int64(st.Refused-refused0)+st.InflightBytes/maxSize == 10
	})
	refused := 0
	for _, c := range conns {
		c.send(".\r\n")
		if r := c.reply(); strings.HasPrefix(r, "452 4.3.1") {
			refused++
		} else if !strings.HasPrefix(r, "250") {
			t.Errorf("end of data: %q, want 250 or 452 4.3.1", r)
		}
	}
	peak = max(peak, e.srv.budget.maxUse())
	if peak > limit {
		t.Fatalf("reserved %d bytes, budget %d", peak, limit)
	}
	if refused != 6 {
		t.Errorf("%d of 10 refused with 452 4.3.1, want 6 (4 fit)", refused)
	}
}

// TestUndeclaredTransfersShareTheBudget: messages without SIZE reserve
// their first buffer when DATA starts, not the maximum size, so more of
// them than budget/max_message_size are in transfer at once and all are
// accepted; the reservations are returned afterwards.
func TestUndeclaredTransfersShareTheBudget(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.MaxMessageSize = 1 << 20
		c.SMTP.MaxInflightBytes = 2 * (c.SMTP.MaxMessageSize + 2<<10) // two maximum-size messages
		c.SMTP.MaxConnectionsIP = 10
	}})
	msg := message("undeclared") + strings.Repeat("0123456789012345678901234567890123456789012345678\r\n", 200)
	var open []*client
	for i := range 8 {
		c := e.dial(20 + i)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
		c.expect("DATA", "354")
		c.send(msg[:1000]) // the transfer is under way
		open = append(open, c)
	}
	waitFor(t, func() bool { return e.srv.Stats().InflightBytes >= 8*undeclaredReserve })
	for _, c := range open {
		c.send(msg[1000:] + ".\r\n")
		queued(t, c.reply())
	}
	waitFor(t, func() bool { return e.srv.Stats().InflightBytes == 0 })
	if n := e.count(); n != 8 {
		t.Fatalf("%d stored, want 8", n)
	}
}
