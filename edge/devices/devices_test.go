package devices

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
)

// memStore is an in-memory Store; the Badger-backed one is exercised in
// the smtpd and e2e tests.
type memStore struct {
	mu   sync.Mutex
	m    map[string][]byte
	fail error
}

func newMem() *memStore { return &memStore{m: map[string][]byte{}} }

func (s *memStore) Set(k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *memStore) Delete(k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

func (s *memStore) Iterate(fn func(string, []byte) error) error {
	s.mu.Lock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, s.m[k]); err != nil {
			return err
		}
	}
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestStaticAndCentralMerge(t *testing.T) {
	c := &clock{t0}
	r, err := New([]config.Device{
		{Name: "Scanner-1.Example.EDU.", Senders: []string{"scan@example.edu"}},
		{Name: "copier.example.edu", Status: "suspended"},
		{Name: "both.example.edu", MessagesPerHour: 5},
	}, newMem(), c.now)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := r.Lookup("scanner-1.example.edu")
	if !ok || !d.Active() || d.Source != SourceConfig || d.Senders[0] != "scan@example.edu" {
		t.Fatalf("static lookup: %+v %v", d, ok)
	}
	if d, _ := r.Lookup("copier.example.edu"); d.Active() {
		t.Fatal("static suspended device is active")
	}
	if r.Version() != 0 || r.Stale() {
		t.Fatal("no central allowlist yet: version 0, not stale")
	}
	r.SetCentral(3, t0, []Device{{Name: "both.example.edu", MessagesPerHour: 9}, {Name: "new.example.edu"}}, t0.Add(time.Hour))
	if d, _ := r.Lookup("both.example.edu"); d.Source != SourceCentral || d.MessagesPerHour != 9 {
		t.Fatalf("central must win for the same name: %+v", d)
	}
	if _, ok := r.Lookup("new.example.edu"); !ok {
		t.Fatal("central device missing")
	}
	if _, ok := r.Lookup("scanner-1.example.edu"); !ok {
		t.Fatal("static device lost after central update")
	}
	if r.Version() != 3 {
		t.Fatalf("version %d", r.Version())
	}
	// Older versions are ignored.
	r.SetCentral(2, t0, nil, time.Time{})
	if _, ok := r.Lookup("new.example.edu"); !ok || r.Version() != 3 {
		t.Fatal("older central version was applied")
	}
	if len(r.Devices()) != 4 {
		t.Fatalf("devices: %+v", r.Devices())
	}
}

func TestStale(t *testing.T) {
	c := &clock{t0}
	r, _ := New(nil, nil, c.now)
	r.SetCentral(1, t0, nil, t0.Add(time.Hour))
	if r.Stale() {
		t.Fatal("fresh allowlist reported stale")
	}
	c.t = t0.Add(time.Hour + time.Second)
	if !r.Stale() {
		t.Fatal("expired allowlist not stale")
	}
	r.SetCentral(2, c.t, nil, c.t.Add(time.Hour))
	if r.Stale() {
		t.Fatal("new allowlist still stale")
	}
}

func TestSuspendPersistsAndCentralReinstates(t *testing.T) {
	c := &clock{t0}
	kv := newMem()
	r, _ := New([]config.Device{{Name: "s.example.edu"}}, kv, c.now)
	r.SetCentral(1, t0.Add(-time.Hour), []Device{{Name: "c.example.edu"}}, time.Time{})
	c.t = t0.Add(time.Minute)
	for _, n := range []string{"s.example.edu", "c.example.edu"} {
		if err := r.Suspend(n, "NDR undeliverable"); err != nil {
			t.Fatal(err)
		}
		d, _ := r.Lookup(n)
		if d.Active() || d.Reason != "NDR undeliverable" {
			t.Fatalf("%s not suspended at once: %+v", n, d)
		}
	}
	// Restart: the suspensions come back from the store.
	r2, err := New([]config.Device{{Name: "s.example.edu"}}, kv, c.now)
	if err != nil {
		t.Fatal(err)
	}
	r2.SetCentral(1, t0.Add(-time.Hour), []Device{{Name: "c.example.edu"}}, time.Time{})
	for _, n := range []string{"s.example.edu", "c.example.edu"} {
		if d, _ := r2.Lookup(n); d.Active() {
			t.Fatalf("%s active after restart", n)
		}
	}
	// Later snapshots listing it active (issued after the suspension, or
	// republished) do not lift it; nor does a reinstatement from before
	// the suspension.
	r2.SetCentral(2, t0.Add(2*time.Minute), []Device{{Name: "c.example.edu"}}, time.Time{})
	r2.SetCentral(3, t0.Add(3*time.Minute), []Device{{Name: "c.example.edu", Reinstated: 1}}, time.Time{})
	r2.SetCentral(3, t0.Add(4*time.Minute), []Device{{Name: "c.example.edu", Reinstated: 1}}, time.Time{})
	if d, _ := r2.Lookup("c.example.edu"); d.Active() {
		t.Fatal("a snapshot listing the device active lifted the local suspension")
	}
	// Central listing it suspended keeps it suspended.
	r2.SetCentral(4, t0.Add(5*time.Minute), []Device{{Name: "c.example.edu", Status: StatusSuspended, Reason: "central", Reinstated: 1}}, time.Time{})
	if d, _ := r2.Lookup("c.example.edu"); d.Active() {
		t.Fatal("suspended in central but active")
	}
	// Staff reinstated it: the epoch moves past the suspension's.
	r2.SetCentral(5, t0.Add(6*time.Minute), []Device{{Name: "c.example.edu", Reinstated: 5}}, time.Time{})
	if d, _ := r2.Lookup("c.example.edu"); !d.Active() {
		t.Fatalf("reinstated device still suspended: %+v", d)
	}
	if _, ok := kv.m["c.example.edu"]; ok {
		t.Fatal("cleared suspension still persisted")
	}
	if _, ok := kv.m["s.example.edu"]; !ok {
		t.Fatal("static device's suspension lost")
	}
	// Suspended again later: the next reinstatement must be newer still.
	if err := r2.Suspend("c.example.edu", "again"); err != nil {
		t.Fatal(err)
	}
	r2.SetCentral(6, t0.Add(7*time.Minute), []Device{{Name: "c.example.edu", Reinstated: 5}}, time.Time{})
	if d, _ := r2.Lookup("c.example.edu"); d.Active() {
		t.Fatal("an earlier reinstatement lifted a later suspension")
	}
}

// TestLegacySuspensionNeedsReinstatement: a suspension persisted without
// an epoch (by an earlier version) is not lifted by the first snapshot,
// whatever epoch it carries, only by a reinstatement after it.
func TestLegacySuspensionNeedsReinstatement(t *testing.T) {
	kv := newMem()
	kv.m["c.example.edu"] = []byte(`{"reason":"NDR undeliverable","at":"2025-03-01T11:00:00Z"}`)
	r, err := New(nil, kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.SetCentral(7, t0, []Device{{Name: "c.example.edu", Reinstated: 4}}, time.Time{})
	if d, _ := r.Lookup("c.example.edu"); d.Active() {
		t.Fatal("legacy suspension lifted by an old reinstatement")
	}
	// The epoch is persisted: a restart keeps needing a newer one.
	r, _ = New(nil, kv, nil)
	r.SetCentral(8, t0, []Device{{Name: "c.example.edu", Reinstated: 7}}, time.Time{})
	if d, _ := r.Lookup("c.example.edu"); d.Active() {
		t.Fatal("legacy suspension lifted by a reinstatement at the version that noted it")
	}
	r.SetCentral(9, t0, []Device{{Name: "c.example.edu", Reinstated: 9}}, time.Time{})
	if d, _ := r.Lookup("c.example.edu"); !d.Active() {
		t.Fatalf("legacy suspension survives a reinstatement: %+v", d)
	}
}

func TestSuspendStoreError(t *testing.T) {
	kv := newMem()
	kv.fail = errors.New("disk full")
	r, _ := New([]config.Device{{Name: "s.example.edu"}}, kv, nil)
	if err := r.Suspend("s.example.edu", "x"); err == nil {
		t.Fatal("Suspend must report a store failure")
	}
	if err := r.Suspend("", "x"); err == nil {
		t.Fatal("empty name accepted")
	}
}

// TestConcurrentLookup runs readers against a writer under -race: readers
// see either the old or the new snapshot, never a mix.
func TestConcurrentLookup(t *testing.T) {
	r, _ := New(nil, nil, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, okA := r.Lookup("a.example.edu")
				_, okB := r.Lookup("b.example.edu")
				_ = a
				_ = okA
				_ = okB
			}
		}()
	}
	for v := int64(1); v < 200; v++ {
		devs := []Device{{Name: "a.example.edu", MessagesPerHour: int(v)}, {Name: "b.example.edu"}}
		r.SetCentral(v, t0, devs, time.Time{})
	}
	close(stop)
	wg.Wait()
	if d, _ := r.Lookup("a.example.edu"); d.MessagesPerHour != 199 {
		t.Fatalf("last update lost: %+v", d)
	}
}
