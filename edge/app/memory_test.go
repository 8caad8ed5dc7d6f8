package app

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"github.com/postern/postern/edge/config"
)

func TestMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config.Default(true)

	t.Setenv("GOMEMLIMIT", "")
	applyMemoryLimit(cfg, log)
	if got, want := debug.SetMemoryLimit(-1), int64(352<<20); got != want {
		t.Errorf("default: limit = %d, want %d", got, want)
	}
	cfg.MemoryLimit = 0
	applyMemoryLimit(cfg, log)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory_limit = 0: limit = %d, want none", got)
	}

	// GOMEMLIMIT was applied by the runtime at start; the file does not
	// override it.
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetMemoryLimit(1 << 30)
	cfg.MemoryLimit = 500 << 20
	applyMemoryLimit(cfg, log)
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("with GOMEMLIMIT: limit = %d, want 1 GiB", got)
	}
}

func TestIdleReleaserDecides(t *testing.T) {
	var r idleReleaser
	var allocs uint64
	step := func(n uint64) bool { allocs += n; return r.tick(allocs) }

	// Idle from the start: nothing to give back.
	for range 5 {
		if step(1 << 10) {
			t.Fatal("released while idle without prior work")
		}
	}
	// A burst: never released while it allocates.
	for range 10 {
		if step(4 << 20) {
			t.Fatal("released during a burst")
		}
	}
	// The first quiet tick after it releases, once.
	if !step(10 << 10) {
		t.Fatal("no release when the burst ended")
	}
	for range 5 {
		if step(10 << 10) {
			t.Fatal("released again while still idle")
		}
	}
	// A trickle below quietBytes a tick releases only after releaseAfter.
	n := 0
	for range 200 {
		if step(quietBytes / 2) {
			n++
		}
	}
	if want := 200 * (quietBytes / 2) / releaseAfter; n != want {
		t.Errorf("trickle of %d KiB a tick: %d releases in 200 ticks, want %d", quietBytes/2>>10, n, want)
	}
	// A small burst (less than releaseAfter in all) leaves the heap be.
	r = idleReleaser{last: allocs}
	step(quietBytes)
	if step(0) {
		t.Error("released after less than releaseAfter of work")
	}
}

// The counter the releaser reads exists and moves with allocations.
func TestReadAllocs(t *testing.T) {
	s := []metrics.Sample{{Name: heapAllocsMetric}}
	a := readAllocs(s)
	sink = make([]byte, 1<<20)
	if b := readAllocs(s); b < a+1<<20 {
		t.Errorf("allocation counter went from %d to %d after a 1 MiB allocation", a, b)
	}
}

var sink []byte
