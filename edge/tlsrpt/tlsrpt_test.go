package tlsrpt_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/edge/tlsrpt"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

var day = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time   { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)  { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func newClock(t time.Time) *clock { return &clock{now: t} }
func sts(dom string) delivery.ReportPolicy {
	return delivery.ReportPolicy{Type: delivery.PolicySTS, Domain: dom, String: []string{"version: STSv1", "mode: enforce", "mx: mx." + dom, "max_age: 86400"}, MX: []string{"mx." + dom}}
}

// results of a day's attempts: 3 successes and 2 failures of one kind
// under example.com's STS policy.
func record(r *tlsrpt.Recorder, dom string, at time.Time) {
	for range 3 {
		r.Record(at, []delivery.TLSResult{{Policy: sts(dom), MXHost: "mx." + dom, IP: "127.0.0.2"}})
	}
	for range 2 {
		r.Record(at, []delivery.TLSResult{{Policy: sts(dom), MXHost: "other." + dom, IP: "127.0.0.3",
			Failure: delivery.ResultValidationFailure, Detail: "other." + dom + " is not listed"}})
	}
}

type world struct {
	t   *testing.T
	dns *dnstest.Server
	res *resolver.Resolver
	clk *clock
}

// newWorld's resolver timeout only bounds a hang: the test DNS server
// answers at once and no test waits for a lookup to time out, so a short
// one would only turn a stall of a loaded machine into a failed lookup.
func newWorld(t *testing.T) *world {
	d := dnstest.Start(t)
	res, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: 5 * time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, dns: d, res: res, clk: newClock(day)}
}

func (w *world) reporter(rec *tlsrpt.Recorder, mod func(*tlsrpt.Options)) *tlsrpt.Reporter {
	o := tlsrpt.Options{Recorder: rec, TXT: w.res.LookupTXT, Submitter: "edge.example.edu", From: "postmaster@example.edu",
		SendDelay: -1, Clock: w.clk.Now}
	if mod != nil {
		mod(&o)
	}
	r, err := tlsrpt.NewReporter(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// smtpMailer hands report mail to sink over SMTP, standing for the
// edge's queue.
func smtpMailer(t *testing.T, sink *deliverytest.Sink) tlsrpt.Mailer {
	c, err := delivery.New(delivery.Options{Hostname: "edge.example.edu", Smarthost: sink.Addr, ConnIdle: -1})
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, from, to string, data []byte) error {
		out := c.Deliver(ctx, &delivery.Job{QueueID: "R1", From: from, Rcpts: []delivery.Rcpt{{Addr: to}}, Data: data})
		if out.Results[0].Status != delivery.Delivered {
			t.Errorf("report mail not delivered: %s", out.Summary)
		}
		return nil
	}
}

// decode checks the gzip JSON report.
func decode(t *testing.T, gz []byte) tlsrpt.Report {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var rep tlsrpt.Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("report JSON: %v\n%s", err, js)
	}
	// The RFC's field names, not Go's.
	for _, k := range []string{`"organization-name"`, `"date-range"`, `"start-datetime"`, `"policy-type":"sts"`, `"total-successful-session-count":3`,
		`"total-failure-session-count":2`, `"result-type":"validation-failure"`, `"failed-session-count":2`, `"receiving-mx-hostname":"other.example.com"`} {
		if !bytes.Contains(js, []byte(k)) {
			t.Errorf("report lacks %s:\n%s", k, js)
		}
	}
	return rep
}

// A day's results go, once the day is over, to the mailto: rua of the
// domain's TLSRPT record as the RFC's mail: from the edge's postmaster,
// multipart/report with the gzip JSON attached; only once.
func TestReportByMail(t *testing.T) {
	w := newWorld(t)
	sink := deliverytest.Start(t, deliverytest.Options{Addr: "127.0.0.1:0"})
	w.dns.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
	rec, _ := tlsrpt.NewRecorder(nil, 0, nil)
	record(rec, "example.com", day)
	r := w.reporter(rec, func(o *tlsrpt.Options) { o.Mail = smtpMailer(t, sink) })

	r.Tick(t.Context()) // the day is not over
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d reports before the day ended", n)
	}
	w.clk.Set(day.Add(15 * time.Hour))
	r.Tick(t.Context())
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d reports, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "postmaster@example.edu" || len(m.To) != 1 || m.To[0] != "tlsrpt@example.com" {
		t.Errorf("envelope %s -> %v", m.From, m.To)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Header
	if h.Get("TLS-Report-Domain") != "example.com" || h.Get("TLS-Report-Submitter") != "edge.example.edu" ||
		!strings.HasPrefix(h.Get("Subject"), "Report Domain: example.com Submitter: edge.example.edu Report-ID: <") {
		t.Errorf("headers %v", h)
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content type %q", h.Get("Content-Type"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var gz []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Type") == "application/tlsrpt+gzip" {
			start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Unix()
			prefix := fmt.Sprintf("edge.example.edu!example.com!%d!%d!", start, start+86399)
			if fn := p.FileName(); !strings.HasPrefix(fn, prefix) || !strings.HasSuffix(fn, ".json.gz") {
				t.Errorf("file name %q", fn)
			}
			b, _ := io.ReadAll(p)
			if gz, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\r\n", "")); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep := decode(t, gz)
	if !rep.DateRange.Start.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || rep.ContactInfo != "mailto:postmaster@example.edu" ||
		len(rep.Policies) != 1 || rep.Policies[0].Policy.Domain != "example.com" || len(rep.Policies[0].Policy.String) != 4 {
		t.Errorf("report %+v", rep)
	}

	r.Tick(t.Context())
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("%d reports after another tick, want still 1", n)
	}
}

// An https: rua gets the gzip JSON by POST (application/tlsrpt+gzip),
// over TLS verified with the edge's roots.
func TestReportByHTTPS(t *testing.T) {
	w := newWorld(t)
	ca := deliverytest.NewCA(t, "test CA")
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/tlsrpt+gzip" || r.URL.Path != "/tlsrpt" {
			http.Error(rw, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	srv.TLS = ca.Issue(t, time.Time{}, time.Time{}, "reports.example.com").Config
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	var d net.Dialer
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}}
	w.dns.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1;rua=https://reports.example.com/tlsrpt")
	rec, _ := tlsrpt.NewRecorder(nil, 0, nil)
	record(rec, "example.com", day)
	r := w.reporter(rec, func(o *tlsrpt.Options) { o.HTTPClient = client })
	w.clk.Set(day.Add(24 * time.Hour))
	r.Tick(t.Context())
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("%d reports posted, want 1", len(bodies))
	}
	decode(t, bodies[0])
}

// Without a client of its own the reporter refuses to post into local
// networks: a hostile domain's rua cannot aim the edge at the LAN.
func TestReportNotPostedToLocalAddresses(t *testing.T) {
	w := newWorld(t)
	var hits int
	var mu sync.Mutex
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { mu.Lock(); hits++; mu.Unlock() }))
	defer srv.Close()
	w.dns.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua="+srv.URL+"/x")
	rec, _ := tlsrpt.NewRecorder(nil, 0, nil)
	record(rec, "example.com", day)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	r := w.reporter(rec, func(o *tlsrpt.Options) { o.RootCAs = roots })
	w.clk.Set(day.Add(24 * time.Hour))
	r.Tick(t.Context())
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Errorf("the report was posted to %s", srv.URL)
	}
}

// Reports are bounded: at most MaxRUA addresses per domain, MaxReports
// per day; domains without a TLSRPT record get none.
func TestReportLimits(t *testing.T) {
	w := newWorld(t)
	sink := deliverytest.Start(t, deliverytest.Options{Addr: "127.0.0.1:0"})
	w.dns.AddTXT("_smtp._tls.a.example", "v=TLSRPTv1; rua=mailto:r1@a.example,mailto:r2@a.example,mailto:r3@a.example")
	w.dns.AddTXT("_smtp._tls.b.example", "v=TLSRPTv1; rua=mailto:r@b.example")
	w.dns.AddTXT("_smtp._tls.c.example", "v=TLSRPTv1; rua=mailto:r@c.example")
	w.dns.AddTXT("_smtp._tls.d.example", "v=spf1 -all") // not a TLSRPT record
	rec, _ := tlsrpt.NewRecorder(nil, 0, nil)
	for _, d := range []string{"a.example", "b.example", "c.example", "d.example", "e.example"} {
		record(rec, d, day)
	}
	var counted []string
	r := w.reporter(rec, func(o *tlsrpt.Options) {
		o.Mail, o.MaxReports, o.MaxRUA = smtpMailer(t, sink), 3, 2
		o.Sent = func(via, result string) { counted = append(counted, via+" "+result) }
	})
	w.clk.Set(day.Add(24 * time.Hour))
	r.Tick(t.Context())
	var to []string
	for _, m := range sink.Messages() {
		to = append(to, m.To...)
	}
	if strings.Join(to, " ") != "r1@a.example r2@a.example r@b.example" {
		t.Errorf("reports went to %v, want r1@a, r2@a (MaxRUA 2), r@b (MaxReports 3)", to)
	}
	if len(counted) != 3 || counted[0] != "mailto sent" {
		t.Errorf("counted %v", counted)
	}
}

// The counts are kept in the spool: a restart before the day's report
// loses nothing.
func TestCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := tlsrpt.NewRecorder(sp.KV("tlsrpt/"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	record(rec, "example.com", day)
	if err := rec.Save(); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	sp, err = spool.Open(spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rec2, err := tlsrpt.NewRecorder(sp.KV("tlsrpt/"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	var posted []byte
	w.dns.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
	r := w.reporter(rec2, func(o *tlsrpt.Options) {
		o.Mail = func(_ context.Context, _, _ string, data []byte) error { posted = data; return nil }
	})
	w.clk.Set(day.Add(24 * time.Hour))
	r.Tick(t.Context())
	if !bytes.Contains(posted, []byte("application/tlsrpt+gzip")) {
		t.Fatalf("no report after the restart")
	}
	n := 0
	_ = sp.KV("tlsrpt/").Iterate(func(string, []byte) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d keys left after the report", n)
	}
}

func TestParseRecord(t *testing.T) {
	for rec, want := range map[string]string{
		"v=TLSRPTv1; rua=mailto:a@example.com":                         "mailto:a@example.com",
		"v=TLSRPTv1;rua=mailto:a@example.com,https://r.example.com/x":  "mailto:a@example.com https://r.example.com/x",
		"v=TLSRPTv1; rua=http://r.example.com/x,ftp://x,mailto:nobody": "",
		"v=TLSRPTv1; rua=mailto:a@example.com?cc=b@example.net":        "",
		"v=TLSRPTv1; rua=https://user:pw@r.example.com/":               "",
		"v=STSv1; rua=mailto:a@example.com":                            "",
	} {
		us, err := tlsrpt.ParseRecord(rec)
		var got []string
		for _, u := range us {
			got = append(got, u.String())
		}
		if strings.Join(got, " ") != want || (want == "") != (err != nil) {
			t.Errorf("%q: %v %v, want %q", rec, got, err, want)
		}
	}
}
