package web

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// The message trace: events edges reported (refusals, NDRs, rate limits,
// deliveries), also of clients that are not registered, filtered by
// device, client address, sender, recipient, kind, edge and time.

func (s *Server) routeEvents(m *http.ServeMux) {
	m.HandleFunc("GET /staff/events", s.staff(s.events))
}

// eventKinds are the kinds offered in the filter.
var eventKinds = []event.Kind{event.Refusal, event.NDR, event.NDRUndeliverable, event.NDRWarning, event.RateLimit, event.ReportDropped, event.Delivery, event.TLS}

func (s *Server) events(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	f := store.EventQuery{Device: strings.TrimSpace(q.Get("device")), Edge: strings.TrimSpace(q.Get("edge")),
		Sender: strings.TrimSpace(q.Get("sender")), Recipient: strings.TrimSpace(q.Get("recipient"))}
	errs := map[string]string{}
	if ip := strings.TrimSpace(q.Get("client_ip")); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			errs["client_ip"] = "\"" + ip + "\" is not an IP address."
		} else {
			f.ClientIP = a.Unmap().String()
		}
	}
	if k := q.Get("kind"); k != "" {
		known := false
		for _, e := range eventKinds {
			known = known || string(e) == k
		}
		if !known {
			errs["kind"] = "Unknown kind."
		}
		f.Kind = event.Kind(k)
	}
	var err error
	if f.Since, err = parseTimeField(q.Get("since")); err != nil {
		errs["since"] = err.Error()
	}
	if f.Until, err = parseTimeField(q.Get("until")); err != nil {
		errs["until"] = err.Error()
	}
	edges, err := s.o.Store.ListEdges(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	pg := parsePager(q, "/staff/events")
	p := page{"Title": "Events", "Staff": user, "F": q, "Pager": &pg, "Errs": errs, "Kinds": eventKinds, "Edges": edges}
	if len(errs) > 0 {
		p["Error"] = "The events cannot be filtered like this: see the fields below."
		s.render(w, r, http.StatusBadRequest, "events", p)
		return
	}
	f.Limit, f.Offset = pg.Size, pg.Offset()
	res, err := s.o.Store.ListEventPage(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	pg.Total, pg.More = res.Total, res.More
	p["Events"] = res.Events
	s.render(w, r, http.StatusOK, "events", p)
}
