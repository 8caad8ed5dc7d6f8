package app

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

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
