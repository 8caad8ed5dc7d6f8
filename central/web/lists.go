package web

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Paging of the staff lists: ?page=N (1-based) and ?n= (rows per page, one
// of pageSizes); the pager says "1–50 of 1,102" and links to the
// neighbouring pages with the same filters.

var pageSizes = []int{25, 50, 100, 200}

// pager is one page's position in a list.
type pager struct {
	Page, Size, Total int
	// More: Total is a lower bound (the count stopped at store.CountCap).
	More bool
	// Query is the list's query without page (for links).
	Query url.Values
	Path  string
}

func parsePager(q url.Values, path string) pager {
	p := pager{Page: 1, Size: 50, Path: path}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 0 && n <= 1_000_000 {
		p.Page = n
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil {
		for _, s := range pageSizes {
			if n == s {
				p.Size = n
			}
		}
	}
	p.Query = url.Values{}
	for k, v := range q {
		if k != "page" && k != "done" {
			p.Query[k] = v
		}
	}
	return p
}

func (p pager) Offset() int { return (p.Page - 1) * p.Size }

// First and Last are the 1-based positions of the page's rows (0 when
// empty).
func (p pager) First() int {
	if p.Total == 0 || p.Offset() >= p.Total {
		return 0
	}
	return p.Offset() + 1
}

func (p pager) Last() int { return min(p.Offset()+p.Size, p.Total) }

// Summary is "1–50 of 1,102" (or "of more than 10,000").
func (p pager) Summary() string {
	if p.First() == 0 {
		if p.Total == 0 {
			return "none"
		}
		return fmt.Sprintf("no rows on page %d of %s", p.Page, thousands(p.Total))
	}
	of := thousands(p.Total)
	if p.More {
		of = "more than " + of
	}
	return fmt.Sprintf("%s–%s of %s", thousands(p.First()), thousands(p.Last()), of)
}

func (p pager) link(page int) string {
	q := url.Values{}
	for k, v := range p.Query {
		q[k] = v
	}
	if page > 1 {
		q.Set("page", strconv.Itoa(page))
	}
	if len(q) == 0 {
		return p.Path
	}
	return p.Path + "?" + q.Encode()
}

// Prev and Next are the neighbouring pages' links ("" when there is none).
func (p pager) Prev() string {
	if p.Page <= 1 {
		return ""
	}
	return p.link(p.Page - 1)
}

func (p pager) Next() string {
	if p.Offset()+p.Size >= p.Total && !p.More {
		return ""
	}
	return p.link(p.Page + 1)
}

// LastPage is the link to the last page (none when the total is capped).
func (p pager) LastPage() string {
	if p.More || p.Total <= p.Size {
		return ""
	}
	n := (p.Total + p.Size - 1) / p.Size
	if n == p.Page {
		return ""
	}
	return p.link(n)
}

func (p pager) FirstPage() string {
	if p.Page <= 2 {
		return ""
	}
	return p.link(1)
}

// With returns the list's link with key set to value (page reset).
func (p pager) With(key, value string) string {
	q := url.Values{}
	for k, v := range p.Query {
		q[k] = v
	}
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	if len(q) == 0 {
		return p.Path
	}
	return p.Path + "?" + q.Encode()
}

// thousands formats n with commas (1,102).
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// timeLayout is the format of the lists' time filters (datetime-local
// inputs, in UTC).
const timeLayout = "2006-01-02T15:04"

// parseTimeField reads a time filter; "" is no bound. The error names the
// expected format.
func parseTimeField(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	for _, l := range []string{timeLayout, "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(l, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use YYYY-MM-DD HH:MM (UTC)", v)
}
