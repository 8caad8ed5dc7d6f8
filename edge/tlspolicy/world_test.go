package tlspolicy_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/tlspolicy"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

// world is everything over loopback: a DNS server that stands for a
// validating resolver, MX sinks on 127.0.0.2.. sharing one port, a test
// CA, and the resolvers the policy and the delivery client use.
type world struct {
	t    *testing.T
	dns  *dnstest.Server
	res  *resolver.Resolver
	val  *resolver.Validating
	ca   *deliverytest.CA
	port int
}

// The world's timeouts only bound a hang: the test DNS server, the sinks
// and the policy servers answer at once, and no test here waits for a
// timeout. A short one would turn a stall of a loaded machine into a
// failed lookup or attempt.
const (
	worldDNSTimeout   = 5 * time.Second
	worldSMTPTimeout  = 10 * time.Second
	worldFetchTimeout = 10 * time.Second // MTA-STS policy fetches
	worldDeliverTime  = 30 * time.Second // one Deliver call
)

func newWorld(t *testing.T) *world {
	t.Helper()
	d := dnstest.Start(t)
	res, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: worldDNSTimeout, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	val, err := resolver.NewValidating(resolver.ValidatingOptions{Servers: []string{d.Addr}, Timeout: worldDNSTimeout, Attempts: 1,
		MaxTTL: time.Millisecond, Clock: uncachedClock()})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, dns: d, res: res, val: val, ca: deliverytest.NewCA(t, "test CA"),
		port: deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3")}
}

// uncachedClock is the validating resolver's clock: every reading is a
// second after the one before, beyond the 1 ms cap on cached answers, so
// no answer is still fresh at the next lookup and every lookup asks the
// test DNS server. Tests change records between deliveries and expect the
// next delivery to see the change; with the real clock, a lookup less
// than 1 ms after the one before would take the old answer from the cache.
func uncachedClock() func() time.Time {
	var mu sync.Mutex
	now := time.Now()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
}

// mx publishes name as an MX host of example.com at ip and starts a sink
// there; leaf, when set, makes it offer STARTTLS with that certificate.
func (w *world) mx(pref uint16, name, ip string, leaf *deliverytest.Leaf) *deliverytest.Sink {
	w.dns.AddMX("example.com", pref, name)
	w.dns.AddA(name, ip)
	o := deliverytest.Options{Addr: fmt.Sprintf("%s:%d", ip, w.port), Name: name}
	if leaf != nil {
		o.TLS = leaf.Config
	}
	return deliverytest.Start(w.t, o)
}

// leaf issues a certificate valid now for names.
func (w *world) leaf(names ...string) *deliverytest.Leaf {
	return w.ca.Issue(w.t, time.Time{}, time.Time{}, names...)
}

// expired issues a certificate for names that expired an hour ago.
func (w *world) expired(names ...string) *deliverytest.Leaf {
	return w.ca.Issue(w.t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), names...)
}

// tlsa publishes a TLSA record for host.
func (w *world) tlsa(host string, usage, selector, mtype int, data string) {
	w.dns.AddRR(fmt.Sprintf("_25._tcp.%s. 300 IN TLSA %d %d %d %s", host, usage, selector, mtype, data))
}

func spkiSHA256(c *x509.Certificate) string {
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:])
}

func certSHA256(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// policy builds a Policy; mod adjusts the options (DNSSEC is set unless
// mod clears it).
func (w *world) policy(mod func(*tlspolicy.Options)) *tlspolicy.Policy {
	w.t.Helper()
	o := tlspolicy.Options{Default: delivery.Opportunistic, DNSSEC: w.val, RootCAs: w.ca.Pool}
	if mod != nil {
		mod(&o)
	}
	p, err := tlspolicy.New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *world) deliver(p delivery.TLSPolicy) delivery.Outcome {
	w.t.Helper()
	c := w.client(p, -1)
	defer c.Close()
	return w.deliverWith(c)
}

// client makes a delivery client; idle is delivery.Options.ConnIdle
// (negative: no connection reuse).
func (w *world) client(p delivery.TLSPolicy, idle time.Duration) *delivery.Client {
	w.t.Helper()
	c, err := delivery.New(delivery.Options{Hostname: "edge.example.edu", Resolver: w.res, TLS: p, MXPort: w.port,
		ConnectTimeout: worldSMTPTimeout, CommandTimeout: worldSMTPTimeout, ConnIdle: idle,
		Shuffle: func(int, func(i, j int)) {}})
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) deliverWith(c *delivery.Client) delivery.Outcome {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), worldDeliverTime)
	defer cancel()
	return c.Deliver(ctx, &delivery.Job{QueueID: "Q1", From: "scanner@example.edu", Domain: "example.com",
		Rcpts: []delivery.Rcpt{{Addr: "a@example.com"}}, Data: []byte("Subject: scan\r\n\r\nhello\r\n")})
}

func wantDelivered(t *testing.T, out delivery.Outcome, verif string) {
	t.Helper()
	if out.Results[0].Status != delivery.Delivered {
		t.Fatalf("not delivered: %s", out.Summary)
	}
	if out.Verification != verif {
		t.Errorf("verification = %q, want %q (%s)", out.Verification, verif, out.TLS)
	}
}

// wantDeferred checks a temporary failure for want of the required TLS
// (4.7.5: the message stays queued for a retry, nothing went in clear).
func wantDeferred(t *testing.T, out delivery.Outcome, text string) {
	t.Helper()
	r := out.Results[0]
	if r.Status != delivery.Temporary || r.Code/100 != 4 || !strings.HasPrefix(string(r.Enhanced), "4.7.") {
		t.Fatalf("result %v %d %s %q, want a 4xx 4.7.x deferral", r.Status, r.Code, r.Enhanced, r.Text)
	}
	if out.Verification != delivery.VerifFailed {
		t.Errorf("verification = %q, want %q", out.Verification, delivery.VerifFailed)
	}
	if !strings.Contains(r.Text, text) {
		t.Errorf("reason %q does not mention %q", r.Text, text)
	}
}

func noSessions(t *testing.T, s *deliverytest.Sink, why string) {
	t.Helper()
	if len(s.Messages()) != 0 {
		t.Errorf("%s received %d message(s); %s", s.Name, len(s.Messages()), why)
	}
}
