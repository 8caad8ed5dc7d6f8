package web

import (
	"net/http"

	"github.com/postern/postern/central/registration"
)

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
