package tlspolicy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/edge/tlspolicy"
	"github.com/postern/postern/shared/testkit"
)

// stsServer is a loopback HTTPS server standing for mta-sts.<domain>,
// with a certificate from the world's CA.
type stsServer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	body     string
	status   int
	ctype    string
	requests atomic.Int64
}

func (w *world) stsServer(body string) *stsServer {
	s := &stsServer{body: body, status: 200, ctype: "text/plain; charset=utf-8"}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		body, status, ctype := s.body, s.status, s.ctype
		s.mu.Unlock()
		if r.URL.Path != "/.well-known/mta-sts.txt" || r.Host != "mta-sts.example.com" {
			http.NotFound(rw, r)
			return
		}
		if status == http.StatusFound && r.URL.Query().Get("moved") == "" {
			// Following this would find a good policy.
			http.Redirect(rw, r, "https://mta-sts.example.com/.well-known/mta-sts.txt?moved=1", status)
			return
		}
		if r.URL.Query().Get("moved") != "" {
			status = http.StatusOK
		}
		rw.Header().Set("Content-Type", ctype)
		rw.WriteHeader(status)
		rw.Write([]byte(body))
	}))
	s.srv.TLS = w.leaf("mta-sts.example.com").Config
	s.srv.StartTLS()
	w.t.Cleanup(s.srv.Close)
	return s
}

func (s *stsServer) set(status int, body string) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

// client is the edge's HTTP client pointed at the loopback server: the
// test CA as roots, every name dialled to the server.
func (s *stsServer) client(ca *x509.CertPool) *http.Client {
	addr := s.srv.Listener.Addr().String()
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
	}}
}

func (w *world) sts(s *stsServer, store tlspolicy.KV, clock func() time.Time) *tlspolicy.STS {
	w.t.Helper()
	sts, err := tlspolicy.NewSTS(tlspolicy.STSOptions{TXT: w.res.LookupTXT, HTTPClient: s.client(w.ca.Pool), Store: store,
		FetchTimeout: worldFetchTimeout, Clock: clock})
	if err != nil {
		w.t.Fatal(err)
	}
	return sts
}

func openSpool(t *testing.T, dir string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

const enforceMX2 = "version: STSv1\r\nmode: enforce\r\nmx: mx2.example.com\r\nmax_age: 86400\r\n"

// enforce: the preferred MX is not in the policy and is not used; the
// listed one is, with a certificate valid for its name.
func TestSTSEnforceUsesOnlyListedMX(t *testing.T) {
	w := newWorld(t)
	s1 := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	s2 := w.mx(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=20261201;")
	srv := w.stsServer(enforceMX2)
	sts := w.sts(srv, nil, nil)
	out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
	wantDelivered(t, out, delivery.VerifMTASTS)
	noSessions(t, s1, "mx1 is not in the MTA-STS policy")
	if len(s2.Messages()) != 1 {
		t.Error("mx2 did not get the message")
	}
	// Without the TXT record (and no cache) there is no policy.
	w2 := newWorld(t)
	w2.mx(10, "mx1.example.com", "127.0.0.2", w2.leaf("mx1.example.com"))
	wantDelivered(t, w2.deliver(w2.policy(func(o *tlspolicy.Options) { o.STS = w2.sts(w2.stsServer(enforceMX2), nil, nil) })), delivery.VerifUnverified)
}

// enforce with an expired certificate (or one for another name) defers.
func TestSTSEnforceBadCertificateDefers(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	s := w.mx(10, "mx2.example.com", "127.0.0.2", w.expired("mx2.example.com"))
	sts := w.sts(w.stsServer(enforceMX2), nil, nil)
	wantDeferred(t, w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts })), "expired")
	noSessions(t, s, "an expired certificate under MTA-STS enforce")
}

// testing: delivered anyway, the failure recorded in the outcome.
func TestSTSTestingDeliversAndRecords(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", w.expired("mx1.example.com"))
	sts := w.sts(w.stsServer("version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 3600\n"), nil, nil)
	out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
	wantDelivered(t, out, delivery.VerifUnverified)
	if !strings.Contains(out.TLSNote, "mta-sts testing") || !strings.Contains(out.TLSNote, "expired") {
		t.Errorf("TLS note %q does not record the failure", out.TLSNote)
	}
	if len(s.Messages()) != 1 {
		t.Error("not delivered under testing mode")
	}
	// A valid certificate under testing counts as MTA-STS verified.
	w2 := newWorld(t)
	w2.ca = w.ca
	w2.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	w2.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	sts2 := w2.sts(w2.stsServer("version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 3600\n"), nil, nil)
	out = w2.deliver(w2.policy(func(o *tlspolicy.Options) { o.STS = sts2 }))
	wantDelivered(t, out, delivery.VerifMTASTS)
	if out.TLSNote != "" {
		t.Errorf("note %q for a passing check", out.TLSNote)
	}
}

// A policy fetch that fails leaves the cached policy in force, also after
// a restart (the cache is in the spool's KV).
func TestSTSCachedPolicyWhenFetchFails(t *testing.T) {
	w := newWorld(t)
	s1 := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.mx(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	srv := w.stsServer(enforceMX2)
	dir := filepath.Join(t.TempDir(), "spool")
	sp := openSpool(t, dir)
	clock := testkit.NewClock()
	sts := w.sts(srv, sp.KV("mtasts/"), clock.Now)
	if pol := sts.Policy(t.Context(), "example.com"); pol == nil || pol.Mode != "enforce" {
		t.Fatalf("first fetch: %+v", pol)
	}
	// The domain announces a new policy, but its server fails: the
	// cached one applies.
	w.dns.Remove("_mta-sts.example.com")
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=2;")
	srv.set(http.StatusInternalServerError, "")
	wantDelivered(t, w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts })), delivery.VerifMTASTS)
	noSessions(t, s1, "the cached policy excludes mx1")

	// Reboot: a new STS over the same spool, the server still failing,
	// the TXT record gone (an attacker blocking both).
	sp.Close()
	sp = openSpool(t, dir)
	defer sp.Close()
	w.dns.Remove("_mta-sts.example.com")
	sts = w.sts(srv, sp.KV("mtasts/"), clock.Now)
	before := srv.requests.Load()
	pol := sts.Policy(t.Context(), "example.com")
	if pol == nil || pol.ID != "1" || !pol.Match("mx2.example.com") || pol.Match("mx1.example.com") {
		t.Fatalf("after restart: %+v, want the persisted policy id 1", pol)
	}
	if srv.requests.Load() != before {
		t.Error("fetched without a TXT record")
	}
	// Past max_age the cached policy is gone.
	clock.Advance(86401 * time.Second)
	if pol := sts.Policy(t.Context(), "example.com"); pol != nil {
		t.Errorf("expired policy still applies: %+v", pol)
	}
}

// A cached policy is refreshed before max_age runs out, and when the TXT
// id changes; not on every delivery.
func TestSTSRefreshBeforeMaxAge(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	srv := w.stsServer("version: STSv1\nmode: enforce\nmx: mx2.example.com\nmax_age: 1000\n")
	clock := testkit.NewClock()
	sts := w.sts(srv, nil, clock.Now)
	for range 3 {
		sts.Policy(t.Context(), "example.com")
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d fetches for 3 lookups, want 1", n)
	}
	clock.Advance(400 * time.Second)
	sts.Policy(t.Context(), "example.com")
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("refetched at 40%% of max_age")
	}
	clock.Advance(200 * time.Second)
	srv.set(200, "version: STSv1\nmode: enforce\nmx: mx3.example.com\nmax_age: 1000\n")
	if pol := sts.Policy(t.Context(), "example.com"); srv.requests.Load() != 2 || pol == nil || !pol.Match("mx3.example.com") {
		t.Errorf("not refreshed past half of max_age: %d fetches, %+v", srv.requests.Load(), pol)
	}
	w.dns.Remove("_mta-sts.example.com")
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=2;")
	sts.Policy(t.Context(), "example.com")
	if n := srv.requests.Load(); n != 3 {
		t.Errorf("a new id did not cause a fetch (%d fetches)", n)
	}
}

// Bad responses are no policy: redirect, wrong media type, oversized
// body, a server whose certificate is not for mta-sts.<domain>.
func TestSTSFetchRefusesBadResponses(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	srv := w.stsServer(enforceMX2)
	sts := w.sts(srv, nil, nil)
	if sts.Policy(t.Context(), "example.com") == nil {
		t.Fatal("the good policy was not taken")
	}
	cases := []struct {
		name  string
		setup func()
	}{
		{"redirect", func() { srv.set(http.StatusFound, enforceMX2) }},
		{"media type", func() { srv.set(200, enforceMX2); srv.mu.Lock(); srv.ctype = "text/html"; srv.mu.Unlock() }},
		{"too big", func() {
			srv.mu.Lock()
			srv.ctype = "text/plain"
			srv.mu.Unlock()
			srv.set(200, enforceMX2+strings.Repeat("x: y\n", tlspolicy.MaxPolicySize/5+1))
		}},
		{"bad policy", func() { srv.set(200, "version: STSv1\nmode: enforce\nmax_age: 10\n") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			fresh := w.sts(srv, nil, nil) // no cache to fall back on
			if pol := fresh.Policy(t.Context(), "example.com"); pol != nil {
				t.Errorf("policy %+v taken from a bad response", pol)
			}
		})
	}
	// A certificate for another name: no policy.
	w2 := newWorld(t)
	w2.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	bad := w2.stsServer(enforceMX2)
	bad.srv.TLS.Certificates = w2.leaf("www.example.com").Config.Certificates
	if pol := w2.sts(bad, nil, nil).Policy(t.Context(), "example.com"); pol != nil {
		t.Errorf("policy %+v from a server with the wrong certificate", pol)
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := tlspolicy.ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\nfuture: ignored\r\n"))
	if err != nil || p.Mode != "enforce" || len(p.MX) != 2 || p.MaxAge != 604800*time.Second {
		t.Fatalf("%+v, %v", p, err)
	}
	for _, tc := range []struct {
		host string
		want bool
	}{{"mail.example.com", true}, {"MAIL.example.com.", true}, {"a.example.net", true}, {"example.net", false}, {"a.b.example.net", false}, {"x.example.com", false}} {
		if p.Match(tc.host) != tc.want {
			t.Errorf("Match(%q) = %v", tc.host, !tc.want)
		}
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a.example\nmax_age: 1\n",                     // no version
		"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",     // wrong version
		"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",      // bad mode
		"version: STSv1\nmode: testing\nmax_age: 1\n",                    // no mx
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",    // bad age
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\njunk", // not key: value
	} {
		if _, err := tlspolicy.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// A failing policy server is asked once per FailBackoff, not on every
// delivery attempt; a new TXT id is fetched at once.
func TestSTSFailedFetchBacksOff(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	srv := w.stsServer(enforceMX2)
	srv.set(http.StatusNotFound, "")
	clock := testkit.NewClock()
	sts := w.sts(srv, nil, clock.Now)
	for range 3 {
		if sts.Policy(t.Context(), "example.com") != nil {
			t.Fatal("policy from a 404")
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d fetches, want 1 within the backoff", n)
	}
	srv.set(200, enforceMX2)
	clock.Advance(tlspolicy.FailBackoff)
	if sts.Policy(t.Context(), "example.com") == nil || srv.requests.Load() != 2 {
		t.Errorf("not fetched again after the backoff (%d fetches)", srv.requests.Load())
	}
}

// testing mode: a handshake that fails falls back to plaintext as
// opportunistic TLS does, and the failure is recorded.
func TestSTSTestingRecordsHandshakeFailure(t *testing.T) {
	w := newWorld(t)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	leaf := w.leaf("mx1.example.com")
	leaf.Config.MaxVersion = tls.VersionTLS11 // the edge wants 1.2 or better
	s := w.mx(10, "mx1.example.com", "127.0.0.2", leaf)
	sts := w.sts(w.stsServer("version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 3600\n"), nil, nil)
	out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
	wantDelivered(t, out, delivery.VerifPlain)
	if !strings.Contains(out.TLSNote, "STARTTLS") {
		t.Errorf("TLS note %q does not record the failed STARTTLS", out.TLSNote)
	}
	if m := s.Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("sink messages %+v, want one in plaintext", m)
	}
}
