package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
)

func (s *Server) routeOverview(m *http.ServeMux) {
	m.HandleFunc("GET /staff/overview", s.staff(s.overview))
	m.HandleFunc("GET /staff/edges/{id}", s.staff(s.edgeDetail))
}

// edgeRow is one edge on the overview.
type edgeRow struct {
	store.Edge
	// Lag is how many allowlist versions the edge is behind.
	Lag int64
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, user string) {
	ctx := r.Context()
	edges, err := s.o.Store.ListEdges(ctx)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ver, err := s.o.Store.AllowlistVersion(ctx)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	today := s.today()
	fleet, err := s.o.Store.DailyCounts(ctx, store.DeviceAll, today.AddDate(0, 0, -(StatsDays-1)))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	unreg, err := s.o.Store.DailyCounts(ctx, "", today.AddDate(0, 0, -(StatsDays-1)))
	if err != nil {
		s.internal(w, r, err)
		return
	}
	var rows []edgeRow
	online, queued, lagging := 0, 0, 0
	for _, e := range edges {
		row := edgeRow{Edge: e}
		if e.Status.AllowlistVersion > 0 || e.Enrolled {
			row.Lag = max(ver-e.Status.AllowlistVersion, 0)
		}
		if e.Status.Online {
			online++
		}
		if row.Lag > 0 {
			lagging++
		}
		queued += e.Status.QueueDepth
		rows = append(rows, row)
	}
	// Offline and lagging edges first: they are what staff look for.
	slices.SortStableFunc(rows, func(a, b edgeRow) int {
		if a.Status.Online != b.Status.Online {
			if !a.Status.Online {
				return -1
			}
			return 1
		}
		return int(b.Lag - a.Lag)
	})
	days := dayRows(fleet, today)
	unregDays := dayRows(unreg, today)
	var unregRefused int64
	for _, d := range unregDays {
		unregRefused += d.Refused
	}
	s.render(w, r, http.StatusOK, "overview", page{"Title": "Fleet overview", "Staff": user, "Edges": rows, "Version": ver,
		"Online": online, "Offline": len(edges) - online, "Lagging": lagging, "Queued": queued,
		"Days": days, "UnregRefused": unregRefused,
		"Chart": dayChart("chart-fleet", "Mail through the relays, last 30 days",
			"Per day: recipients delivered, bounces and refusals of all edges. The table below has the numbers.", days)})
}

// edgeDetail is one edge: its status, counters, queue over the last day,
// a new enrolment token and revocation.
func (s *Server) edgeDetail(w http.ResponseWriter, r *http.Request, user string) {
	s.edgeDetailWith(w, r, user, http.StatusOK, page{})
}

func (s *Server) edgeDetailWith(w http.ResponseWriter, r *http.Request, user string, status int, extra page) {
	ctx := r.Context()
	id := r.PathValue("id")
	e, err := s.o.Store.Edge(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No edge with this id.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ver, err := s.o.Store.AllowlistVersion(ctx)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	since := s.o.Clock().Add(-24 * time.Hour)
	samples, err := s.o.Store.EdgeSamples(ctx, id, since)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	hist, err := s.o.Store.ListAudit(ctx, store.AuditFilter{Edge: id, Limit: 50})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	var names []string
	for k := range e.Status.Counters {
		names = append(names, k)
	}
	slices.Sort(names)
	var labels []string
	depth, outbox := make([]int64, len(samples)), make([]int64, len(samples))
	for i, sm := range samples {
		labels = append(labels, exactTime(sm.Time, s.loc())[11:16])
		depth[i], outbox[i] = int64(sm.QueueDepth), int64(sm.Outbox)
	}
	p := page{"Title": "Edge " + e.ID, "Staff": user, "E": e, "Version": ver, "Lag": max(ver-e.Status.AllowlistVersion, 0),
		"CounterNames": names, "Samples": samples, "History": hist, "BaseURL": s.o.BaseURL,
		"Chart": barChart("chart-queue", "Queue of edge "+e.ID+", last 24 hours",
			"Messages queued for delivery and events waiting to reach central, every five minutes. The table below has the numbers.",
			labels, []series{{"queued", "c-del", depth}, {"outbox", "c-ref", outbox}})}
	if tok, ok := s.takeShown(w, r, id); ok {
		p["Token"] = tok
	} else if r.URL.Query().Get("shown") != "" {
		p["Error"] = "The enrolment token was shown once already. Issue a new one if it was not copied."
	}
	for k, v := range extra {
		p[k] = v
	}
	s.render(w, r, status, "edge", p)
}

func (s *Server) loc() *time.Location {
	if s.o.DisplayTimeZone != nil {
		return s.o.DisplayTimeZone
	}
	return time.UTC
}

// ShownCookie carries a new enrolment token from the POST that made it to
// the one GET it redirects to (POST-redirect-GET): a reload shows it no
// more and no form is re-posted. It is HttpOnly, SameSite=Strict, scoped
// to the edge's page and lives a minute; the GET clears it. Keeping the
// hand-over in the browser, not in one instance's memory, lets any
// instance behind a load balancer show it.
const ShownCookie = "postern_shown"

// showToken redirects to the edge's page, which shows the token once.
func (s *Server) showToken(w http.ResponseWriter, r *http.Request, _, edge, token string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	http.SetCookie(w, s.shownCookie(edge, id+"."+token, time.Minute))
	http.Redirect(w, r, "/staff/edges/"+url.PathEscape(edge)+"?shown="+id, http.StatusSeeOther)
}

func (s *Server) shownCookie(edge, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{Name: ShownCookie, Value: value, Path: "/staff/edges/" + edge, HttpOnly: true, Secure: s.o.SecureCookies,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge.Seconds())}
	if maxAge <= 0 {
		c.MaxAge = -1
	}
	return c
}

// takeShown returns the token the redirect with ?shown=id carries in its
// cookie (false if none, another id or not a token), and clears the cookie.
func (s *Server) takeShown(w http.ResponseWriter, r *http.Request, edge string) (string, bool) {
	id := r.URL.Query().Get("shown")
	c, err := r.Cookie(ShownCookie)
	if id == "" || err != nil {
		return "", false
	}
	http.SetCookie(w, s.shownCookie(edge, "", 0))
	gotID, tok, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(gotID), []byte(id)) != 1 || !validEnrolToken(tok) {
		return "", false
	}
	return tok, true
}

// validEnrolToken: what auth.NewToken makes (43 base64url characters).
func validEnrolToken(t string) bool {
	if len(t) != 43 {
		return false
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
