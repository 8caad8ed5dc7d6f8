// Package clock is the time source components take, so that schedules,
// expiry and periodic loops are tested by moving a fake clock instead of
// sleeping.
//
// The convention: a component that only reads the time takes a
// func() time.Time (a Clock's Now method value fits, nil means time.Now);
// a component that also waits (timers, periodic loops) takes a Clock.
package clock

import "time"

// Clock tells the time and arms timers.
type Clock interface {
	Now() time.Time
	// Timer returns a channel that receives once d has passed, and a
	// function that stops the timer (reporting whether it was still
	// armed).
	Timer(d time.Duration) (<-chan time.Time, func() bool)
	// Ticker returns a channel that receives every d, and a function
	// that stops it.
	Ticker(d time.Duration) (<-chan time.Time, func())
}

// Real is the system clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

func (realClock) Ticker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}
