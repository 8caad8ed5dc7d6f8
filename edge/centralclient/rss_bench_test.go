package centralclient

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/testkit"
)

// settledMB returns the process RSS and the live Go heap, in MB, after a
// full GC that returns free memory to the OS.
func settledMB() (rss, heap float64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(testkit.ProcStatusKiB(0, "VmRSS")) / 1024, float64(ms.HeapAlloc) / (1 << 20)
}

const (
	childEnv     = "POSTERN_ALLOWLIST_MEMORY_CHILD"
	memSnapshots = 6 // the first, then five changes streaming in
)

// BenchmarkAllowlistMemory is the edge's memory with a central allowlist
// of 10k / 50k / 100k devices while changes stream in. The snapshots are
// signed here; a child process (this test binary) holds only what an edge
// holds — a real Badger spool, the device table and the sync client — and
// applies them through the real path (verify, decode, persist, swap):
// first the whole list, then five versions with one device changed each.
// Reported: the child's RSS before any allowlist (base-rss-MB), settled
// after the stream (rss-MB), its peak during the stream (peak-rss-MB), and
// the live heap a device costs (heap-B/device).
func BenchmarkAllowlistMemory(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc to read RSS")
	}
	for _, n := range []int{10000, 50000, 100000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			devs := make([]allowlist.Device, n)
			for i := range devs {
				devs[i] = allowlist.Device{Name: fmt.Sprintf("dev%06d.dept%d.example.edu", i, i%40), Status: allowlist.Active,
					Senders: []string{fmt.Sprintf("dev%d@example.edu", i)}, MessagesPerHour: i % 3 * 100}
			}
			t0 := time.Now()
			for v := 1; v <= memSnapshots; v++ {
				if v > 1 {
					devs[v*7919%n].Status = allowlist.Suspended
					devs[v*7919%n].Reason = "bounced NDRs"
				}
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(v)), snapshot(b, centralPriv, int64(v), t0, devs...), 0o600); err != nil {
					b.Fatal(err)
				}
			}
			var res map[string]float64
			for b.Loop() {
				os.RemoveAll(filepath.Join(dir, "spool"))
				cmd := exec.Command(os.Args[0], "-test.run=^TestAllowlistMemoryChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), childEnv+"="+dir, fmt.Sprintf("POSTERN_ALLOWLIST_DEVICES=%d", n))
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("child: %v\n%s", err, out)
				}
				res = parseResult(b, out)
			}
			b.ReportMetric(res["base"], "base-rss-MB")
			b.ReportMetric(res["rss"], "rss-MB")
			b.ReportMetric(res["peak"], "peak-rss-MB")
			b.ReportMetric(res["perdev"], "heap-B/device")
		})
	}
}

func parseResult(b *testing.B, out []byte) map[string]float64 {
	for _, l := range bytes.Split(out, []byte("\n")) {
		rest, ok := bytes.CutPrefix(l, []byte("ALLOWLIST-MEMORY "))
		if !ok {
			continue
		}
		res := map[string]float64{}
		for _, kv := range strings.Fields(string(rest)) {
			k, v, _ := strings.Cut(kv, "=")
			res[k], _ = strconv.ParseFloat(v, 64)
		}
		return res
	}
	b.Fatalf("child printed no result:\n%s", out)
	return nil
}

// TestAllowlistMemoryChild is the child of BenchmarkAllowlistMemory; it
// does nothing in a normal test run.
func TestAllowlistMemoryChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("run by BenchmarkAllowlistMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("POSTERN_ALLOWLIST_DEVICES"))
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	reg, err := devices.New(nil, sp.KV("susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := NewOutbox(sp.KV("outbox/"), "e1", 0, nil, nil)
	c, err := New(Options{EdgeID: "e1", PublicKey: centralPub, Allow: sp.KV("allow/"), Outbox: ob, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	apply := func(v int) {
		w, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(v)))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.HandleSnapshot(w, "bench"); err != nil {
			t.Fatal(err)
		}
	}
	base, heap0 := settledMB()
	apply(1)
	settledMB()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
	for v := 2; v <= memSnapshots; v++ {
		apply(v)
	}
	peak := float64(testkit.ProcStatusKiB(0, "VmHWM")) / 1024
	rss, heap := settledMB()
	if _, ok := reg.Lookup(fmt.Sprintf("dev%06d.dept%d.example.edu", n-1, (n-1)%40)); !ok {
		t.Fatal("last device not applied")
	}
	fmt.Printf("ALLOWLIST-MEMORY base=%.1f rss=%.1f peak=%.1f perdev=%.0f\n", base, rss, peak, (heap-heap0)*(1<<20)/float64(n))
	runtime.KeepAlive(c)
}
