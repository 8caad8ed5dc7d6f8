package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/central/api"
	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/web"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

// env is a whole central HTTP surface (web + API) on a real SQLite store
// with a real loopback DNS server.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	st    store.Store
	reg   *registration.Service
	dns   *dnstest.Server
	clock *clock
	opts  web.Options
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEnv(t *testing.T, proxy *auth.Proxy) *env {
	t.Helper()
	return newEnvWith(t, func(o *web.Options) { o.Proxy = proxy })
}

// newEnvWith is newEnv with web options changed by set. The form's rate
// limits are generous unless set lowers them (every test browser has the
// same address).
func newEnvWith(t *testing.T, set func(*web.Options)) *env {
	t.Helper()
	d := dnstest.Start(t)
	d.AddA("scanner.dept.example.edu", "10.1.2.3")
	d.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	d.AddA("copier.dept.example.edu", "10.1.2.9")
	d.AddPTR("10.1.2.4", "copier.dept.example.edu")
	d.AddA("printer.dept.example.edu", "10.1.2.5")
	d.AddPTR("10.1.2.5", "printer.dept.example.edu")
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "10.9.9.9")
	r, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Now()}
	e := &env{t: t, st: st, dns: d, clock: clk}
	e.reg = &registration.Service{Store: st, DNS: r, Period: 365 * 24 * time.Hour, DefaultMessagesPerHour: 100, DefaultRecipientsPerHour: 200,
		AffiliatedDomains: []string{"example.edu"}}
	o := web.Options{Registry: e.reg, Store: st, SessionLifetime: time.Hour, Clock: clk.Now,
		SubmitLimit: auth.NewRateLimit(1000, time.Hour, clk.Now), CheckLimit: auth.NewRateLimit(1000, time.Hour, clk.Now),
		MaxPendingPerContact: 100, MaxPendingPerAddress: 100}
	set(&o)
	e.opts = o
	w, err := web.New(o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(api.Options{Registry: e.reg, Store: st, Throttle: o.Throttle, Proxy: o.Proxy, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(app.Handler(nil, a, w))
	t.Cleanup(e.srv.Close)
	e.reg.BaseURL = e.srv.URL
	return e
}

// browser is a client with its own cookie jar (one person).
type browser struct {
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type resp struct {
	code int
	body string
	loc  string
	hdr  http.Header
}

func (b *browser) do(req *http.Request) resp {
	b.e.t.Helper()
	r, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(body), r.Header.Get("Location"), r.Header}
}

func (b *browser) get(path string) resp {
	req, _ := http.NewRequest("GET", b.e.srv.URL+path, nil)
	return b.do(req)
}

func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// csrf makes sure the browser has a CSRF cookie and returns it.
func (b *browser) csrf() string {
	if v := b.cookie(web.CSRFCookie); v != "" {
		return v
	}
	b.get("/")
	return b.cookie(web.CSRFCookie)
}

// post submits a form with the browser's CSRF token (unless the form
// sets "csrf" itself).
func (b *browser) post(path string, form url.Values) resp {
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf())
	}
	req, _ := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func goodForm() url.Values {
	return url.Values{
		"name": {"scanner.dept.example.edu"}, "ips": {"10.1.2.3"}, "owner": {"Ada Lovelace"}, "department": {"Physics"},
		"contact_email": {"ada@dept.example.edu"}, "senders": {"scanner@dept.example.edu"}, "purpose": {"scan to mail"}, "op": {"submit"},
	}
}

// addStaff creates a staff user and returns a logged-in browser.
func (e *env) staff(name string) *browser {
	e.t.Helper()
	hash, err := auth.HashPasswordWith(auth.Params{Memory: 64, Time: 1, Threads: 1}, "password-of-"+name)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.CreateUser(context.Background(), store.User{Name: name, PasswordHash: hash}); err != nil {
		e.t.Fatal(err)
	}
	b := e.browser()
	r := b.post("/staff/login", url.Values{"username": {name}, "password": {"password-of-" + name}, "next": {"/staff"}})
	if r.code != http.StatusSeeOther || r.loc != "/staff" {
		e.t.Fatalf("login: %d %s", r.code, r.loc)
	}
	return b
}

func must(t *testing.T, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}

func contains(t *testing.T, r resp, code int, texts ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body:\n%s", r.code, code, r.body)
	}
	for _, s := range texts {
		if !strings.Contains(r.body, s) {
			t.Errorf("page lacks %q; body:\n%s", s, r.body)
		}
	}
}
