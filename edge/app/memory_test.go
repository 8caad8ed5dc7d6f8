package app

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
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
