package web

import (
	"net/http"

	"github.com/postern/postern/central/store"
)

func (s *Server) audit(w http.ResponseWriter, r *http.Request, user string) {
	entries, err := s.o.Store.ListAudit(r.Context(), store.AuditFilter{Device: r.URL.Query().Get("device"), Edge: r.URL.Query().Get("edge"), Limit: 500})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "audit", page{"Title": "Audit log", "Staff": user, "Entries": entries})
}
