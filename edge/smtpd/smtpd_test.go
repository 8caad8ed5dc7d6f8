package smtpd

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/shared/event"
)

// TestPolicyCases runs the relay policy's case table through real TCP, with
// clients bound to different 127.0.0.x addresses acting as devices:
//
//	127.0.0.10 scanner.example.edu (registered, FCrDNS ok, sender list)
//	127.0.0.11 PTR present, forward mismatch
//	127.0.0.12 DNS timeout
//	127.0.0.13 copier.example.edu (suspended)
//	127.0.0.20 no PTR (unregistered)
func TestPolicyCases(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	tests := []struct {
		name  string
		src   int
		from  string
		rcpts []string
		body  string
		want  string
	}{
		{"affiliated rcpt from unregistered device", 20, "anyone@example.edu", []string{"x@example.edu"}, message("a"), "250 2.0.0"},
		{"external rcpt from unregistered device", 20, "anyone@example.edu", []string{"x@gmail.com"}, message("b"), "550 5.7.1"},
		{"registered device with matching FCrDNS", 10, "scanner@example.edu", []string{"x@gmail.com", "y@example.edu"}, message("c"), "250 2.0.0"},
		{"registered device, unregistered sender", 10, "boss@example.edu", []string{"x@gmail.com"}, message("c2"), "550 5.7.1"},
		{"PTR present but forward mismatch", 11, "scanner@example.edu", []string{"x@gmail.com"}, message("d"), "550 5.7.1"},
		{"no PTR", 20, "a@example.edu", []string{"x@gmail.com"}, message("e"), "550 5.7.1"},
		{"DNS timeout is 4xx", 12, "a@example.edu", []string{"x@gmail.com"}, message("f"), "451 4.4.3"},
		{"DNS timeout: affiliated still accepted", 12, "a@example.edu", []string{"x@example.edu"}, message("f2"), "250 2.0.0"},
		{"suspended device", 13, "a@example.edu", []string{"x@example.edu"}, message("g"), "550 5.7.1"},
		{"bad sender syntax (go-smtp)", 20, "not-an-address", []string{"x@example.edu"}, message("h"), "501 5.5.2"},
		{"bad sender syntax (policy)", 20, "a@[10.0.0.1]", []string{"x@example.edu"}, message("h2"), "553 5.1.7"},
		{"sender domain cannot receive mail", 14, "a@nxdomain.example.org", []string{"x@example.edu"}, message("i"), "550 5.1.8"},
		{"sender domain DNS failure", 14, "a@slow.example.org", []string{"x@example.edu"}, message("j"), "451 4.4.3"},
		{"null sender", 20, "", []string{"x@example.edu"}, message("k"), "550 5.7.1"},
		{"missing From header", 20, "a@example.edu", []string{"x@example.edu"}, "Subject: no from\r\n\r\nbody\r\n", "550 5.6.0"},
		{"two From headers", 20, "a@example.edu", []string{"x@example.edu"}, "From: a@example.edu\r\nFrom: b@example.edu\r\n\r\nbody\r\n", "550 5.6.0"},
		{"over size", 20, "a@example.edu", []string{"x@example.edu"}, message("big") + strings.Repeat("0123456789012345678901234567890123456789012345678\r\n", 1400), "552 5.3.4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.count()
			c := dialFrom(t, e.addr, tc.src, false)
			c.hello()
			got := c.sendMail(tc.from, tc.rcpts, tc.body)
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %s", got, tc.want)
			}
			after := e.count()
			if accepted := strings.HasPrefix(tc.want, "250"); accepted != (after == before+1) {
				t.Fatalf("spool count %d -> %d for reply %q", before, after, got)
			}
			// The connection is still usable after a refusal.
			c.expect("NOOP", "250")
		})
	}
}

func TestNonLocalClientRefusedAtConnect(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(200) // outside 127.0.0.0/25
	if r := c.reply(); !strings.HasPrefix(r, "554 5.7.1") {
		t.Fatalf("banner for non-local client: %q", r)
	}
	if r := c.reply(); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("connection not closed: %q", r)
	}
	if e.count() != 0 {
		t.Fatal("something spooled")
	}
	waitEvent(t, e, func(ev event.Event) bool {
		return ev.Kind == event.Refusal && ev.Detail["stage"] == "connect" && ev.Detail["clients"] == "127.0.0.200" && ev.Reason == "not a local network"
	})
}

func TestTooManyRecipients(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	for i := 1; i <= 5; i++ {
		c.expect(fmt.Sprintf("RCPT TO:<u%d@example.edu>", i), "250")
	}
	c.expect("RCPT TO:<u6@example.edu>", "452 4.5.3")
	c.expect("DATA", "354")
	c.send(message("five") + ".\r\n")
	env, _ := e.spooled(queued(t, c.reply()))
	if len(env.Recipients) != 5 {
		t.Fatalf("%d recipients spooled", len(env.Recipients))
	}
}

func TestRateLimit(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(14) // limited.example.edu: 2 messages per hour
	c.hello()
	for i := 0; i < 2; i++ {
		queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message(fmt.Sprint("r", i))))
	}
	r := c.cmd("MAIL FROM:<a@example.edu>")
	if !strings.HasPrefix(r, "450 4.7.1") || !strings.Contains(r, "https://lists.example.edu/") {
		t.Fatalf("third message: %q", r)
	}
	if e.srv.RateLimitHits() != 1 {
		t.Fatalf("hits = %d", e.srv.RateLimitHits())
	}
	waitEvent(t, e, func(ev event.Event) bool {
		return ev.Kind == event.RateLimit && ev.Device == "limited.example.edu" && ev.Count == 1
	})
}

// TestBareLineEndings sends the SMTP smuggling payloads of CVE-2023-51766
// and its relatives with raw TCP writes: each must be refused with a 5xx,
// nothing may be spooled, and the "smuggled" second message must not be
// accepted as a message of its own.
func TestBareLineEndings(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	smuggled := "MAIL FROM:<evil@example.edu>\r\nRCPT TO:<victim@example.edu>\r\nDATA\r\nFrom: evil@example.edu\r\n\r\nsmuggled\r\n"
	tests := []struct{ name, payload string }{
		{"LF.LF", "From: a@example.edu\r\n\r\nhello\n.\n" + smuggled},
		{"CR.LF", "From: a@example.edu\r\n\r\nhello\r.\n" + smuggled},
		{"LF.CRLF", "From: a@example.edu\r\n\r\nhello\n.\r\n" + smuggled},
		{"CR.CR", "From: a@example.edu\r\n\r\nhello\r.\r" + smuggled},
		{"CRLF.CR", "From: a@example.edu\r\n\r\nhello\r\n.\r" + smuggled},
		{"bare LF in header", "From: a@example.edu\nSubject: x\r\n\r\nhello\r\n"},
		{"bare CR in body", "From: a@example.edu\r\n\r\nhel\rlo\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(20)
			c.hello()
			c.expect("MAIL FROM:<a@example.edu>", "250")
			c.expect("RCPT TO:<x@example.edu>", "250")
			c.expect("DATA", "354")
			c.send(tc.payload + ".\r\n")
			r := c.reply()
			if tc.name == "CRLF.CR" {
				// go-smtp drops the ".\r" after a CRLF (a quirk of its
				// dot-unstuffing): the bare CR never reaches the spool,
				// so the stored message is clean. Either a refusal or a
				// clean message is acceptable; a bare CR is not.
				if strings.HasPrefix(r, "250") {
					_, data := e.spooled(queued(t, r))
					checkNoBare(t, data)
					return
				}
			}
			if !strings.HasPrefix(r, "550 5.5.2") {
				t.Fatalf("got %q, want 550 5.5.2", r)
			}
			// What follows is a new command, not the smuggled message.
			c.expect("NOOP", "250")
		})
	}
	if n := e.count(); n > 1 {
		t.Fatalf("%d messages spooled", n)
	}
	e.spool.Iterate(func(env spoolEnv) error {
		if env.From == "evil@example.edu" {
			t.Fatal("smuggled message spooled")
		}
		return nil
	})
}

func checkNoBare(t *testing.T, data string) {
	t.Helper()
	c := &lineEndChecker{}
	c.Write([]byte(data))
	if c.bad() {
		t.Fatalf("spooled message has a bare CR or LF: %q", data)
	}
}

func TestLineEndChecker(t *testing.T) {
	tests := []struct {
		chunks []string
		bad    bool
	}{
		{[]string{"a\r\nb\r\n"}, false},
		{[]string{"a\r", "\nb\r\n"}, false},
		{[]string{"a\n"}, true},
		{[]string{"a\r", "b"}, true},
		{[]string{"a\r"}, true},
		{[]string{"\n"}, true},
		{[]string{""}, false},
	}
	for i, tc := range tests {
		c := &lineEndChecker{}
		for _, ch := range tc.chunks {
			c.Write([]byte(ch))
		}
		if c.bad() != tc.bad {
			t.Errorf("%d %q: bad=%v", i, tc.chunks, c.bad())
		}
	}
}

func TestEnvelopeAndReceived(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(10)
	ehlo := c.hello()
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 65536", "SMTPUTF8", "DSN", "STARTTLS"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO lacks %s: %q", ext, ehlo)
		}
	}
	c.expect("MAIL FROM:<scanner@example.edu> RET=HDRS ENVID=abc123", "250")
	c.expect("RCPT TO:<Someone@GMAIL.com.> NOTIFY=FAILURE,DELAY ORCPT=rfc822;someone@gmail.com", "250")
	c.expect("DATA", "354")
	c.send(message("env") + ".\r\n")
	id := queued(t, c.reply())
	env, data := e.spooled(id)
	if env.From != "scanner@example.edu" || env.Device != "scanner.example.edu" || env.ClientName != "scanner.example.edu" ||
		env.ClientIP != "127.0.0.10" || env.Helo != "device.example.edu" || env.DSNRet != "HDRS" || env.DSNEnvID != "abc123" {
		t.Fatalf("envelope: %+v", env)
	}
	if len(env.Recipients) != 1 || env.Recipients[0].Addr != "Someone@gmail.com" ||
		strings.Join(env.Recipients[0].Notify, ",") != "FAILURE,DELAY" || env.Recipients[0].ORCPT != "RFC822;someone@gmail.com" {
		t.Fatalf("recipients: %+v", env.Recipients)
	}
	if env.ReceivedAt.IsZero() || env.NextAttempt.IsZero() || env.Size != int64(len(data)) {
		t.Fatalf("times/size: %+v", env)
	}
	wantRcv := "Received: from device.example.edu (scanner.example.edu [127.0.0.10])\r\n\tby edge.test.example.edu (Postern) with ESMTP\r\n\tid " + id + "\r\n\tfor <Someone@gmail.com>; "
	if !strings.HasPrefix(data, wantRcv) {
		t.Fatalf("Received header:\n%q\nwant prefix\n%q", data, wantRcv)
	}
	if !strings.Contains(data, "\r\n.dot-stuffed line\r\n") || !strings.HasSuffix(data, "last\r\n") {
		t.Fatalf("body not unstuffed/intact: %q", data)
	}
}

func TestSizeParameterRefused(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu> SIZE=10000000", "552 5.3.4")
}

func TestLineTooLong(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("DATA", "354")
	c.send("From: a@example.edu\r\n\r\n" + strings.Repeat("x", 1200) + "\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "500 5.5.2") {
		t.Fatalf("long line: %q", r)
	}
	if e.count() != 0 {
		t.Fatal("spooled")
	}
	// A line of exactly 1000 octets including CRLF is fine.
	c2 := e.dial(20)
	c2.hello()
	queued(t, c2.sendMail("a@example.edu", []string{"x@example.edu"}, "From: a@example.edu\r\n\r\n"+strings.Repeat("y", 998)+"\r\n"))
}

func TestTooManyErrorsDisconnects(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) { c.SMTP.MaxErrors = 3 }})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@gmail.com>", "550")
	c.expect("RCPT TO:<y@gmail.com>", "550")
	c.expect("RCPT TO:<z@gmail.com>", "421 4.7.0")
	if r := c.reply(); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("not disconnected: %q", r)
	}
}

func TestConnectionLimits(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) { c.SMTP.MaxConnectionsIP = 2; c.SMTP.MaxConnections = 3 }})
	a, b := e.dial(20), e.dial(20)
	a.hello()
	b.hello()
	third := e.dial(20)
	if r := third.reply(); !strings.HasPrefix(r, "421 4.7.0") {
		t.Fatalf("third connection from one IP: %q", r)
	}
	d := e.dial(21)
	d.hello()
	if r := e.dial(22).reply(); !strings.HasPrefix(r, "421 4.7.0") {
		t.Fatalf("fourth connection in total: %q", r)
	}
	// Closing one frees a slot.
	a.expect("QUIT", "221")
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := e.dial(23)
		r := c.reply()
		if strings.HasPrefix(r, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %q", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandTimeout(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) { c.SMTP.CommandTimeout = time.Second }})
	c := e.dial(20)
	c.hello()
	start := time.Now()
	r := c.reply() // say nothing
	if !strings.HasPrefix(r, "421 4.4.2") || time.Since(start) > 4*time.Second {
		t.Fatalf("idle timeout: %q after %v", r, time.Since(start))
	}
}

func TestDataTimeout(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: func(c *configT) { c.SMTP.DataTimeout = time.Second }})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("DATA", "354")
	c.send("From: a@example.edu\r\n\r\npartial")
	if r := c.reply(); !strings.HasPrefix(r, "421 4.4.2") {
		t.Fatalf("data timeout: %q", r)
	}
	if e.count() != 0 {
		t.Fatal("partial message spooled")
	}
}

func TestSpoolFull(t *testing.T) {
	e := startEdge(t, edgeOpts{minFree: 1 << 60})
	c := e.dial(20)
	c.hello()
	if r := c.sendMail("a@example.edu", []string{"x@example.edu"}, message("full")); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("disk full: %q", r)
	}
}

func TestSuspendTakesEffectAtOnce(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(10)
	c.hello()
	queued(t, c.sendMail("scanner@example.edu", []string{"x@gmail.com"}, message("before")))
	if err := e.reg.Suspend("scanner.example.edu", "NDR to scanner@example.edu undeliverable"); err != nil {
		t.Fatal(err)
	}
	r := c.cmd("MAIL FROM:<scanner@example.edu>")
	if !strings.HasPrefix(r, "550 5.7.1") || !strings.Contains(r, "helpdesk@example.edu") || !strings.Contains(r, "suspended") {
		t.Fatalf("after suspension: %q", r)
	}
}

func TestSTARTTLS(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(10)
	c.hello()
	c.expect("STARTTLS", "220")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	ehlo := c.expect("EHLO device.example.edu", "250")
	if strings.Contains(ehlo, "STARTTLS") {
		t.Fatal("STARTTLS offered inside TLS")
	}
	id := queued(t, c.sendMail("scanner@example.edu", []string{"x@gmail.com"}, message("tls")))
	env, data := e.spooled(id)
	if !strings.HasPrefix(env.TLS, "TLS1.2 TLS_") {
		t.Fatalf("TLS not recorded: %q", env.TLS)
	}
	if !strings.Contains(data, "with ESMTPS (TLS1.2 TLS_") {
		t.Fatalf("Received lacks TLS: %q", data[:200])
	}
	waitEvent(t, e, func(ev event.Event) bool {
		return ev.Kind == event.TLS && ev.Device == "scanner.example.edu" && ev.Detail["tls_version"] == "TLS 1.2"
	})
}

// TestSTARTTLSInjection: commands pipelined in plaintext behind STARTTLS
// (CVE-2011-0411 class) must be discarded, not executed inside TLS.
func TestSTARTTLSInjection(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.send("STARTTLS\r\nMAIL FROM:<evil@example.edu>\r\nNOOP\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "220") {
		t.Fatalf("STARTTLS: %q", r)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.conn = tc
	c.r.Reset(tc)
	// The first reply inside TLS must answer our EHLO, not the injected
	// MAIL or NOOP.
	if r := c.cmd("EHLO device.example.edu"); !strings.HasPrefix(r, "250-") || !strings.Contains(r, "PIPELINING") {
		t.Fatalf("first TLS reply is not the EHLO reply: %q", r)
	}
	// And no transaction is open: RCPT without MAIL fails.
	c.expect("RCPT TO:<x@example.edu>", "502")
}

func TestImplicitTLSAndOldVersions(t *testing.T) {
	e := startEdge(t, edgeOpts{tls: true, tlsMin: "1.0"})
	c := dialFrom(t, e.tlsAdr, 10, true)
	c.conn.(*tls.Conn).Close()
	// An old printer: TLS 1.0 only.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 10)}}
	raw, err := d.Dial("tcp", e.tlsAdr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	c = &client{t: t, conn: tc, r: newReader(tc)}
	defer tc.Close()
	ehlo := c.hello()
	if strings.Contains(ehlo, "STARTTLS") {
		t.Fatal("STARTTLS offered on implicit TLS")
	}
	env, _ := e.spooled(queued(t, c.sendMail("scanner@example.edu", []string{"x@example.edu"}, message("tls10"))))
	if !strings.HasPrefix(env.TLS, "TLS1.0 ") {
		t.Fatalf("recorded TLS %q", env.TLS)
	}
}

func TestTLSMinVersionEnforced(t *testing.T) {
	e := startEdge(t, edgeOpts{tls: true}) // default 1.2
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 10)}}
	raw, err := d.Dial("tcp", e.tlsAdr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err := tc.Handshake(); err == nil {
		t.Fatal("TLS 1.1 accepted with tls_min_version 1.2")
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	var wg sync.WaitGroup
	ids := make(chan string, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialFrom(t, e.addr, 30+g, false)
			c.hello()
			for i := 0; i < 5; i++ {
				r := c.sendMail("a@example.edu", []string{"x@example.edu"}, message(fmt.Sprintf("c%d-%d", g, i)))
				if strings.HasPrefix(r, "250") {
					ids <- r
				} else {
					t.Errorf("session %d: %q", g, r)
				}
			}
		}()
	}
	wg.Wait()
	close(ids)
	if n := len(ids); n != 40 || e.count() != 40 {
		t.Fatalf("%d accepted, %d spooled", n, e.count())
	}
	if st := e.srv.Stats(); st.Accepted != 40 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func waitEvent(t *testing.T, e *testEdge, match func(event.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range e.events.all() {
			if match(ev) {
				if err := ev.Validate(); err != nil {
					t.Fatalf("invalid event: %v", err)
				}
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("event not seen; have %+v", e.events.all())
}

// TestOpenRelayThroughSMTP sends the classic relay tricks over TCP from an
// unregistered client: nothing may be accepted for a domain outside the
// affiliated ones, and nothing reaches the spool for one.
func TestOpenRelayThroughSMTP(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	tests := []struct{ rcpt, want string }{
		{"<user%gmail.com@example.edu>", "550 5.7.1"},   // percent hack
		{"<gmail.com!user@example.edu>", "550 5.7.1"},   // bang path
		{`<"user@gmail.com"@example.edu>`, "550 5.7.1"}, // quoted @
		{"<@example.edu:user@gmail.com>", "550 5.7.1"},  // source route (go-smtp strips it)
		{"<@example.edu,@x.example.edu:user@gmail.com>", "550 5.7.1"},
		{"<user@[127.0.0.1]>", "550 5.7.1"},           // IP literal
		{"<user@[IPv6:::1]>", "550 5.7.1"},            // IPv6 literal
		{"<user@gmail.com.>", "550 5.7.1"},            // trailing dot
		{"<user@example.edu.gmail.com>", "550 5.7.1"}, // lookalike suffix
		{"<user@evilexample.edu>", "550 5.7.1"},       // no label boundary
		{"<user@xn--exmple-cua.edu>", "550 5.7.1"},    // punycode lookalike
		{"<user@exämple.edu>", "550 5.7.1"},           // U-label lookalike
		{"<USER@GMAIL.COM>", "550 5.7.1"},             // mixed case
		{"<user@EXAMPLE.EDU.>", "250"},                // mixed case + trailing dot: affiliated
		{`<"john smith"@example.edu>`, "250"},         // quoted, affiliated
	}
	for _, tc := range tests {
		c := e.dial(20)
		c.hello()
		c.expect("MAIL FROM:<a@example.edu>", "250")
		r := c.cmd("RCPT TO:" + tc.rcpt)
		if !strings.HasPrefix(r, tc.want) && !(tc.want == "550 5.7.1" && strings.HasPrefix(r, "5")) {
			t.Errorf("RCPT TO:%s = %q, want %s", tc.rcpt, r, tc.want)
		}
		c.expect("QUIT", "221")
	}
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect(`RCPT TO:<"john smith"@example.edu>`, "250")
	c.expect("DATA", "354")
	c.send(message("quoted") + ".\r\n")
	env, _ := e.spooled(queued(t, c.reply()))
	if env.Recipients[0].Addr != `"john smith"@example.edu` {
		t.Fatalf("stored %q", env.Recipients[0].Addr)
	}
}
