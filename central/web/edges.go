package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/topic"
)

func (s *Server) edgesPage(w http.ResponseWriter, r *http.Request, user string, status int, extra page) {
	edges, err := s.o.Store.ListEdges(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ver, err := s.o.Store.AllowlistVersion(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p := page{"Title": "Edges", "Staff": user, "Edges": edges, "Version": ver, "BaseURL": s.o.BaseURL}
	for k, v := range extra {
		p[k] = v
	}
	s.render(w, r, status, "edges", p)
}

func (s *Server) edges(w http.ResponseWriter, r *http.Request, user string) {
	s.edgesPage(w, r, user, http.StatusOK, nil)
}

func (s *Server) createEdge(w http.ResponseWriter, r *http.Request, user string) {
	id := strings.TrimSpace(r.PostFormValue("id"))
	if err := topic.ValidEdgeID(id); err != nil {
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	}
	tok, err := s.o.Registry.CreateEdge(r.Context(), id, r.PostFormValue("name"), r.PostFormValue("site"))
	switch {
	case errors.Is(err, store.ErrExists):
		s.edgesPage(w, r, user, http.StatusConflict, page{"Error": "An edge with this id exists already."})
		return
	case errors.Is(err, registration.ErrReservedEdgeID):
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	case err != nil && strings.Contains(err.Error(), "at most"):
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	s.log.Info("edge created", "edge", id, "actor", "staff:"+user)
	s.showToken(w, r, user, id, tok)
}

func (s *Server) edgeToken(w http.ResponseWriter, r *http.Request, user string) {
	id := r.PathValue("id")
	tok, err := s.o.Registry.NewEnrolment(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No edge with this id.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.showToken(w, r, user, id, tok)
}

// revokeEdge revokes an edge for good (registration.RevokeEdge).
func (s *Server) revokeEdge(w http.ResponseWriter, r *http.Request, user string) {
	id := r.PathValue("id")
	err := s.o.Registry.RevokeEdge(r.Context(), id, "staff:"+user, r.PostFormValue("reason"))
	switch code := registration.HTTPStatus(err); {
	case err == nil:
		http.Redirect(w, r, "/staff/edges?done=edge-revoked", http.StatusSeeOther)
	case code == http.StatusNotFound:
		s.fail(w, r, http.StatusNotFound, "Not found", "No edge with this id (or it is revoked already).")
	case code == http.StatusInternalServerError:
		s.internal(w, r, err)
	default:
		s.edgesPage(w, r, user, code, page{"Error": "Not revoked: " + err.Error()})
	}
}
