package web

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sync"
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
	if tok, ok := s.o.tokens().take(r.URL.Query().Get("shown"), user, id); ok {
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

// shownTokens hands an enrolment token from the POST that made it to the
// one GET it redirects to (POST-redirect-GET): a reload shows it no more,
// and no form is re-posted. Slots are per process, bound to the staff
// user and the edge, and expire after a minute.
type shownTokens struct {
	mu    sync.Mutex
	slots map[string]tokenSlot
}

type tokenSlot struct {
	user, edge, token string
	expires           time.Time
}

var tokenStores sync.Map // *Options -> *shownTokens

func (o *Options) tokens() *shownTokens {
	v, _ := tokenStores.LoadOrStore(o, &shownTokens{slots: map[string]tokenSlot{}})
	return v.(*shownTokens)
}

func (t *shownTokens) put(user, edge, token string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for k, s := range t.slots {
		if now.After(s.expires) {
			delete(t.slots, k)
		}
	}
	t.slots[id] = tokenSlot{user: user, edge: edge, token: token, expires: now.Add(time.Minute)}
	return id
}

func (t *shownTokens) take(id, user, edge string) (string, bool) {
	if id == "" {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.slots[id]
	if !ok || s.user != user || s.edge != edge || time.Now().After(s.expires) {
		return "", false
	}
	delete(t.slots, id)
	return s.token, true
}

// showToken redirects to the edge's page, which shows the token once.
func (s *Server) showToken(w http.ResponseWriter, r *http.Request, user, edge, token string) {
	id := s.o.tokens().put(user, edge, token)
	http.Redirect(w, r, "/staff/edges/"+url.PathEscape(edge)+"?shown="+id, http.StatusSeeOther)
}
