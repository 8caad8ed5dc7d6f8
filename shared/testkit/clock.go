package testkit

import (
	"sync"
	"time"
)

// Clock is a clock.Clock the test moves by hand: Now stands still, and
// timers and tickers fire only when Set or Advance reach them.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	every   time.Duration // > 0 for a ticker
	ch      chan time.Time
	stopped bool
}

// NewClock returns a Clock at 2026-03-02 09:00 UTC.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Timer arms a one-shot timer; d <= 0 fires at once.
func (c *Clock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		t.stopped = true
	} else {
		c.timers = append(c.timers, t)
	}
	return t.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Ticker arms a ticker every d (d must be positive). Like time.Ticker, it
// drops ticks a slow receiver has not taken.
func (c *Clock) Ticker(d time.Duration) (<-chan time.Time, func()) {
	if d <= 0 {
		panic("testkit: non-positive Ticker interval")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), every: d, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		t.stopped = true
	}
}

// Set moves the clock to t (never backwards) and fires what is due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	keep := c.timers[:0]
	for _, tm := range c.timers {
		switch {
		case tm.stopped:
		case !tm.at.After(c.now):
			select {
			case tm.ch <- c.now:
			default:
			}
			if tm.every > 0 {
				for !tm.at.After(c.now) {
					tm.at = tm.at.Add(tm.every)
				}
				keep = append(keep, tm)
			} else {
				tm.stopped = true
			}
		default:
			keep = append(keep, tm)
		}
	}
	c.timers = keep
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }
