package app

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/postern/postern/edge/config"
)

// applyMemoryLimit sets the Go runtime's soft memory limit from
// memory_limit (0: none), unless GOMEMLIMIT is set, which the runtime has
// already applied and which wins. Without a limit the collector lets the
// heap grow to about twice what is live, so a full intake budget would
// cost twice its size in resident memory.
func applyMemoryLimit(cfg config.Config, log *slog.Logger) {
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		log.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", env, "memory_limit", cfg.MemoryLimit)
		return
	}
	if cfg.MemoryLimit <= 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return
	}
	debug.SetMemoryLimit(cfg.MemoryLimit)
	log.Info("memory limit", "memory_limit", cfg.MemoryLimit)
}

// Idle release of heap memory.
//
// Between two collections the Go heap holds the garbage of everything
// since the last one, up to about as much again as is live; after a burst
// of mail that garbage and the spans it occupied stay resident, and the
// runtime's background scavenger only hands back what lies above its
// target, which is about the last heap goal. An edge spends most of its
// life idle, so when work stops the releaser collects once and returns
// every free page to the kernel (debug.FreeOSMemory). It notices work by
// the runtime's cumulative allocation counter: a tick in which almost
// nothing was allocated, after a tick in which a lot was, is the end of a
// burst. An idle edge's own timers allocate far below quietBytes; a busy
// one allocates megabytes a second (every message's buffers), so it is
// never interrupted by a forced collection while it works.
const (
	// idleTick is how often the releaser reads the allocation counter.
	idleTick = 500 * time.Millisecond
	// quietBytes: a tick allocating less than this is idle.
	quietBytes = 256 << 10
	// releaseAfter: release only once this much was allocated since the
	// last release, so that a trickle of mail does not force a
	// collection per message.
	releaseAfter = 8 << 20
)

// idleReleaser decides, tick by tick, when to release.
type idleReleaser struct {
	last  uint64 // allocation counter at the previous tick
	since uint64 // bytes allocated since the last release
}

// tick takes the cumulative allocation counter and reports whether to
// release now.
func (r *idleReleaser) tick(allocs uint64) bool {
	d := allocs - r.last
	r.last = allocs
	r.since += d
	if d >= quietBytes || r.since < releaseAfter {
		return false
	}
	r.since = 0
	return true
}

// heapAllocsMetric is the runtime's cumulative count of bytes allocated
// on the heap.
const heapAllocsMetric = "/gc/heap/allocs:bytes"

// readAllocs returns the cumulative heap allocation counter.
func readAllocs(s []metrics.Sample) uint64 {
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// ReleaseIdleMemory returns the Go heap's free memory to the kernel each
// time the process goes quiet after work (see idleReleaser), until ctx
// ends.
func ReleaseIdleMemory(ctx context.Context, log *slog.Logger) {
	s := []metrics.Sample{{Name: heapAllocsMetric}}
	r := idleReleaser{last: readAllocs(s)}
	t := time.NewTicker(idleTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.tick(readAllocs(s)) {
			start := time.Now()
			debug.FreeOSMemory()
			log.Debug("idle: returned free heap memory to the kernel", "took", time.Since(start))
		}
	}
}
