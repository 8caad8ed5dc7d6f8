package smtpd

// Adversarial tests of the intake: open-relay tricks, SMTP smuggling
// (CVE-2023-51766 class) over DATA and BDAT, session-state confusion,
// client-address spoofing, parameter abuse, header injection and resource
// exhaustion. Each test states the invariant it checks, so that it fails
// if the edge were vulnerable, whatever the exact reply text.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/edge/ratelimit"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

// relaxed lifts the limits that would otherwise end a hostile session
// before it has tried everything.
func relaxed(c *configT) {
	c.SMTP.MaxErrors = 1000
	c.SMTP.MaxRecipients = 1000
	c.Policy.MessagesPerHour = 100000
	c.Policy.RecipientsPerHour = 100000
}

var affiliated = func() address.DomainList {
	l, err := address.NewDomainList([]string{"example.edu", ".example.edu"})
	if err != nil {
		panic(err)
	}
	return l
}()

// storedDomain is the domain delivery routes a stored recipient to: what
// follows the last '@' (edge/queue does the same).
func storedDomain(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}

// relayArgs are RCPT TO arguments (what follows "RCPT TO:") that try to
// get mail relayed outside the affiliated domains.
func relayArgs() []string {
	locals := []string{"u", "u%gmail.com", "gmail.com!u", `"u@gmail.com"`, `"u\"@gmail.com"`,
		`"@"`, `"\@"`, `"u@"`, `"u"`, "u.", `"u\\"`, "u+gmail.com", "u=gmail.com"}
	domains := []string{
		"gmail.com", "gmail.com.", "GMAIL.COM", "gMaIl.CoM.",
		"example.edu.gmail.com", "example.edu.evil.com", "evilexample.edu", "example.edu-evil.com",
		"xn--exmple-cua.edu", "exämple.edu", "exаmple.edu" /* Cyrillic а */, "EXАMPLE.EDU",
		"[127.0.0.1]", "[IPv6:::1]", "[IPv6:::ffff:127.0.0.1]", "[example.edu]", "[gmail.com]",
		"ｅｘａｍｐｌｅ.edu", "example。edu", "exa\u00admple.edu", /* not IDNA2008 as sent: refused, not mapped */
		"127.0.0.1", "localhost", "example.edu..", ".example.edu", "example.edu:25",
		"gmail.com%example.edu", "gmail.com!example.edu", "gmail.com\texample.edu",
	}
	var out []string
	for _, l := range locals {
		for _, d := range domains {
			out = append(out, "<"+l+"@"+d+">")
		}
	}
	out = append(out,
		// double @, unquoted and quoted, in both orders
		"<u@gmail.com@example.edu>", "<u@example.edu@gmail.com>",
		`<"u@example.edu"@gmail.com>`, `<"u"@gmail.com@example.edu>`,
		`<"u\"@gmail.com"@example.edu>`, `<"u\\"@gmail.com@example.edu>`,
		// source routes (go-smtp strips the route; the mailbox decides)
		"<@example.edu:u@gmail.com>", "<@example.edu,@mx.example.edu:u@gmail.com>",
		"<@gmail.com:u@gmail.com>", "<@example.edu:u%gmail.com@example.edu>",
		"<@example.edu:@gmail.com:u@gmail.com>",
		// no brackets, broken brackets, spaces, params
		"u@gmail.com", "u@gmail.com@example.edu", "<u@gmail.com", "u@gmail.com>",
		"< u@gmail.com>", "<u@gmail.com >", " <u@gmail.com>", "<u@gmail.com> NOTIFY=NEVER",
		"<u@gmail.com> ORCPT=rfc822;u@example.edu", "<u@gmail.com>example.edu",
		"<u@gmail.com> <u@example.edu>", "<u@gmail.com>,<u@example.edu>",
		"<u@gmail.com>\x00<u@example.edu>",
		// NUL and controls around the domain
		"<u@gmail.com\x00.example.edu>", "<u@example.edu\x00@gmail.com>", "<u@gmail.com\x00@example.edu>",
		"<u\x00@gmail.com>", "<u@gmail.com\x0b>", "<u@gmail\x7f.com>", "<u@gmail.com\r>",
		// Unicode dots and widths (UTS #46 would map them; they are refused)
		"<u@gmail。com>", "<u@gmail．com>", "<u@ｇｍａｉｌ.com>", "<u@example.edu\u00ad.gmail.com>",
		"<u@exam\u200bple.edu>", "<u@exam\u200dple.edu>", "<u@example\u2024edu>",
		// length boundaries
		"<"+strings.Repeat("a", 65)+"@gmail.com>",
		"<u@"+strings.Repeat("a", 64)+".com>",
		"<u@"+strings.Repeat("a.", 127)+"gmail.com>",
		"<"+strings.Repeat("a", 64)+"@"+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+"."+strings.Repeat("d", 56)+".gmail.com>",
	)
	return out
}

// TestAdversarialOpenRelay sends every relay trick from an unregistered
// client (no PTR) and from a client whose PTR names a registered device
// whose A record does not include the client (forward mismatch). The
// invariant: every recipient the edge stores for such a client routes to
// an affiliated domain. Affiliated spellings must still be accepted, so the
// test is not passing by refusing everything.
func TestAdversarialOpenRelay(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	args := relayArgs()
	for _, src := range []int{20, 11} {
		c := e.dial(src)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		accepted := 0
		for _, a := range args {
			r := c.cmd("RCPT TO:" + a)
			if strings.HasPrefix(r, "250") {
				accepted++
				continue
			}
			if !strings.HasPrefix(r, "5") {
				t.Errorf("src %d: RCPT TO:%q = %q, want a 5xx", src, a, r)
			}
		}
		// Legitimate affiliated spellings in the same transaction.
		for _, a := range []string{"<u@example.edu>", "<u@EXAMPLE.EDU.>", "<u@sub.example.edu>",
			`<"u v"@example.edu>`, "<@gmail.com:u@example.edu>"} {
			if r := c.cmd("RCPT TO:" + a); !strings.HasPrefix(r, "250") {
				t.Errorf("src %d: affiliated RCPT TO:%s refused: %q", src, a, r)
			}
			accepted++
		}
		c.expect("DATA", "354")
		c.send(message("relay") + ".\r\n")
		env, _ := e.spooled(queued(t, c.reply()))
		for _, rc := range env.Recipients {
			if d := storedDomain(rc.Addr); !affiliated.Contains(d) {
				t.Errorf("src %d: OPEN RELAY: stored recipient %q routes to %q", src, rc.Addr, d)
			}
			if strings.Count(rc.Addr, "@") != 1 {
				t.Errorf("src %d: stored recipient %q has more than one '@'", src, rc.Addr)
			}
		}
		t.Logf("src %d: %d RCPT tricks tried, %d recipients stored (all affiliated)", src, len(args), len(env.Recipients))
	}
}

// TestAdversarialRelayEachRecipientDecided: affiliated and external
// recipients mixed and pipelined in one packet are decided one by one, and
// only the affiliated ones are stored.
func TestAdversarialRelayEachRecipientDecided(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	c := e.dial(20)
	c.hello()
	var b strings.Builder
	b.WriteString("MAIL FROM:<a@example.edu>\r\n")
	want := []string{"250"}
	for i := 0; i < 40; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&b, "RCPT TO:<in%d@example.edu>\r\n", i)
			want = append(want, "250")
		} else {
			fmt.Fprintf(&b, "RCPT TO:<out%d@gmail.com>\r\n", i)
			want = append(want, "550 5.7.1")
		}
	}
	b.WriteString("DATA\r\n")
	want = append(want, "354")
	c.send(b.String())
	for i, w := range want {
		if r := c.reply(); !strings.HasPrefix(r, w) {
			t.Fatalf("reply %d: %q, want %s", i, r, w)
		}
	}
	c.send(message("mixed") + ".\r\n")
	env, _ := e.spooled(queued(t, c.reply()))
	if len(env.Recipients) != 20 {
		t.Fatalf("%d recipients stored, want 20", len(env.Recipients))
	}
	for _, rc := range env.Recipients {
		if !strings.HasPrefix(rc.Addr, "in") {
			t.Errorf("external recipient stored: %q", rc.Addr)
		}
	}
}

// TestAdversarialSessionState: refusals and resets must leave no
// transaction behind that a later command could use, and HELO must not be
// a way around the policy that applies after EHLO.
func TestAdversarialSessionState(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	t.Run("RCPT before MAIL", func(t *testing.T) {
		c := e.dial(20)
		c.hello()
		c.expect("RCPT TO:<x@example.edu>", "5")
		c.expect("DATA", "5")
		c.send("BDAT 5 LAST\r\nhello")
		if r := c.reply(); !strings.HasPrefix(r, "5") {
			t.Fatalf("BDAT without MAIL: %q", r)
		}
		c.expect("NOOP", "250")
	})
	t.Run("MAIL before HELO", func(t *testing.T) {
		c := e.dial(20)
		c.reply()
		c.expect("MAIL FROM:<a@example.edu>", "5")
		c.expect("RCPT TO:<x@example.edu>", "5")
	})
	t.Run("second MAIL refused after accepted RCPT", func(t *testing.T) {
		// The first transaction has an accepted recipient; the second
		// MAIL is refused (bad sender). go-smtp still thinks a
		// transaction with that recipient is open: DATA, RCPT and BDAT
		// must all fail, and nothing may be stored.
		c := e.dial(20)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
		c.expect("MAIL FROM:<>", "550")
		c.expect("RCPT TO:<y@example.edu>", "503")
		if r := c.cmd("DATA"); strings.HasPrefix(r, "354") {
			c.send(message("ghost") + ".\r\n")
			if r := c.reply(); strings.HasPrefix(r, "250") {
				t.Fatalf("message accepted without an open transaction: %q", r)
			}
		}
		c.expect("NOOP", "250")
	})
	t.Run("registered transaction does not leak into the next MAIL", func(t *testing.T) {
		// A device first sends with its registered sender, then with an
		// unregistered one: external recipients must be refused for the
		// second (the sender check is per transaction).
		c := e.dial(10)
		c.hello()
		c.expect("MAIL FROM:<scanner@example.edu>", "250")
		c.expect("RCPT TO:<x@gmail.com>", "250")
		c.expect("MAIL FROM:<someone@example.edu>", "250")
		c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")
		c.expect("RSET", "250")
		c.expect("MAIL FROM:<scanner@example.edu>", "250")
		c.expect("RCPT TO:<x@gmail.com>", "250")
		// RFC 5321: EHLO resets. A reset after accepted recipients and
		// before any message data ends the connection (it cannot be told
		// from an abandoned BDAT): nothing of the transaction survives.
		c.expect("EHLO again.example.edu", "250")
		if r := c.cmd("RCPT TO:<y@gmail.com>"); !strings.HasPrefix(r, "EOF") && !strings.HasPrefix(r, "5") && !strings.HasPrefix(r, "421") {
			t.Fatalf("RCPT after EHLO reset: %q", r)
		}
	})
	t.Run("refused RCPT then DATA", func(t *testing.T) {
		c := e.dial(20)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@gmail.com>", "550")
		c.expect("DATA", "5")
	})
	t.Run("HELO applies the same policy", func(t *testing.T) {
		c := e.dial(20)
		c.reply()
		c.expect("HELO printer", "250")
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")
		c.expect("RCPT TO:<x%gmail.com@example.edu>", "550")
	})
	if n := e.count(); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestAdversarialClientSpoofing: the client address comes from the TCP
// connection only. XCLIENT, XFORWARD and the PROXY protocol are not
// supported: their lines are errors and change nothing.
func TestAdversarialClientSpoofing(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	// PROXY v1 header before the banner.
	c := e.dial(20)
	c.send("PROXY TCP4 127.0.0.10 127.0.0.1 4000 25\r\n")
	c.reply() // banner
	if r := c.reply(); !strings.HasPrefix(r, "5") {
		t.Fatalf("PROXY line: %q", r)
	}
	c.expect("EHLO scanner.example.edu", "250")
	c.expect("MAIL FROM:<scanner@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")

	c.conn.Close()

	// PROXY v2 binary header (its signature contains "QUIT\n", which
	// go-smtp duly obeys): the connection must end or stay unregistered.
	c = e.dial(20)
	c.send("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x0a\x7f\x00\x00\x01\x0f\xa0\x00\x19" +
		"EHLO scanner.example.edu\r\nMAIL FROM:<scanner@example.edu>\r\nRCPT TO:<x@gmail.com>\r\n")
	for {
		r := c.reply()
		if strings.HasPrefix(r, "EOF") {
			break
		}
		if strings.Contains(r, "gets this") || strings.HasPrefix(r, "250 2.1.5") {
			t.Fatalf("PROXY v2 spoofed a registered client: %q", r)
		}
	}
	c.conn.Close()

	c = e.dial(20)
	c.hello()
	for _, l := range []string{
		"XCLIENT ADDR=127.0.0.10 NAME=scanner.example.edu",
		"XFORWARD ADDR=127.0.0.10 NAME=scanner.example.edu",
		"XCLIENT ADDR=IPV6:::1",
	} {
		if r := c.cmd(l); !strings.HasPrefix(r, "5") {
			t.Errorf("%s: %q, want 5xx", l, r)
		}
	}
	c.expect("MAIL FROM:<scanner@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "550 5.7.1")
	if ehlo := c.cmd("EHLO x.example.edu"); strings.Contains(ehlo, "XCLIENT") || strings.Contains(ehlo, "XFORWARD") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("EHLO advertises client spoofing or AUTH: %q", ehlo)
	}
}

// fakeConn is a net.Conn whose only working method is RemoteAddr.
type fakeConn struct {
	net.Conn
	remote net.Addr
}

func (f fakeConn) RemoteAddr() net.Addr { return f.remote }

// TestAdversarialMappedClientAddress: an IPv4-mapped IPv6 peer
// (::ffff:127.0.0.200, what a dual-stack socket reports for an IPv4
// client) is judged by its IPv4 address: outside local_networks it is
// refused, inside it is the same client as its IPv4 form.
func TestAdversarialMappedClientAddress(t *testing.T) {
	for _, tc := range []struct {
		remote string
		want   string
	}{
		{"[::ffff:127.0.0.200]:4000", "127.0.0.200"},
		{"[::ffff:127.0.0.20]:4000", "127.0.0.20"},
		{"[::ffff:7f00:14]:4000", "127.0.0.20"},
		{"127.0.0.20:4000", "127.0.0.20"},
	} {
		ap := netip.MustParseAddrPort(tc.remote)
		got := remoteIP(fakeConn{remote: net.TCPAddrFromAddrPort(ap)})
		if got.String() != tc.want {
			t.Errorf("remoteIP(%s) = %s, want %s", tc.remote, got, tc.want)
		}
	}
	cfg := testConfig()
	pc, err := policy.NewConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.New(pc, reg, ratelimit.New(nil), ratelimit.New(nil))
	for ip, local := range map[string]bool{
		"::ffff:127.0.0.200": false, "::ffff:127.0.0.20": true, "::ffff:10.0.0.1": false,
		"::127.0.0.20": false, "::1": false, "64:ff9b::7f00:14": false, "2002:7f00:14::1": false,
	} {
		if got := p.Connect(netip.MustParseAddr(ip)) == nil; got != local {
			t.Errorf("Connect(%s) allowed=%v, want %v", ip, got, local)
		}
	}
	// An IPv4-mapped prefix in the configuration must not make every
	// IPv4 client local (nor crash).
	cfg.SMTP.LocalNetworks = []string{"::ffff:0:0/96"}
	pc, err = policy.NewConfig(cfg)
	if err == nil {
		p = policy.New(pc, reg, ratelimit.New(nil), ratelimit.New(nil))
		if p.Connect(netip.MustParseAddr("192.0.2.1")) == nil {
			t.Log("note: ::ffff:0:0/96 in local_networks admits every IPv4 client")
		}
	}
}

// fcrdnsZone is a DNS zone with reverse-DNS tricks:
//
//	127.0.0.40 PTR scanner.example.edu (A is .10): forward mismatch
//	127.0.0.42 PTR alias.example.edu, alias CNAME scanner.example.edu (A .10)
//	127.0.0.43 PTR 12 names; the 11th and 12th are the registered one
//	127.0.0.44 PTR "scanner\.example\.edu" (one label with dots), A .44
//	127.0.0.45 PTR scanner.example.edu.evil.org, A .45
//	127.0.0.46 PTR multi.example.edu (registered), A includes .46: accepted
//	127.0.0.47 PTR MULTI.Example.EDU. (mixed case, trailing dot): accepted
//	127.0.0.48 PTR other.example.org, multi.example.edu: both confirm;
//	           the second is registered: accepted (PTR order rotates)
func fcrdnsZone(t *testing.T) DNS {
	d := dnstest.Start(t)
	d.AddA("scanner.example.edu", "127.0.0.10")
	d.AddPTR("127.0.0.10", "scanner.example.edu")
	d.AddPTR("127.0.0.40", "scanner.example.edu")
	d.AddPTR("127.0.0.42", "alias.example.edu")
	d.AddCNAME("alias.example.edu", "scanner.example.edu")
	var names []string
	for i := 0; i < 10; i++ {
		n := fmt.Sprintf("n%d.example.org", i)
		names = append(names, n)
		d.AddA(n, "192.0.2.1")
	}
	d.AddPTR("127.0.0.43", append(names, "multi.example.edu", "scanner.example.edu")...)
	d.AddRR(`scanner\.example\.edu.example.org. 60 IN A 127.0.0.44`)
	d.AddRR(`44.0.0.127.in-addr.arpa. 60 IN PTR scanner\.example\.edu.example.org.`)
	d.AddA("scanner.example.edu.evil.org", "127.0.0.45")
	d.AddPTR("127.0.0.45", "scanner.example.edu.evil.org")
	d.AddA("multi.example.edu", "127.0.0.46", "127.0.0.47", "127.0.0.48")
	d.AddA("other.example.org", "127.0.0.48")
	d.AddPTR("127.0.0.48", "other.example.org", "multi.example.edu")
	d.AddPTR("127.0.0.46", "multi.example.edu")
	d.AddRR("47.0.0.127.in-addr.arpa. 60 IN PTR MULTI.Example.EDU.")
	d.AddMX("example.edu", 10, "mx.example.edu")
	d.AddA("mx.example.edu", "127.0.0.99")
	// No name here is dropped: the timeout only bounds a hang, and a short
	// one would turn a stall of a loaded machine into a 4xx that the test
	// takes for a wrong decision.
	r, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: 5 * time.Second, CacheSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return NewDNS(r)
}

// TestAdversarialFCrDNS: reverse-DNS tricks never make an unregistered
// client a registered device; spelling differences of a genuine
// registration (case, trailing dot) do not lock it out.
func TestAdversarialFCrDNS(t *testing.T) {
	e := startEdge(t, edgeOpts{dns: fcrdnsZone(t), cfg: func(c *configT) {
		relaxed(c)
		c.Devices = append(c.Devices,
			config.Device{Name: "multi.example.edu"},
			config.Device{Name: `scanner.example.edu.example.org`},
			config.Device{Name: "scanner.example.edu.evil.org.example.edu"},
		)
	}})
	for _, tc := range []struct {
		src  int
		why  string
		want string
	}{
		{40, "PTR names a registered device whose A is another IP", "550 5.7.1"},
		{42, "PTR -> CNAME -> registered device with another IP", "550 5.7.1"},
		{43, "registered name beyond the 10 PTR names checked", "550 5.7.1"},
		{44, "PTR label with escaped dots", "550 5.7.1"},
		{45, "registered name as a prefix of an outside name", "550 5.7.1"},
		{46, "genuine registration", "250"},
		{47, "genuine registration, PTR in mixed case with trailing dot", "250"},
		{48, "registered name second of two confirmed PTR names", "250"},
	} {
		t.Run(tc.why, func(t *testing.T) {
			c := e.dial(tc.src)
			c.hello()
			from := "scanner@example.edu"
			c.expect("MAIL FROM:<"+from+">", "250")
			if r := c.cmd("RCPT TO:<x@gmail.com>"); !strings.HasPrefix(r, tc.want) {
				t.Fatalf("127.0.0.%d: %q, want %s", tc.src, r, tc.want)
			}
		})
	}
}

// smuggled is a complete second transaction that an attacker hopes a
// downstream server would see as a message of its own.
const smuggled = "MAIL FROM:<evil@example.edu>\r\nRCPT TO:<victim@example.edu>\r\nDATA\r\n" +
	"From: evil@example.edu\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"

// checkSmuggling asserts the smuggling invariants over the whole spool:
// no message from the smuggled sender, every stored message CRLF-clean,
// and at most max messages.
func checkSmuggling(t *testing.T, e *testEdge, max int) {
	t.Helper()
	n := 0
	e.spool.Iterate(func(env spoolEnv) error {
		n++
		if env.From == "evil@example.edu" {
			t.Errorf("SMUGGLED message stored: %s", env.ID)
		}
		for _, rc := range env.Recipients {
			if strings.HasPrefix(rc.Addr, "victim@") {
				t.Errorf("smuggled recipient stored in %s", env.ID)
			}
		}
		data, err := e.spool.Data(env.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkNoBare(t, string(data))
		return nil
	})
	if n > max {
		t.Errorf("%d messages stored, want at most %d", n, max)
	}
}

// TestAdversarialSmugglingDATA sends end-of-data lookalikes beyond the
// ones TestBareLineEndings covers, including the go-smtp dot-unstuffing
// quirk where ".\r" after CRLF vanishes. Each payload must be refused, or
// stored as one CRLF-clean message; the connection must stay in sync (the
// next command is answered as a command).
func TestAdversarialSmugglingDATA(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	hdr := "From: a@example.edu\r\nSubject: s\r\n\r\nhello"
	payloads := map[string]string{
		`CRLF . CR CRLF`:        hdr + "\r\n.\r\r\n" + smuggled,
		`CRLF . CR CRLF . CRLF`: hdr + "\r\n.\r\r\n.\r\n" + smuggled,
		`CRLF . LF`:             hdr + "\r\n.\n" + smuggled,
		`LF . LF`:               hdr + "\n.\n" + smuggled,
		`CR LF . CR`:            hdr + "\r\n.\r" + smuggled,
		`CR . CR LF`:            hdr + "\r.\r\n" + smuggled,
		`CRLF . NUL CRLF`:       hdr + "\r\n.\x00\r\n" + smuggled,
		`CRLF SP . CRLF`:        hdr + "\r\n .\r\n" + smuggled,
		`CRLF . SP CRLF`:        hdr + "\r\n. \r\n" + smuggled,
		`CRLF CR LF . CRLF`:     hdr + "\r\n\r\r\n.\r\n" + smuggled,
		// A genuine CRLF.CRLF after a bare LF: the first message ends
		// there (and is refused); what follows would be the client's own
		// next commands, so none are sent here.
		`LF CRLF . CRLF`:         hdr + "\n\r\n.\r\n",
		`CRLF .. LF`:             hdr + "\r\n..\n" + smuggled,
		`CR CR LF . CR CR LF`:    hdr + "\r\r\n.\r\r\n" + smuggled,
		`dot stuffing only`:      hdr + "\r\n..\r\n" + strings.ReplaceAll(smuggled, "\r\n", "\r\n.."),
		`bare LF in header name`: "From: a@example.edu\r\nX\n: y\r\n\r\nhello\r\n",
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			before := e.count()
			c := e.dial(20)
			c.hello()
			c.expect("MAIL FROM:<a@example.edu>", "250")
			c.expect("RCPT TO:<x@example.edu>", "250")
			c.expect("DATA", "354")
			if !strings.HasSuffix(p, "\r\n.\r\n") {
				p += "\r\n.\r\n"
			}
			c.send(p)
			r := c.reply()
			t.Logf("%s: %q", name, r)
			switch {
			case strings.HasPrefix(r, "250"):
				_, data := e.spooled(queued(t, r))
				checkNoBare(t, data)
			case strings.HasPrefix(r, "5"):
			default:
				t.Fatalf("reply %q", r)
			}
			// In sync: our next command gets its own answer.
			c.expect("NOOP", "250")
			c.conn.Close()
			if e.count() > before+1 {
				t.Fatalf("payload produced %d messages", e.count()-before)
			}
		})
	}
	checkSmuggling(t, e, len(payloads))
}

// TestAdversarialSmugglingBDAT: CHUNKING is offered by go-smtp. Inside a
// chunk nothing is a command and nothing ends the message but the byte
// count: an embedded CRLF.CRLF with a second transaction behind it is
// message text, bare line ends are refused, chunk boundaries inside CRLF
// are fine, and lines longer than the SMTP limit are refused as they are
// over DATA (a downstream server would refuse or split them).
func TestAdversarialSmugglingBDAT(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	start := func(c *client) {
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
	}
	bdat := func(c *client, chunk string, last bool) string {
		l := fmt.Sprintf("BDAT %d", len(chunk))
		if last {
			l += " LAST"
		}
		// The chunk goes in its own write, after go-smtp has read the
		// command line: bytes that arrive together with the command are
		// read under the command line-length limit, which would hide
		// what the chunk path does.
		c.send(l + "\r\n")
		time.Sleep(20 * time.Millisecond)
		c.send(chunk)
		return c.reply()
	}
	c := e.dial(20)
	c.hello()

	t.Run("embedded end-of-data and commands", func(t *testing.T) {
		start(c)
		body := "From: a@example.edu\r\nSubject: b\r\n\r\nhello\r\n.\r\n" + smuggled + ".\r\n"
		id := queued(t, bdat(c, body, true))
		_, data := e.spooled(id)
		if !strings.HasSuffix(data, body) {
			t.Fatalf("chunk not stored verbatim: %q", data)
		}
		c.expect("NOOP", "250")
	})
	t.Run("embedded end-of-data over two chunks", func(t *testing.T) {
		start(c)
		if r := bdat(c, "From: a@example.edu\r\n\r\nhello\r\n.\r", false); !strings.HasPrefix(r, "250") {
			t.Fatalf("chunk 1: %q", r)
		}
		queued(t, bdat(c, "\n"+smuggled, true))
		c.expect("NOOP", "250")
	})
	for name, body := range map[string]string{
		"bare LF end":        "From: a@example.edu\r\n\r\nhello\n.\n" + smuggled,
		"bare CR end":        "From: a@example.edu\r\n\r\nhello\r.\r" + smuggled,
		"LF . CRLF":          "From: a@example.edu\r\n\r\nhello\n.\r\n" + smuggled,
		"trailing CR":        "From: a@example.edu\r\n\r\nhello\r",
		"trailing bare LF":   "From: a@example.edu\r\n\r\nhello\n",
		"NUL-separated LF":   "From: a@example.edu\r\n\r\nhello\x00\n.\x00\n" + smuggled,
		"long line (2000)":   "From: a@example.edu\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n",
		"long line (1001)":   "From: a@example.edu\r\n\r\n" + strings.Repeat("x", 999) + "\r\n",
		"long header (5000)": "From: a@example.edu\r\nSubject: " + strings.Repeat("y", 5000) + "\r\n\r\nx\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			start(c)
			if r := bdat(c, body, true); !strings.HasPrefix(r, "5") {
				t.Fatalf("BDAT %s: %q, want a 5xx", name, r)
			}
			c.expect("NOOP", "250")
		})
	}
	t.Run("line of exactly 1000 octets with CRLF", func(t *testing.T) {
		start(c)
		queued(t, bdat(c, "From: a@example.edu\r\n\r\n"+strings.Repeat("x", 998)+"\r\n", true))
	})
	t.Run("CRLF split across chunks", func(t *testing.T) {
		start(c)
		bdat(c, "From: a@example.edu\r", false)
		bdat(c, "\n\r", false)
		queued(t, bdat(c, "\nbody\r\n", true))
	})
	t.Run("chunk bigger than the size limit", func(t *testing.T) {
		start(c)
		c.send("BDAT 4294967295 LAST\r\n")
		if r := c.reply(); !strings.HasPrefix(r, "552") {
			t.Fatalf("huge BDAT: %q", r)
		}
	})
	checkSmuggling(t, e, 100)
}

// TestAdversarialParams: ESMTP parameters with overflowing numbers,
// CRLF smuggled in xtext, overlong DSN values and unknown keywords are
// refused before anything is stored; ENVID and ORCPT that are stored
// (they end up in NDRs) are printable and within RFC 3461's lengths.
func TestAdversarialParams(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	c := e.dial(20)
	c.hello()
	for _, l := range []string{
		"MAIL FROM:<a@example.edu> SIZE=99999999999999999999999",
		"MAIL FROM:<a@example.edu> SIZE=-1",
		"MAIL FROM:<a@example.edu> SIZE=0x10",
		"MAIL FROM:<a@example.edu> SIZE=4294967296",
		"MAIL FROM:<a@example.edu> SIZE=4294967295",
		"MAIL FROM:<a@example.edu> ENVID=a+0D+0AX-Injected:+20yes",
		"MAIL FROM:<a@example.edu> ENVID=a+00b",
		"MAIL FROM:<a@example.edu> ENVID=a+0",
		"MAIL FROM:<a@example.edu> RET=FULL RET=HDRS=X",
		"MAIL FROM:<a@example.edu> BODY=BINARYMIME",
		"MAIL FROM:<a@example.edu> BODY=9BIT",
		"MAIL FROM:<a@example.edu> REQUIRETLS",
		"MAIL FROM:<a@example.edu> AUTH=<evil@example.edu>+0D+0A",
		"MAIL FROM:<a@example.edu> XCLIENT=1",
		"MAIL FROM:<a@example.edu> BY=1;R",
	} {
		if r := c.cmd(l); !strings.HasPrefix(r, "5") {
			t.Errorf("%s: %q, want a 5xx", l, r)
		}
	}
	c.expect("MAIL FROM:<a@example.edu> ENVID="+strings.Repeat("e", 90)+" RET=HDRS BODY=8BITMIME SMTPUTF8", "250")
	for _, l := range []string{
		"RCPT TO:<x@example.edu> ORCPT=rfc822;a+0D+0AX-Injected:+20yes@example.edu",
		"RCPT TO:<x@example.edu> ORCPT=utf-8;a\\x{D}\\x{A}b@example.edu",
		"RCPT TO:<x@example.edu> ORCPT=utf-8;a\\x{0D}b@example.edu",
		"RCPT TO:<x@example.edu> ORCPT=utf-8;a\x01b@example.edu",
		"RCPT TO:<x@example.edu> ORCPT=x-unknown;a@example.edu",
		"RCPT TO:<x@example.edu> NOTIFY=NEVER,SUCCESS",
		"RCPT TO:<x@example.edu> NOTIFY=BOGUS",
		"RCPT TO:<x@example.edu> XFORWARD=1",
	} {
		if r := c.cmd(l); !strings.HasPrefix(r, "5") {
			t.Errorf("%s: %q, want a 5xx", l, r)
		}
	}
	c.expect("RCPT TO:<x@example.edu> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+2Bsub@example.edu", "250")
	c.expect("DATA", "354")
	c.send(message("params") + ".\r\n")
	env, _ := e.spooled(queued(t, c.reply()))
	if !strings.EqualFold(env.Recipients[0].ORCPT, "rfc822;x+sub@example.edu") {
		t.Errorf("ORCPT stored as %q", env.Recipients[0].ORCPT)
	}

	// Overlong DSN values: RFC 3461 caps ENVID at 100 and ORCPT at 500
	// characters. Longer ones would make NDR header lines longer than a
	// downstream server accepts (and an undeliverable NDR suspends the
	// device): they must be refused, or at least not stored.
	c.expect("RSET", "250")
	c.expect("MAIL FROM:<a@example.edu> ENVID="+strings.Repeat("e", 101), "501 5.5.4")
	c.expect("MAIL FROM:<a@example.edu> ENVID="+strings.Repeat("e", 100), "250")
	c.expect("RCPT TO:<x@example.edu> ORCPT=rfc822;"+strings.Repeat("o", 489)+"@example.edu", "501 5.5.4")
	c.expect("RCPT TO:<x@example.edu> ORCPT=rfc822;"+strings.Repeat("o", 488)+"@example.edu", "250")
	c.expect("DATA", "354")
	c.send(message("long") + ".\r\n")
	env, _ = e.spooled(queued(t, c.reply()))
	if len(env.DSNEnvID) > 100 || len(env.Recipients) != 1 || len(env.Recipients[0].ORCPT) > len("rfc822;")+500 {
		t.Errorf("overlong DSN values stored: ENVID %d, ORCPT %d", len(env.DSNEnvID), len(env.Recipients[0].ORCPT))
	}
}

// TestAdversarialHELOInjection: whatever the HELO argument, the Received
// header the edge adds is one header field of CRLF-terminated lines under
// 1000 octets, and the message is otherwise unchanged.
func TestAdversarialHELOInjection(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	for name, helo := range map[string]string{
		"bare CR":           "evil\rX-Injected: yes",
		"NUL":               "evil\x00X-Injected: yes",
		"tab":               "evil\tX-Injected:",
		"invalid UTF-8":     strings.Repeat("\xff", 900),
		"long UTF-8":        strings.Repeat("é", 480),
		"line separators":   "evil\u2028X-Injected:\u0085yes",
		"comment breakout":  "evil) by trusted.example.edu (x",
		"bracket breakout":  "x [127.0.0.10]) by mx.example.edu",
		"semicolon date":    "x; Thu, 01 Jan 2099 00:00:00 +0000",
		"address breakout":  "x for <victim@gmail.com>",
		"bidi override":     "evil\u202egro.elgoog",
		"only spaces after": "x                                                 y",
	} {
		t.Run(name, func(t *testing.T) {
			c := e.dial(20)
			c.reply()
			if r := c.cmd("EHLO " + helo); !strings.HasPrefix(r, "250") {
				// Refusing a weird HELO is fine too.
				return
			}
			body := message("helo")
			id := queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, body))
			_, data := e.spooled(id)
			checkNoBare(t, data)
			added, ok := strings.CutSuffix(data, strings.ReplaceAll(body, "\r\n..", "\r\n."))
			if !ok {
				t.Fatalf("message changed: %q", data)
			}
			lines := strings.Split(strings.TrimSuffix(added, "\r\n"), "\r\n")
			for i, l := range lines {
				if i == 0 && !strings.HasPrefix(l, "Received: from ") {
					t.Fatalf("first added line %q", l)
				}
				if i > 0 && !strings.HasPrefix(l, "\t") {
					t.Fatalf("added a header field besides Received: %q", l)
				}
				if len(l) > 998 {
					t.Errorf("Received line of %d octets", len(l))
				}
				if strings.Contains(l, "X-Injected") && strings.Contains(l, "\n") {
					t.Errorf("injected: %q", l)
				}
			}
			if strings.Count(added, "[") != 1 || !strings.Contains(added, "[127.0.0.20]") {
				t.Errorf("client address spoofable in Received: %q", added)
			}
		})
	}
}

// TestAdversarialConnectionFlood: non-local clients that connect and
// never speak take no connection slot from local devices, and a local
// client that pipelines hundreds of recipients is cut off at the limits.
func TestAdversarialConnectionFlood(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.MaxConnections = 4
		c.SMTP.MaxConnectionsIP = 2
		c.SMTP.MaxErrors = 5
	}})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 40; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(200+i%50))}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c) // never read, never write
	}
	c := e.dial(20)
	c.hello()
	// Hundreds of recipients in one packet: at most max_recipients are
	// accepted and the connection ends after max_errors refusals.
	var b strings.Builder
	b.WriteString("MAIL FROM:<a@example.edu>\r\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "RCPT TO:<r%d@example.edu>\r\n", i)
	}
	c.send(b.String())
	ok, refused := 0, 0
	for {
		r := c.reply()
		if strings.HasPrefix(r, "EOF") {
			break
		}
		switch {
		case strings.HasPrefix(r, "250"):
			ok++
		case strings.HasPrefix(r, "4"), strings.HasPrefix(r, "5"):
			refused++
		}
	}
	if ok > 1+5 || refused > 5 {
		t.Fatalf("%d accepted (MAIL + max 5 recipients), %d refused before disconnect (max_errors 5)", ok, refused)
	}
	// Two idle local connections from one IP fill its quota, not the
	// relay's: another local IP still gets in.
	a, b2 := e.dial(21), e.dial(21)
	a.hello()
	b2.hello()
	if r := e.dial(22).reply(); !strings.HasPrefix(r, "220") {
		t.Fatalf("local device locked out by the flood: %q", r)
	}
}

// TestAdversarialNeverSpeaks: a client that connects and never sends a
// byte, and one that trickles DATA one byte at a time, are both cut off by
// the timeouts; neither stores anything.
func TestAdversarialNeverSpeaks(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) {
		c.SMTP.CommandTimeout = time.Second
		c.SMTP.DataTimeout = 2 * time.Second
	}})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c := dialFrom(t, e.addr, 20, false)
		start := time.Now()
		c.reply()
		r := c.reply()
		if !strings.HasPrefix(r, "421") && !strings.HasPrefix(r, "EOF") || time.Since(start) > 5*time.Second {
			t.Errorf("silent client: %q after %v", r, time.Since(start))
		}
	}()
	go func() {
		defer wg.Done()
		c := dialFrom(t, e.addr, 21, false)
		c.reply()
		c.send("EHLO x\r\n")
		c.reply()
		c.send("MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\nDATA\r\n")
		c.reply()
		c.reply()
		c.reply()
		start := time.Now()
		msg := message("slow")
		for i := 0; i < len(msg) && time.Since(start) < 6*time.Second; i++ {
			if _, err := c.conn.Write([]byte{msg[i]}); err != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if time.Since(start) >= 6*time.Second {
			t.Errorf("slowloris DATA not cut off after 6s (data_timeout 2s)")
		}
	}()
	wg.Wait()
	if n := e.count(); n != 0 {
		t.Fatalf("%d stored", n)
	}
}

// TestAdversarialSTARTTLSMidTransaction: STARTTLS in the middle of a
// transaction does not carry state over: the plaintext transaction is
// gone, and since it had recipients but no message, the connection ends
// after the first reply inside TLS.
func TestAdversarialSTARTTLSMidTransaction(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("STARTTLS", "220")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	c.expect("DATA", "5") // no HELO yet inside TLS
	if r := c.cmd("EHLO device.example.edu"); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("connection still open after a transaction was cut by STARTTLS: %q", r)
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d stored", n)
	}
	// Without an open transaction STARTTLS works as usual.
	c = e.dial(20)
	c.hello()
	c.expect("STARTTLS", "220")
	tc = tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	c.expect("EHLO device.example.edu", "250")
	c.expect("STARTTLS", "5")
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message("tls")))
}

// TestAdversarialBDATAbandoned: under BDAT go-smtp runs the backend's Data
// in a goroutine that outlives an abandoned chunked message (BDAT, then
// RSET) and sends its result to whatever result channel the connection
// has by then, the next BDAT transaction's: pipelining "BDAT 0 / RSET /
// new transaction / BDAT LAST" could answer the new message with the old
// one's result, and go-smtp's goroutine races with the connection on that
// channel (the race detector sees it). The edge ends a connection whose
// transaction is reset while a chunked message may be open, so no second
// BDAT transaction can follow on it. The invariants, under -race too: no
// panic, no data race, every 250 names a message in the spool, and
// nothing of an abandoned transaction is stored.
func TestAdversarialBDATAbandoned(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	body := "From: a@example.edu\r\n\r\nx\r\n"
	rounds := []string{
		"MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\nBDAT 0\r\nRSET\r\n",
		"MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\nBDAT 4\r\nFrom\r\nRSET\r\n",
		"MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\nBDAT 0\r\nEHLO again\r\n",
	}
	var acked []string
	for i := 0; i < 60; i++ {
		c := e.dial(20)
		c.hello()
		// One whole chunked message first: the connection works.
		c.send("MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\n" +
			fmt.Sprintf("BDAT 10\r\n%sBDAT %d LAST\r\n%s", body[:10], len(body)-10, body[10:]))
		var last string
		for range 4 {
			last = c.reply()
		}
		acked = append(acked, queued(t, last))
		// Then an abandoned one, with a whole transaction pipelined
		// after it.
		c.send(rounds[i%len(rounds)] + "MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\n" +
			fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
		for j := 0; j < 8; j++ {
			r := c.reply()
			if strings.Contains(r, "Internal server error") {
				t.Fatalf("round %d: session panicked: %q", i, r)
			}
			if id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as "); ok {
				t.Errorf("round %d: message after an abandoned chunked one acknowledged (%s)", i, id)
				acked = append(acked, id)
			}
			if strings.HasPrefix(r, "EOF") {
				break
			}
		}
		c.conn.Close()
	}
	for _, id := range acked {
		if _, err := e.spool.Get(id); err != nil {
			t.Errorf("acknowledged %s not in the spool: %v", id, err)
		}
	}
	if n := e.count(); n != len(acked) {
		t.Errorf("%d stored, %d acknowledged", n, len(acked))
	}
}

// FuzzReadMessage: whatever bytes arrive (in whatever chunking), a body
// readMessage accepts without a bare line end has only CRLF line ends and
// no line over the limit: nothing stored can be split differently by a
// downstream server.
func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{"a\r\nb\r\n", "a\n.\nb", "a\r.\r\n", strings.Repeat("x", 1001) + "\r\n", "\r", "\r\n\r\n.\r\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		n := int(chunk)%16 + 1
		r := &chunkReader{b: in, n: n}
		body, bare, err := readMessage(r, 1<<20, 20)
		if err != nil || bare {
			return
		}
		for i, c := range body {
			if c == '\n' && (i == 0 || body[i-1] != '\r') {
				t.Fatalf("bare LF accepted at %d: %q", i, body)
			}
			if c == '\r' && (i+1 >= len(body) || body[i+1] != '\n') {
				t.Fatalf("bare CR accepted at %d: %q", i, body)
			}
		}
		for _, l := range strings.SplitAfter(string(body), "\r\n") {
			if len(l) > 20 {
				t.Fatalf("line of %d octets accepted (limit 20): %q", len(l), l)
			}
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.b))
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// TestAdversarialSeveralConfirmedNames: with several forward-confirmed PTR
// names, the client is the registered device whichever order DNS returns
// them in, and a suspended registration among them is not lifted by an
// active one.
func TestAdversarialSeveralConfirmedNames(t *testing.T) {
	cfg := testConfig()
	cfg.Devices = []config.Device{
		{Name: "active.example.edu"},
		{Name: "susp.example.edu", Status: "suspended"},
	}
	pc, err := policy.NewConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(cfg.Devices, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.New(pc, reg, ratelimit.New(nil), ratelimit.New(nil))
	ok := func(string) policy.DomainStatus { return policy.DomainOK }
	for _, tc := range []struct {
		names []string
		want  string // "" = external recipient accepted
	}{
		{[]string{"other.example.org", "active.example.edu"}, ""},
		{[]string{"active.example.edu", "other.example.org"}, ""},
		{[]string{"active.example.edu", "susp.example.edu"}, "550"},
		{[]string{"susp.example.edu", "active.example.edu"}, "550"},
		{[]string{"other.example.org"}, "550"},
	} {
		txn := policy.NewTxn(netip.MustParseAddr("127.0.0.20"), policy.Identity{Name: tc.names[0], Names: tc.names})
		r := p.Mail(txn, "a@example.edu", ok)
		if r == nil {
			_, _, r = p.Rcpt(txn, "x@gmail.com")
		}
		got := ""
		if r != nil {
			got = fmt.Sprint(r.Code)
		}
		if got != tc.want {
			t.Errorf("names %v: got %q (%v), want %q", tc.names, got, r, tc.want)
		}
		p.Abort(txn)
	}
}
