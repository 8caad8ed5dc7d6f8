package smtpd

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
)

// reporter aggregates the intake's events so that a device retrying the
// same refused message every minute produces one event per interval with a
// count, not a flood: key = kind, device, client IP and reason.
type reporter struct {
	out   Events
	edge  string
	clock clock.Clock

	rateHits atomic.Uint64

	mu      sync.Mutex
	pending map[repKey]*event.Event
	order   []repKey
}

type repKey struct {
	kind                 event.Kind
	device, ip, reason   string
	tlsVersion, tlsSuite string
	stage                string // "connect" for connectRefusal's summaries
}

// maxPending bounds memory under a flood of distinct keys; beyond it
// events are counted into the existing ones only.
const maxPending = 10000

func newReporter(out Events, edge string, clock clock.Clock) *reporter {
	return &reporter{out: out, edge: edge, clock: clock, pending: map[repKey]*event.Event{}}
}

func (r *reporter) add(k repKey, fill func(*event.Event)) {
	if r.out == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.pending[k]; ok {
		e.Count++
		return
	}
	if len(r.pending) >= maxPending {
		return
	}
	e := &event.Event{
		Edge:     r.edge,
		Time:     r.clock.Now(),
		Kind:     k.kind,
		Device:   k.device,
		ClientIP: k.ip,
		Reason:   k.reason,
		Count:    1,
	}
	fill(e)
	r.pending[k] = e
	r.order = append(r.order, k)
}

// refusal notes a refused command.
func (r *reporter) refusal(device, ip string, rep *policy.Reply) {
	r.add(repKey{kind: event.Refusal, device: device, ip: ip, reason: rep.Reason}, func(e *event.Event) {
		e.Detail = map[string]string{"reply": rep.Error()}
	})
}

// maxSampleClients bounds how many client addresses a connect-refusal
// summary names.
const maxSampleClients = 10

// connectRefusal notes a connection refused at connect, typically a client
// outside the local networks: one summary per reason and interval however
// many clients there are (an exposed edge is scanned from many addresses),
// with Count connections and the first few client addresses in
// Detail["clients"].
func (r *reporter) connectRefusal(ip string, rep *policy.Reply) {
	k := repKey{kind: event.Refusal, reason: rep.Reason, stage: "connect"}
	r.add(k, func(e *event.Event) {
		e.Detail = map[string]string{"reply": rep.Error(), "stage": "connect", "clients": ip}
	})
	if r.out == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.pending[k]
	if !ok || e.Count == 1 {
		return
	}
	clients := strings.Fields(e.Detail["clients"])
	if len(clients) >= maxSampleClients || slices.Contains(clients, ip) {
		return
	}
	e.Detail["clients"] = strings.Join(append(clients, ip), " ")
}

// rateLimit notes a limit hit.
func (r *reporter) rateLimit(device, ip, sender string, rep *policy.Reply) {
	r.rateHits.Add(1)
	r.add(repKey{kind: event.RateLimit, device: device, ip: ip, reason: rep.Reason}, func(e *event.Event) {
		e.Sender = sender
		e.Detail = map[string]string{"reply": rep.Error()}
	})
}

// tls notes the TLS version and cipher a client used.
func (r *reporter) tls(device, ip string, st *tls.ConnectionState) {
	v, c := tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)
	r.add(repKey{kind: event.TLS, device: device, ip: ip, tlsVersion: v, tlsSuite: c}, func(e *event.Event) {
		e.Detail = map[string]string{"tls_version": v, "cipher": c}
	})
}

// flush emits everything pending, in first-seen order.
func (r *reporter) flush() {
	if r.out == nil {
		return
	}
	r.mu.Lock()
	evs := make([]event.Event, 0, len(r.order))
	for _, k := range r.order {
		e := r.pending[k]
		e.ID = event.NewID()
		evs = append(evs, *e)
	}
	r.pending = map[repKey]*event.Event{}
	r.order = nil
	r.mu.Unlock()
	for _, e := range evs {
		r.out.Emit(e)
	}
}

// run flushes every interval until ctx ends, then once more.
func (r *reporter) run(ctx context.Context, interval time.Duration) {
	tick, stop := r.clock.Ticker(interval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			r.flush()
			return
		case <-tick:
			r.flush()
		}
	}
}
