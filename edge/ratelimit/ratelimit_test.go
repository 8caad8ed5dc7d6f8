package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestTakeRefill(t *testing.T) {
	c := &fakeClock{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := New(c.now)
	for i := 0; i < 200; i++ {
		if !l.Take("dev", 1, 200) {
			t.Fatalf("take %d refused under the limit", i)
		}
	}
	if l.Take("dev", 1, 200) {
		t.Fatal("201st message in the hour accepted")
	}
	if l.Hits() != 1 {
		t.Fatalf("hits = %d", l.Hits())
	}
	if !l.Take("other", 1, 200) {
		t.Fatal("keys are not independent")
	}
	c.t = c.t.Add(18 * time.Second) // 200/h = one per 18 s
	if !l.Take("dev", 1, 200) {
		t.Fatal("no refill after 18s")
	}
	if l.Take("dev", 1, 200) {
		t.Fatal("refilled more than one token")
	}
	c.t = c.t.Add(10 * time.Hour)
	if got := l.Remaining("dev", 200); got != 200 {
		t.Fatalf("bucket over capacity: %d", got)
	}
}

func TestTakeN(t *testing.T) {
	tests := []struct {
		name          string
		perHour, take int
		want          bool
	}{
		{"exact", 5, 5, true},
		{"over", 5, 6, false},
		{"unlimited", 0, 1000, true},
		{"zero", 5, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := New(nil)
			if got := l.Take("k", tc.take, tc.perHour); got != tc.want {
				t.Fatalf("Take(%d of %d) = %v", tc.take, tc.perHour, got)
			}
		})
	}
}

func TestRefund(t *testing.T) {
	c := &fakeClock{time.Unix(0, 0)}
	l := New(c.now)
	if !l.Take("k", 3, 3) {
		t.Fatal("take")
	}
	l.Refund("k", 2, 3)
	if got := l.Remaining("k", 3); got != 2 {
		t.Fatalf("remaining %d, want 2", got)
	}
	l.Refund("k", 10, 3)
	if got := l.Remaining("k", 3); got != 3 {
		t.Fatalf("refund overfilled: %d", got)
	}
	l.Refund("never", 1, 3) // no bucket: no-op
}

func TestLimitChange(t *testing.T) {
	c := &fakeClock{time.Unix(0, 0)}
	l := New(c.now)
	l.Take("k", 8, 10) // 2 left of 10
	if l.Take("k", 1, 5) {
		t.Fatal("limit lowered to 5 with 8 used: must refuse")
	}
	if !l.Take("k", 10, 20) {
		t.Fatal("limit raised to 20 with 8 used: 12 left")
	}
}

func TestConcurrentNeverExceeds(t *testing.T) {
	c := &fakeClock{time.Unix(0, 0)}
	l := New(c.now)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if l.Take("dev", 1, 50) {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ok != 50 {
		t.Fatalf("%d takes granted, want exactly 50", ok)
	}
}

func TestPrune(t *testing.T) {
	c := &fakeClock{time.Unix(0, 0)}
	l := New(c.now)
	for i := 0; i < 1000; i++ {
		l.Take(fmt.Sprint("ip", i), 1, 10)
	}
	c.t = c.t.Add(2 * time.Hour)
	for i := 0; i < 30; i++ {
		l.Take("busy", 1, 10)
	}
	if n := l.Len(); n > 2 {
		t.Fatalf("idle buckets not pruned: %d left", n)
	}
}
