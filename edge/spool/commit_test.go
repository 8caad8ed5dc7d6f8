package spool

import (
	"context"
	"runtime"
	"testing"
	"time"
	"weak"
)

// A Put answered while the rest of its batch is still being committed (the
// batch is split: bodies over a value-log file, or a value-log reclaim
// queued behind it) no longer holds its message in memory: the intake's
// budget counts a message only until Put returns.
func TestAnsweredPutReleasesData(t *testing.T) {
	s, _ := newTestSpool(t)

	// Hold the committer so that the Put and the check queue up behind
	// it and are drained as one batch.
	running, release := make(chan struct{}), make(chan struct{})
	go s.submit(&request{exclusive: func() error {
		close(running)
		<-release
		return nil
	}})
	<-running

	var wp weak.Pointer[byte]
	putDone := make(chan error, 1)
	go func() {
		putDone <- s.Put(context.Background(), testEnv(t0), newBody(&wp))
	}()
	waitQueued(t, s, 1)

	collected := make(chan bool, 1)
	go s.submit(&request{exclusive: func() error {
		// Runs inside the batch, after the Put's part was committed.
		select {
		case err := <-putDone:
			if err != nil {
				t.Errorf("Put: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Put not answered before the rest of its batch")
		}
		runtime.GC()
		runtime.GC()
		collected <- wp.Value() == nil
		return nil
	}})
	waitQueued(t, s, 2)
	close(release)
	if !<-collected {
		t.Error("the message of an answered Put is still reachable while its batch is committed")
	}
}

// newBody returns a message body that only its caller's callee will hold.
//
//go:noinline
func newBody(wp *weak.Pointer[byte]) []byte {
	b := body(4<<20, 7)
	*wp = weak.Make(&b[0])
	return b
}

func waitQueued(t *testing.T, s *Spool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.reqs) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", len(s.reqs), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLingerTarget(t *testing.T) {
	for _, c := range []struct {
		avg  float64
		want int
	}{
		{1, 0},    // a lone writer never waits
		{1.9, 0},  // nor do two that rarely meet
		{2, 3},    // several writers at once: one more than usual
		{4.25, 6}, // the average rounded up, plus one
		{500, maxBatchOps},
	} {
		if got := lingerTarget(c.avg); got != c.want {
			t.Errorf("lingerTarget(%v) = %d, want %d", c.avg, got, c.want)
		}
	}
}

// linger takes requests until the batch reaches its target and then
// everything else already waiting, and returns what it has when the
// channel is closed.
func TestLingerTakesWaitingRequests(t *testing.T) {
	s := &Spool{reqs: make(chan *request, 8)}
	for range 5 {
		s.reqs <- &request{}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := s.linger([]*request{{}}, 3, timer)
	if len(batch) != 6 || len(s.reqs) != 0 {
		t.Fatalf("batch of %d with %d left waiting, want 6 and 0", len(batch), len(s.reqs))
	}
	s.reqs <- &request{}
	close(s.reqs)
	if batch = s.linger(batch[:1], 10, timer); len(batch) != 2 {
		t.Fatalf("batch of %d after close, want 2", len(batch))
	}
}
