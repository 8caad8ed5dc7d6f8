package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testOptions(dir string) Options {
	return Options{
		Dir:              dir,
		ValueLogFileSize: 1 << 20,
		GCInterval:       -1,
		Log:              slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinFree:          1, // tests on a shared disk must not trip the reserve
	}
}

func openTest(t testing.TB, opts Options) *Spool {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newTestSpool(t testing.TB) (*Spool, string) {
	dir := t.TempDir()
	return openTest(t, testOptions(dir)), dir
}

func testEnv(next time.Time, rcpts ...string) *Envelope {
	env := &Envelope{From: "scanner@example.edu", ReceivedAt: t0, NextAttempt: next, ClientIP: "127.0.0.2"}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, Recipient{Addr: r})
	}
	if len(rcpts) == 0 {
		env.Recipients = []Recipient{{Addr: "someone@example.org"}}
	}
	return env
}

func body(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

func mustPut(t testing.TB, s *Spool, env *Envelope, data []byte) string {
	t.Helper()
	if err := s.Put(context.Background(), env, data); err != nil {
		t.Fatalf("Put: %v", err)
	}
	return env.ID
}

func TestPutGetData(t *testing.T) {
	s, _ := newTestSpool(t)
	for _, size := range []int{0, 10, 1023, 1024, 10 << 10, 3<<20 + 7} { // 3 MiB > 1 MiB value-log file: chunked
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := body(size, uint64(size))
			env := testEnv(t0, "a@example.org", "b@example.org")
			id := mustPut(t, s, env, data)
			if len(id) != idLen {
				t.Fatalf("id %q: want %d chars", id, idLen)
			}
			got, err := s.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Size != int64(size) || got.From != env.From || len(got.Recipients) != 2 || !got.NextAttempt.Equal(t0) {
				t.Fatalf("Get = %+v", got)
			}
			d, err := s.Data(id)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d, data) {
				t.Fatalf("Data: %d bytes differ from the %d put", len(d), len(data))
			}
			if err := s.Put(context.Background(), &Envelope{ID: id}, []byte("x")); !errors.Is(err, ErrExists) {
				t.Fatalf("second Put of %s: %v, want ErrExists", id, err)
			}
		})
	}
	for _, id := range []string{"0000000000000000", "", "../etc", "a/b"} {
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := s.Data(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Data(%q) = %v, want ErrNotFound", id, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, testEnv(t0), []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled ctx = %v", err)
	}
}

func TestUpdate(t *testing.T) {
	s, _ := newTestSpool(t)
	id := mustPut(t, s, testEnv(t0, "a@example.org", "b@example.org"), []byte("hello body"))
	env, _ := s.Get(id)
	env.Recipients[0].State = Delivered
	env.Recipients[0].Code = 250
	env.Recipients[1].Reply = "451 try later"
	env.Attempts = 1
	env.History = append(env.History, Attempt{At: t0, Host: "mx.example.org", Result: "451"})
	env.NextAttempt = t0.Add(10 * time.Minute)
	env.Size = 999 // ignored: Size belongs to the stored bytes
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(id)
	if got.Recipients[0].State != Delivered || got.Recipients[1].Reply != "451 try later" || got.Attempts != 1 ||
		len(got.History) != 1 || !got.NextAttempt.Equal(t0.Add(10*time.Minute)) || got.Size != 10 {
		t.Fatalf("after Update: %+v", got)
	}
	if d, _ := s.Due(t0.Add(9*time.Minute), 0); len(d) != 0 {
		t.Fatalf("due before new NextAttempt: %d", len(d))
	}
	if d, _ := s.Due(t0.Add(10*time.Minute), 0); len(d) != 1 || d[0].ID != id {
		t.Fatalf("due at new NextAttempt: %v", d)
	}
	if err := s.Update(&Envelope{ID: "0000000000000000"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}
	if d, _ := s.Data(id); string(d) != "hello body" {
		t.Fatalf("data after update %q", d)
	}
}

func TestDelete(t *testing.T) {
	s, _ := newTestSpool(t)
	keep := mustPut(t, s, testEnv(t0), body(5000, 1))
	del := mustPut(t, s, testEnv(t0), body(3<<20, 2))
	if err := s.Delete(del); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(del); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := s.Data(del); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Data after Delete: %v", err)
	}
	if err := s.Delete(del); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	due, _ := s.Due(t0.Add(time.Hour), 0)
	if len(due) != 1 || due[0].ID != keep {
		t.Fatalf("Due after delete: %v", due)
	}
	// No body chunk may survive the delete.
	n := 0
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pBody)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if !strings.HasPrefix(string(it.Item().Key()), pBody+keep) {
				n++
			}
		}
		return nil
	})
	if n != 0 {
		t.Fatalf("%d body chunks of the deleted message remain", n)
	}
	if st := s.Stats(); st.Messages != 1 || st.Bytes != 5000 {
		t.Fatalf("stats after delete: %+v", st)
	}
}

func TestDueOrderingAndHeld(t *testing.T) {
	s, _ := newTestSpool(t)
	type msg struct {
		name string
		next time.Time
		held bool
	}
	msgs := []msg{
		{"late", t0.Add(2 * time.Hour), false},
		{"zero", time.Time{}, false},
		{"held-early", t0.Add(-time.Hour), true},
		{"early", t0.Add(-30 * time.Minute), false},
		{"now", t0, false},
		{"same-time-a", t0.Add(time.Minute), false},
		{"same-time-b", t0.Add(time.Minute), false},
		{"future", t0.Add(24 * time.Hour), false},
	}
	ids := map[string]string{}
	for _, m := range msgs {
		env := testEnv(m.next)
		env.Held = m.held
		ids[mustPut(t, s, env, []byte(m.name))] = m.name
	}
	names := func(envs []*Envelope) []string {
		var out []string
		for _, e := range envs {
			out = append(out, ids[e.ID])
		}
		return out
	}
	cases := []struct {
		now   time.Time
		limit int
		want  []string
	}{
		{t0.Add(-2 * time.Hour), 0, []string{"zero"}},
		{t0, 0, []string{"zero", "early", "now"}},
		{t0.Add(time.Minute), 0, []string{"zero", "early", "now", "same-time-a", "same-time-b"}},
		{t0.Add(time.Minute), 2, []string{"zero", "early"}},
		{t0.Add(3 * time.Hour), 0, []string{"zero", "early", "now", "same-time-a", "same-time-b", "late"}},
		{t0.Add(48 * time.Hour), 0, []string{"zero", "early", "now", "same-time-a", "same-time-b", "late", "future"}},
	}
	for _, c := range cases {
		got, err := s.Due(c.now, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names(got), c.want) {
			t.Errorf("Due(%v, %d) = %v, want %v", c.now.Sub(t0), c.limit, names(got), c.want)
		}
	}
	// Releasing the held message puts it into the index at its time.
	for id, name := range ids {
		if name == "held-early" {
			env, _ := s.Get(id)
			env.Held = false
			if err := s.Update(env); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, _ := s.Due(t0, 0)
	if want := []string{"zero", "held-early", "early", "now"}; !slices.Equal(names(got), want) {
		t.Errorf("after release Due = %v, want %v", names(got), want)
	}
}

func TestUpdateAndNextDue(t *testing.T) {
	s, _ := newTestSpool(t)
	if _, ok := s.NextDue(); ok {
		t.Fatal("NextDue on empty spool reported a time")
	}
	held := testEnv(t0.Add(-time.Hour))
	held.Held = true
	heldID := mustPut(t, s, held, []byte("h"))
	if _, ok := s.NextDue(); ok {
		t.Fatal("NextDue counted a held message")
	}
	a := mustPut(t, s, testEnv(t0), []byte("a"))
	b := mustPut(t, s, testEnv(t0.Add(time.Minute)), []byte("b"))
	if nd, ok := s.NextDue(); !ok || !nd.Equal(t0) {
		t.Fatalf("NextDue = %v %v, want %v", nd, ok, t0)
	}
	until := t0.Add(15 * time.Minute)
	env, err := s.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	env.NextAttempt = until
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	if due, _ := s.Due(t0.Add(2*time.Minute), 0); len(due) != 1 || due[0].ID != b {
		t.Fatalf("postponed message still due: %v", due)
	}
	if nd, _ := s.NextDue(); !nd.Equal(t0.Add(time.Minute)) {
		t.Fatalf("NextDue after update = %v", nd)
	}
	if got, _ := s.Get(a); !got.NextAttempt.Equal(until) {
		t.Fatalf("stored NextAttempt %v", got.NextAttempt)
	}
	if err := s.Update(&Envelope{ID: "0000000000000000"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}
	if nd, _ := s.NextDue(); !nd.Equal(t0.Add(time.Minute)) || heldID == "" {
		t.Fatalf("NextDue after a failed update = %v", nd)
	}
}

func TestWake(t *testing.T) {
	s, _ := newTestSpool(t)
	woke := func() bool {
		select {
		case <-s.Wake():
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}
	id := mustPut(t, s, testEnv(t0.Add(time.Hour)), []byte("x"))
	mustPut(t, s, testEnv(t0.Add(time.Hour)), []byte("y")) // coalesced with the first
	if !woke() {
		t.Fatal("no wake after Put")
	}
	if woke() {
		t.Fatal("wakes were not coalesced")
	}
	env, _ := s.Get(id)
	steps := []struct {
		name string
		edit func(*Envelope)
		want bool
	}{
		{"later", func(e *Envelope) { e.NextAttempt = t0.Add(2 * time.Hour) }, false},
		{"sooner", func(e *Envelope) { e.NextAttempt = t0 }, true},
		{"history only", func(e *Envelope) { e.Attempts++ }, false},
		{"hold", func(e *Envelope) { e.Held = true }, false},
		{"release", func(e *Envelope) { e.Held = false }, true},
	}
	for _, st := range steps {
		st.edit(env)
		if err := s.Update(env); err != nil {
			t.Fatal(err)
		}
		if got := woke(); got != st.want {
			t.Errorf("%s: woke=%v want %v", st.name, got, st.want)
		}
	}
	h := testEnv(t0)
	h.Held = true
	mustPut(t, s, h, []byte("z"))
	if woke() {
		t.Error("Put of a held message woke the runner")
	}
}

func TestKVBuckets(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOptions(dir))
	a, ab, other := s.KV("a/"), s.KV("a/b/"), s.KV("outbox/")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Set("b/x", []byte("in a")))
	must(ab.Set("x", []byte("in ab")))
	must(other.Set("2", []byte("two")))
	must(other.Set("1", []byte("one")))
	must(other.Set("3", bytes.Repeat([]byte("v"), 5000))) // goes to the value log
	if v, err := a.Get("b/x"); err != nil || string(v) != "in a" {
		t.Fatalf("a.Get = %q %v", v, err)
	}
	if v, err := ab.Get("x"); err != nil || string(v) != "in ab" {
		t.Fatalf("ab.Get = %q %v", v, err)
	}
	if _, err := a.Get("x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a sees ab's key: %v", err)
	}
	collect := func(b *Bucket) []string {
		var out []string
		must(b.Iterate(func(k string, v []byte) error {
			out = append(out, fmt.Sprintf("%s=%d", k, len(v)))
			return nil
		}))
		return out
	}
	if got := collect(a); !slices.Equal(got, []string{"b/x=4"}) {
		t.Fatalf("a.Iterate = %v", got)
	}
	if got := collect(other); !slices.Equal(got, []string{"1=3", "2=3", "3=5000"}) {
		t.Fatalf("other.Iterate = %v", got)
	}
	must(other.Delete("2"))
	must(other.Delete("never-set"))
	// Buckets do not show up as messages and survive a reopen.
	if st := s.Stats(); st.Messages != 0 {
		t.Fatalf("KV entries counted as messages: %+v", st)
	}
	must(s.Close())
	s = openTest(t, testOptions(dir))
	if got := collect(s.KV("outbox/")); !slices.Equal(got, []string{"1=3", "3=5000"}) {
		t.Fatalf("after reopen = %v", got)
	}
	stop := errors.New("stop")
	if err := s.KV("outbox/").Iterate(func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Iterate error = %v", err)
	}
}

func TestIterateAndStats(t *testing.T) {
	clock := t0
	opts := testOptions(t.TempDir())
	opts.Clock = func() time.Time { clock = clock.Add(time.Second); return clock }
	s := openTest(t, opts)
	var want []string
	var total int64
	for i := range 5 {
		env := testEnv(t0.Add(time.Duration(-i) * time.Minute))
		env.ReceivedAt = clock.Add(time.Second)
		mustPut(t, s, env, body(1000*(i+1), uint64(i)))
		want = append(want, env.ID)
		total += int64(1000 * (i + 1))
	}
	var got []string
	if err := s.Iterate(func(e *Envelope) error { got = append(got, e.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) || !slices.IsSorted(got) {
		t.Fatalf("Iterate order %v, want %v", got, want)
	}
	st := s.Stats()
	if st.Messages != 5 || st.Bytes != total || !st.Oldest.Equal(t0.Add(time.Second)) {
		t.Fatalf("Stats = %+v (want 5 msgs, %d bytes, oldest %v)", st, total, t0.Add(time.Second))
	}
	if st.VlogBytes == 0 || st.VlogFiles == 0 || st.DiskFree <= 0 || st.Writes != 5 {
		t.Fatalf("Stats sizes = %+v", st)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, testOptions(dir))
	bodies := map[string][]byte{}
	for i := range 50 {
		env := testEnv(t0.Add(time.Duration(i) * time.Second))
		env.Held = i%10 == 0
		b := body(20<<10, uint64(i))
		bodies[mustPut(t, s, env, b)] = b
	}
	before := s.Stats()
	due, _ := s.Due(t0.Add(time.Hour), 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), testEnv(t0), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s = openTest(t, testOptions(dir))
	for id, b := range bodies {
		d, err := s.Data(id)
		if err != nil || !bytes.Equal(d, b) {
			t.Fatalf("after reopen %s: %v", id, err)
		}
	}
	after := s.Stats()
	if after.Messages != before.Messages || after.Bytes != before.Bytes {
		t.Fatalf("stats before %+v after %+v", before, after)
	}
	due2, _ := s.Due(t0.Add(time.Hour), 0)
	if len(due2) != len(due) || len(due) != 45 {
		t.Fatalf("due before %d after %d, want 45", len(due), len(due2))
	}
}

func TestNewID(t *testing.T) {
	clock := t0
	var mu sync.Mutex
	opts := testOptions(t.TempDir())
	opts.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	s := openTest(t, opts)
	seen := map[string]bool{}
	prev := ""
	for i := range 20000 {
		if i == 10000 {
			mu.Lock()
			clock = clock.Add(-time.Hour) // clock steps back: ids still grow
			mu.Unlock()
		}
		id := s.NewID()
		if len(id) != idLen || strings.Trim(id, idAlphabet) != "" {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] || id <= prev {
			t.Fatalf("id %q after %q not unique/increasing", id, prev)
		}
		seen[id] = true
		prev = id
	}
	// Ids of later milliseconds sort after earlier ones.
	a := s.NewID()
	mu.Lock()
	clock = clock.Add(2 * time.Hour)
	mu.Unlock()
	if b := s.NewID(); b <= a || b[:9] == a[:9] {
		t.Fatalf("later id %q does not sort after %q by time", b, a)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		full bool
	}{
		{syscall.ENOSPC, true},
		{fmt.Errorf("while writing: %w", syscall.ENOSPC), true},
		{errors.Join(errors.New("x"), syscall.EDQUOT), true},
		{errors.New("Unable to sync value log: write /x/000001.vlog: no space left on device"), true},
		{syscall.EIO, false},
		{errors.New("some other failure"), false},
		{nil, false},
	}
	for _, c := range cases {
		if got := errors.Is(classify(c.err), ErrFull); got != c.full {
			t.Errorf("classify(%v) full=%v, want %v", c.err, got, c.full)
		}
		if c.err != nil && !errors.Is(classify(c.err), c.err) {
			t.Errorf("classify(%v) lost the original error", c.err)
		}
	}
}

func TestGroupCommitSharesSyncs(t *testing.T) {
	s, _ := newTestSpool(t)
	const writers, each = 32, 10
	data := body(10<<10, 7)
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				errs <- s.Put(context.Background(), testEnv(t0), data)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	t.Logf("%d Puts made durable by %d commits (%.1f per fsync)", st.Writes, st.Commits, float64(st.Writes)/float64(st.Commits))
	if st.Writes != writers*each || st.Messages != writers*each {
		t.Fatalf("stats %+v", st)
	}
	// One fsync per Put would give Commits == Writes; demand real sharing.
	if st.Commits*2 > st.Writes {
		t.Fatalf("%d commits for %d concurrent Puts: fsyncs are not shared", st.Commits, st.Writes)
	}
}

func TestGCReclaimsDeletedSpace(t *testing.T) {
	s, _ := newTestSpool(t)
	const n = 80
	var ids []string
	for i := range n {
		ids = append(ids, mustPut(t, s, testEnv(t0), body(100<<10, uint64(i))))
	}
	keep := mustPut(t, s, testEnv(t0), body(100<<10, 999))
	full := s.Stats()
	for _, id := range ids {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	// One more file's worth of writes, so the files holding the deleted
	// bodies are no longer the one being written.
	for i := range 12 {
		id := mustPut(t, s, testEnv(t0), body(100<<10, uint64(1000+i)))
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	t.Logf("vlog before delete: %d bytes in %d files; after delete+GC: %d bytes in %d files",
		full.VlogBytes, full.VlogFiles, after.VlogBytes, after.VlogFiles)
	if after.VlogBytes*3 > full.VlogBytes {
		t.Fatalf("value log did not shrink: %d -> %d bytes", full.VlogBytes, after.VlogBytes)
	}
	if d, err := s.Data(keep); err != nil || !bytes.Equal(d, body(100<<10, 999)) {
		t.Fatalf("kept message damaged by GC: %v", err)
	}
	if err := s.GC(); err != nil {
		t.Fatalf("second GC: %v", err)
	}
}

// A crash while Badger creates a value-log or memtable file leaves it
// empty, and Badger alone then refuses to open the directory.
func TestOpenAfterCrashLeftEmptyLogs(t *testing.T) {
	for _, name := range []string{"000099.vlog", "00099.mem"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, testOptions(dir))
			id := mustPut(t, s, testEnv(t0), body(5000, 1))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, testOptions(dir))
			if _, err := s.Get(id); err != nil {
				t.Fatalf("after reopen: %v", err)
			}
		})
	}
}

// Concurrent Puts of bodies that together exceed a value-log file are
// split over several commits and all arrive intact.
func TestGroupCommitSplitsLargeBatches(t *testing.T) {
	s, _ := newTestSpool(t) // 1 MiB value-log files
	const writers = 24
	var wg sync.WaitGroup
	ids := make([]string, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			env := testEnv(t0)
			errs[i] = s.Put(context.Background(), env, body(300<<10, uint64(i)))
			ids[i] = env.ID
		})
	}
	wg.Wait()
	for i := range writers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		d, err := s.Data(ids[i])
		if err != nil || !bytes.Equal(d, body(300<<10, uint64(i))) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	// 24 × 300 KiB cannot fit in one 1 MiB-bounded batch.
	if st := s.Stats(); st.Commits < 6 {
		t.Fatalf("%d commits for %d × 300 KiB: batches were not bounded", st.Commits, writers)
	}
}
