package smtpd

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// TestConnectRefusalsSummarised: connections refused at connect from many
// addresses (an edge exposed to a scan) make one event per reason and
// interval, counting every connection and naming the first few clients, so
// a flood costs neither an event per connection nor the outbox.
func TestConnectRefusalsSummarised(t *testing.T) {
	sink := &eventSink{}
	r := newReporter(sink, "edge1", testkit.NewClock())
	for i := 0; i < 500; i++ {
		ip := fmt.Sprintf("198.51.100.%d", i%250)
		r.connectRefusal(ip, policy.NotLocal(ip))
	}
	r.refusal("", "10.0.0.1", policy.NotRegistered("10.0.0.1", "no PTR record", "https://r/"))
	r.flush()
	evs := sink.all()
	if len(evs) != 2 {
		t.Fatalf("%d events, want one connect summary and one session refusal: %+v", len(evs), evs)
	}
	sum := evs[0]
	if sum.Count != 500 || sum.ClientIP != "" || sum.Detail["stage"] != "connect" || sum.Reason != "not a local network" {
		t.Fatalf("connect summary: %+v", sum)
	}
	if got := strings.Fields(sum.Detail["clients"]); len(got) != maxSampleClients || got[0] != "198.51.100.0" || got[1] != "198.51.100.1" {
		t.Fatalf("sample clients %q, want the first %d distinct", sum.Detail["clients"], maxSampleClients)
	}
	if err := sum.Validate(); err != nil {
		t.Fatal(err)
	}
	if evs[1].ClientIP != "10.0.0.1" {
		t.Fatalf("session refusal keeps its client: %+v", evs[1])
	}
}

func TestReporterAggregates(t *testing.T) {
	sink := &eventSink{}
	r := newReporter(sink, "edge1", testkit.NewClock())
	for i := 0; i < 5; i++ {
		r.refusal("", "10.0.0.1", policy.NotRegistered("10.0.0.1", "no PTR record", "https://r/"))
	}
	r.refusal("", "10.0.0.2", policy.NotRegistered("10.0.0.2", "no PTR record", "https://r/"))
	r.rateLimit("dev.example.edu", "10.0.0.3", "a@example.edu", policy.MessageRate("Device dev.example.edu", 200, "https://l/"))
	r.flush()
	evs := sink.all()
	if len(evs) != 3 {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
	if evs[0].Count != 5 || evs[0].Kind != event.Refusal || evs[0].Reason != "not registered: no PTR record" || evs[0].Edge != "edge1" {
		t.Fatalf("aggregate: %+v", evs[0])
	}
	if evs[2].Kind != event.RateLimit || evs[2].Device != "dev.example.edu" || evs[2].Sender != "a@example.edu" {
		t.Fatalf("rate limit event: %+v", evs[2])
	}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	r.flush()
	if len(sink.all()) != 3 {
		t.Fatal("flush re-sent events")
	}
	// No sink: nothing happens, nothing panics.
	newReporter(nil, "e", clock.Real).refusal("", "ip", policy.NullSender())
}

// TestPipelined sends a whole transaction in one write (PIPELINING).
func TestPipelined(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.send("MAIL FROM:<a@example.edu>\r\nRCPT TO:<x@example.edu>\r\nRCPT TO:<y@gmail.com>\r\nRCPT TO:<z@example.edu>\r\nDATA\r\n")
	for _, want := range []string{"250", "250", "550 5.7.1", "250", "354"} {
		if r := c.reply(); !strings.HasPrefix(r, want) {
			t.Fatalf("got %q, want %s", r, want)
		}
	}
	c.send(message("pipe") + ".\r\nQUIT\r\n")
	env, _ := e.spooled(queued(t, c.reply()))
	if len(env.Recipients) != 2 {
		t.Fatalf("recipients %+v", env.Recipients)
	}
	if r := c.reply(); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
}

func TestHELOAndRSET(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.reply()
	c.expect("HELO old-printer", "250")
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RSET", "250")
	c.expect("DATA", "502") // no transaction after RSET
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message("helo")))
	c.expect("RSET", "250") // after a message: the connection stays
	queued(t, c.sendMail("a@example.edu", []string{"x@example.edu"}, message("helo2")))
	// RSET after accepted recipients and before any message data: the
	// edge cannot tell it from an abandoned chunked (BDAT) message, so it
	// answers and ends the connection.
	c.expect("MAIL FROM:<a@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("RSET", "250")
	if r := c.cmd("MAIL FROM:<a@example.edu>"); !strings.HasPrefix(r, "EOF") {
		t.Fatalf("connection open after RSET of a transaction with recipients: %q", r)
	}
}

// TestBDAT: go-smtp always offers CHUNKING; a BDAT message gets the same
// checks as DATA (bare LF refused, From required).
func TestBDAT(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	if ehlo := c.hello(); !strings.Contains(ehlo, "CHUNKING") {
		t.Skip("CHUNKING not offered")
	}
	bdat := func(msg string) string {
		c.expect("MAIL FROM:<a@example.edu>", "250")
		c.expect("RCPT TO:<x@example.edu>", "250")
		c.send("BDAT " + itoa(len(msg)) + " LAST\r\n" + msg)
		return c.reply()
	}
	queued(t, bdat(message("bdat")))
	if r := bdat("From: a@example.edu\r\n\r\nx\n.\nsmuggled\r\n"); !strings.HasPrefix(r, "550 5.5.2") {
		t.Fatalf("bare LF via BDAT: %q", r)
	}
	if r := bdat("Subject: x\r\n\r\nbody\r\n"); !strings.HasPrefix(r, "550 5.6.0") {
		t.Fatalf("no From via BDAT: %q", r)
	}
}

func TestSMTPUTF8(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(20)
	c.hello()
	c.expect("MAIL FROM:<andré@example.edu> SMTPUTF8", "250")
	c.expect("RCPT TO:<jürgen@example.edu>", "250")
	c.expect("DATA", "354")
	c.send("From: André <andré@example.edu>\r\nSubject: ü\r\n\r\nbody\r\n.\r\n")
	env, data := e.spooled(queued(t, c.reply()))
	if env.From != "andré@example.edu" || env.Recipients[0].Addr != "jürgen@example.edu" {
		t.Fatalf("envelope %+v", env)
	}
	if !strings.Contains(data, "with UTF8SMTP") {
		t.Fatalf("Received: %q", data)
	}
}

func TestReceivedHeaderSanitises(t *testing.T) {
	h := string(receivedHeader(receivedInfo{
		Helo: "evil\r\nX-Injected: 1 (x)", IP: mustAddr("2001:db8::1"), By: "edge", ID: "q1",
		Date: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}))
	want := "Received: from evil??X-Injected:?1??x? ([IPv6:2001:db8::1])\r\n\tby edge (Postern) with ESMTP\r\n\tid q1; Thu, 02 Jan 2025 03:04:05 +0000\r\n"
	if h != want {
		t.Fatalf("got\n%q\nwant\n%q", h, want)
	}
}

// TestSelfSignedKept: the generated certificate is created once and reused
// (devices that pinned it keep working after a restart).
func TestSelfSignedKept(t *testing.T) {
	dir := t.TempDir()
	a, err := TLSConfig("", "", "1.2", dir, "edge.example.edu")
	if err != nil {
		t.Fatal(err)
	}
	b, err := TLSConfig("", "", "1.0", dir, "edge.example.edu")
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Certificates[0].Certificate[0]) != string(b.Certificates[0].Certificate[0]) {
		t.Fatal("certificate regenerated")
	}
	if b.MinVersion != tls.VersionTLS10 || len(b.CipherSuites) == 0 {
		t.Fatalf("TLS 1.0 config: min %x, %d suites", b.MinVersion, len(b.CipherSuites))
	}
	if a.CipherSuites != nil {
		t.Fatal("TLS 1.2 config must keep Go's default suites")
	}
	if _, err := TLSConfig(dir+"/nope.pem", dir+"/nope.key", "1.2", dir, "x"); err == nil {
		t.Fatal("missing configured certificate accepted")
	}
}

func TestNonLocalOnImplicitTLS(t *testing.T) {
	e := startEdge(t, edgeOpts{tls: true})
	c := dialFrom(t, e.tlsAdr, 200, true)
	if r := c.reply(); !strings.HasPrefix(r, "554 5.7.1") {
		t.Fatalf("non-local client on the TLS listener: %q", r)
	}
}
