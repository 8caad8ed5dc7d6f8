package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/metrics"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/resolver"
	"github.com/postern/postern/shared/testkit"
)

// recorder collects events.
type recorder struct {
	mu sync.Mutex
	ev []event.Event
}

func (r *recorder) Emit(e event.Event) {
	r.mu.Lock()
	r.ev = append(r.ev, e)
	r.mu.Unlock()
}

func (r *recorder) kinds(k event.Kind) []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event.Event
	for _, e := range r.ev {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// env is a test edge: a real spool on disk, a real registry, a real
// delivery client talking to loopback sinks found through a loopback DNS.
type env struct {
	t       testing.TB
	dir     string
	sp      *spool.Spool
	reg     *devices.Table
	dns     *dnstest.Server
	res     *resolver.Resolver
	clock   *testkit.Clock
	events  *recorder
	metrics *metrics.Metrics
	port    int
	cfg     config.Delivery
	runner  *Runner
	cancel  context.CancelFunc
	done    chan struct{}
	smart   string
	// affiliated is the organisation's domains (example.edu and its
	// subdomains; example.com and example.net are outside).
	affiliated address.DomainList
	// minFree is the spool's free-space reserve (default 1 byte).
	minFree int64
	// wrap, when set, wraps the spool the runner uses (fault injection).
	wrap func(*spool.Spool) Spool
	// dataInFlight is Options.DataInFlight (0: the default).
	dataInFlight int64
}

// The registered devices: device may send as scanner@example.edu
// (affiliated) and scans@example.net (outside); copier as
// copier@example.net.
const (
	device = "scanner1.example.edu"
	copier = "copier.example.edu"
)

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: testkit.NewClock(), events: &recorder{}, metrics: metrics.New()}
	e.dns = dnstest.Start(t)
	var err error
	// The timeouts only bound a hang: the test DNS server and the sinks
	// answer at once, but under -race on a loaded machine an answer can
	// take over a second, and an attempt that times out is retried only
	// when the test's clock moves (minutes later), so a short timeout
	// made tests wait forever for a delivery. Tests about timeouts set
	// their own.
	e.res, err = resolver.New(resolver.Options{Servers: []string{e.dns.Addr}, Timeout: 5 * time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	e.port = deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	e.cfg = config.Default(false).Delivery
	e.cfg.ConnectTimeout, e.cfg.CommandTimeout = 10*time.Second, 10*time.Second
	e.openSpool()
	// example.com (recipients) -> 127.0.0.2; example.edu (the device's
	// sender domain, where NDRs go) -> 127.0.0.3.
	e.dns.AddMX("example.com", 10, "mx.example.com")
	e.dns.AddA("mx.example.com", "127.0.0.2")
	e.dns.AddMX("example.edu", 10, "mx.example.edu")
	e.dns.AddA("mx.example.edu", "127.0.0.3")
	// example.net (an outside sender's domain, the victim of relay by
	// bounce) -> 127.0.0.4.
	e.dns.AddMX("example.net", 10, "mx.example.net")
	e.dns.AddA("mx.example.net", "127.0.0.4")
	e.affiliated, err = address.NewDomainList([]string{"example.edu", ".example.edu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		e.sp.Close()
	})
	return e
}

func (e *env) openSpool() {
	var err error
	minFree := e.minFree
	if minFree == 0 {
		minFree = 1 // tests on a shared disk must not trip the reserve
	}
	e.sp, err = spool.Open(spool.Options{Dir: e.dir, ValueLogFileSize: 1 << 20, GCInterval: -1, Clock: e.clock.Now, MinFree: minFree})
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg, err = devices.New([]config.Device{
		{Name: device, Status: "active", Senders: []string{"scanner@example.edu", "scans@example.net"}},
		{Name: copier, Status: "active", Senders: []string{"copier@example.net"}},
	}, e.sp.KV("susp/"), e.clock.Now)
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) sink(ip string, b deliverytest.Behaviour) *deliverytest.Sink {
	return deliverytest.Start(e.t, deliverytest.Options{Addr: fmt.Sprintf("%s:%d", ip, e.port), Name: "mx-" + ip, Behaviour: b})
}

// start runs a runner on the current spool.
func (e *env) start() {
	e.t.Helper()
	dc, err := delivery.New(delivery.Options{Hostname: "edge.example.edu", Resolver: e.res, MXPort: e.port,
		Smarthost:      e.smart,
		ConnectTimeout: e.cfg.ConnectTimeout, CommandTimeout: e.cfg.CommandTimeout, Log: testLogger(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	var sp Spool = e.sp
	if e.wrap != nil {
		sp = e.wrap(e.sp)
	}
	e.runner, err = New(Options{Spool: sp, Deliverer: dc, Hostname: "edge.example.edu", Delivery: e.cfg,
		Rules:     bounce.Rules{Affiliated: e.affiliated, Devices: e.reg},
		Suspender: e.reg, Events: e.events, Metrics: e.metrics, Clock: e.clock, Jitter: func() float64 { return 0.5 },
		AttemptTimeout: 10 * time.Minute, DataInFlight: e.dataInFlight, Log: testLogger(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		e.runner.Run(ctx)
	}()
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

const body = "From: scanner@example.edu\r\nTo: someone@example.com\r\nSubject: scan\r\nMessage-ID: <m1@example.edu>\r\n\r\nscan attached\r\n"

// put spools a message from the device's sender.
func (e *env) put(rcpts ...string) *spool.Envelope {
	e.t.Helper()
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, spool.Recipient{Addr: r, State: spool.Pending})
	}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// all returns every spooled envelope, oldest first.
func (e *env) all() []*spool.Envelope {
	var out []*spool.Envelope
	e.sp.Iterate(func(m *spool.Envelope) error {
		out = append(out, m)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// eventually polls cond (the runner works in other goroutines).
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second) // bounds a hang only
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; spool: %s", what, e.dump())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) dump() string {
	s := ""
	for _, m := range e.all() {
		s += fmt.Sprintf("\n  %s from=%q bounce=%v attempts=%d next=%s", m.ID, m.From, m.Bounce, m.Attempts, m.NextAttempt.Sub(e.clock.Now()))
		for _, r := range m.Recipients {
			s += fmt.Sprintf("\n    %s %s %d %s %q", r.Addr, r.State, r.Code, r.EnhancedCode, r.Reply)
		}
	}
	return s
}

// attemptsOf returns the attempt count of id (-1 when gone).
func (e *env) attemptsOf(id string) int {
	m, err := e.sp.Get(id)
	if err != nil {
		return -1
	}
	return m.Attempts
}

// testLogger logs through t.Log when -v is given, else discards.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
