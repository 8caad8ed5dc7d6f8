package web

import (
	"net/http"
	"strings"

	"github.com/postern/postern/central/store"
)

// The audit log, paginated, filtered by device, edge, actor, action and
// time.

func (s *Server) routeAudit(m *http.ServeMux) {
	m.HandleFunc("GET /staff/audit", s.staff(s.audit))
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	f := store.AuditQuery{Device: strings.TrimSpace(q.Get("device")), Edge: strings.TrimSpace(q.Get("edge")),
		Actor: strings.TrimSpace(q.Get("actor")), Action: strings.TrimSpace(q.Get("action"))}
	errs := map[string]string{}
	var err error
	if f.Since, err = parseTimeField(q.Get("since")); err != nil {
		errs["since"] = err.Error()
	}
	if f.Until, err = parseTimeField(q.Get("until")); err != nil {
		errs["until"] = err.Error()
	}
	pg := parsePager(q, "/staff/audit")
	p := page{"Title": "Audit log", "Staff": user, "F": q, "Pager": &pg, "Errs": errs}
	if len(errs) > 0 {
		p["Error"] = "The audit log cannot be filtered like this: see the fields below."
		s.render(w, r, http.StatusBadRequest, "audit", p)
		return
	}
	f.Limit, f.Offset = pg.Size, pg.Offset()
	res, err := s.o.Store.ListAuditPage(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	pg.Total, pg.More = res.Total, res.More
	p["Entries"] = res.Entries
	s.render(w, r, http.StatusOK, "audit", p)
}
