package queue

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/postern/postern/edge/spool"
)

// Mux is where the admin endpoint mounts handlers (*admin.Server).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Mount adds the queue tools' HTTP API to the admin endpoint. The
// postern-edge queue command (package queuecli) is its client:
//
//	GET    /queue                  list (JSON []Summary)
//	GET    /queue/{id}             show (JSON Detail)
//	POST   /queue/{id}/retry       make due now
//	POST   /queue/retry-all        make every message due now ({"count": n})
//	POST   /queue/{id}/hold        stop attempts
//	POST   /queue/{id}/release     resume attempts, due now
//	DELETE /queue/{id}[?ndr=1]     delete, optionally with an NDR
//
// Errors are JSON {"error": "..."} with 404 (no such message), 409 (being
// delivered, or held) or 500.
func (r *Runner) Mount(m Mux) {
	m.Handle("GET /queue", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		list, err := r.List()
		if err != nil {
			writeErr(w, err)
			return
		}
		if list == nil {
			list = []Summary{}
		}
		writeJSON(w, http.StatusOK, list)
	}))
	m.Handle("GET /queue/{id}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		d, err := r.Show(req.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	}))
	action := func(fn func(id string) error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if err := fn(req.PathValue("id")); err != nil {
				writeErr(w, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"id": req.PathValue("id"), "result": "ok"})
		})
	}
	m.Handle("POST /queue/{id}/retry", action(r.Retry))
	m.Handle("POST /queue/{id}/hold", action(r.Hold))
	m.Handle("POST /queue/{id}/release", action(r.Release))
	m.Handle("POST /queue/retry-all", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n, err := r.RetryAll()
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"count": n})
	}))
	m.Handle("DELETE /queue/{id}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ndr, _ := strconv.ParseBool(req.URL.Query().Get("ndr"))
		if err := r.Delete(req.PathValue("id"), ndr); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": req.PathValue("id"), "result": "deleted", "ndr": ndr})
	}))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, spool.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrBusy), errors.Is(err, ErrHeld):
		code = http.StatusConflict
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
