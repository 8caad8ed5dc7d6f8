package queue

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
)

// BenchmarkDrain measures delivery alone: b.N 10 KB messages already in a
// real spool on disk are delivered by the runner (default concurrency) to
// a loopback MX over real SMTP, each recorded and deleted durably.
func BenchmarkDrain(b *testing.B) {
	e := newEnv(b)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	line := strings.Repeat("0123456789", 7) + "\r\n"
	data := []byte("From: scanner@example.edu\r\nTo: a@example.com\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, 10240/len(line)))
	// Spool the messages from 16 writers (group commit), so that the
	// untimed setup stays short.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				m := &spool.Envelope{From: "scanner@example.edu", ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
					Recipients: []spool.Recipient{{Addr: "a@example.com"}}}
				if err := e.sp.Put(context.Background(), m, data); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	start := time.Now()
	e.start()
	mx.Wait(b, b.N, 5*time.Minute)
	for e.sp.Stats().Messages > 0 {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// blockingDeliverer holds every attempt until its context ends, so that
// the messages started stay in flight.
type blockingDeliverer struct{ started atomic.Int64 }

func (d *blockingDeliverer) Deliver(ctx context.Context, _ *delivery.Job) delivery.Outcome {
	d.started.Add(1)
	<-ctx.Done()
	return delivery.Outcome{}
}

// BenchmarkDispatchBacklog measures one dispatch round with a backlog of
// 10,000 due messages for one domain whose per_domain_concurrency
// connections are all busy: the cost every finished delivery elsewhere
// (or every new message) pays while the backlog waits.
func BenchmarkDispatchBacklog(b *testing.B) {
	e := newEnv(b)
	e.putMany(10000, "x@backlog.example.org", e.clock.Now().Add(-time.Second))
	bd := &blockingDeliverer{}
	r, err := New(Options{Spool: e.sp, Deliverer: bd, Hostname: "edge.example.edu", Delivery: e.cfg,
		Clock: e.clock, Jitter: func() float64 { return 0.5 }, Log: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		r.wg.Wait()
	}()
	// The first rounds start per_domain_concurrency deliveries and learn
	// the backlog.
	for range 4 {
		r.dispatch(ctx)
	}
	if n := bd.started.Load(); n > int64(e.cfg.PerDomainConcurrency) {
		b.Fatalf("%d deliveries started, want at most %d", n, e.cfg.PerDomainConcurrency)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.dispatch(ctx)
	}
}
