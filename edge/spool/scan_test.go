package spool

import (
	"slices"
	"testing"
	"time"
)

// TestScanDue: the scan yields due messages in order, reads an envelope
// only when asked, reports the next later message, and stops when told.
// Its starting point (the due floor) moves up past delivered messages but
// never past a message written later with an earlier time.
func TestScanDue(t *testing.T) {
	s, _ := newTestSpool(t)
	name := map[string]string{}
	put := func(n string, at time.Time) string {
		env := testEnv(at)
		env.ClientName = n
		id := mustPut(t, s, env, []byte("x"))
		name[id] = n
		return id
	}
	scan := func(now time.Time, stopAfter int) (got []string, next time.Time, ok bool) {
		t.Helper()
		next, ok, err := s.ScanDue(now, func(id string, load func() (*Envelope, error)) bool {
			env, err := load()
			if err != nil {
				t.Fatalf("load %s: %v", id, err)
			}
			if env.ID != id || name[id] != env.ClientName {
				t.Fatalf("load %s gave %s (%s)", id, env.ID, env.ClientName)
			}
			got = append(got, env.ClientName)
			return stopAfter <= 0 || len(got) < stopAfter
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, next, ok
	}
	a := put("a", t0)
	put("b", t0.Add(time.Minute))
	put("c", t0.Add(time.Hour))

	cases := []struct {
		now       time.Time
		stopAfter int
		want      []string
		next      time.Time // zero: ok is false
	}{
		{t0.Add(-time.Second), 0, nil, t0},
		{t0, 0, []string{"a"}, t0.Add(time.Minute)},
		{t0.Add(time.Minute), 0, []string{"a", "b"}, t0.Add(time.Hour)},
		{t0.Add(time.Minute), 1, []string{"a"}, time.Time{}},
		{t0.Add(2 * time.Hour), 0, []string{"a", "b", "c"}, time.Time{}},
	}
	for _, c := range cases {
		got, next, ok := scan(c.now, c.stopAfter)
		if !slices.Equal(got, c.want) || ok != !c.next.IsZero() || (ok && !next.Equal(c.next)) {
			t.Errorf("ScanDue(%v, stop after %d) = %v, next %v %v; want %v, next %v",
				c.now.Sub(t0), c.stopAfter, got, next.Sub(t0), ok, c.want, c.next.Sub(t0))
		}
	}

	// Deliver a: the floor moves up to b.
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := scan(t0.Add(2*time.Hour), 0); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("after delete: %v", got)
	}
	// New mail with a time before the floor (an NDR, a retry made due
	// now by an operator, a clock that went back) is still found.
	put("early", t0.Add(-time.Hour))
	if got, _, _ := scan(t0.Add(2*time.Hour), 0); !slices.Equal(got, []string{"early", "b", "c"}) {
		t.Errorf("after an earlier put: %v", got)
	}
	// So is an update that moves a message before the floor.
	scan(t0.Add(2*time.Hour), 0)
	for id, n := range name {
		if n == "c" {
			env, err := s.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			env.NextAttempt = t0.Add(-2 * time.Hour)
			if err := s.Update(env); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, _, _ := scan(t0.Add(2*time.Hour), 0); !slices.Equal(got, []string{"c", "early", "b"}) {
		t.Errorf("after an update to an earlier time: %v", got)
	}
	// An empty index, then a put.
	s2, _ := newTestSpool(t)
	if _, ok, err := s2.ScanDue(t0, func(string, func() (*Envelope, error)) bool { return true }); err != nil || ok {
		t.Fatalf("empty spool: ok %v err %v", ok, err)
	}
	env := testEnv(time.Time{})
	mustPut(t, s2, env, []byte("x"))
	n := 0
	if _, _, err := s2.ScanDue(t0, func(string, func() (*Envelope, error)) bool { n++; return true }); err != nil || n != 1 {
		t.Fatalf("after put into an empty spool: %d seen, err %v", n, err)
	}
}

// TestScanDueConcurrentFloor: scans running all the time (raising the
// floor) never make a message that was put with an earlier time
// invisible to the scans after its Put returned.
func TestScanDueConcurrentFloor(t *testing.T) {
	s, _ := newTestSpool(t)
	for i := range 5 {
		mustPut(t, s, testEnv(t0.Add(time.Duration(i)*time.Minute)), []byte("x"))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	all := func(string, func() (*Envelope, error)) bool { return true }
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := s.ScanDue(t0.Add(time.Hour), all); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 100 {
		id := mustPut(t, s, testEnv(t0.Add(-time.Duration(i+1)*time.Second)), []byte("x"))
		found := false
		if _, _, err := s.ScanDue(t0.Add(time.Hour), func(got string, _ func() (*Envelope, error)) bool {
			found = found || got == id
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if !found {
			t.Fatalf("put %d (%s) not seen by the next scan", i, id)
		}
		if i%10 == 0 {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	<-done
}
