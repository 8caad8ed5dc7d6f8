package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

const rssEnv = "POSTERN_SPOOL_RSS_DIR"

// TestHelperIdleRSS is the child of TestIdleRSS: it opens a spool that
// already holds the queued mail (as an edge does after a restart), stays
// idle, and prints its resident set.
func TestHelperIdleRSS(t *testing.T) {
	dir := os.Getenv(rssEnv)
	if dir == "" {
		t.Skip("helper process for TestIdleRSS")
	}
	s, err := Open(Options{Dir: dir, GCInterval: time.Hour})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	defer s.Close()
	due, err := s.Due(time.Now(), 0) // what a queue runner does at start
	if err != nil {
		fmt.Println("error", err)
		return
	}
	time.Sleep(3 * time.Second) // idle
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rss_kib %d anon_kib %d file_kib %d hwm_kib %d heap_inuse_kib %d sys_kib %d due %d\n",
		testkit.ProcStatusKiB(0, "VmRSS"), testkit.ProcStatusKiB(0, "RssAnon"), testkit.ProcStatusKiB(0, "RssFile"), testkit.ProcStatusKiB(0, "VmHWM"),
		ms.HeapInuse>>10, ms.Sys>>10, len(due))
}

// TestIdleRSS measures the resident memory of a process that has the
// spool open with 1,000 queued 10 KB messages and idles. The target for an
// idle edge is under 25 MB, of which the spool should take well under
// that. The Go heap in use is checked on its own: Badger's memtable arena
// (1.3 x memTableSize) counts there in full however little of it is
// touched, and the collector lets garbage grow to as much as is live, so
// the arena is paid about twice (8 MiB memtables had 12.9 MiB in use).
func TestIdleRSS(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("RSS measurement skipped in -short mode and under -race (shadow memory)")
	}
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.ValueLogFileSize = 64 << 20 // production default
	s := openTest(t, opts)
	data := body(10<<10, 3)
	for range 1000 {
		mustPut(t, s, testEnv(time.Now().Add(time.Hour)), data)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperIdleRSS$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), rssEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var rss, anon, file, hwm, heap, sys, due int64
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "rss_kib") {
			if _, err := fmt.Sscanf(l, "rss_kib %d anon_kib %d file_kib %d hwm_kib %d heap_inuse_kib %d sys_kib %d due %d",
				&rss, &anon, &file, &hwm, &heap, &sys, &due); err != nil {
				t.Fatalf("parse %q: %v", l, err)
			}
		}
	}
	if rss <= 0 {
		t.Fatalf("no measurement from child:\n%s", out)
	}
	t.Logf("idle with 1000 queued 10 KB messages: RSS %.1f MiB (anonymous %.1f, file-backed %.1f; peak %.1f), Go heap in use %.1f MiB, Go sys %.1f MiB",
		float64(rss)/1024, float64(anon)/1024, float64(file)/1024, float64(hwm)/1024, float64(heap)/1024, float64(sys)/1024)
	if rss > 25<<10 {
		t.Errorf("idle RSS %d KiB exceeds the 25 MiB target", rss)
	}
	if heap > 10<<10 {
		t.Errorf("Go heap in use while idle: %d KiB, want at most 10 MiB", heap)
	}
}

// mappedRSS sums the resident KiB of this process's mappings of files in
// dir whose names end in suffix.
func mappedRSS(t *testing.T, dir, suffix string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps")
	}
	defer f.Close()
	var sum int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if fs := strings.Fields(l); len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			in = len(fs) >= 6 && strings.HasPrefix(fs[5], dir) && strings.HasSuffix(fs[5], suffix)
			continue
		}
		if rest, ok := strings.CutPrefix(l, "Rss:"); ok && in {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			sum += n
		}
	}
	return sum
}

// TestWrittenBodiesDoNotStayResident: bodies are written through
// Badger's mapping of the value log; the committer gives those pages back
// as it goes, so spooling 24 MiB (or reading it back) leaves only a few
// MiB of it resident in the process, and every body still reads back.
func TestWrittenBodiesDoNotStayResident(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("mapping trim is Linux only")
	}
	dir := t.TempDir()
	o := testOptions(dir)
	o.ValueLogFileSize = 64 << 20
	s := openTest(t, o)
	const n, size = 2400, 10 << 10
	ids := make([]string, n)
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := w; i < n; i += 8 {
				env := testEnv(t0)
				if err := s.Put(t.Context(), env, body(size, uint64(i))); err != nil {
					errs <- err
					return
				}
				ids[i] = env.ID
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	abs, _ := filepath.Abs(dir)
	if kib := mappedRSS(t, abs, ".vlog"); kib > 10<<10 {
		t.Errorf("value log resident after writing %d MiB: %d KiB, want at most 10 MiB", n*size>>20, kib)
	}
	for i, id := range ids {
		got, err := s.Data(id)
		if err != nil || !bytes.Equal(got, body(size, uint64(i))) {
			t.Fatalf("body %d (%s) does not read back: %v", i, id, err)
		}
	}
	// Reading (what deliveries do) maps pages too; they go back as well.
	if kib := mappedRSS(t, abs, ".vlog"); kib > 10<<10 {
		t.Errorf("value log resident after reading %d MiB: %d KiB, want at most 10 MiB", n*size>>20, kib)
	}
}

// TestTrimMappingsWAL: commits write the memtable's WAL through Badger's
// mapping of the .mem file; trimMappings drops those pages from the
// process, and the spool carries on (more writes, reads, a reopen that
// replays the WAL) with nothing lost.
func TestTrimMappingsWAL(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("mapping trim is Linux only")
	}
	dir := t.TempDir()
	abs, _ := filepath.Abs(dir)
	s := openTest(t, testOptions(dir))
	var ids []string
	put := func(n int) {
		for range n {
			env := testEnv(t0, "someone@example.org", strings.Repeat("r", 200)+"@example.org")
			if err := s.Put(t.Context(), env, body(2<<10, uint64(len(ids)))); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, env.ID)
		}
	}
	put(500)
	before := mappedRSS(t, abs, ".mem")
	if before < 64 {
		t.Fatalf("memtable WAL resident after 500 writes: %d KiB, expected it mapped", before)
	}
	if n := trimMappings(dir); n == 0 {
		t.Fatal("trimMappings trimmed no mapping")
	}
	if after := mappedRSS(t, abs, ".mem"); after > before/4 {
		t.Errorf("memtable WAL resident: %d KiB before trim, %d KiB after", before, after)
	}
	put(100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, testOptions(dir))
	for i, id := range ids {
		got, err := s.Data(id)
		if err != nil || !bytes.Equal(got, body(2<<10, uint64(i))) {
			t.Fatalf("body %d (%s) after trim and reopen: %v", i, id, err)
		}
	}
}
