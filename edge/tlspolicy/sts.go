package tlspolicy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/shared/resolver"
)

// MTA-STS (RFC 8461).
//
// A domain announces a policy with a TXT record at _mta-sts.<domain>
// ("v=STSv1; id=..."); the policy itself is fetched over HTTPS from
// https://mta-sts.<domain>/.well-known/mta-sts.txt (certificate valid
// for that name, no redirects, text/plain, at most 64 KiB). Policies are
// cached, in memory and in a durable store (the spool's KV, so a reboot
// keeps them: a man in the middle that blocks the fetch after a restart
// gains nothing), until their max_age. A cached policy is refetched when
// the TXT id changes or half its max_age has passed; a fetch that fails
// leaves the cached policy in force (§5.1). Without a TXT record the
// cached policy stays in force until it expires.

// STS modes.
const (
	STSEnforce = "enforce"
	STSTesting = "testing"
	STSNone    = "none"
)

const (
	// MaxPolicySize bounds the policy body (RFC 8461 §3.3 suggests 64 KiB).
	MaxPolicySize = 64 << 10
	// maxSTSAge is the largest max_age accepted (RFC 8461 §3.2: 31557600).
	maxSTSAge = 31557600 * time.Second
	// DefaultFetchTimeout bounds one policy fetch, retries included.
	DefaultFetchTimeout = 30 * time.Second
	// FailBackoff is how long a failed fetch is not repeated for the
	// same domain and id: a broken policy server costs one fetch per
	// period, not one per delivery attempt.
	FailBackoff = 5 * time.Minute
	// memLimit bounds the in-memory policy cache (then it is emptied; the
	// durable store still has them).
	memLimit = 10000
)

// STSPolicy is a fetched MTA-STS policy.
type STSPolicy struct {
	Domain  string        `json:"domain"`
	ID      string        `json:"id"`
	Mode    string        `json:"mode"`
	MX      []string      `json:"mx"`
	MaxAge  time.Duration `json:"max_age"`
	Fetched time.Time     `json:"fetched"`
}

// Match reports whether host is one of the policy's MX patterns.
func (p *STSPolicy) Match(host string) bool { return matchAny(p.MX, host) }

// report is the policy in TLSRPT terms: its lines as RFC 8461 §3.2 writes
// them.
func (p *STSPolicy) report() *delivery.ReportPolicy {
	lines := []string{"version: STSv1", "mode: " + p.Mode}
	for _, m := range p.MX {
		lines = append(lines, "mx: "+m)
	}
	lines = append(lines, fmt.Sprintf("max_age: %d", int64(p.MaxAge/time.Second)))
	return &delivery.ReportPolicy{Type: delivery.PolicySTS, Domain: p.Domain, String: lines, MX: append([]string(nil), p.MX...)}
}

// Expires is when the policy stops applying.
func (p *STSPolicy) Expires() time.Time { return p.Fetched.Add(p.MaxAge) }

// KV is the durable store of policies (*spool.Bucket); Get of a missing
// key returns an error.
type KV interface {
	Get(key string) ([]byte, error)
	Set(key string, val []byte) error
}

// STSOptions configure an STS.
type STSOptions struct {
	// TXT looks up TXT records (*resolver.Resolver.LookupTXT).
	TXT func(ctx context.Context, name string) ([]string, error)
	// HTTPClient is the client policies are fetched with; its transport
	// decides roots and dialing (tests: a test CA, a loopback dialer).
	// nil: a client with the system roots and the default dialer. It must
	// not follow redirects; New makes sure of that on a copy.
	HTTPClient *http.Client
	// Store keeps policies across restarts; nil: memory only.
	Store        KV
	FetchTimeout time.Duration
	// RetryMax is how often a failed fetch is retried at once (default 1).
	RetryMax int
	Clock    func() time.Time
	Log      *slog.Logger
}

// STS fetches, caches and applies MTA-STS policies. Safe for concurrent
// use.
type STS struct {
	o    STSOptions
	http *retryablehttp.Client

	mu      sync.Mutex
	mem     map[string]*STSPolicy // domain -> policy (nil entry: cached "none")
	flights map[string]*stsFlight
	failed  map[string]stsFailure // domain -> last failed fetch
}

type stsFailure struct {
	id    string
	until time.Time
	err   error
}

type stsFlight struct {
	done chan struct{}
	pol  *STSPolicy
	err  error
}

// NewSTS returns an STS.
func NewSTS(o STSOptions) (*STS, error) {
	if o.TXT == nil {
		return nil, errors.New("tlspolicy: STSOptions.TXT is nil")
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 1
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
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		t.Proxy = nil
		hc.Transport = t
	}
	// RFC 8461 §3.3: redirects must not be followed.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if hc.Timeout == 0 || hc.Timeout > o.FetchTimeout {
		hc.Timeout = o.FetchTimeout
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &hc
	rc.RetryMax = o.RetryMax
	rc.RetryWaitMin = 100 * time.Millisecond
	rc.RetryWaitMax = time.Second
	rc.Logger = nil
	// Give back the last response or error instead of retryablehttp's
	// generic "giving up" error, for the log.
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return &STS{o: o, http: rc, mem: map[string]*STSPolicy{}, flights: map[string]*stsFlight{}, failed: map[string]stsFailure{}}, nil
}

// Policy returns the policy in force for domain, nil when there is none
// (no TXT record and nothing cached, mode "none", or a first fetch that
// failed). It never fails delivery on its own: a missing policy means
// the next rule applies.
func (s *STS) Policy(ctx context.Context, domain string) *STSPolicy {
	domain = normHost(domain)
	now := s.o.Clock()
	cached := s.cached(domain, now)
	id, txtErr := s.lookupID(ctx, domain)
	if txtErr != nil {
		// No (valid) TXT record, or DNS failed: a cached policy stays in
		// force until it expires (§5.1).
		if cached != nil && !errors.Is(txtErr, resolver.ErrNotFound) {
			s.o.Log.Debug("mta-sts TXT lookup failed, using the cached policy", "domain", domain, "err", txtErr)
		}
		return active(cached)
	}
	if cached != nil && cached.ID == id && now.Before(cached.Fetched.Add(cached.MaxAge/2)) {
		return active(cached)
	}
	pol, err := s.fetchOnce(ctx, domain, id)
	if err != nil {
		s.o.Log.Warn("mta-sts policy fetch failed", "domain", domain, "cached", cached != nil, "err", err)
		return active(cached)
	}
	return active(pol)
}

func active(p *STSPolicy) *STSPolicy {
	if p == nil || p.Mode == STSNone {
		return nil
	}
	return p
}

// cached returns the unexpired cached policy of domain, from memory or
// the store.
func (s *STS) cached(domain string, now time.Time) *STSPolicy {
	s.mu.Lock()
	p, ok := s.mem[domain]
	s.mu.Unlock()
	if !ok && s.o.Store != nil {
		if b, err := s.o.Store.Get(domain); err == nil {
			var sp STSPolicy
			if json.Unmarshal(b, &sp) == nil && sp.Domain == domain {
				p = &sp
				s.remember(domain, p)
			}
		}
	}
	if p == nil || !now.Before(p.Expires()) {
		return nil
	}
	return p
}

func (s *STS) remember(domain string, p *STSPolicy) {
	s.mu.Lock()
	if len(s.mem) >= memLimit {
		clear(s.mem)
	}
	s.mem[domain] = p
	s.mu.Unlock()
}

// lookupID returns the id of the domain's STS TXT record (§3.1): exactly
// one record starting with "v=STSv1".
func (s *STS) lookupID(ctx context.Context, domain string) (string, error) {
	txts, err := s.o.TXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, t := range txts {
		if !strings.HasPrefix(t, "v=STSv1;") && t != "v=STSv1" {
			continue
		}
		id := ""
		for _, f := range strings.Split(t, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			if k == "id" {
				id = v
			}
		}
		if id == "" || len(id) > 32 {
			return "", fmt.Errorf("_mta-sts.%s: bad id in %q: %w", domain, t, resolver.ErrNotFound)
		}
		ids = append(ids, id)
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("_mta-sts.%s: %d STSv1 records: %w", domain, len(ids), resolver.ErrNotFound)
	}
	return ids[0], nil
}

// fetchOnce fetches the policy of domain, one fetch per domain at a time.
func (s *STS) fetchOnce(ctx context.Context, domain, id string) (*STSPolicy, error) {
	s.mu.Lock()
	if fl, ok := s.failed[domain]; ok && fl.id == id && s.o.Clock().Before(fl.until) {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w (not retried before %s)", fl.err, fl.until.Format(time.RFC3339))
	}
	f, joined := s.flights[domain]
	if !joined {
		f = &stsFlight{done: make(chan struct{})}
		s.flights[domain] = f
	}
	s.mu.Unlock()
	if !joined {
		f.pol, f.err = s.fetch(ctx, domain, id)
		if f.err == nil {
			s.store(domain, f.pol)
		}
		s.mu.Lock()
		if f.err != nil {
			if len(s.failed) >= memLimit {
				clear(s.failed)
			}
			s.failed[domain] = stsFailure{id: id, until: s.o.Clock().Add(FailBackoff), err: f.err}
		} else {
			delete(s.failed, domain)
		}
		delete(s.flights, domain)
		s.mu.Unlock()
		close(f.done)
	}
	select {
	case <-f.done:
		return f.pol, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *STS) store(domain string, p *STSPolicy) {
	s.remember(domain, p)
	if s.o.Store == nil {
		return
	}
	b, _ := json.Marshal(p)
	if err := s.o.Store.Set(domain, b); err != nil {
		s.o.Log.Warn("mta-sts policy not persisted", "domain", domain, "err", err)
	}
}

// PolicyURL is where the policy of domain is fetched from.
func PolicyURL(domain string) string {
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

func (s *STS) fetch(ctx context.Context, domain, id string) (*STSPolicy, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.FetchTimeout)
	defer cancel()
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, PolicyURL(domain), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d (redirects are not followed)", PolicyURL(domain), resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("%s: media type %q, want text/plain", PolicyURL(domain), resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PolicyURL(domain), err)
	}
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("%s: policy larger than %d bytes", PolicyURL(domain), MaxPolicySize)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return nil, &delivery.ReportError{Type: delivery.ResultSTSPolicyInvalid, Err: fmt.Errorf("%s: %w", PolicyURL(domain), err)}
	}
	p.Domain, p.ID, p.Fetched = domain, id, s.o.Clock()
	return p, nil
}

// ParsePolicy reads a policy body (RFC 8461 §3.2).
func ParsePolicy(b []byte) (*STSPolicy, error) {
	p := &STSPolicy{}
	var version, age string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), MaxPolicySize+1)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("policy line %q is not key: value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			p.Mode = v
		case "max_age":
			age = v
		case "mx":
			p.MX = append(p.MX, normHost(v))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("policy version %q, want STSv1", version)
	}
	switch p.Mode {
	case STSEnforce, STSTesting:
		if len(p.MX) == 0 {
			return nil, fmt.Errorf("policy mode %s lists no mx", p.Mode)
		}
	case STSNone:
	default:
		return nil, fmt.Errorf("policy mode %q, want enforce, testing or none", p.Mode)
	}
	n, err := strconv.ParseUint(age, 10, 32)
	if err != nil || len(age) > 10 {
		return nil, fmt.Errorf("policy max_age %q is not a number of seconds", age)
	}
	p.MaxAge = min(time.Duration(n)*time.Second, maxSTSAge)
	return p, nil
}

// FetchFailure returns the TLSRPT result type of the last failed policy
// fetch for domain while it is not retried (FailBackoff):
// sts-policy-invalid for a body that is not a policy, sts-webpki-invalid
// for a certificate the policy host failed with, sts-policy-fetch-error
// for the rest; "" when no fetch failed.
func (s *STS) FetchFailure(domain string) string {
	domain = normHost(domain)
	s.mu.Lock()
	f, ok := s.failed[domain]
	s.mu.Unlock()
	if !ok || !s.o.Clock().Before(f.until) {
		return ""
	}
	var re *delivery.ReportError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(f.err, &re):
		return re.Type
	case errors.As(f.err, &cv):
		return delivery.ResultSTSWebPKIInvalid
	}
	return delivery.ResultSTSPolicyFetchError
}
