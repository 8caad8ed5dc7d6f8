// Package tlsrpt keeps the edge's SMTP TLS reporting (RFC 8460): it
// counts, per destination domain and UTC day, the outbound connections
// whose TLS did or did not satisfy the domain's published policy
// (MTA-STS, DANE, or none found), with the failures by the RFC's result
// types, and once the day is over sends each domain that asks for it
// (a "v=TLSRPTv1; rua=..." TXT record at _smtp._tls.<domain>) one
// aggregate report: as mail through the edge's own queue (mailto:) or as
// an HTTPS POST (https:).
//
// What it guarantees:
//   - Only what the edge is given is reported: the edge records the
//     results of mail from registered devices only, so a report never
//     exists because of an unregistered client's mail, and the domains a
//     report can go to are the domains the edge delivered to.
//   - Where a report goes comes only from the DNS of such a domain; at
//     most MaxRUA addresses per domain and MaxReports reports per day are
//     sent, however many domains were delivered to; HTTPS reports go only
//     to public addresses (no report is POSTed into the LAN).
//   - The counts survive a restart (kept in the spool's KV).
package tlsrpt

import (
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/edge/delivery"
)

const (
	// maxDetails bounds the failure details kept per policy: further
	// failures are counted, not detailed.
	maxDetails = 50
	// DefaultMaxDomains bounds the domains counted per day.
	DefaultMaxDomains = 10000
	dayLayout         = "2006-01-02"
	dayPrefix         = "day/"
)

// KV is the durable store of the counts (*spool.Bucket).
type KV interface {
	Get(key string) ([]byte, error)
	Set(key string, val []byte) error
	Delete(key string) error
	Iterate(fn func(key string, val []byte) error) error
}

// Policy is a report's policy block (RFC 8460 §4.4).
type Policy struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Failure is one failure-details entry.
type Failure struct {
	ResultType     string `json:"result-type"`
	SendingMTAIP   string `json:"sending-mta-ip,omitempty"`
	ReceivingMX    string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP    string `json:"receiving-ip,omitempty"`
	Count          int64  `json:"failed-session-count"`
	AdditionalInfo string `json:"additional-information,omitempty"`
}

// PolicyResult is the counts of one policy of a domain.
type PolicyResult struct {
	Policy  Policy    `json:"policy"`
	Summary Summary   `json:"summary"`
	Details []Failure `json:"failure-details,omitempty"`
}

// Summary is a policy's session counts.
type Summary struct {
	Success int64 `json:"total-successful-session-count"`
	Failure int64 `json:"total-failure-session-count"`
}

// domainDay is what one domain's connections of one day gave.
type domainDay struct {
	Policies []*PolicyResult `json:"policies"`
	// Sent lists the rua addresses the report went to already.
	Sent []string `json:"sent,omitempty"`
}

// day is one UTC day's counts.
type day struct {
	Domains map[string]*domainDay `json:"domains"`
	dirty   bool
}

// Recorder counts TLS results. Safe for concurrent use.
type Recorder struct {
	kv         KV
	log        *slog.Logger
	maxDomains int

	mu      sync.Mutex
	days    map[string]*day
	dropped bool // a result was dropped today for want of room (logged once)
}

// NewRecorder loads the counts kept in kv (nil: memory only).
func NewRecorder(kv KV, maxDomains int, log *slog.Logger) (*Recorder, error) {
	if maxDomains <= 0 {
		maxDomains = DefaultMaxDomains
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{kv: kv, log: log, maxDomains: maxDomains, days: map[string]*day{}}
	if kv == nil {
		return r, nil
	}
	err := kv.Iterate(func(key string, val []byte) error {
		name, ok := strings.CutPrefix(key, dayPrefix)
		if !ok {
			return nil
		}
		d := &day{}
		if err := json.Unmarshal(val, d); err != nil || d.Domains == nil {
			log.Warn("tlsrpt: unreadable counts dropped", "day", name, "err", err)
			return nil
		}
		r.days[name] = d
		return nil
	})
	return r, err
}

// Record counts the TLS results of one delivery attempt made at at, each
// under its policy domain.
func (r *Recorder) Record(at time.Time, results []delivery.TLSResult) {
	if len(results) == 0 {
		return
	}
	name := at.UTC().Format(dayLayout)
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[name]
	if d == nil {
		d = &day{Domains: map[string]*domainDay{}}
		r.days[name] = d
	}
	for _, res := range results {
		dom := strings.ToLower(strings.TrimSuffix(res.Policy.Domain, "."))
		if dom == "" {
			continue
		}
		dd := d.Domains[dom]
		if dd == nil {
			if len(d.Domains) >= r.maxDomains {
				if !r.dropped {
					r.dropped = true
					r.log.Warn("tlsrpt: too many domains today, results of further domains are not counted", "day", name, "max", r.maxDomains)
				}
				continue
			}
			dd = &domainDay{}
			d.Domains[dom] = dd
		}
		pr := dd.policy(res.Policy, dom)
		d.dirty = true
		if res.Failure == "" {
			pr.Summary.Success++
			continue
		}
		pr.Summary.Failure++
		pr.addFailure(Failure{ResultType: res.Failure, ReceivingMX: res.MXHost, ReceivingIP: res.IP, AdditionalInfo: info(res.Detail)})
	}
}

// info bounds a failure's explanation for the report.
func info(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func (dd *domainDay) policy(p delivery.ReportPolicy, dom string) *PolicyResult {
	want := Policy{Type: p.Type, String: p.String, Domain: dom, MXHost: p.MX}
	for _, pr := range dd.Policies {
		if samePolicy(pr.Policy, want) {
			return pr
		}
	}
	pr := &PolicyResult{Policy: want}
	dd.Policies = append(dd.Policies, pr)
	return pr
}

func samePolicy(a, b Policy) bool {
	return a.Type == b.Type && strings.Join(a.String, "\n") == strings.Join(b.String, "\n")
}

func (pr *PolicyResult) addFailure(f Failure) {
	for i := range pr.Details {
		d := &pr.Details[i]
		if d.ResultType == f.ResultType && d.ReceivingMX == f.ReceivingMX && d.ReceivingIP == f.ReceivingIP {
			d.Count++
			return
		}
	}
	if len(pr.Details) < maxDetails {
		f.Count = 1
		pr.Details = append(pr.Details, f)
	}
}

// Save writes the days that changed since the last Save to the store.
func (r *Recorder) Save() error {
	if r.kv == nil {
		return nil
	}
	r.mu.Lock()
	var names []string
	var vals [][]byte
	for name, d := range r.days {
		if !d.dirty {
			continue
		}
		b, err := json.Marshal(d)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		d.dirty = false
		names, vals = append(names, name), append(vals, b)
	}
	r.mu.Unlock()
	for i, name := range names {
		if err := r.kv.Set(dayPrefix+name, vals[i]); err != nil {
			r.mu.Lock()
			if d := r.days[name]; d != nil {
				d.dirty = true
			}
			r.mu.Unlock()
			return err
		}
	}
	return nil
}

// pending returns the days before today that have counts, oldest first.
func (r *Recorder) pending(today string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name := range r.days {
		if name < today {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// domains returns a copy of the domains of a day with counts, sorted.
func (r *Recorder) domains(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[name]
	if d == nil {
		return nil
	}
	out := make([]string, 0, len(d.Domains))
	for dom := range d.Domains {
		out = append(out, dom)
	}
	sort.Strings(out)
	return out
}

// results returns a copy of a domain's counts of a day.
func (r *Recorder) results(name, dom string) (policies []PolicyResult, sent []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[name]
	if d == nil || d.Domains[dom] == nil {
		return nil, nil
	}
	dd := d.Domains[dom]
	for _, p := range dd.Policies {
		c := *p
		c.Details = append([]Failure(nil), p.Details...)
		policies = append(policies, c)
	}
	return policies, append([]string(nil), dd.Sent...)
}

// markSent records that the report of dom for day went to rua.
func (r *Recorder) markSent(name, dom, rua string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.days[name]; d != nil && d.Domains[dom] != nil {
		d.Domains[dom].Sent = append(d.Domains[dom].Sent, rua)
		d.dirty = true
	}
}

// done forgets dom's counts of day.
func (r *Recorder) done(name, dom string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.days[name]; d != nil {
		delete(d.Domains, dom)
		d.dirty = true
	}
}

// finish forgets a day whose reports are all handled.
func (r *Recorder) finish(name string) error {
	r.mu.Lock()
	delete(r.days, name)
	r.dropped = false
	r.mu.Unlock()
	if r.kv == nil {
		return nil
	}
	return r.kv.Delete(dayPrefix + name)
}

// Totals returns the sessions counted for domain on the UTC day of at,
// over all its policies.
func (r *Recorder) Totals(at time.Time, domain string) (success, failure int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.days[at.UTC().Format(dayLayout)]
	if d == nil || d.Domains[domain] == nil {
		return 0, 0
	}
	for _, p := range d.Domains[domain].Policies {
		success += p.Summary.Success
		failure += p.Summary.Failure
	}
	return success, failure
}
