package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

func init() {
	funcs["ferrArgs"] = func(e registration.FieldErrors, f string) map[string]any { return map[string]any{"E": e, "F": f} }
}

// StatsDays is how many days the statistics charts show.
const StatsDays = 30

// dayRow is one day of a device's or the fleet's counts.
type dayRow struct {
	Day                      time.Time
	Delivered, NDRs, Refused int64
}

// deviceStatsData is the "device-stats" template's data.
type deviceStatsData struct {
	Name     string
	LastSeen time.Time
	// TLS is the protocol and cipher of the device's latest TLS report.
	TLS                      string
	TLSAt                    time.Time
	Delivered, NDRs, Refused int64
	Days                     []dayRow
	Chart                    template.HTML
}

// dayRows folds per-day counts into StatsDays rows ending today.
func dayRows(counts []store.DayCount, today time.Time) []dayRow {
	first := today.AddDate(0, 0, -(StatsDays - 1))
	rows := make([]dayRow, StatsDays)
	for i := range rows {
		rows[i].Day = first.AddDate(0, 0, i)
	}
	for _, c := range counts {
		i := int(c.Day.Sub(first) / (24 * time.Hour))
		if i < 0 || i >= len(rows) {
			continue
		}
		switch c.Kind {
		case event.Delivery:
			rows[i].Delivered += c.N
		case event.NDR, event.NDRUndeliverable, event.NDRWarning:
			rows[i].NDRs += c.N
		case event.Refusal, event.RateLimit:
			rows[i].Refused += c.N
		}
	}
	return rows
}

func (s *Server) today() time.Time {
	now := s.o.Clock().UTC()
	return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
}

// deviceStats reads a device's last 30 days from the per-day counts (an
// index range, never a scan of the events) and its latest events.
func (s *Server) deviceStats(ctx context.Context, name string) (deviceStatsData, error) {
	st := deviceStatsData{Name: name}
	today := s.today()
	counts, err := s.o.Store.DailyCounts(ctx, name, today.AddDate(0, 0, -(StatsDays-1)))
	if err != nil {
		return st, err
	}
	st.Days = dayRows(counts, today)
	for _, r := range st.Days {
		st.Delivered += r.Delivered
		st.NDRs += r.NDRs
		st.Refused += r.Refused
	}
	if e, err := s.o.Store.LatestEvent(ctx, name, ""); err == nil {
		st.LastSeen = e.Time
	} else if !errors.Is(err, store.ErrNotFound) {
		return st, err
	}
	if e, err := s.o.Store.LatestEvent(ctx, name, event.TLS); err == nil {
		st.TLS, st.TLSAt = strings.TrimSpace(e.Detail["tls_version"]+" "+e.Detail["cipher"]), e.Time
	} else if !errors.Is(err, store.ErrNotFound) {
		return st, err
	}
	st.Chart = dayChart("chart-"+name, "Mail of "+name+", last 30 days",
		fmt.Sprintf("Per day: recipients delivered (%d in all), bounces (%d) and refusals (%d). The table below has the numbers.", st.Delivered, st.NDRs, st.Refused),
		st.Days)
	return st, nil
}

// series is one row of bars of a chart.
type series struct {
	Name   string
	Class  string
	Values []int64
}

// dayChart is a 30-day bar chart of delivered, bounced and refused mail.
func dayChart(id, title, desc string, rows []dayRow) template.HTML {
	var labels []string
	del, ndr, ref := make([]int64, len(rows)), make([]int64, len(rows)), make([]int64, len(rows))
	for i, r := range rows {
		labels = append(labels, r.Day.Format("2 Jan"))
		del[i], ndr[i], ref[i] = r.Delivered, r.NDRs, r.Refused
	}
	return barChart(id, title, desc, labels, []series{{"delivered", "c-del", del}, {"bounces", "c-ndr", ndr}, {"refused", "c-ref", ref}})
}

// barChart renders grouped bars as an inline SVG image with a title and a
// description (read by screen readers); the pages put the numbers in a
// table next to it. Only numbers and escaped text go into the markup.
func barChart(id, title, desc string, labels []string, ss []series) template.HTML {
	const w, h, pad, bottom = 720.0, 180.0, 36.0, 22.0
	var maxV int64 = 1
	for _, s := range ss {
		for _, v := range s.Values {
			maxV = max(maxV, v)
		}
	}
	n := len(labels)
	if n == 0 {
		n = 1
	}
	slot := (w - pad) / float64(n)
	bw := slot * 0.8 / float64(max(len(ss), 1))
	esc := template.HTMLEscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="%s" viewBox="0 0 %.0f %.0f" role="img" aria-labelledby="%s-t %s-d" preserveAspectRatio="none">`, esc(id), w, h, esc(id), esc(id))
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s</desc>`, esc(id), esc(title), esc(id), esc(desc))
	top := h - bottom
	fmt.Fprintf(&b, `<line class="axis" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`, pad, top, w, top)
	fmt.Fprintf(&b, `<text class="tick" x="%.0f" y="12" text-anchor="end">%d</text><text class="tick" x="%.0f" y="%.1f" text-anchor="end">0</text>`, pad-4, maxV, pad-4, top)
	for i := range labels {
		x0 := pad + float64(i)*slot + slot*0.1
		for j, s := range ss {
			if i >= len(s.Values) || s.Values[i] == 0 {
				continue
			}
			bh := float64(s.Values[i]) / float64(maxV) * (top - 8)
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s %s: %d</title></rect>`,
				esc(s.Class), x0+float64(j)*bw, top-bh, bw, bh, esc(labels[i]), esc(s.Name), s.Values[i])
		}
		if every := max(len(labels)/6, 1); i%every == 0 {
			fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.0f">%s</text>`, x0, h-6, esc(labels[i]))
		}
	}
	b.WriteString(`</svg>`)
	var legend strings.Builder
	legend.WriteString(`<p class="legend" aria-hidden="true">`)
	for _, s := range ss {
		fmt.Fprintf(&legend, `<span class="key %s"></span> %s `, esc(s.Class), esc(s.Name))
	}
	legend.WriteString(`</p>`)
	return template.HTML(b.String() + legend.String()) //nolint:gosec // built from escaped text and numbers only
}
