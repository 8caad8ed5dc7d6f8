package auth

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

func TestThrottleBackoffThenLock(t *testing.T) {
	clk := testkit.NewClock()
	th := NewThrottle(ThrottleConfig{FreeAttempts: 3, Backoff: time.Second, LockAfter: 6, LockFor: 10 * time.Minute}, clk.Now)
	for i := range 3 {
		if _, ok := th.Begin("ip:1", "user:alice"); !ok {
			t.Fatalf("free attempt %d refused", i+1)
		}
	}
	// Beyond the free attempts: 1s, then 2s, then 4s between attempts.
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		retry, ok := th.Begin("ip:1", "user:alice")
		if ok || retry != d {
			t.Fatalf("attempt right away: ok=%v retry=%v, want refused with %v", ok, retry, d)
		}
		clk.Advance(d)
		if _, ok := th.Begin("ip:1", "user:alice"); !ok {
			t.Fatalf("attempt after %v refused", d)
		}
	}
	// Six attempts: locked for LockFor, also from another address.
	clk.Advance(3 * time.Minute)
	if retry, ok := th.Begin("ip:2", "user:alice"); ok || retry != 7*time.Minute {
		t.Fatalf("locked user: ok=%v retry=%v", ok, retry)
	}
	if _, ok := th.Begin("ip:2", "user:bob"); !ok {
		t.Fatal("another user from another address refused")
	}
	clk.Advance(7 * time.Minute)
	if _, ok := th.Begin("ip:1", "user:alice"); !ok {
		t.Fatal("lock did not end")
	}
	th.Reset("ip:1", "user:alice")
	for range 3 {
		if _, ok := th.Begin("ip:1", "user:alice"); !ok {
			t.Fatal("reset did not forget")
		}
	}
}

// Parallel attempts are counted when they start, so a burst of them gets
// no more than the free attempts through.
func TestThrottleCountsParallelAttempts(t *testing.T) {
	th := NewThrottle(ThrottleConfig{FreeAttempts: 5, Backoff: time.Minute, LockAfter: 10, LockFor: time.Hour}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	passed := 0
	for range 200 {
		wg.Go(func() {
			if _, ok := th.Begin("user:alice"); ok {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if passed != 5 {
		t.Fatalf("%d parallel attempts passed, want 5", passed)
	}
}

func TestThrottleBoundedKeys(t *testing.T) {
	clk := testkit.NewClock()
	th := NewThrottle(ThrottleConfig{FreeAttempts: 1, Backoff: time.Second, LockAfter: 2, LockFor: time.Minute, MaxKeys: 3}, clk.Now)
	for _, k := range []string{"a", "b", "c"} {
		th.Begin(k)
	}
	if _, ok := th.Begin("d"); ok {
		t.Fatal("a fourth key was remembered beyond MaxKeys")
	}
	if _, ok := th.Begin("a"); ok {
		t.Fatal("known key a allowed without its backoff")
	}
	clk.Advance(time.Minute)
	if _, ok := th.Begin("d"); !ok {
		t.Fatal("expired keys were not dropped")
	}
}

func TestRateLimit(t *testing.T) {
	clk := testkit.NewClock()
	l := NewRateLimit(3, time.Hour, clk.Now)
	for i := range 3 {
		if _, ok := l.Allow("x"); !ok {
			t.Fatalf("event %d refused", i+1)
		}
	}
	retry, ok := l.Allow("x")
	if ok || retry != 20*time.Minute {
		t.Fatalf("fourth: ok=%v retry=%v", ok, retry)
	}
	if _, ok := l.Allow("y"); !ok {
		t.Fatal("other key refused")
	}
	clk.Advance(20 * time.Minute)
	if _, ok := l.Allow("x"); !ok {
		t.Fatal("refill did not happen")
	}
}

func TestHashesBound(t *testing.T) {
	h := NewHashes(2)
	ctx := context.Background()
	for i := range 2 {
		if !h.Acquire(ctx, 0) {
			t.Fatalf("free slot %d refused", i+1)
		}
	}
	if h.Acquire(ctx, 10*time.Millisecond) {
		t.Fatal("third hash allowed")
	}
	h.Release()
	if !h.Acquire(ctx, 0) {
		t.Fatal("released slot refused")
	}
}

func TestClientIP(t *testing.T) {
	p, _ := NewProxy("", []string{"10.0.0.1", "10.1.0.0/16"})
	cases := []struct{ remote, xff, want string }{
		{"192.0.2.7:5000", "", "192.0.2.7"},
		{"192.0.2.7:5000", "198.51.100.1", "192.0.2.7"}, // untrusted peer: header ignored
		{"10.0.0.1:5000", "198.51.100.1", "198.51.100.1"},
		{"10.0.0.1:5000", "6.6.6.6, 198.51.100.1, 10.1.2.3", "198.51.100.1"}, // forged left part ignored
		{"10.0.0.1:5000", "junk", "10.0.0.1"},
		{"[::ffff:192.0.2.8]:1", "", "192.0.2.8"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := p.ClientIP(r).String(); got != c.want {
			t.Errorf("%s via %q: %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
	var none *Proxy
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8:1:2:3:4:5:6]:9"
	if k := ClientKey(none.ClientIP(r)); k != "ip:2001:db8:1:2::/64" {
		t.Errorf("IPv6 key %s", k)
	}
}
