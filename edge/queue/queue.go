// Package queue is the edge's queue runner: it takes due messages from the
// spool, delivers them (one transaction per message and destination domain)
// and records the outcome per recipient — delivered, retried with backoff,
// or failed with a report queued back into the same spool. Who gets a
// report and who gets suspended when a report fails is decided by
// edge/bounce; this package applies those rules.
//
// What it guarantees:
//   - No busy polling: the runner sleeps until the spool signals new mail
//     (Spool.Wake), a delivery finishes, an operator asks for a retry, or
//     the next message falls due (a timer set to Spool.NextDue).
//   - Bounded concurrency: at most delivery.concurrency connections in
//     total and delivery.per_domain_concurrency per destination domain.
//   - Fair across domains: a domain at its connection limit does not hold
//     up the others. Its messages wait parked behind it, in memory, until
//     it has a free slot (dispatch.go), so mail for other domains due
//     behind a backlog (a dead MX) starts in the same dispatch round as it
//     would without the backlog, and a finished delivery costs about what
//     it starts, not what is queued.
//   - A domain that cannot be reached (no answer, 4xx at connection level,
//     DNS failure) is backed off as a whole, not message by message: its
//     connection limit halves (to one at least) and its other messages are
//     passed over, untouched, for min(retry_min, 1m); each attempt that
//     reaches a transaction raises the limit again by one.
//   - No loss across crashes: a message stays due in the spool while it is
//     being delivered (only the runner's memory marks it in flight), and
//     its outcome is written durably after the attempt, so a message being
//     delivered when the process dies is tried again as soon as the edge
//     restarts. At worst a recipient gets a duplicate; nobody gets nothing.
//     Starting a delivery costs no disk write.
//   - One write per outcome: the envelope update (or the removal of a
//     finished message) and the reports it generates are one spool
//     transaction (Spool.Record), so a crash never leaves a report spooled
//     for a failure that is not recorded (which would report it twice).
//     Every failed recipient is reported exactly once (when its state
//     turns Failed), honouring NOTIFY; a report is never answered by
//     another report.
//   - No tight loops: a message whose bytes cannot be read is passed over
//     for a while (in-memory backoff, growing per failure). An outcome
//     that cannot be written is kept in memory and written again with
//     backoff, the message stays in flight meanwhile (never delivered
//     again, so a recipient already delivered gets no second copy while
//     the edge runs), and no new delivery starts until the spool takes
//     writes again. Recording an outcome never waits for the free-space
//     reserve; a report that finds no room leaves its recipients queued,
//     to be reported when space is back.
//   - Retries back off exponentially with jitter (retry_min doubling up to
//     retry_max); after max_queue_lifetime the remaining recipients fail
//     and the sender gets an NDR. The last retry is scheduled at the
//     expiry time itself.
//   - Reply text from remote servers is bounded (bounce.ReplyText) before
//     it is stored in the history, a report, a suspension reason or an
//     event.
//   - A message is deleted from the spool as soon as every recipient is
//     final.
package queue

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/metrics"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
)

// Spool is what the runner needs from the spool (*spool.Spool).
type Spool interface {
	Put(ctx context.Context, env *spool.Envelope, data []byte) error
	Get(id string) (*spool.Envelope, error)
	Data(id string) ([]byte, error)
	Update(env *spool.Envelope) error
	Record(env *spool.Envelope, news ...spool.NewMessage) error
	Delete(id string) error
	DueFeed() *spool.DueFeed
	Wake() <-chan struct{}
	Iterate(fn func(*spool.Envelope) error) error
}

// Deliverer runs one delivery attempt (*delivery.Client).
type Deliverer interface {
	Deliver(ctx context.Context, job *delivery.Job) delivery.Outcome
}

// Suspender suspends a device locally (*devices.Table).
type Suspender interface {
	Suspend(name, reason string) error
}

// Events receives events for central (the sync outbox).
type Events interface {
	Emit(event.Event)
}

// Options configure a Runner.
type Options struct {
	Spool     Spool
	Deliverer Deliverer
	// Hostname is the Reporting-MTA of NDRs (config hostname).
	Hostname string
	// EdgeID names this edge in events (default Hostname).
	EdgeID string
	// Delivery holds concurrency, retry and lifetime settings.
	Delivery config.Delivery
	// Rules decide who gets a report and whose device is suspended when
	// one fails (affiliated domains and the device table).
	Rules bounce.Rules
	// Suspender and Events may be nil (no suspension / events dropped).
	Suspender Suspender
	Events    Events
	Metrics   *metrics.Metrics
	Clock     clock.Clock // default clock.Real
	// Jitter returns a number in [0,1) (default math/rand).
	Jitter func() float64
	// AttemptTimeout bounds one delivery attempt (default 15m).
	AttemptTimeout time.Duration
	// Recheck is how soon the runner looks again when due messages wait
	// only for a free slot (default 1s); finishing deliveries also wake it.
	Recheck time.Duration
	// DataInFlight bounds the message bytes that deliveries hold in
	// memory at once (default DefaultDataInFlight). A delivery reads its
	// whole message from the spool; with delivery.concurrency = 32 and
	// 25 MiB messages that would be 800 MiB outside the intake's budget.
	// A message larger than the bound waits until it can take all of it.
	DataInFlight int64
	Log          *slog.Logger
}

// DefaultDataInFlight is Options.DataInFlight when left zero: room for
// thousands of typical device messages (a scan of 100 KB to a few MB),
// and for two of the largest the intake accepts by default.
const DefaultDataInFlight = 64 << 20

// Runner is the queue runner. Operator actions (Retry, Hold, ...) are safe
// to call concurrently with Run.
type Runner struct {
	o     Options
	sp    Spool
	log   *slog.Logger
	clock clock.Clock

	mu       sync.Mutex
	inflight map[string]bool
	retry    map[string]bool // operator asked for a retry while in flight
	slots    int             // connections in use
	domains  map[string]int  // connections per domain

	// What the runner knows of the due index (see dispatch.go): feed
	// reads it incrementally (dispatch only); items are the due messages
	// taken in and not in flight, each either in due (earliest first) or
	// parked behind the domain that had no slot for it; flight is the
	// entry each message in flight was started from, and later an entry
	// written for a message while it was in flight (taken in when the
	// attempt ends).
	feed   *spool.DueFeed
	items  map[string]*item
	due    itemHeap
	parked map[string][]*item
	flight map[string]*item
	later  map[string]*item
	// interned: shared one-domain lists (see internLocked).
	interned map[string][]string
	waiting  bool // the last dispatch left due messages waiting for a slot

	// limits: per-domain connection limits lowered below
	// delivery.per_domain_concurrency because the domain refused
	// connections; domainUntil: domains passed over until a time for the
	// same reason (see adapt).
	limits      map[string]int
	domainUntil map[string]time.Time

	// backoff: messages passed over until a time because reading them
	// failed (see backOff).
	backoff map[string]backoffState
	// pausedUntil: no delivery starts before it, because recording an
	// outcome failed (the spool does not take writes); pauses counts the
	// failures in a row.
	pausedUntil time.Time
	pauses      int

	data *semaphore.Weighted // message bytes held by deliveries (DataInFlight)

	done chan struct{} // a delivery finished (coalesced)
	kick chan struct{} // an operator action made something due (coalesced)
	wg   sync.WaitGroup
}

// maxKnown bounds the due messages the runner keeps in memory (about
// 150 bytes each); the due feed is read further as they start. Mail due
// behind more than that many messages is seen when the backlog shrinks.
const maxKnown = 1 << 17

// maxHistory bounds the attempts kept per message (queue show).
const maxHistory = 30

// New returns a runner; Run starts it.
func New(o Options) (*Runner, error) {
	if o.Spool == nil || o.Deliverer == nil {
		return nil, errors.New("queue: Options.Spool and Options.Deliverer are required")
	}
	if o.Hostname == "" {
		return nil, errors.New("queue: Options.Hostname is empty")
	}
	if o.EdgeID == "" {
		o.EdgeID = o.Hostname
	}
	// The delivery settings come from a validated config (config holds
	// their defaults); New only refuses values the runner cannot work with.
	switch d := o.Delivery; {
	case d.Concurrency < 1:
		return nil, errors.New("queue: Options.Delivery.Concurrency (delivery.concurrency) must be at least 1")
	case d.PerDomainConcurrency < 1:
		return nil, errors.New("queue: Options.Delivery.PerDomainConcurrency (delivery.per_domain_concurrency) must be at least 1")
	case d.RetryMin <= 0 || d.RetryMax < d.RetryMin:
		return nil, errors.New("queue: Options.Delivery needs 0 < RetryMin <= RetryMax (delivery.retry_min, delivery.retry_max)")
	case d.MaxQueueLifetime <= 0:
		return nil, errors.New("queue: Options.Delivery.MaxQueueLifetime (delivery.max_queue_lifetime) must be positive")
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 15 * time.Minute
	}
	if o.Recheck <= 0 {
		o.Recheck = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DataInFlight <= 0 {
		o.DataInFlight = DefaultDataInFlight
	}
	return &Runner{
		data: semaphore.NewWeighted(o.DataInFlight),
		o:    o, sp: o.Spool, log: o.Log, clock: o.Clock,
		inflight:    map[string]bool{},
		retry:       map[string]bool{},
		domains:     map[string]int{},
		limits:      map[string]int{},
		backoff:     map[string]backoffState{},
		domainUntil: map[string]time.Time{},
		items:       map[string]*item{},
		parked:      map[string][]*item{},
		flight:      map[string]*item{},
		later:       map[string]*item{},
		interned:    map[string][]string{},
		done:        make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
	}, nil
}

// Run delivers until ctx ends, then waits for deliveries in progress to
// stop and record their results.
func (r *Runner) Run(ctx context.Context) error {
	r.log.Info("queue runner started", "concurrency", r.o.Delivery.Concurrency, "per_domain", r.o.Delivery.PerDomainConcurrency)
	defer func() {
		if r.feed != nil {
			r.feed.Close()
		}
	}()
	defer r.wg.Wait()
	for {
		next := r.dispatch(ctx)
		var timer <-chan time.Time
		stop := func() bool { return false }
		if !next.IsZero() {
			timer, stop = r.clock.Timer(max(next.Sub(r.clock.Now()), 0))
		}
	wait:
		select {
		case <-ctx.Done():
			stop()
			r.log.Info("queue runner stopping")
			return nil
		case <-r.sp.Wake():
			// New mail is due now, so it sorts behind every message the
			// last scan left waiting for a slot: while those wait for
			// deliveries in flight, one of them finishing (r.done) is
			// the moment to look again. Under a backlog this halves the
			// scans.
			if r.backlogged() {
				goto wait
			}
		case <-r.done:
		case <-r.kick:
		case <-timer:
		}
		stop()
	}
}

// backlogged reports whether the last scan left due messages waiting for
// slots while deliveries are in flight.
func (r *Runner) backlogged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiting && r.slots > 0
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// backoffState is one message's in-memory backoff.
type backoffState struct {
	until time.Time
	n     int // failures in a row
}

// backOff passes over id for a while after reading it failed: 1s, then
// doubling per failure in a row, capped at delivery.retry_min. It lives in
// memory only: the spool may be what is failing.
func (r *Runner) backOff(id, what string, err error) {
	r.mu.Lock()
	b := r.backoff[id]
	b.n++
	d := min(time.Second<<min(b.n-1, 20), r.o.Delivery.RetryMin)
	b.until = r.clock.Now().Add(d)
	r.backoff[id] = b
	r.mu.Unlock()
	r.log.Error("queue: "+what+"; passing over the message for a while", "queue_id", id, "err", err, "failures", b.n, "retry_in", d.String())
}

// recovered forgets id's backoff and lifts a pause after a successful
// write.
func (r *Runner) recovered(id string) {
	r.mu.Lock()
	delete(r.backoff, id)
	r.pausedUntil, r.pauses = time.Time{}, 0
	r.mu.Unlock()
}

// pause stops new deliveries after a failed outcome write and returns how
// long to wait before writing it again: 1s doubling per failure in a row,
// capped at a minute.
func (r *Runner) pause() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pauses++
	d := min(time.Second<<min(r.pauses-1, 6), time.Minute)
	r.pausedUntil = r.clock.Now().Add(d)
	return d
}

// domainLimit is domain d's connection limit now.
func (r *Runner) domainLimit(d string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limitLocked(d)
}

// limitLocked is domain d's connection limit now. r.mu must be held.
func (r *Runner) limitLocked(d string) int {
	if l, ok := r.limits[d]; ok {
		return l
	}
	return r.o.Delivery.PerDomainConcurrency
}

// domainBackoff is how long a domain that refused connections is passed
// over before one connection tries it again (delivery.retry_min, at most
// a minute, so that a domain back from an outage is served soon).
func (r *Runner) domainBackoff() time.Duration {
	return min(r.o.Delivery.RetryMin, time.Minute)
}

// adapt adjusts domain d's connection limit after an attempt: a domain
// that could not be reached (no answer, 421 or another 4xx at connection
// level, DNS failure) gets half its limit, at least one, and is passed
// over for domainBackoff, so its backlog costs one probing connection at
// a time rather than a connection per message; each attempt that reaches
// a transaction raises the limit by one, back to
// delivery.per_domain_concurrency. It reports whether d was backed off.
func (r *Runner) adapt(d string, unreachable bool, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	max := r.o.Delivery.PerDomainConcurrency
	l := r.limitLocked(d)
	if unreachable {
		l = l / 2
		if l < 1 {
			l = 1
		}
		r.limits[d] = l
		r.domainUntil[d] = now.Add(r.domainBackoff())
		return true
	}
	delete(r.domainUntil, d)
	if l+1 >= max {
		delete(r.limits, d)
	} else {
		r.limits[d] = l + 1
	}
	return false
}

// domainsPaused returns the earliest end of a domain backoff still
// running at now (zero when none).
func (r *Runner) domainsPaused(now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var soonest time.Time
	for d, until := range r.domainUntil {
		if !now.Before(until) {
			delete(r.domainUntil, d)
			continue
		}
		if soonest.IsZero() || until.Before(soonest) {
			soonest = until
		}
	}
	return soonest
}

// freeSlots frees the connection slots of a message's domains.
func (r *Runner) freeSlots(domains []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots -= len(domains)
	for _, d := range domains {
		if r.domains[d]--; r.domains[d] <= 0 {
			delete(r.domains, d)
		}
	}
}

// domainOf returns the lower-cased domain of addr.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// pendingDomains lists, sorted, the distinct domains with pending
// recipients (the spool's due index lists the same).
func pendingDomains(env *spool.Envelope) []string {
	return env.PendingDomains()
}

// nextAttempt is the retry time after attempt number env.Attempts:
// retry_min doubled per attempt, capped at retry_max, with ±10% jitter,
// and never later than the expiry time (so the last try happens then).
func (r *Runner) nextAttempt(env *spool.Envelope, now time.Time) time.Time {
	d := Backoff(env.Attempts, r.o.Delivery.RetryMin, r.o.Delivery.RetryMax, r.o.Jitter())
	next := now.Add(d)
	if exp := env.ReceivedAt.Add(r.o.Delivery.MaxQueueLifetime); next.After(exp) {
		next = exp
	}
	if !next.After(now) {
		next = now.Add(time.Second)
	}
	return next
}

// Backoff is the wait after the n-th attempt (n >= 1): min·2^(n-1) capped
// at max, then scaled by a jitter factor in [0.9, 1.1) derived from u in
// [0,1), so that messages failing together do not retry together.
func Backoff(n int, min, max time.Duration, u float64) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(float64(d) * (0.9 + 0.2*u))
}
