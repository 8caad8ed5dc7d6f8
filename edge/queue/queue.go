// Package queue is the edge's queue runner: it takes due messages from the
// spool, delivers them (one transaction per message and destination domain)
// and records the outcome per recipient — delivered, retried with backoff,
// or failed with a non-delivery report queued back into the same spool.
//
// What it guarantees:
//   - No busy polling: the runner sleeps until the spool signals new mail
//     (Spool.Wake), a delivery finishes, an operator asks for a retry, or
//     the next message falls due (a timer set to Spool.NextDue).
//   - Bounded concurrency: at most delivery.concurrency connections in
//     total and delivery.per_domain_concurrency per destination domain.
//   - No loss across crashes: a message stays due in the spool while it is
//     being delivered (only the runner's memory marks it in flight), and
//     its outcome is written durably after the attempt, so a message being
//     delivered when the process dies is tried again as soon as the edge
//     restarts. At worst a recipient gets a duplicate; nobody gets nothing.
//     Starting a delivery costs no disk write.
//   - Retries back off exponentially with jitter (retry_min doubling up to
//     retry_max); after max_queue_lifetime the remaining recipients fail
//     and the sender gets an NDR. The last retry is scheduled at the
//     expiry time itself.
//   - An NDR is spooled before the failure it reports is recorded, so a
//     crash between the two gives a duplicate NDR, never a missing one.
//     Every failed recipient is reported exactly once (when its state turns
//     Failed), honouring NOTIFY; an NDR is never answered by another NDR.
//   - An NDR that cannot be delivered (permanent failure or expiry)
//     suspends the device whose sender it was addressed to, at once, and
//     emits an event.NDRUndeliverable for central.
//   - A message is deleted from the spool as soon as every recipient is
//     final.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/dsn"
	"github.com/postern/postern/edge/metrics"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/oneline"
	"github.com/postern/postern/shared/smtpstatus"
	"github.com/postern/postern/shared/tlsinfo"
)

// Spool is what the runner needs from the spool (*spool.Spool).
type Spool interface {
	Put(ctx context.Context, env *spool.Envelope, data []byte) error
	Get(id string) (*spool.Envelope, error)
	Data(id string) ([]byte, error)
	Update(env *spool.Envelope) error
	Delete(id string) error
	ScanDue(now time.Time, fn func(id string, load func() (*spool.Envelope, error)) bool) (time.Time, bool, error)
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

// LeaseStore holds lease records (*spool.Bucket) that earlier versions of
// the runner wrote before each delivery, leasing the message in the spool
// (its next attempt moved past the end of the attempt). The runner no
// longer leases; at start it makes the messages named there due at once
// instead of waiting for their leases to run out, and removes the records.
type LeaseStore interface {
	Set(key string, value []byte) error
	Delete(key string) error
	Iterate(fn func(key string, value []byte) error) error
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
	// Suspender and Events may be nil (no suspension / events dropped).
	Suspender Suspender
	Events    Events
	Metrics   *metrics.Metrics
	Clock     clock.Clock // default clock.Real
	// Jitter returns a number in [0,1) (default math/rand).
	Jitter func() float64
	// Lease bounds one delivery attempt: it is cut off a little before
	// Lease has passed (default 15m).
	Lease time.Duration
	// Leases, when set, is where earlier versions recorded their leases;
	// Run retries those messages at once (see LeaseStore).
	Leases LeaseStore
	// Recheck is how soon the runner looks again when due messages wait
	// only for a free slot (default 1s); finishing deliveries also wake it.
	Recheck time.Duration
	Log     *slog.Logger
}

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

	// blocked: due messages the last scan could not start, with their
	// pending domains; the next scan passes over them by id while those
	// domains are still at their limit. Only dispatch uses it.
	blocked map[string][]string
	waiting bool // the last scan left due messages waiting for a slot

	done chan struct{} // a delivery finished (coalesced)
	kick chan struct{} // an operator action made something due (coalesced)
	wg   sync.WaitGroup
}

// dueBatch bounds the index entries one due-scan walks, and loadBatch the
// envelopes it decodes; messages waiting behind them are seen on a later
// scan (every finished delivery starts one).
const (
	dueBatch  = 256
	loadBatch = 64
)

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
	if o.Lease <= 0 {
		o.Lease = 15 * time.Minute
	}
	if o.Recheck <= 0 {
		o.Recheck = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		o: o, sp: o.Spool, log: o.Log, clock: o.Clock,
		inflight: map[string]bool{},
		retry:    map[string]bool{},
		domains:  map[string]int{},
		done:     make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
	}, nil
}

// Run delivers until ctx ends, then waits for deliveries in progress to
// stop and record their results.
func (r *Runner) Run(ctx context.Context) error {
	r.log.Info("queue runner started", "concurrency", r.o.Delivery.Concurrency, "per_domain", r.o.Delivery.PerDomainConcurrency)
	r.recover()
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

// dispatch starts deliveries for due messages while slots are free and
// returns when to look again (zero: only when woken).
//
// Starting a delivery writes nothing to the spool: the runner's in-flight
// set is what keeps a message from being handed out twice, and a message
// being delivered stays due on disk, so a crash mid-delivery leaves it to
// be retried as soon as the edge starts again. (A durable lease per
// message would cost two fsyncs on the dispatch path, one message at a
// time.)
//
// The walk over the due index decodes only what it may start: ids in
// flight are passed over by key, and so are ids that last time waited for
// a domain that is still at its connection limit.
func (r *Runner) dispatch(ctx context.Context) time.Time {
	if ctx.Err() != nil {
		return time.Time{}
	}
	now := r.clock.Now()
	type candidate struct {
		env     *spool.Envelope
		domains []string
	}
	var (
		start   []candidate
		stale   []*spool.Envelope
		waiting bool // due messages wait for a slot
		walked  int
		loaded  int
	)
	blocked := map[string][]string{}
	next, ok, err := r.sp.ScanDue(now, func(id string, load func() (*spool.Envelope, error)) bool {
		if walked++; walked > dueBatch {
			waiting = true
			return false
		}
		r.mu.Lock()
		busy, full := r.inflight[id], r.slots >= r.o.Delivery.Concurrency
		prev, was := r.blocked[id]
		still := was && !r.fitsLocked(prev)
		r.mu.Unlock()
		switch {
		case full:
			waiting = true
			return false
		case busy:
			return true
		case still:
			blocked[id] = prev
			waiting = true
			return true
		}
		if loaded++; loaded > loadBatch {
			waiting = true
			return false
		}
		env, err := load()
		if err != nil {
			r.log.Warn("queue: due message unreadable", "queue_id", id, "err", err)
			return true
		}
		if env.Held {
			return true
		}
		domains := pendingDomains(env)
		if len(domains) == 0 {
			// Everything is final (a crash after the last update but
			// before the delete): finish the job after the walk.
			stale = append(stale, env)
			return true
		}
		if !r.reserve(id, domains) {
			blocked[id] = domains
			waiting = true
			return true
		}
		start = append(start, candidate{env, domains})
		return true
	})
	r.blocked = blocked
	for _, env := range stale {
		r.finishStale(env)
	}
	for _, c := range start {
		// The walk read a snapshot; now that the id is reserved (operator
		// actions wait for it), read what is stored: a delivery that just
		// finished, or an operator, may have changed it since.
		env, gerr := r.sp.Get(c.env.ID)
		if gerr != nil || env.Held || env.NextAttempt.After(now) || !slices.Equal(pendingDomains(env), c.domains) {
			r.release(c.env.ID, c.domains)
			if gerr != nil && !errors.Is(gerr, spool.ErrNotFound) {
				r.log.Error("queue: reading envelope failed", "queue_id", c.env.ID, "err", gerr)
			}
			waiting = true
			continue
		}
		domains := c.domains
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() {
				if r.release(env.ID, domains) && ctx.Err() == nil {
					// An operator asked for a retry during the attempt.
					if err := r.Retry(env.ID); err != nil && !errors.Is(err, spool.ErrNotFound) {
						r.log.Warn("queue: deferred operator retry failed", "queue_id", env.ID, "err", err)
					}
				}
				signal(r.done)
			}()
			r.deliver(ctx, env)
		}()
	}
	r.mu.Lock()
	r.waiting = waiting
	r.mu.Unlock()
	switch {
	case err != nil:
		r.log.Error("queue: due scan failed", "err", err)
		return now.Add(r.o.Recheck)
	case waiting:
		// Due messages wait for a slot: deliveries finishing wake us;
		// look again soon regardless.
		if ok && next.Before(now.Add(r.o.Recheck)) {
			return next
		}
		return now.Add(r.o.Recheck)
	case ok:
		return next
	}
	// Nothing due later; whatever is in flight wakes us when it ends.
	return time.Time{}
}

// dropLease forgets the lease record of id.
func (r *Runner) dropLease(id string) {
	if r.o.Leases == nil {
		return
	}
	if err := r.o.Leases.Delete(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
		r.log.Error("queue: dropping lease record failed", "queue_id", id, "err", err)
	}
}

// recover makes messages leased by an earlier version's runner due now:
// they still have a lease record, and no delivery runs before Run starts.
func (r *Runner) recover() {
	if r.o.Leases == nil {
		return
	}
	var ids []string
	if err := r.o.Leases.Iterate(func(k string, _ []byte) error {
		ids = append(ids, k)
		return nil
	}); err != nil {
		r.log.Error("queue: reading lease records failed", "err", err)
		return
	}
	now := r.clock.Now()
	for _, id := range ids {
		env, err := r.sp.Get(id)
		switch {
		case err == nil && !env.Held:
			env.NextAttempt = now
			if err := r.sp.Update(env); err != nil {
				r.log.Error("queue: recovering interrupted delivery failed", "queue_id", id, "err", err)
				continue
			}
			r.log.Warn("delivery was interrupted (crash or kill); retrying now", "queue_id", id)
		case err != nil && !errors.Is(err, spool.ErrNotFound):
			r.log.Error("queue: recovering interrupted delivery failed", "queue_id", id, "err", err)
			continue
		}
		r.dropLease(id)
	}
}

// reserve takes a connection slot per pending domain of message id, if all
// are free.
func (r *Runner) reserve(id string, domains []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[id] || !r.fitsLocked(domains) {
		return false
	}
	r.inflight[id] = true
	r.slots += len(domains)
	for _, d := range domains {
		r.domains[d]++
	}
	return true
}

// fitsLocked reports whether a message with these pending domains would
// get its slots now. r.mu must be held.
func (r *Runner) fitsLocked(domains []string) bool {
	if r.slots > 0 && r.slots+len(domains) > r.o.Delivery.Concurrency {
		return false
	}
	for _, d := range domains {
		if r.domains[d] >= r.o.Delivery.PerDomainConcurrency {
			return false
		}
	}
	return true
}

// release frees the slots of id and reports whether an operator asked
// for a retry while it was in flight.
func (r *Runner) release(id string, domains []string) (retry bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	retry = r.retry[id]
	delete(r.retry, id)
	delete(r.inflight, id)
	r.slots -= len(domains)
	for _, d := range domains {
		if r.domains[d]--; r.domains[d] <= 0 {
			delete(r.domains, d)
		}
	}
	return retry
}

// domainOf returns the lower-cased domain of addr.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// pendingDomains lists the distinct domains with pending recipients.
func pendingDomains(env *spool.Envelope) []string {
	var ds []string
	seen := map[string]bool{}
	for _, rc := range env.Recipients {
		if rc.State.Final() {
			continue
		}
		d := domainOf(rc.Addr)
		if !seen[d] {
			seen[d] = true
			ds = append(ds, d)
		}
	}
	sort.Strings(ds)
	return ds
}

// deliver runs one attempt for every pending domain of env concurrently
// and records the outcome.
func (r *Runner) deliver(ctx context.Context, env *spool.Envelope) {
	log := r.log.With("queue_id", env.ID)
	data, err := r.sp.Data(env.ID)
	if err != nil {
		// The message stays due on disk: a later pass tries it again.
		log.Error("queue: reading message failed", "err", err)
		return
	}
	// Options.Lease bounds the attempt; the last tenth is left for
	// recording its outcome.
	dctx, cancel := context.WithTimeout(ctx, r.o.Lease-r.o.Lease/10)
	defer cancel()

	jobs := map[string]*delivery.Job{}
	var order []string
	for _, rc := range env.Recipients {
		if rc.State.Final() {
			continue
		}
		d := domainOf(rc.Addr)
		j := jobs[d]
		if j == nil {
			j = &delivery.Job{QueueID: env.ID, From: env.From, Domain: d, Data: data, Ret: env.DSNRet, EnvID: env.DSNEnvID}
			jobs[d] = j
			order = append(order, d)
		}
		j.Rcpts = append(j.Rcpts, delivery.Rcpt{Addr: rc.Addr, Notify: rc.Notify, ORCPT: rc.ORCPT})
	}
	outcomes := make([]delivery.Outcome, len(order))
	var wg sync.WaitGroup
	for i, d := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = r.o.Deliverer.Deliver(dctx, jobs[d])
		}()
	}
	wg.Wait()
	r.record(env, data, outcomes, ctx.Err() != nil)
}

// record applies the outcomes of one attempt to env and persists it:
// NDRs first, then the envelope update (or the delete when every
// recipient is final). shutdown marks an attempt cut short by shutdown:
// its temporary failures are retried at once at the next start.
func (r *Runner) record(env *spool.Envelope, data []byte, outcomes []delivery.Outcome, shutdown bool) {
	now := r.clock.Now()
	log := r.log.With("queue_id", env.ID)
	idx := map[string]int{}
	for i, rc := range env.Recipients {
		if !rc.State.Final() {
			idx[strings.ToLower(rc.Addr)] = i
		}
	}
	expired := now.Sub(env.ReceivedAt) >= r.o.Delivery.MaxQueueLifetime && !shutdown
	var failed, expiredIdx []int
	var delivered, deferred int
	lastErr := ""
	for _, out := range outcomes {
		tlsLabel := "plaintext"
		switch {
		case out.TLS != "":
			tlsLabel = "tls"
		case out.Host == "":
			tlsLabel = "none"
		}
		r.o.Metrics.IncAttempt(tlsLabel)
		r.o.Metrics.IncTLSOutcome(out.Verification)
		env.History = append(env.History, spool.Attempt{At: now, Host: out.Host, TLS: out.TLS, Verification: out.Verification, TLSNote: out.TLSNote, Result: out.Summary})
		for _, res := range out.Results {
			i, ok := idx[strings.ToLower(res.Addr)]
			if !ok {
				continue
			}
			rc := &env.Recipients[i]
			rc.Code, rc.EnhancedCode, rc.Reply, rc.RemoteMTA, rc.UpdatedAt = res.Code, res.Enhanced, res.Text, res.RemoteMTA, now
			switch res.Status {
			case delivery.Delivered:
				rc.State = spool.Delivered
				delivered++
				r.o.Metrics.ObserveLatency(now.Sub(env.ReceivedAt))
				log.Info("delivered", "rcpt", rc.Addr, "host", out.Host, "tls", tlsinfo.OrNone(out.TLS), "reply", oneline.Fold(res.Text))
			case delivery.Permanent:
				rc.State = spool.Failed
				failed = append(failed, i)
				log.Info("delivery failed", "rcpt", rc.Addr, "host", out.Host, "code", res.Code, "status", res.Enhanced, "reply", oneline.Fold(res.Text))
			default:
				if lastErr == "" {
					lastErr = fmt.Sprintf("%d %s %s", res.Code, res.Enhanced, oneline.Fold(res.Text))
				}
				if expired {
					rc.State = spool.Failed
					expiredIdx = append(expiredIdx, i)
					failed = append(failed, i)
					log.Info("delivery expired", "rcpt", rc.Addr, "age", now.Sub(env.ReceivedAt).String(), "last_error", oneline.Fold(res.Text))
				} else {
					deferred++
					log.Info("delivery deferred", "rcpt", rc.Addr, "host", out.Host, "code", res.Code, "status", res.Enhanced, "reply", oneline.Fold(res.Text))
				}
			}
		}
	}
	if len(env.History) > maxHistory {
		env.History = append([]spool.Attempt(nil), env.History[len(env.History)-maxHistory:]...)
	}
	env.Attempts++
	env.LastError = lastErr
	r.o.Metrics.IncDelivered(delivered)
	r.o.Metrics.IncDeferred(deferred)
	r.o.Metrics.IncBounced(len(failed))

	if len(failed) > 0 {
		if err := r.reportFailures(env, data, failed, expiredIdx, now); err != nil {
			// Without a queued NDR the failure must not be recorded:
			// put the recipients back to pending and try again later.
			log.Error("queue: queuing NDR failed; recipients stay queued", "err", err)
			for _, i := range failed {
				env.Recipients[i].State = spool.Pending
			}
		}
	}
	if !env.Done() {
		r.maybeWarnDelay(env, data, now)
		env.NextAttempt = r.nextAttempt(env, now)
		if shutdown {
			env.NextAttempt = now
		}
	}
	r.persist(env, log)
}

// persist writes env, or deletes it when every recipient is final.
func (r *Runner) persist(env *spool.Envelope, log *slog.Logger) {
	if env.Done() {
		if err := r.sp.Delete(env.ID); err != nil && !errors.Is(err, spool.ErrNotFound) {
			log.Error("queue: delete failed", "err", err)
			return
		}
		log.Info("removed from queue", "attempts", env.Attempts)
		return
	}
	if err := r.sp.Update(env); err != nil {
		log.Error("queue: update failed", "err", err)
		return
	}
	log.Debug("queued for retry", "next_attempt", env.NextAttempt)
}

// finishStale deletes a due message whose recipients are all final.
func (r *Runner) finishStale(env *spool.Envelope) {
	r.mu.Lock()
	busy := r.inflight[env.ID]
	r.mu.Unlock()
	if !busy {
		r.persist(env, r.log.With("queue_id", env.ID))
	}
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

// notifies reports whether a recipient's NOTIFY parameter asks for kind
// ("FAILURE" or "DELAY"). Without NOTIFY, failures are reported and delays
// are too (when delay warnings are on), as RFC 3461 §4.1 permits.
func notifies(rc *spool.Recipient, kind string) bool {
	if len(rc.Notify) == 0 {
		return true
	}
	for _, n := range rc.Notify {
		if strings.EqualFold(n, "NEVER") {
			return false
		}
	}
	for _, n := range rc.Notify {
		if strings.EqualFold(n, kind) {
			return true
		}
	}
	return false
}

// reportFailures queues an NDR for the recipients that just failed, or —
// when env is itself an NDR — suspends the device it was for. It returns
// an error only when an NDR should have been queued and was not.
func (r *Runner) reportFailures(env *spool.Envelope, data []byte, failed, expired []int, now time.Time) error {
	log := r.log.With("queue_id", env.ID)
	if env.Bounce {
		r.ndrUndeliverable(env, failed, now)
		return nil
	}
	if env.From == "" {
		log.Info("no NDR for a message from the null sender")
		return nil
	}
	isExpired := map[int]bool{}
	for _, i := range expired {
		isExpired[i] = true
	}
	var rcpts []dsn.Recipient
	for _, i := range failed {
		rc := &env.Recipients[i]
		if !notifies(rc, "FAILURE") {
			log.Info("no NDR: recipient's NOTIFY excludes failures", "rcpt", rc.Addr)
			continue
		}
		rcpts = append(rcpts, r.dsnRecipient(rc, dsn.Failed, isExpired[i], now))
	}
	if len(rcpts) == 0 {
		return nil
	}
	id, err := r.queueReport(env, data, rcpts, now)
	if err != nil {
		return err
	}
	r.o.Metrics.IncNDR("failure")
	log.Info("NDR queued", "ndr_id", id, "to", env.From, "rcpts", len(rcpts))
	r.emit(event.Event{
		Kind: event.NDR, Time: now, Device: env.Device, ClientIP: env.ClientIP, Sender: env.From,
		Recipient: rcpts[0].Addr, QueueID: env.ID, Count: len(rcpts),
		Reason: fmt.Sprintf("%d recipient(s) undeliverable: %s %s", len(rcpts), rcpts[0].Status, oneline.Fold(rcpts[0].Reply)),
		Detail: map[string]string{"status": string(rcpts[0].Status), "ndr_id": id},
	})
	return nil
}

func (r *Runner) dsnRecipient(rc *spool.Recipient, action dsn.Action, expired bool, now time.Time) dsn.Recipient {
	status := rc.EnhancedCode
	switch {
	case action == dsn.Failed && expired:
		if status.Class() != 4 {
			status = smtpstatus.DeliveryTimeUp
		}
	case status == "":
		status = smtpstatus.PermUndefined
		if action == dsn.Delayed {
			status = smtpstatus.TempUndefined
		}
	}
	code := rc.Code
	if rc.RemoteMTA == "" {
		code = 0 // no server answered: a local diagnostic
	}
	return dsn.Recipient{Addr: rc.Addr, ORCPT: rc.ORCPT, Action: action, Status: status,
		RemoteMTA: rc.RemoteMTA, Code: code, Reply: rc.Reply, LastAttempt: now, Expired: expired}
}

// queueReport builds a DSN for env's sender and spools it from <>.
func (r *Runner) queueReport(env *spool.Envelope, data []byte, rcpts []dsn.Recipient, now time.Time) (string, error) {
	rep := &dsn.Report{
		ReportingMTA: r.o.Hostname, QueueID: env.ID, To: env.From, EnvelopeID: env.DSNEnvID,
		Return: env.DSNRet, ArrivalDate: env.ReceivedAt, Date: now, Recipients: rcpts, Original: data,
	}
	switch {
	case env.ClientName != "":
		rep.ReceivedFrom = env.ClientName
	case env.ClientIP != "":
		rep.ReceivedFrom = "[" + env.ClientIP + "]"
	}
	if rcpts[0].Action == dsn.Delayed {
		rep.Recipients = rcpts
		for i := range rep.Recipients {
			rep.Recipients[i].WillRetryUntil = env.ReceivedAt.Add(r.o.Delivery.MaxQueueLifetime)
		}
	}
	msg, err := dsn.Build(rep)
	if err != nil {
		return "", fmt.Errorf("queue: build report for %s: %w", env.ID, err)
	}
	ndr := &spool.Envelope{
		From:        "",
		Recipients:  []spool.Recipient{{Addr: env.From, State: spool.Pending}},
		Device:      "",
		Bounce:      true,
		BounceFor:   env.Device,
		ClientName:  r.o.Hostname,
		ReceivedAt:  now,
		NextAttempt: now,
	}
	if err := r.sp.Put(context.Background(), ndr, msg); err != nil {
		return "", fmt.Errorf("queue: spool report for %s: %w", env.ID, err)
	}
	return ndr.ID, nil
}

// ndrUndeliverable handles a failed NDR: no NDR for it; suspend the device
// whose sender cannot receive reports, and tell central.
func (r *Runner) ndrUndeliverable(ndr *spool.Envelope, failed []int, now time.Time) {
	rc := ndr.Recipients[failed[0]]
	reason := fmt.Sprintf("NDR to %s could not be delivered: %d %s %s", rc.Addr, rc.Code, rc.EnhancedCode, oneline.Fold(rc.Reply))
	log := r.log.With("queue_id", ndr.ID, "device", ndr.BounceFor)
	if ndr.BounceFor == "" {
		log.Warn("NDR undeliverable; the sender is not a registered device, nothing to suspend", "reason", reason)
	} else {
		if r.o.Suspender != nil {
			if err := r.o.Suspender.Suspend(ndr.BounceFor, reason); err != nil {
				log.Error("queue: suspending device failed", "err", err)
			}
		}
		log.Warn("NDR undeliverable: device suspended", "reason", reason)
	}
	r.emit(event.Event{
		Kind: event.NDRUndeliverable, Time: now, Device: ndr.BounceFor, Sender: rc.Addr, Recipient: rc.Addr,
		QueueID: ndr.ID, Reason: reason, Detail: map[string]string{"status": string(rc.EnhancedCode)},
	})
}

func (r *Runner) emit(e event.Event) {
	if r.o.Events == nil {
		return
	}
	e.ID = event.NewID()
	e.Edge = r.o.EdgeID
	r.o.Events.Emit(e)
}

// maybeWarnDelay sends one delay warning per recipient once a message has
// waited delivery.delay_warning (when set), if its NOTIFY allows.
func (r *Runner) maybeWarnDelay(env *spool.Envelope, data []byte, now time.Time) {
	dw := r.o.Delivery.DelayWarning
	if dw <= 0 || env.Bounce || env.From == "" || now.Sub(env.ReceivedAt) < dw {
		return
	}
	var rcpts []dsn.Recipient
	var which []int
	for i := range env.Recipients {
		rc := &env.Recipients[i]
		if rc.State.Final() || rc.DelayWarned || !notifies(rc, "DELAY") {
			continue
		}
		rcpts = append(rcpts, r.dsnRecipient(rc, dsn.Delayed, false, now))
		which = append(which, i)
	}
	if len(rcpts) == 0 {
		return
	}
	id, err := r.queueReport(env, data, rcpts, now)
	if err != nil {
		r.log.Error("queue: queuing delay warning failed", "queue_id", env.ID, "err", err)
		return
	}
	for _, i := range which {
		env.Recipients[i].DelayWarned = true
	}
	r.o.Metrics.IncNDR("delay")
	r.log.Info("delay warning queued", "queue_id", env.ID, "ndr_id", id, "to", env.From, "rcpts", len(rcpts))
}
