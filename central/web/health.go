package web

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Health serves the load balancer's probes, without login:
//
//   - /healthz answers 200 while the process serves HTTP at all.
//   - /readyz answers 200 only while the store answers a query and the
//     MQTT link is up (connected and subscribed), and 503 otherwise, so
//     a load balancer sends no registrations, approvals or enrolments to
//     an instance that could not store or publish them.
//
// The bodies name each check as ok or failing and never carry error text
// (which may name database hosts or users); errors are logged instead.
type Health struct {
	// Store is a cheap query on the store (nil: not checked).
	Store func(ctx context.Context) error
	// Broker reports whether the MQTT link is up (nil: not checked).
	Broker func() bool
	Log    *slog.Logger
}

// readyTimeout bounds the store check; a store slower than this is not
// ready.
const readyTimeout = 2 * time.Second

// Healthz answers 200 "ok".
func (h Health) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// Readyz answers 200 when every check passes, else 503.
func (h Health) Readyz(w http.ResponseWriter, r *http.Request) {
	ready := true
	store, broker := "ok", "ok"
	if h.Store != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		err := h.Store(ctx)
		cancel()
		if err != nil {
			ready, store = false, "unreachable"
			if h.Log != nil {
				h.Log.Warn("readiness: store check failed", "err", err)
			}
		}
	}
	if h.Broker != nil && !h.Broker() {
		ready, broker = false, "not connected"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintf(w, "store: %s\nbroker: %s\n", store, broker)
}
