// Package ratelimit implements the edge's hourly message and recipient
// limits as token buckets keyed by device name, or by client for
// unregistered clients (an IPv4 address or an IPv6 prefix; the policy
// chooses the key).
//
// A bucket for a limit of N per hour holds at most N tokens and refills at
// N per hour, so a device may send N messages at once and then N per hour.
// Take reserves tokens up front (at MAIL or RCPT) and Refund returns them
// when the transaction does not end in an accepted message, so concurrent
// sessions of one device can never exceed the limit together. Time comes
// from an injected clock. Hits counts refusals for the event stream.
package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// Limiter holds one family of buckets (for example "messages per hour").
// It is safe for concurrent use.
type Limiter struct {
	clock func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	takes   int // calls since the last prune

	hits atomic.Uint64
}

type bucket struct {
	tokens float64
	last   time.Time
	limit  int
}

// New returns a limiter using clock (nil: time.Now).
func New(clock func() time.Time) *Limiter {
	if clock == nil {
		clock = time.Now
	}
	return &Limiter{clock: clock, buckets: map[string]*bucket{}}
}

// refill brings b up to now for a limit of perHour.
func (b *bucket) refill(now time.Time, perHour int) {
	if b.limit != perHour {
		// The limit changed (new allowlist): keep what was used, not
		// more than the new capacity.
		used := float64(b.limit) - b.tokens
		b.tokens = float64(perHour) - used
		b.limit = perHour
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens += el.Hours() * float64(perHour)
		b.last = now
	}
	if b.tokens > float64(perHour) {
		b.tokens = float64(perHour)
	}
}

// Take reserves n tokens from key's bucket with a limit of perHour. It
// reports false (and counts a hit) when fewer than n are left; nothing is
// taken then. perHour <= 0 means unlimited.
func (l *Limiter) Take(key string, n, perHour int) bool {
	if perHour <= 0 || n <= 0 {
		return true
	}
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybePruneLocked(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: float64(perHour), last: now, limit: perHour}
		l.buckets[key] = b
	}
	b.refill(now, perHour)
	if b.tokens < float64(n) {
		l.hits.Add(1)
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Refund gives back n tokens taken from key's bucket.
func (l *Limiter) Refund(key string, n, perHour int) {
	if perHour <= 0 || n <= 0 {
		return
	}
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		return
	}
	b.refill(now, perHour)
	b.tokens += float64(n)
	if b.tokens > float64(perHour) {
		b.tokens = float64(perHour)
	}
}

// Remaining reports the whole tokens left in key's bucket (perHour if the
// key has none in use).
func (l *Limiter) Remaining(key string, perHour int) int {
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		return perHour
	}
	c := *b
	c.refill(now, perHour)
	return int(c.tokens)
}

// Hits is the number of refused Take calls since start.
func (l *Limiter) Hits() uint64 { return l.hits.Load() }

// Len is the number of buckets held (for tests and metrics).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// maybePruneLocked drops buckets that have refilled completely (they hold
// no information) every 1024 takes, so memory stays bounded by the
// clients active in the last hour.
func (l *Limiter) maybePruneLocked(now time.Time) {
	l.takes++
	if l.takes < 1024 {
		return
	}
	l.takes = 0
	for k, b := range l.buckets {
		c := *b
		c.refill(now, b.limit)
		if c.tokens >= float64(c.limit) {
			delete(l.buckets, k)
		}
	}
}
