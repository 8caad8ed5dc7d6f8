package queue

import (
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
)

// TestOperatorActionsOnParkedMessages: messages the runner holds in
// memory, parked behind a domain at its connection limit, are changed by
// an operator while they wait: one is held, one is retried (its due
// entry rewritten, so the runner learns a second entry for a message it
// already has parked). When the domain has room again the held message
// is not delivered, and the retried one is delivered exactly once.
func TestOperatorActionsOnParkedMessages(t *testing.T) {
	e := newEnv(t)
	e.cfg.PerDomainConcurrency = 1
	gate := make(chan struct{})
	var once sync.Once
	entered := make(chan struct{})
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: func(addr string) *smtp.SMTPError {
		if addr == "first@example.com" {
			once.Do(func() { close(entered) })
			<-gate
		}
		return nil
	}})
	e.put("first@example.com")
	e.start()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first delivery did not start")
	}
	held := e.put("held@example.com")
	retried := e.put("retried@example.com")
	e.eventually("both parked", func() bool {
		// A wake while a backlog waits is left for the next recheck
		// (Run), which the test clock does not reach by itself.
		signal(e.runner.kick)
		e.runner.mu.Lock()
		defer e.runner.mu.Unlock()
		n := 0
		for _, it := range e.runner.parked["example.com"] {
			if !it.dead {
				n++
			}
		}
		return n == 2
	})
	if err := e.runner.Hold(held.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second) // the retry writes a new due entry
	if err := e.runner.Retry(retried.ID); err != nil {
		t.Fatal(err)
	}
	renv, err := e.sp.Get(retried.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("retry's entry taken in", func() bool {
		e.runner.mu.Lock()
		defer e.runner.mu.Unlock()
		it := e.runner.items[retried.ID]
		return it != nil && it.stamp == spool.DueStamp(renv.NextAttempt)
	})
	close(gate)
	e.eventually("first and retried delivered", func() bool {
		all := e.all()
		return len(all) == 1 && all[0].ID == held.ID
	})
	// A few more rounds: nothing else goes out.
	for range 3 {
		e.clock.Advance(time.Hour)
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]int{}
	for _, m := range mx.Messages() {
		for _, to := range m.To {
			got[to]++
		}
	}
	if got["first@example.com"] != 1 || got["retried@example.com"] != 1 || got["held@example.com"] != 0 || len(got) != 2 {
		t.Errorf("delivered %v, want first and retried once each and the held message never", got)
	}
	if env, err := e.sp.Get(held.ID); err != nil || !env.Held {
		t.Errorf("held message: %+v %v", env, err)
	}
}
