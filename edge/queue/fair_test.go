package queue

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/testkit"
)

// deadMX is a loopback peer for the domain dead.example.org (127.0.0.4
// on the shared port): with greet unset it accepts connections and never
// says a word (a blackholed MX, as far as a client with a greeting
// timeout can tell); with greet set it answers every connection with it
// and hangs up (a server refusing service, e.g. 421).
type deadMX struct {
	ln    net.Listener
	conns atomic.Int64
	mu    sync.Mutex
	open  []net.Conn
}

func (e *env) deadMX(greet string) *deadMX {
	e.t.Helper()
	e.dns.AddMX("dead.example.org", 10, "mx.dead.example.org")
	e.dns.AddA("mx.dead.example.org", "127.0.0.4")
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.4:%d", e.port))
	if err != nil {
		e.t.Fatal(err)
	}
	d := &deadMX{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.conns.Add(1)
			if greet != "" {
				c.Write([]byte(greet + "\r\n"))
				c.Close()
				continue
			}
			d.mu.Lock()
			d.open = append(d.open, c)
			d.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() {
		ln.Close()
		d.mu.Lock()
		for _, c := range d.open {
			c.Close()
		}
		d.mu.Unlock()
	})
	return d
}

// putMany spools n messages from the device's sender to rcpt, due at
// due, from 16 writers (group commit keeps the setup short).
func (e *env) putMany(n int, rcpt string, due time.Time) []string {
	e.t.Helper()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
					ReceivedAt: e.clock.Now(), NextAttempt: due, Recipients: []spool.Recipient{{Addr: rcpt, State: spool.Pending}}}
				if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
					e.t.Error(err)
					return
				}
				ids[i] = m.ID
			}
		}()
	}
	wg.Wait()
	if e.t.Failed() {
		e.t.FailNow()
	}
	return ids
}

// BenchmarkFairness: 10,000 messages to a blackholed domain fall due
// before 100 to a healthy one; the figure is how long the healthy ones
// take to be delivered (healthy-s), from the runner's start. Attempts to
// the blackholed MX end at the 1 s greeting timeout.
func BenchmarkFairness(b *testing.B) {
	for range b.N {
		b.StopTimer()
		e := newEnv(b)
		e.cfg.ConnectTimeout, e.cfg.CommandTimeout = time.Second, time.Second
		e.deadMX("")
		mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
		e.putMany(10000, "x@dead.example.org", e.clock.Now().Add(-time.Second))
		e.putMany(100, "a@example.com", e.clock.Now())
		b.StartTimer()
		start := time.Now()
		e.start()
		deadline := time.Now().Add(2 * time.Minute)
		for len(mx.Messages()) < 100 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		if n := len(mx.Messages()); n < 100 {
			b.Logf("only %d of 100 healthy messages delivered in %s", n, took)
			b.ReportMetric(float64(n), "healthy-delivered")
		}
		b.ReportMetric(took.Seconds(), "healthy-s")
		e.stop()
	}
}

// idle reports whether the runner has nothing in flight.
func (e *env) idle() bool {
	e.runner.mu.Lock()
	defer e.runner.mu.Unlock()
	return len(e.runner.inflight) == 0
}

// attempted counts the messages among ids tried at least once.
func (e *env) attempted(ids []string) int {
	n := 0
	for _, id := range ids {
		if e.attemptsOf(id) > 0 {
			n++
		}
	}
	return n
}

// TestHealthyDomainServedDuringBacklog: 1,000 messages to a blackholed
// domain fall due before 20 to a healthy one, more than one due scan
// walks and decodes; the healthy ones are delivered while the backlog is
// still queued, nearly all of it not even tried yet.
func TestHealthyDomainServedDuringBacklog(t *testing.T) {
	e := newEnv(t)
	dead := e.deadMX("")
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	deadIDs := e.putMany(1000, "x@dead.example.org", e.clock.Now().Add(-time.Second))
	e.putMany(20, "a@example.com", e.clock.Now())
	e.start()
	mx.Wait(t, 20, 30*time.Second)
	if left := e.sp.Stats().Messages; left < 1000 {
		t.Fatalf("%d messages queued after the healthy ones were delivered, want the 1000 of the backlog", left)
	}
	if n := e.attempted(deadIDs); n > e.cfg.PerDomainConcurrency {
		t.Errorf("%d messages to the dead domain tried, want at most per_domain_concurrency (%d)", n, e.cfg.PerDomainConcurrency)
	}
	if dead.conns.Load() == 0 {
		t.Error("the dead domain was never tried")
	}
}

// TestDomainBackoffOn421: a domain that answers 421 on connect is backed
// off as a whole. The first round tries at most per_domain_concurrency
// messages; the rest are not tried (no attempt recorded, no connection)
// while the domain's backoff runs, and mail to another domain flows
// meanwhile. When the backoff ends, one probing connection is opened;
// when the domain answers again its whole backlog is delivered.
func TestDomainBackoffOn421(t *testing.T) {
	e := newEnv(t)
	dead := e.deadMX("421 4.3.2 mx.dead.example.org service not available, closing channel")
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	ids := e.putMany(50, "x@dead.example.org", e.clock.Now().Add(-time.Second))
	e.start()
	first := e.attempted(ids)
	testkit.WaitFor(t, 30*time.Second, "the first round to the refusing domain", func() bool {
		// idle first: a round's messages are all in flight before any
		// of them records its attempt.
		if !e.idle() {
			return false
		}
		first = e.attempted(ids)
		return first > 0
	})
	if first > e.cfg.PerDomainConcurrency {
		t.Fatalf("%d messages tried in the first round, want at most %d", first, e.cfg.PerDomainConcurrency)
	}
	conns := dead.conns.Load()
	// Mail to a healthy domain is not held up by the backoff.
	e.put("b@example.com")
	mx.Wait(t, 1, 30*time.Second)
	testkit.WaitFor(t, 30*time.Second, "the runner to settle", e.idle)
	if n := e.attempted(ids); n != first || dead.conns.Load() != conns {
		t.Fatalf("during the domain backoff: %d messages tried (was %d), %d connections (was %d)", n, first, dead.conns.Load(), conns)
	}
	if l := e.runner.domainLimit("dead.example.org"); l >= e.cfg.PerDomainConcurrency {
		t.Errorf("limit %d after refusals, want below %d", l, e.cfg.PerDomainConcurrency)
	}

	// The backoff ends (but no message's own retry is due yet): the
	// limit has dropped to one, so exactly one message probes.
	e.clock.Advance(e.runner.domainBackoff())
	testkit.WaitFor(t, 30*time.Second, "one probe", func() bool { return e.idle() && e.attempted(ids) > first })
	if n := e.attempted(ids); n != first+1 {
		t.Errorf("%d messages probed after the backoff, want 1", n-first)
	}

	// The domain answers again: everything is delivered.
	dead.ln.Close()
	ok := e.sink("127.0.0.4", deliverytest.Behaviour{})
	for range 20 {
		e.clock.Advance(e.cfg.RetryMax)
		if len(ok.Messages()) == 50 {
			break
		}
		testkit.WaitFor(t, 30*time.Second, "the runner to settle", func() bool { return e.idle() })
	}
	ok.Wait(t, 50, 30*time.Second)
	testkit.WaitFor(t, 30*time.Second, "the limit to recover", func() bool {
		return e.runner.domainLimit("dead.example.org") == e.cfg.PerDomainConcurrency
	})
}

// countingSpool counts the envelope reads the runner makes.
type countingSpool struct {
	*spool.Spool
	gets atomic.Int64
}

func (c *countingSpool) Get(id string) (*spool.Envelope, error) {
	c.gets.Add(1)
	return c.Spool.Get(id)
}

// TestParkedBacklogNotReloaded: with a backlog for a domain at its
// connection limit (its attempts hang), the dispatches that mail to
// another domain causes (one on arrival, one per finished delivery) do
// not read the backlog's envelopes: the runner reads an envelope to start
// its delivery, and the backlog waits parked behind its domain.
func TestParkedBacklogNotReloaded(t *testing.T) {
	e := newEnv(t)
	var cs *countingSpool
	e.wrap = func(s *spool.Spool) Spool { cs = &countingSpool{Spool: s}; return cs }
	e.deadMX("")
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	const backlog, healthy = 500, 30
	e.putMany(backlog, "x@dead.example.org", e.clock.Now().Add(-time.Second))
	e.start()
	for i := range healthy {
		e.put("a@example.com")
		mx.Wait(t, i+1, 30*time.Second)
	}
	// Each healthy message is read once to start it, each message to the
	// dead domain started (at most per_domain_concurrency while its
	// attempts hang, then none while it is backed off) once.
	if n, most := cs.gets.Load(), int64(healthy+e.cfg.PerDomainConcurrency); n > most {
		t.Errorf("%d envelope reads for %d deliveries to the healthy domain, want at most %d", n, healthy, most)
	}
	e.runner.mu.Lock()
	parked := 0
	for _, it := range e.runner.parked["dead.example.org"] {
		if !it.dead {
			parked++
		}
	}
	e.runner.mu.Unlock()
	if parked < backlog-e.cfg.PerDomainConcurrency {
		t.Errorf("%d messages parked behind the dead domain, want at least %d", parked, backlog-e.cfg.PerDomainConcurrency)
	}
}

// TestFinishedMessageRemoved: a due message whose recipients are all
// final (a crash after its last update, before its removal) is removed
// without a delivery, and its removal does not hold up the others.
func TestFinishedMessageRemoved(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
		Recipients: []spool.Recipient{{Addr: "a@example.com", State: spool.Delivered}, {Addr: "b@example.com", State: spool.Failed}}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	other := e.put("c@example.com")
	e.start()
	mx.Wait(t, 1, 10*time.Second)
	e.eventually("the finished message removed", func() bool { return e.attemptsOf(m.ID) == -1 && e.attemptsOf(other.ID) == -1 })
	if got := mx.Messages(); len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "c@example.com" {
		t.Errorf("MX got %+v, want only the message to c@example.com", got)
	}
}
