package delivery

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
	"github.com/postern/postern/shared/smtpstatus"
)

const msg = "From: scanner@example.edu\r\nTo: a@example.com\r\nSubject: scan\r\n\r\nhello\r\n.leading dot\r\n"

// world is a loopback DNS server plus sinks on 127.0.0.2.. sharing one
// port, which the client uses as its MX port.
type world struct {
	t    *testing.T
	dns  *dnstest.Server
	res  *resolver.Resolver
	port int
}

// The world's DNS and SMTP timeouts only bound a hang: the test DNS
// server and the sinks answer at once, and a short timeout would turn a
// stall of a loaded machine into a failed attempt. Tests about timeouts
// set short ones of their own (w.resolver, Options.CommandTimeout).
const (
	worldDNSTimeout  = 5 * time.Second
	worldSMTPTimeout = 10 * time.Second
)

func newWorld(t *testing.T) *world {
	t.Helper()
	d := dnstest.Start(t)
	w := &world{t: t, dns: d, port: deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")}
	w.res = w.resolver(worldDNSTimeout)
	return w
}

// resolver makes a resolver on the world's DNS server that gives up on a
// query after timeout.
func (w *world) resolver(timeout time.Duration) *resolver.Resolver {
	w.t.Helper()
	res, err := resolver.New(resolver.Options{Servers: []string{w.dns.Addr}, Timeout: timeout, Attempts: 1, CacheSize: -1})
	if err != nil {
		w.t.Fatal(err)
	}
	return res
}

// sink starts a sink on ip at the shared port.
func (w *world) sink(ip, name string, b deliverytest.Behaviour, tlsNames ...string) *deliverytest.Sink {
	o := deliverytest.Options{Addr: fmt.Sprintf("%s:%d", ip, w.port), Name: name, Behaviour: b}
	if len(tlsNames) > 0 {
		o.TLS, _ = deliverytest.Certificate(w.t, tlsNames...)
	}
	return deliverytest.Start(w.t, o)
}

func (w *world) client(mod func(*Options)) *Client {
	o := Options{Hostname: "edge.example.edu", Resolver: w.res, MXPort: w.port,
		ConnectTimeout: worldSMTPTimeout, CommandTimeout: worldSMTPTimeout,
		Shuffle: func(int, func(i, j int)) {}}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func job(rcpts ...string) *Job {
	j := &Job{QueueID: "Q1", From: "scanner@example.edu", Domain: "example.com", Data: []byte(msg)}
	for _, r := range rcpts {
		j.Rcpts = append(j.Rcpts, Rcpt{Addr: r})
	}
	return j
}

func deliver(t *testing.T, c *Client, j *Job) Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := c.Deliver(ctx, j)
	if len(out.Results) != len(j.Rcpts) {
		t.Fatalf("%d results for %d recipients", len(out.Results), len(j.Rcpts))
	}
	return out
}

func expect(t *testing.T, out Outcome, want ...Status) {
	t.Helper()
	for i, r := range out.Results {
		if r.Status != want[i] {
			t.Errorf("rcpt %s: %s (%d %s %q), want %s", r.Addr, r.Status, r.Code, r.Enhanced, r.Text, want[i])
		}
	}
}

func TestDeliveredFirstTry(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	s := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	out := deliver(t, w.client(nil), job("a@example.com", "b@example.com"))
	expect(t, out, Delivered, Delivered)
	got := s.Messages()
	if len(got) != 1 {
		t.Fatalf("sink got %d messages, want 1 (one transaction for all recipients)", len(got))
	}
	m := got[0]
	if string(m.Data) != msg {
		t.Errorf("data not byte-for-byte:\n%q\n%q", m.Data, msg)
	}
	if m.From != "scanner@example.edu" || strings.Join(m.To, ",") != "a@example.com,b@example.com" || m.Helo != "edge.example.edu" {
		t.Errorf("envelope %q %q helo %q", m.From, m.To, m.Helo)
	}
	if out.Results[0].RemoteMTA != "mx1.example.com" || !strings.Contains(out.Host, "127.0.0.2") {
		t.Errorf("remote %q host %q", out.Results[0].RemoteMTA, out.Host)
	}
	if out.TLS != "" || m.TLS {
		t.Errorf("TLS used with a sink that does not offer it: %q", out.TLS)
	}
}

func TestMXPreferenceAndFallback(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 20, "mx2.example.com")
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.3")
	w.dns.AddA("mx2.example.com", "127.0.0.2")
	s2 := w.sink("127.0.0.2", "mx2.example.com", deliverytest.Behaviour{})
	c := w.client(nil)
	// mx1 (preference 10) is down: the second MX takes the mail.
	out := deliver(t, c, job("a@example.com"))
	expect(t, out, Delivered)
	if len(s2.Messages()) != 1 || out.Results[0].RemoteMTA != "mx2.example.com" {
		t.Fatalf("fallback: mx2 has %d messages, remote %q", len(s2.Messages()), out.Results[0].RemoteMTA)
	}
	// mx1 up: preference 10 is used first.
	s1 := w.sink("127.0.0.3", "mx1.example.com", deliverytest.Behaviour{})
	deliver(t, c, job("a@example.com"))
	if len(s1.Messages()) != 1 || len(s2.Messages()) != 1 {
		t.Fatalf("preference: mx1 %d, mx2 %d messages", len(s1.Messages()), len(s2.Messages()))
	}
	// A 421 greeting-level refusal also moves on to the next MX.
	s1.SetBehaviour(deliverytest.Behaviour{Mail: &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}})
	out = deliver(t, c, job("a@example.com"))
	// MAIL-level 4xx is the transaction's answer (no second MX for it).
	expect(t, out, Temporary)
}

func TestEqualPreferenceShuffled(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddMX("example.com", 10, "mx2.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	w.dns.AddA("mx2.example.com", "127.0.0.3")
	s1 := w.sink("127.0.0.2", "mx1", deliverytest.Behaviour{})
	s2 := w.sink("127.0.0.3", "mx2", deliverytest.Behaviour{})
	calls := 0
	c := w.client(func(o *Options) {
		o.Shuffle = func(n int, swap func(i, j int)) {
			calls++
			if n == 2 && calls%2 == 0 {
				swap(0, 1)
			}
		}
	})
	for range 4 {
		expect(t, deliver(t, c, job("a@example.com")), Delivered)
	}
	if len(s1.Messages()) != 2 || len(s2.Messages()) != 2 {
		t.Errorf("equal preferences: mx1 %d, mx2 %d messages; the shuffle decides the order", len(s1.Messages()), len(s2.Messages()))
	}
	// The real shuffle is random: over 40 tries both hosts are used.
	c = w.client(func(o *Options) { o.Shuffle = nil })
	for range 40 {
		deliver(t, c, job("a@example.com"))
	}
	if len(s1.Messages()) < 5 || len(s2.Messages()) < 5 {
		t.Errorf("random order among equals: mx1 %d, mx2 %d", len(s1.Messages()), len(s2.Messages()))
	}
}

func TestRouting(t *testing.T) {
	w := newWorld(t)
	w.dns.AddA("implicit.example", "127.0.0.2")
	w.dns.AddMX("null.example", 0, ".")
	w.dns.AddMX("servfail.example", 10, "mx.servfail.example")
	w.dns.SetRcode("servfail.example", dns.TypeMX, dns.RcodeServerFailure)
	w.dns.AddMX("timeout.example", 10, "mx.timeout.example")
	w.dns.Drop("timeout.example")
	w.dns.AddMX("noaddr.example", 10, "mx.nowhere.example")
	s := w.sink("127.0.0.2", "implicit.example", deliverytest.Behaviour{})
	// timeout.example's queries are dropped: the lookup must time out
	// within the 30 s of deliver's context.
	res := w.resolver(300 * time.Millisecond)
	c := w.client(func(o *Options) { o.Resolver = res })
	for _, tc := range []struct {
		domain string
		want   Status
		enh    smtpstatus.Code
	}{
		{"implicit.example", Delivered, "2.0.0"},
		{"null.example", Permanent, "5.1.10"},
		{"nxdomain.example", Permanent, "5.1.2"},
		{"servfail.example", Temporary, "4.4.3"},
		{"timeout.example", Temporary, "4.4.3"},
		{"noaddr.example", Temporary, "4.4.1"},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			j := job("a@" + tc.domain)
			j.Domain = tc.domain
			out := deliver(t, c, j)
			r := out.Results[0]
			if r.Status != tc.want || r.Enhanced != tc.enh {
				t.Errorf("%s: %s %d %s %q, want %s %s", tc.domain, r.Status, r.Code, r.Enhanced, r.Text, tc.want, tc.enh)
			}
		})
	}
	if len(s.Messages()) != 1 {
		t.Errorf("implicit MX sink has %d messages", len(s.Messages()))
	}
}

func TestReplies(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	s := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	c := w.client(nil)
	// A slow server (Behaviour.Delay) answers after 1.5 s, past this
	// client's command timeout.
	impatient := w.client(func(o *Options) { o.CommandTimeout = time.Second })
	e := func(code int, a, b, cc int, m string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, cc}, Message: m}
	}
	mixed := func(addr string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(addr, "unknown"):
			return e(550, 5, 1, 1, "User unknown")
		case strings.HasPrefix(addr, "full"):
			return e(452, 4, 2, 2, "Mailbox full")
		}
		return nil
	}
	for _, tc := range []struct {
		name   string
		b      deliverytest.Behaviour
		rcpts  []string
		want   []Status
		enh    []smtpstatus.Code
		stored int
	}{
		{"mixed per recipient", deliverytest.Behaviour{Rcpt: mixed},
			[]string{"a@example.com", "unknown@example.com", "full@example.com", "b@example.com"},
			[]Status{Delivered, Permanent, Temporary, Delivered}, []smtpstatus.Code{"2.0.0", "5.1.1", "4.2.2", "2.0.0"}, 1},
		{"all refused", deliverytest.Behaviour{Rcpt: mixed},
			[]string{"unknown@example.com"}, []Status{Permanent}, []smtpstatus.Code{"5.1.1"}, 0},
		{"MAIL 5xx", deliverytest.Behaviour{Mail: e(550, 5, 7, 1, "sender rejected")},
			[]string{"a@example.com", "b@example.com"}, []Status{Permanent, Permanent}, []smtpstatus.Code{"5.7.1", "5.7.1"}, 0},
		{"MAIL 4xx", deliverytest.Behaviour{Mail: e(451, 4, 7, 1, "greylisted")},
			[]string{"a@example.com"}, []Status{Temporary}, []smtpstatus.Code{"4.7.1"}, 0},
		{"DATA 5xx", deliverytest.Behaviour{Rcpt: mixed, Data: e(554, 5, 6, 0, "content rejected")},
			[]string{"a@example.com", "unknown@example.com"}, []Status{Permanent, Permanent}, []smtpstatus.Code{"5.6.0", "5.1.1"}, 0},
		{"DATA 4xx", deliverytest.Behaviour{Data: e(451, 4, 3, 0, "try later")},
			[]string{"a@example.com"}, []Status{Temporary}, []smtpstatus.Code{"4.3.0"}, 0},
		{"drop mid-DATA", deliverytest.Behaviour{DropInData: true},
			[]string{"a@example.com"}, []Status{Temporary}, []smtpstatus.Code{"4.4.2"}, 0},
		{"slow server", deliverytest.Behaviour{Delay: 1500 * time.Millisecond},
			[]string{"a@example.com"}, []Status{Temporary}, []smtpstatus.Code{"4.4.2"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.Messages())
			s.SetBehaviour(tc.b)
			cl := c
			if tc.b.Delay > 0 {
				cl = impatient
			}
			out := deliver(t, cl, job(tc.rcpts...))
			for i, r := range out.Results {
				if r.Status != tc.want[i] || r.Enhanced != tc.enh[i] {
					t.Errorf("%s: %s %d %s %q, want %s %s", r.Addr, r.Status, r.Code, r.Enhanced, r.Text, tc.want[i], tc.enh[i])
				}
			}
			if n := len(s.Messages()) - before; n != tc.stored {
				t.Errorf("sink stored %d messages, want %d", n, tc.stored)
			}
			if tc.stored == 1 {
				m := s.Messages()[before]
				if strings.Join(m.To, ",") != "a@example.com,b@example.com" {
					t.Errorf("sink got recipients %v", m.To)
				}
			}
		})
	}
}

func TestSTARTTLS(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	w.dns.AddMX("plain.example", 10, "mx.plain.example")
	w.dns.AddA("mx.plain.example", "127.0.0.3")
	srvTLS, pool := deliverytest.Certificate(t, "mx1.example.com")
	tlsSink := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", w.port), TLS: srvTLS,
		Behaviour: deliverytest.Behaviour{RequireTLS: true}})
	plainSink := w.sink("127.0.0.3", "mx.plain.example", deliverytest.Behaviour{})
	_, otherPool := deliverytest.Certificate(t, "mx1.example.com")

	for _, tc := range []struct {
		name    string
		mode    TLSMode
		pool    *x509.CertPool
		domain  string
		want    Status
		wantTLS bool
	}{
		{"opportunistic uses offered TLS", Opportunistic, nil, "example.com", Delivered, true},
		{"opportunistic without offer is plaintext", Opportunistic, nil, "plain.example", Delivered, false},
		{"required with TLS", Required, nil, "example.com", Delivered, true},
		{"required without offer defers", Required, nil, "plain.example", Temporary, false},
		{"verify with trusted cert", Verify, pool, "example.com", Delivered, true},
		{"verify with untrusted cert defers", Verify, otherPool, "example.com", Temporary, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := w.client(func(o *Options) { o.TLS = StaticTLS{Mode: tc.mode, RootCAs: tc.pool} })
			nt, np := len(tlsSink.Messages()), len(plainSink.Messages())
			j := job("a@" + tc.domain)
			j.Domain = tc.domain
			out := deliver(t, c, j)
			expect(t, out, tc.want)
			if (out.TLS != "") != tc.wantTLS || (tc.wantTLS && !strings.HasPrefix(out.TLS, "TLS1.")) {
				t.Errorf("Outcome.TLS = %q, want TLS %v", out.TLS, tc.wantTLS)
			}
			got := len(tlsSink.Messages()) - nt + len(plainSink.Messages()) - np
			if (tc.want == Delivered) != (got == 1) {
				t.Errorf("sinks got %d messages", got)
			}
			if tc.wantTLS && got == 1 && !tlsSink.Messages()[nt].TLS {
				t.Error("sink did not receive the message over TLS")
			}
		})
	}
}

func TestSmarthost(t *testing.T) {
	w := newWorld(t)
	srvTLS, pool := deliverytest.Certificate(t, "relay.example.net", "127.0.0.4")
	s := deliverytest.Start(t, deliverytest.Options{Addr: "127.0.0.4:0", TLS: srvTLS,
		Behaviour: deliverytest.Behaviour{User: "edge", Password: "secret", RequireAuth: true}})
	// No DNS at all for the recipient domain: the smarthost takes it.
	c := w.client(func(o *Options) {
		o.Smarthost = s.Addr
		o.SmarthostUsername, o.SmarthostPassword = "edge", "secret"
		o.TLS = StaticTLS{Mode: Verify, RootCAs: pool}
	})
	j := job("a@unresolvable.example", "b@other.example")
	out := deliver(t, c, j)
	expect(t, out, Delivered, Delivered)
	m := s.Messages()
	if len(m) != 1 || m[0].Auth != "edge" || !m[0].TLS {
		t.Fatalf("smarthost got %+v", m)
	}
	// Wrong password: deferred, not bounced (a configuration problem).
	c = w.client(func(o *Options) {
		o.Smarthost = s.Addr
		o.SmarthostUsername, o.SmarthostPassword = "edge", "wrong"
	})
	expect(t, deliver(t, c, job("a@x.example")), Temporary)
}

func TestDSNParametersPassedOn(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	s := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	j := job("a@example.com")
	j.Ret, j.EnvID = "HDRS", "env-42"
	j.Rcpts[0].Notify = []string{"FAILURE", "DELAY"}
	j.Rcpts[0].ORCPT = "rfc822;A@Example.com"
	expect(t, deliver(t, w.client(nil), j), Delivered)
	m := s.Messages()[0]
	if m.Ret != "HDRS" || m.EnvID != "env-42" || strings.Join(m.Notify["a@example.com"], ",") != "FAILURE,DELAY" || !strings.EqualFold(m.ORCPT["a@example.com"], "rfc822;A@Example.com") {
		t.Errorf("DSN parameters: RET %q ENVID %q NOTIFY %v ORCPT %v", m.Ret, m.EnvID, m.Notify, m.ORCPT)
	}
}

func TestNullSender(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	s := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	j := job("a@example.com")
	j.From = ""
	expect(t, deliver(t, w.client(nil), j), Delivered)
	if m := s.Messages(); len(m) != 1 || m[0].From != "" {
		t.Fatalf("null sender: %+v", m)
	}
}

func TestParseTLSMode(t *testing.T) {
	for in, want := range map[string]TLSMode{"": Opportunistic, "opportunistic": Opportunistic, "required": Required, "VERIFY": Verify} {
		if got, err := ParseTLSMode(in); err != nil || got != want {
			t.Errorf("ParseTLSMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseTLSMode("dane"); err == nil {
		t.Error("unknown mode accepted")
	}
}
