// Package admin is the edge's local HTTP endpoint: /healthz (the process
// is alive), /readyz (every registered readiness check passes) and
// whatever other stages mount on it with Handle (metrics, queue tools).
//
// Clients on loopback (or a unix socket) are trusted; anyone else must
// send "Authorization: Bearer <admin.token>". Config validation already
// requires a token when the listener is not loopback.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Server is the admin HTTP server.
type Server struct {
	listen string
	token  string
	log    *slog.Logger
	mux    *http.ServeMux

	mu     sync.Mutex
	checks map[string]func() (string, error)
	ln     net.Listener
}

// New returns a server for listen ("host:port" or "unix:/path") that is
// not yet listening. token may be empty when listen is loopback.
func New(listen, token string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{listen: listen, token: token, log: log, mux: http.NewServeMux(), checks: map[string]func() (string, error){}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// Handle mounts h at pattern (http.ServeMux syntax, e.g. "GET /metrics").
// Handlers mounted here get the same authentication as the built-ins.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddCheck registers a readiness check: /readyz fails while check
// returns an error.
func (s *Server) AddCheck(name string, check func() error) {
	s.AddStatus(name, func() (string, error) { return "", check() })
}

// AddStatus registers a readiness check that also reports figures:
// /readyz shows "name: ok (detail)" while check returns a nil error, and
// fails with "name: error" otherwise.
func (s *Server) AddStatus(name string, check func() (detail string, err error)) {
	s.mu.Lock()
	s.checks[name] = check
	s.mu.Unlock()
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := s.checks
	s.mu.Unlock()
	sort.Strings(names)
	var b strings.Builder
	ok := true
	for _, n := range names {
		switch detail, err := checks[n](); {
		case err != nil:
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", n, err)
		case detail != "":
			fmt.Fprintf(&b, "%s: ok (%s)\n", n, detail)
		default:
			fmt.Fprintf(&b, "%s: ok\n", n)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
}

// ServeHTTP applies authentication, then the mux.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.trusted(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="postern-edge"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) trusted(r *http.Request) bool {
	if strings.HasPrefix(s.listen, "unix:") {
		return true // file permissions guard the socket
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && ap.Addr().Unmap().IsLoopback() {
		return true
	}
	if s.token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

// Listen binds the listener.
func (s *Server) Listen() error {
	var ln net.Listener
	var err error
	if path, ok := strings.CutPrefix(s.listen, "unix:"); ok {
		os.Remove(path)
		ln, err = net.Listen("unix", path)
		if err == nil {
			err = os.Chmod(path, 0o660)
		}
	} else {
		ln, err = net.Listen("tcp", s.listen)
	}
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", s.listen, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves until ctx ends (Listen first).
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return errors.New("admin: Serve before Listen")
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("admin listening", "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin: serve: %w", err)
	}
}
