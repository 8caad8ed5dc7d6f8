package tlsrpt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/resolver"
)

// Defaults of Options.
const (
	DefaultMaxReports = 100
	DefaultMaxRUA     = 2
	DefaultInterval   = time.Minute
	// DefaultPostTimeout bounds one HTTPS report, retries included.
	DefaultPostTimeout = 30 * time.Second
	// giveUp is how long after its day ends a report whose rua could not
	// be looked up (DNS failing) or whose mail could not be queued is
	// still tried.
	giveUp = 24 * time.Hour
)

// Mailer puts a report into the edge's queue, from from to to.
type Mailer func(ctx context.Context, from, to string, data []byte) error

// Options configure a Reporter.
type Options struct {
	Recorder *Recorder
	// TXT looks up TXT records (*resolver.Resolver.LookupTXT).
	TXT func(ctx context.Context, name string) ([]string, error)
	// Submitter is the edge's host name: organization-name and
	// TLS-Report-Submitter.
	Submitter string
	// From is the address report mail comes from (envelope and header)
	// and the report's contact-info.
	From string
	// Mail queues mailto: reports; nil: mailto: addresses are skipped.
	Mail Mailer
	// HTTPClient posts https: reports (tests: a test CA, a loopback
	// dialer); nil: a client with the system roots whose dialer refuses
	// every address that is not public unicast, so a published rua
	// cannot make the edge POST into its own network.
	HTTPClient *http.Client
	// RootCAs verify HTTPS report servers of the default client (nil:
	// the system roots).
	RootCAs *x509.CertPool
	// MaxReports bounds the reports sent per day; MaxRUA the addresses
	// used per domain.
	MaxReports, MaxRUA int
	// SendDelay is waited after midnight UTC before the day's reports go
	// (default: a random part of the first hour, so that edges do not
	// all report at once).
	SendDelay time.Duration
	// Interval is how often counts are saved and due reports sent.
	Interval time.Duration
	// Sent, when set, is told of each report: via "mailto" or "https",
	// result "sent" (queued, or accepted by the server) or "failed".
	Sent  func(via, result string)
	Clock func() time.Time
	Log   *slog.Logger
}

// Reporter saves the counts and sends the reports of days that ended.
type Reporter struct {
	o    Options
	http *retryablehttp.Client
	sent map[string]int // reports sent per day
}

// NewReporter checks o.
func NewReporter(o Options) (*Reporter, error) {
	switch {
	case o.Recorder == nil:
		return nil, errors.New("tlsrpt: Options.Recorder is nil")
	case o.TXT == nil:
		return nil, errors.New("tlsrpt: Options.TXT is nil")
	case o.Submitter == "" || o.From == "":
		return nil, errors.New("tlsrpt: Options.Submitter and From are needed")
	}
	if o.MaxReports <= 0 {
		o.MaxReports = DefaultMaxReports
	}
	if o.MaxRUA <= 0 {
		o.MaxRUA = DefaultMaxRUA
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.SendDelay < 0 {
		o.SendDelay = 0
	} else if o.SendDelay == 0 {
		o.SendDelay = time.Duration(rand.Int64N(int64(time.Hour)))
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var hc http.Client
	if o.HTTPClient != nil {
		hc = *o.HTTPClient
	} else {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: publicOnly}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
		t.Proxy = nil
		t.DialContext = d.DialContext
		hc.Transport = t
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if hc.Timeout == 0 || hc.Timeout > DefaultPostTimeout {
		hc.Timeout = DefaultPostTimeout
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &hc
	rc.RetryMax = 2
	rc.RetryWaitMin = time.Second
	rc.RetryWaitMax = 5 * time.Second
	rc.Logger = nil
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return &Reporter{o: o, http: rc, sent: map[string]int{}}, nil
}

// publicOnly refuses connections to addresses that are not public
// unicast (loopback, private, link-local, multicast, unspecified).
func publicOnly(_, addr string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
		return fmt.Errorf("tlsrpt: %s is not a public address; reports are not posted into local networks", ip)
	}
	return nil
}

// Run saves the counts and sends due reports every Interval until ctx
// ends, then saves once more.
func (r *Reporter) Run(ctx context.Context) error {
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	for {
		r.Tick(ctx)
		select {
		case <-ctx.Done():
			if err := r.o.Recorder.Save(); err != nil {
				r.o.Log.Error("tlsrpt: saving counts failed", "err", err)
			}
			return nil
		case <-t.C:
		}
	}
}

// Tick saves the counts and sends the reports that are due.
func (r *Reporter) Tick(ctx context.Context) {
	rec := r.o.Recorder
	if err := rec.Save(); err != nil {
		r.o.Log.Error("tlsrpt: saving counts failed", "err", err)
	}
	now := r.o.Clock().UTC()
	for _, name := range rec.pending(now.Format(dayLayout)) {
		start, err := time.Parse(dayLayout, name)
		if err != nil {
			_ = rec.finish(name)
			continue
		}
		end := start.Add(24 * time.Hour)
		if now.Before(end.Add(r.o.SendDelay)) {
			continue
		}
		left := false
		for _, dom := range rec.domains(name) {
			if ctx.Err() != nil {
				return
			}
			if !r.report(ctx, name, start, dom) && now.Before(end.Add(giveUp)) {
				left = true
				continue
			}
			rec.done(name, dom)
		}
		if !left {
			delete(r.sent, name)
			if err := rec.finish(name); err != nil {
				r.o.Log.Error("tlsrpt: forgetting a reported day failed", "day", name, "err", err)
			}
		}
	}
	if err := rec.Save(); err != nil {
		r.o.Log.Error("tlsrpt: saving counts failed", "err", err)
	}
}

// report sends the report of dom for a day to its rua addresses. false:
// try again later (DNS failed, the queue refused the mail).
func (r *Reporter) report(ctx context.Context, name string, start time.Time, dom string) bool {
	log := r.o.Log.With("domain", dom, "day", name)
	ruas, err := r.lookupRUA(ctx, dom)
	switch {
	case errors.Is(err, resolver.ErrNotFound):
		return true // the domain asks for no reports
	case err != nil:
		log.Info("tlsrpt: rua lookup failed, will retry", "err", err)
		return false
	}
	policies, sent := r.o.Recorder.results(name, dom)
	if len(policies) == 0 {
		return true
	}
	rep := build(r.o.Submitter, "mailto:"+r.o.From, dom, start, policies)
	gz, err := gzipJSON(rep)
	if err != nil {
		log.Error("tlsrpt: encoding report failed", "err", err)
		return true
	}
	ok := true
	for _, rua := range ruas {
		if contains(sent, rua.String()) {
			continue
		}
		if r.sent[name] >= r.o.MaxReports {
			log.Warn("tlsrpt: report not sent, the day's report limit is reached", "rua", rua.String(), "max", r.o.MaxReports)
			continue
		}
		switch rua.Scheme {
		case "mailto":
			if r.o.Mail == nil {
				continue
			}
			to := rua.Opaque
			msg := composeMail(r.o.From, to, r.o.Submitter, dom, rep, gz, r.o.Clock())
			if err := r.o.Mail(ctx, r.o.From, to, msg); err != nil {
				log.Warn("tlsrpt: queueing report mail failed, will retry", "to", to, "err", err)
				r.count("mailto", "failed")
				ok = false
				continue
			}
			r.count("mailto", "sent")
			log.Info("tlsrpt: report queued", "to", to, "report_id", rep.ReportID)
		case "https":
			if err := r.post(ctx, rua.String(), gz); err != nil {
				r.count("https", "failed")
				log.Warn("tlsrpt: posting report failed", "url", rua.String(), "err", err)
			} else {
				r.count("https", "sent")
				log.Info("tlsrpt: report posted", "url", rua.String(), "report_id", rep.ReportID)
			}
		}
		r.sent[name]++
		r.o.Recorder.markSent(name, dom, rua.String())
	}
	return ok
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (r *Reporter) post(ctx context.Context, u string, gz []byte) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultPostTimeout)
	defer cancel()
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/tlsrpt+gzip")
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// lookupRUA returns the report addresses of dom's TLSRPT record (RFC
// 8460 §3): exactly one TXT record at _smtp._tls.<dom> starting with
// "v=TLSRPTv1", its rua a comma-separated list of mailto: and https:
// URIs. At most MaxRUA usable ones are returned; ErrNotFound: none.
func (r *Reporter) lookupRUA(ctx context.Context, dom string) ([]*url.URL, error) {
	txts, err := r.o.TXT(ctx, "_smtp._tls."+dom)
	if err != nil {
		return nil, err
	}
	var recs []string
	for _, t := range txts {
		if v, _, _ := strings.Cut(t, ";"); strings.TrimSpace(v) == "v=TLSRPTv1" {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, fmt.Errorf("_smtp._tls.%s: %d TLSRPTv1 records: %w", dom, len(recs), resolver.ErrNotFound)
	}
	ruas, err := ParseRecord(recs[0])
	if err != nil {
		return nil, fmt.Errorf("_smtp._tls.%s: %v: %w", dom, err, resolver.ErrNotFound)
	}
	if len(ruas) > r.o.MaxRUA {
		ruas = ruas[:r.o.MaxRUA]
	}
	return ruas, nil
}

// ParseRecord returns the usable rua URIs of a TLSRPT record: mailto:
// with one valid address (no header fields), https: with a host and no
// user information. Other schemes are skipped.
func ParseRecord(rec string) ([]*url.URL, error) {
	var rua string
	for i, f := range strings.Split(rec, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		k = strings.TrimSpace(k)
		switch {
		case i == 0 && (k != "v" || strings.TrimSpace(v) != "TLSRPTv1"):
			return nil, errors.New("not a TLSRPTv1 record")
		case k == "rua":
			rua = strings.TrimSpace(v)
		}
	}
	if rua == "" {
		return nil, errors.New("no rua")
	}
	var out []*url.URL
	for _, s := range strings.Split(rua, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || len(s) > 512 {
			continue
		}
		switch strings.ToLower(u.Scheme) {
		case "mailto":
			addr, err := url.PathUnescape(u.Opaque)
			if err != nil || u.RawQuery != "" || u.Fragment != "" {
				continue
			}
			a, err := address.Parse(addr)
			if err != nil || a.Domain == "" || a.Local == "" {
				continue
			}
			out = append(out, &url.URL{Scheme: "mailto", Opaque: a.String()})
		case "https":
			if u.Host == "" || u.User != nil {
				continue
			}
			u.Scheme = "https"
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no usable rua")
	}
	return out, nil
}

func (r *Reporter) count(via, result string) {
	if r.o.Sent != nil {
		r.o.Sent(via, result)
	}
}
