package spool

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// TestDueFeed: a feed visits each due entry once, with the pending
// domains its index value lists, and again only when it is rewritten or
// when fn stopped at it; it sees entries written before its cursor, and
// reports the next later entry.
func TestDueFeed(t *testing.T) {
	s, _ := newTestSpool(t)
	f := s.DueFeed()
	defer f.Close()
	name := map[string]string{}
	put := func(n string, at time.Time, rcpts ...string) string {
		env := testEnv(at, rcpts...)
		env.ClientName = n
		id := mustPut(t, s, env, []byte("x"))
		name[id] = n
		return id
	}
	type seen struct {
		name    string
		stamp   uint64
		domains []string
	}
	scan := func(now time.Time, stopAfter int) (got []seen, next time.Time, ok bool) {
		t.Helper()
		next, ok, err := f.Scan(now, func(e DueEntry) bool {
			got = append(got, seen{name[e.ID], e.Stamp, e.Domains})
			return stopAfter <= 0 || len(got) < stopAfter
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, next, ok
	}
	names := func(got []seen) []string {
		var out []string
		for _, g := range got {
			out = append(out, g.name)
		}
		return out
	}
	a := put("a", t0, "x@Example.ORG", "y@example.org", "z@other.example")
	put("b", t0.Add(time.Minute))
	put("c", t0.Add(time.Hour))

	got, next, ok := scan(t0.Add(time.Minute), 0)
	if !slices.Equal(names(got), []string{"a", "b"}) || !ok || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("first scan: %v, next %v %v", names(got), next, ok)
	}
	if want := []string{"example.org", "other.example"}; !slices.Equal(got[0].domains, want) {
		t.Errorf("domains of a: %q, want %q", got[0].domains, want)
	}
	if got[0].stamp != DueStamp(t0) {
		t.Errorf("stamp of a: %d, want %d", got[0].stamp, DueStamp(t0))
	}
	// Nothing written: nothing visited, the later entry still reported.
	if got, next, ok := scan(t0.Add(time.Minute), 0); len(got) != 0 || !ok || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("second scan: %v, next %v %v", names(got), next, ok)
	}
	// An entry written before the cursor is visited (maybe with ones
	// after it again); one after the cursor too.
	put("early", t0.Add(-time.Hour))
	if got, _, _ := scan(t0.Add(time.Minute), 0); !slices.Contains(names(got), "early") {
		t.Errorf("after an earlier put: %v", names(got))
	}
	// A rewrite is visited with its new stamp and domains.
	env, err := s.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	env.Recipients[2].State = Delivered
	env.NextAttempt = t0.Add(30 * time.Second)
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	got, _, _ = scan(t0.Add(time.Minute), 0)
	i := slices.IndexFunc(got, func(g seen) bool { return g.name == "a" })
	if i < 0 || got[i].stamp != DueStamp(env.NextAttempt) || !slices.Equal(got[i].domains, []string{"example.org"}) {
		t.Fatalf("after an update: %+v", got)
	}
	// Time passes: c falls due.
	if got, _, ok := scan(t0.Add(2*time.Hour), 0); !slices.Equal(names(got), []string{"c"}) || ok {
		t.Fatalf("later: %v %v", names(got), ok)
	}
	// fn stops: the entry it stopped at is visited again.
	put("d", t0.Add(90*time.Minute))
	put("e", t0.Add(100*time.Minute))
	if got, _, _ := scan(t0.Add(2*time.Hour), 1); !slices.Equal(names(got), []string{"d"}) {
		t.Fatalf("stop after one: %v", names(got))
	}
	if got, _, _ := scan(t0.Add(2*time.Hour), 0); !slices.Equal(names(got), []string{"d", "e"}) {
		t.Fatalf("after a stop: %v", names(got))
	}
	// A message without pending recipients lists no domain; a held one
	// has no entry.
	done := testEnv(t0.Add(110*time.Minute), "x@example.org")
	done.Recipients[0].State = Failed
	name[mustPut(t, s, done, []byte("x"))] = "done"
	held := testEnv(t0.Add(111 * time.Minute))
	held.Held = true
	name[mustPut(t, s, held, []byte("x"))] = "held"
	got, _, _ = scan(t0.Add(2*time.Hour), 0)
	if len(got) != 1 || got[0].name != "done" || got[0].domains == nil || len(got[0].domains) != 0 {
		t.Fatalf("a message without pending recipients, a held one: %+v", got)
	}
	// An entry without a value (an older version's) lists no domains.
	old := testEnv(t0.Add(115 * time.Minute))
	old.ID = s.NewID()
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(dueKey(old.NextAttempt, old.ID), nil)
	}); err != nil {
		t.Fatal(err)
	}
	s.dueWriting(dueNanos(old.NextAttempt)) // as the committer does
	var oldSeen *DueEntry
	if _, _, err := f.Scan(t0.Add(2*time.Hour), func(e DueEntry) bool {
		if e.ID == old.ID {
			oldSeen = &e
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if oldSeen == nil || oldSeen.Domains != nil {
		t.Errorf("entry without a value: %+v", oldSeen)
	}
	// A closed feed refuses to scan.
	f.Close()
	if _, _, err := f.Scan(t0, func(DueEntry) bool { return true }); err == nil {
		t.Error("closed feed scanned")
	}
}

// TestDueValue: the domains listed round-trip, including an empty one
// (an address without a domain).
func TestDueValue(t *testing.T) {
	for _, rcpts := range [][]string{{"a@x.org"}, {"nodomain", "b@Y.org", "c@x.org"}, {"a@x.org", "b@x.org"}} {
		env := testEnv(t0, rcpts...)
		want := env.PendingDomains()
		if got := parseDueValue(dueValue(env)); !slices.Equal(got, want) || got == nil {
			t.Errorf("%q: parsed %q, want %q", rcpts, got, want)
		}
	}
	for _, v := range [][]byte{nil, {}, {dueValueV1, 'x'}, {2, 'x', 0}} {
		if got := parseDueValue(v); got != nil {
			t.Errorf("parseDueValue(%q) = %q, want nil", v, got)
		}
	}
}

// TestDueFeedConcurrent: while writers put messages with times before
// and after the feed's cursor, a feed scanning all the time visits every
// one of them.
func TestDueFeedConcurrent(t *testing.T) {
	s, _ := newTestSpool(t)
	f := s.DueFeed()
	defer f.Close()
	const writers, each = 4, 50
	var (
		mu   sync.Mutex
		want = map[string]bool{}
		got  = map[string]bool{}
	)
	visit := func(e DueEntry) bool {
		mu.Lock()
		got[e.ID] = true
		mu.Unlock()
		return true
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Alternately earlier and later than what the feed saw.
				at := t0.Add(time.Duration((i%2)*2-1) * time.Duration(w*each+i) * time.Second)
				env := testEnv(at)
				if err := s.Put(context.Background(), env, []byte("x")); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[env.ID] = true
				mu.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := f.Scan(t0.Add(time.Hour), visit); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-scanned
	// One more scan after the last Put returned.
	if _, _, err := f.Scan(t0.Add(time.Hour), visit); err != nil {
		t.Fatal(err)
	}
	for id := range want {
		if !got[id] {
			t.Errorf("%s put but never visited", id)
		}
	}
	if len(want) != writers*each {
		t.Fatalf("%d puts, want %d", len(want), writers*each)
	}
}
