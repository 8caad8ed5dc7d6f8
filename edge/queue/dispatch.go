package queue

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/postern/postern/edge/spool"
)

// Dispatch.
//
// The spool's due index is the truth about what is due; the runner keeps
// in memory what it has read of it, so that one dispatch costs about what
// it starts, not what is queued. The due feed (spool.DueFeed) hands over
// each entry once (again only when it is rewritten), with the message's
// pending domains, so taking in a backlog decodes no envelope. A message
// taken in waits in one of two places:
//   - due, a heap ordered by due time (then id): what may start now;
//   - parked[d], the messages that found domain d without a free slot
//     (at its connection limit, or backed off as a whole). A parked
//     message costs nothing until d has room again; then as many as d
//     has room for go back to due.
//
// So a backlog for one domain at its limit is not walked again when a
// delivery elsewhere ends, and mail for other domains due behind it
// starts as soon as a slot is free. Deletions are not fed: before a
// message starts, its envelope is read (it is needed for the delivery
// anyway) and checked against the entry it was taken in from (held,
// gone, or rewritten: dropped; a rewrite comes through the feed on its
// own).
//
// Nothing is durable here: after a restart the feed reads the whole index
// again, and a message being delivered when the edge stopped is due on
// disk as before.

// item is one due message the runner has taken in.
type item struct {
	id      string
	stamp   uint64   // its due-index entry (spool.DueEntry.Stamp)
	key     uint64   // order in due: stamp, or the end of a read backoff
	domains []string // pending domains; nil until its envelope is read
	pos     int      // index in due; -1 when not there
	dead    bool     // superseded or dropped: skipped where still listed
}

// itemHeap orders items by key, then id.
type itemHeap []*item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].id < h[j].id
}
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *itemHeap) Push(x any) {
	it := x.(*item)
	it.pos = len(*h)
	*h = append(*h, it)
}
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.pos = -1
	return it
}

// learnLocked takes in entry e of the due feed. r.mu must be held.
func (r *Runner) learnLocked(e spool.DueEntry) {
	if r.inflight[e.ID] {
		if f := r.flight[e.ID]; f != nil && f.stamp == e.Stamp {
			return // the entry being delivered, seen again
		}
		// Written while the message is in flight (its outcome, when the
		// attempt has just been recorded): it starts after the attempt.
		r.later[e.ID] = &item{id: e.ID, stamp: e.Stamp, key: e.Stamp, domains: r.internLocked(e.Domains), pos: -1}
		return
	}
	if old := r.items[e.ID]; old != nil {
		if old.stamp == e.Stamp {
			return // seen again
		}
		r.dropLocked(old)
	}
	r.addLocked(&item{id: e.ID, stamp: e.Stamp, key: e.Stamp, domains: r.internLocked(e.Domains), pos: -1})
}

// maxInterned bounds the single-domain lists internLocked shares.
const maxInterned = 4096

// internLocked returns a shared copy of a one-domain list (most mail has
// one recipient domain), so that a backlog of any size holds each domain
// once; other lists are returned as they are. The lists are never
// modified. r.mu must be held.
func (r *Runner) internLocked(ds []string) []string {
	if len(ds) != 1 {
		return ds
	}
	if shared, ok := r.interned[ds[0]]; ok {
		return shared
	}
	if len(r.interned) < maxInterned {
		r.interned[ds[0]] = ds
	}
	return ds
}

// addLocked makes it a known due message, in due. r.mu must be held.
func (r *Runner) addLocked(it *item) {
	it.dead = false
	r.items[it.id] = it
	heap.Push(&r.due, it)
}

// dropLocked forgets it. r.mu must be held.
func (r *Runner) dropLocked(it *item) {
	it.dead = true
	if r.items[it.id] == it {
		delete(r.items, it.id)
	}
	if it.pos >= 0 {
		heap.Remove(&r.due, it.pos)
	}
}

// unparkLocked moves parked messages back to due, as many per domain as
// the domain has free slots, while any slot is free. r.mu must be held.
func (r *Runner) unparkLocked(now time.Time) {
	if r.slots >= r.o.Delivery.Concurrency {
		return
	}
	for d, q := range r.parked {
		if until, ok := r.domainUntil[d]; ok && now.Before(until) {
			continue
		}
		room := r.limitLocked(d) - r.domains[d]
		for room > 0 && len(q) > 0 {
			it := q[0]
			q[0] = nil
			q = q[1:]
			if it.dead {
				continue
			}
			heap.Push(&r.due, it)
			room--
		}
		if len(q) == 0 {
			delete(r.parked, d)
		} else {
			r.parked[d] = q
		}
	}
}

// blockingLocked reports whether a message with these pending domains
// cannot get its slots now, and names the domain that has none ("" when
// the total would exceed delivery.concurrency). r.mu must be held.
func (r *Runner) blockingLocked(domains []string, now time.Time) (string, bool) {
	if r.slots > 0 && r.slots+len(domains) > r.o.Delivery.Concurrency {
		return "", true
	}
	for _, d := range domains {
		if r.domains[d] >= r.limitLocked(d) {
			return d, true
		}
		if until, ok := r.domainUntil[d]; ok && now.Before(until) {
			return d, true
		}
	}
	return "", false
}

// reserveLocked puts it in flight with a connection slot per pending
// domain. r.mu must be held.
func (r *Runner) reserveLocked(it *item) {
	if r.items[it.id] == it {
		delete(r.items, it.id)
	}
	r.inflight[it.id] = true
	r.flight[it.id] = it
	r.slots += len(it.domains)
	for _, d := range it.domains {
		r.domains[d]++
	}
}

// finish ends id's time in flight and reports whether an operator asked
// for a retry meanwhile. The entry written for it during the attempt, if
// the feed brought one, is taken in; else requeue, when not nil (the
// attempt changed nothing stored, so its old entry is still the one).
func (r *Runner) finish(id string, requeue *item) (retry bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	retry = r.retry[id]
	delete(r.retry, id)
	delete(r.inflight, id)
	delete(r.flight, id)
	next := r.later[id]
	delete(r.later, id)
	if next == nil {
		next = requeue
	}
	if next != nil {
		if old := r.items[id]; old != nil {
			r.dropLocked(old)
		}
		next.key = next.stamp
		r.addLocked(next)
	}
	return retry
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
func (r *Runner) dispatch(ctx context.Context) time.Time {
	if ctx.Err() != nil {
		return time.Time{}
	}
	now := r.clock.Now()
	r.mu.Lock()
	paused := r.pausedUntil
	r.mu.Unlock()
	if now.Before(paused) {
		// The spool refused the last outcome write: start nothing until
		// it is due again (deliveries in flight keep retrying their
		// writes and wake us when one succeeds).
		return paused
	}
	if r.feed == nil {
		r.feed = r.sp.DueFeed()
	}
	capped := false
	next, ok, err := r.feed.Scan(now, func(e spool.DueEntry) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.items) >= maxKnown {
			capped = true
			return false
		}
		r.learnLocked(e)
		return true
	})
	if err != nil {
		r.log.Error("queue: due scan failed", "err", err)
	}
	waiting := capped
	var soonest time.Time // earliest end of a backoff passed over
	// Messages whose envelope must be read before they can be placed go
	// through resolve, then get one more round.
	for round := 0; round < 2; round++ {
		start, resolve, w, s := r.pick(now)
		waiting = waiting || w
		if !s.IsZero() && (soonest.IsZero() || s.Before(soonest)) {
			soonest = s
		}
		for _, it := range start {
			if r.launch(ctx, it, now) {
				waiting = true
			}
		}
		if len(resolve) == 0 {
			break
		}
		waiting = true // placed by the next round, or the next dispatch
		for _, it := range resolve {
			r.resolve(it, now)
		}
	}
	r.mu.Lock()
	waiting = waiting || len(r.parked) > 0
	r.waiting = waiting
	r.mu.Unlock()
	if p := r.domainsPaused(now); !p.IsZero() && (soonest.IsZero() || p.Before(soonest)) {
		soonest = p
	}
	if !soonest.IsZero() && (!ok || soonest.Before(next)) {
		next, ok = soonest, true
	}
	switch {
	case err != nil:
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

// resolveBatch bounds the envelopes one round of dispatch reads to place
// messages (entries written before the index listed domains, after an
// upgrade), so that one dispatch stays short.
const resolveBatch = 4096

// pick takes from due, earliest first, the messages that get their slots
// now and reserves them; it parks those whose domain has no slot. It
// returns them, the messages whose envelope must be read first, whether
// due messages are left waiting, and the earliest end of a read backoff
// it passed over.
func (r *Runner) pick(now time.Time) (start, resolve []*item, waiting bool, soonest time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unparkLocked(now)
	stamp := spool.DueStamp(now)
	var aside []*item // the total of their slots does not fit
	for r.due.Len() > 0 {
		it := r.due[0]
		if it.key > stamp {
			soonest = time.Unix(0, int64(it.key))
			break
		}
		if r.slots >= r.o.Delivery.Concurrency {
			waiting = true
			break
		}
		heap.Pop(&r.due)
		if bo, backing := r.backoff[it.id]; backing && now.Before(bo.until) {
			it.key = max(spool.DueStamp(bo.until), it.key+1)
			heap.Push(&r.due, it)
			continue
		}
		if len(it.domains) == 0 {
			// Unknown (an old index entry), or none pending (a crash
			// after the last update but before the delete).
			resolve = append(resolve, it)
			if len(resolve) >= resolveBatch {
				waiting = true
				break
			}
			continue
		}
		if d, blocked := r.blockingLocked(it.domains, now); blocked {
			waiting = true
			if d == "" {
				aside = append(aside, it)
			} else {
				r.parked[d] = append(r.parked[d], it)
			}
			continue
		}
		r.reserveLocked(it)
		start = append(start, it)
	}
	for _, it := range aside {
		heap.Push(&r.due, it)
	}
	return start, resolve, waiting, soonest
}

// resolve reads the envelope of it, whose domains are unknown or none,
// and puts it back in due with its domains, removes it when nothing is
// pending, or drops it when the entry it came from is no longer current.
func (r *Runner) resolve(it *item, now time.Time) {
	env, err := r.sp.Get(it.id)
	if err != nil && !errors.Is(err, spool.ErrNotFound) {
		r.backOff(it.id, "due message unreadable", err)
		r.mu.Lock()
		if r.items[it.id] == it && it.pos < 0 {
			heap.Push(&r.due, it)
		}
		r.mu.Unlock()
		return
	}
	current := err == nil && !env.Held && spool.DueStamp(env.NextAttempt) == it.stamp && !env.NextAttempt.After(now)
	var domains []string
	if current {
		domains = pendingDomains(env)
	}
	r.mu.Lock()
	mine := r.items[it.id] == it
	switch {
	case !mine:
	case !current || len(domains) == 0:
		r.dropLocked(it)
	default:
		it.domains = domains
		if it.pos < 0 {
			heap.Push(&r.due, it)
		}
	}
	r.mu.Unlock()
	if mine && current && len(domains) == 0 && !r.finishStale(env) {
		// Backed off; look at it again after the backoff.
		r.mu.Lock()
		if r.items[it.id] == nil {
			it.domains = nil
			r.addLocked(it)
		}
		r.mu.Unlock()
	}
}

// launch starts the delivery of it, reserved by pick, after reading what
// is stored: a delivery that just finished, or an operator, may have
// changed it since it was taken in. It reports whether it did not start.
func (r *Runner) launch(ctx context.Context, it *item, now time.Time) (skipped bool) {
	env, gerr := r.sp.Get(it.id)
	var requeue *item
	switch {
	case gerr != nil:
		if !errors.Is(gerr, spool.ErrNotFound) {
			r.backOff(it.id, "reading envelope failed", gerr)
			requeue = it
		}
	case env.Held || spool.DueStamp(env.NextAttempt) != it.stamp || env.NextAttempt.After(now):
		// Held or rewritten since: a rewrite's entry comes through the
		// feed.
	default:
		pending := pendingDomains(env)
		if slices.Equal(pending, it.domains) {
			r.start(ctx, it, env)
			return false
		}
		// The index listed other domains than the envelope (the
		// envelope is what counts): place it again with these.
		r.freeSlots(it.domains)
		it.domains = pending
		r.finish(it.id, it)
		return true
	}
	r.freeSlots(it.domains)
	r.finish(it.id, requeue)
	return true
}

// start runs the delivery of env, reserved as it, in its own goroutine.
func (r *Runner) start(ctx context.Context, it *item, env *spool.Envelope) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var requeue *item
		defer func() {
			if r.finish(env.ID, requeue) && ctx.Err() == nil {
				// An operator asked for a retry during the attempt.
				if err := r.Retry(env.ID); err != nil && !errors.Is(err, spool.ErrNotFound) {
					r.log.Warn("queue: deferred operator retry failed", "queue_id", env.ID, "err", err)
				}
			}
			signal(r.done)
		}()
		if !r.deliver(ctx, env, it.domains) {
			// Nothing was written: the message is due as it was.
			requeue = it
		}
	}()
}
