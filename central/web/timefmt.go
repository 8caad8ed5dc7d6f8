package web

import (
	"fmt"
	"html/template"
	"time"
)

// The time functions of the templates. Placeholders are registered with
// the package's FuncMap so the templates parse; each Server binds them to
// its clock and display time zone (bindTimeFuncs).
func init() {
	funcs["when"] = func(time.Time) template.HTML { return "" }
	funcs["ago"] = func(time.Time) string { return "" }
}

// bindTimeFuncs makes every page's time functions use the server's clock
// and display time zone: "when" is a <time> element reading "3 h ago"
// with the exact time in its title (shown on hover) and datetime
// attribute; fmtTime is the exact time.
func (s *Server) bindTimeFuncs() {
	loc := s.o.DisplayTimeZone
	if loc == nil {
		loc = time.UTC
	}
	f := template.FuncMap{
		"fmtTime": func(t time.Time) string { return exactTime(t, loc) },
		"ago":     func(t time.Time) string { return relTime(t, s.o.Clock()) },
		"when": func(t time.Time) template.HTML {
			if t.IsZero() {
				return "—"
			}
			return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
				t.UTC().Format(time.RFC3339), template.HTMLEscapeString(exactTime(t, loc)), template.HTMLEscapeString(relTime(t, s.o.Clock()))))
		},
	}
	for _, t := range s.pages {
		t.Funcs(f)
	}
}

// exactTime is t in the display zone, to the minute, with the zone's
// abbreviation.
func exactTime(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return ""
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

// relTime is how long ago (or from now) t is, in the largest whole unit:
// "just now", "5 min ago", "3 h ago", "2 days ago", "in 12 days".
func relTime(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h", int(d/time.Hour))
	case d < 60*24*time.Hour:
		s = fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d < 730*24*time.Hour:
		s = fmt.Sprintf("%d months", int(d/(30*24*time.Hour)))
	default:
		s = fmt.Sprintf("%d years", int(d/(365*24*time.Hour)))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}
