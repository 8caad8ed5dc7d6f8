package admin

import (
	"net/http/pprof"
)

// EnableProfiling mounts Go's runtime profiles under /debug/pprof/ (CPU
// profile, execution trace, and through the index the named profiles:
// heap, allocs, goroutine, mutex, block).
// They sit behind the same authentication as every other admin path, and
// are off unless admin.pprof is set: a profile reveals internal state
// (stack traces, addresses in memory), and a CPU profile or trace costs
// CPU while it runs.
func (s *Server) EnableProfiling() {
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
