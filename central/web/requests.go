package web

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// Suspension requests: an edge's report that central did not act on by
// itself (see registration.SuspendByEdge). Every staff page shows a banner
// while any is open; /staff/requests lists them with confirm and dismiss
// forms.

func (s *Server) routeRequests(m *http.ServeMux) {
	m.HandleFunc("GET /staff/requests", s.staff(s.requests))
	m.HandleFunc("POST /staff/requests/{id}/{decision}", s.staff(s.decideRequest))
}

// openRequests is the number of open suspension requests, for the banner
// (0 when it cannot be read: the banner is a hint, the page is the truth).
func (s *Server) openRequests(r *http.Request) int {
	n, err := s.o.Store.CountOpenSuspensionRequests(r.Context())
	if err != nil {
		s.log.Warn("counting suspension requests failed", "err", err)
		return 0
	}
	return n
}

func (s *Server) requests(w http.ResponseWriter, r *http.Request, user string) {
	s.requestsWith(w, r, user, http.StatusOK, "")
}

func (s *Server) requestsWith(w http.ResponseWriter, r *http.Request, user string, status int, msg string) {
	open, err := s.o.Store.ListSuspensionRequests(r.Context(), store.RequestFilter{State: store.RequestOpen, Limit: 500})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	all, err := s.o.Store.ListSuspensionRequests(r.Context(), store.RequestFilter{Limit: 50})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	var decided []store.SuspensionRequest
	for _, q := range all {
		if q.State != store.RequestOpen {
			decided = append(decided, q)
		}
	}
	p := page{"Title": "Suspension requests", "Staff": user, "Open": open, "Decided": decided}
	if msg != "" {
		p["Error"] = msg
	}
	s.render(w, r, status, "requests", p)
}

func (s *Server) decideRequest(w http.ResponseWriter, r *http.Request, user string) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		s.fail(w, r, http.StatusNotFound, "Not found", "No such suspension request.")
		return
	}
	_, err = s.o.Registry.DecideRequest(r.Context(), id, r.PathValue("decision"), "staff:"+user, r.PostFormValue("reason"))
	switch {
	case err == nil:
		http.Redirect(w, r, "/staff/requests?done=request-"+r.PathValue("decision"), http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound), errors.Is(err, registration.ErrBadDecision):
		s.fail(w, r, http.StatusNotFound, "Not found", "No such suspension request.")
	case errors.Is(err, store.ErrTransition), errors.Is(err, registration.ErrReasonTooLong):
		s.requestsWith(w, r, user, http.StatusConflict, "Not done: "+err.Error())
	default:
		s.internal(w, r, err)
	}
}
