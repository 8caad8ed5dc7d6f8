package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/api"
	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/resolver"
)

type env struct {
	t     *testing.T
	srv   *httptest.Server
	st    store.Store
	token string
}

func newEnv(t *testing.T) *env {
	d := dnstest.Start(t)
	d.AddA("scanner.dept.example.edu", "10.1.2.3")
	d.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "10.9.9.9")
	r, err := resolver.New(resolver.Options{Servers: []string{d.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	changed := 0
	reg := &registration.Service{Store: st, DNS: r, BaseURL: "http://central.test", Period: time.Hour * 24 * 365, DefaultMessagesPerHour: 10,
		DefaultRecipientsPerHour: 20, Changed: func() { changed++ }}
	// A generous throttle: TestAuth tries many bad tokens from one address
	// (central/web TestAPITokens checks the real limits through the same handler).
	a, err := api.New(api.Options{Registry: reg, Store: st,
		Throttle: auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 100, Backoff: time.Second, LockAfter: 100, LockFor: time.Minute}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	st.CreateUser(context.Background(), store.User{Name: "robot"})
	tok, hash := auth.NewToken()
	st.CreateAPIToken(context.Background(), store.APIToken{Hash: hash, User: "robot"})
	return &env{t: t, srv: srv, st: st, token: tok}
}

type result struct {
	code int
	m    map[string]any
	raw  string
}

func (e *env) call(method, path, body string, token ...string) result {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	tok := e.token
	if len(token) > 0 {
		tok = token[0]
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	res := result{code: r.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &res.m)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("%s %s: content type %q", method, path, ct)
	}
	return res
}

func (e *env) expect(r result, code int, texts ...string) {
	e.t.Helper()
	if r.code != code {
		e.t.Fatalf("status %d, want %d: %s", r.code, code, r.raw)
	}
	for _, s := range texts {
		if !strings.Contains(r.raw, s) {
			e.t.Errorf("answer lacks %q: %s", s, r.raw)
		}
	}
}

const good = `{"name":"Scanner.dept.example.edu","ips":["10.1.2.3"],"owner":"Ada","department":"Physics","contact_email":"ada@dept.example.edu",
"senders":["scanner@dept.example.edu"],"purpose":"scan to mail"}`

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/api/v1/devices", "/api/v1/edges", "/api/v1/events", "/api/v1/audit", "/api/v1/allowlist", "/api/v1/devices/x.example.edu"} {
		e.expect(e.call("GET", p, "", ""), 401, "API token is required")
		e.expect(e.call("GET", p, "", "wrong"), 401, "invalid API token")
	}
	e.expect(e.call("POST", "/api/v1/devices", good, ""), 401)
	e.expect(e.call("POST", "/api/v1/devices/x.example.edu/approve", "", "wrong"), 401)
	n, _ := e.st.CountDevices(context.Background())
	if len(n) != 0 {
		t.Error("unauthenticated registration stored")
	}
	e.expect(e.call("GET", "/api/v1/nothing", ""), 404, "no such API endpoint")
}

func TestDevices(t *testing.T) {
	e := newEnv(t)
	e.expect(e.call("POST", "/api/v1/devices", `{"name":`), 400, "bad JSON")
	e.expect(e.call("POST", "/api/v1/devices", `{"nme":"x"}`), 400, "unknown field")
	bad := map[string]string{
		"name":          strings.Replace(good, "Scanner.dept.example.edu", "scanner", 1),
		"ips":           strings.Replace(good, `"10.1.2.3"`, `"10.1.2"`, 1),
		"owner":         strings.Replace(good, `"Ada"`, `""`, 1),
		"contact_email": strings.Replace(good, `"ada@dept.example.edu"`, `"ada"`, 1),
		"senders":       strings.Replace(good, `["scanner@dept.example.edu"]`, `["x@nowhere.example.org"]`, 1),
		"purpose":       strings.Replace(good, `"scan to mail"`, `""`, 1),
	}
	for field, body := range bad {
		r := e.call("POST", "/api/v1/devices", body)
		e.expect(r, 422, "invalid registration")
		if f, _ := r.m["fields"].(map[string]any); f[field] == nil || len(f) != 1 {
			t.Errorf("%s: fields %v", field, r.m["fields"])
		}
	}
	r := e.call("POST", "/api/v1/devices", good)
	e.expect(r, 201, `"name": "scanner.dept.example.edu"`, `"status": "pending"`, `"fcrdns_ok": true`, `"confirmed": false`, `"messages_per_hour": 10`)
	e.expect(e.call("POST", "/api/v1/devices", good), 422, "already registered")

	e.expect(e.call("GET", "/api/v1/devices", ""), 200, "scanner.dept.example.edu")
	e.expect(e.call("GET", "/api/v1/devices?status=pending&q=ada", ""), 200, "scanner.dept.example.edu")
	r = e.call("GET", "/api/v1/devices?status=active", "")
	e.expect(r, 200)
	if devs := r.m["devices"].([]any); len(devs) != 0 {
		t.Errorf("active filter: %v", devs)
	}
	e.expect(e.call("GET", "/api/v1/devices?status=bogus", ""), 400, "unknown status")
	e.expect(e.call("GET", "/api/v1/devices?limit=x", ""), 400, "limit must be")

	r = e.call("GET", "/api/v1/devices/scanner.dept.example.edu", "")
	e.expect(r, 200, `"action": "register"`, `"actor": "api:robot"`, "confirmation_links", "http://central.test/confirm?token=")
	e.expect(e.call("GET", "/api/v1/devices/none.example.edu", ""), 404)

	dev := "/api/v1/devices/scanner.dept.example.edu/"
	e.expect(e.call("POST", dev+"approve", ""), 409, "not every sender address is confirmed")
	e.expect(e.call("POST", dev+"approve", `{"force":true,"reason":"checked"}`), 200, `"status": "active"`)
	e.expect(e.call("POST", dev+"suspend", `{}`), 422, "reason is required")
	e.expect(e.call("POST", dev+"suspend", `{"reason":"ndr loop"}`), 200, `"status": "suspended"`, `"status_reason": "ndr loop"`)
	e.expect(e.call("POST", dev+"deny", `{"reason":"x"}`), 409, "not allowed")
	e.expect(e.call("POST", dev+"explode", `{"reason":"x"}`), 404, "unknown action")
	e.expect(e.call("POST", dev+"reinstate", `{"reason":"ok","bogus":1}`), 400)
	e.expect(e.call("POST", dev+"reinstate", ""), 200, `"status": "active"`)
	e.expect(e.call("POST", "/api/v1/devices/none.example.edu/approve", `{"force":true}`), 404)

	e.expect(e.call("PUT", dev+"limits", `{"messages_per_hour":5}`), 422, "both limits")
	e.expect(e.call("PUT", dev+"limits", `{"messages_per_hour":-5,"recipients_per_hour":1}`), 422, "between")
	e.expect(e.call("PUT", dev+"limits", `{"messages_per_hour":5,"recipients_per_hour":6}`), 200, `"messages_per_hour": 5`, `"recipients_per_hour": 6`)
	e.expect(e.call("PUT", "/api/v1/devices/none.example.edu/limits", `{"messages_per_hour":5,"recipients_per_hour":6}`), 404)

	e.expect(e.call("POST", dev+"fcrdns", ""), 200, `"ok": true`, "forward lookup matches")
	e.expect(e.call("POST", "/api/v1/devices/none.example.edu/fcrdns", ""), 404)
	e.expect(e.call("POST", dev+"confirmations", ""), 200, `"sent": true`)

	r = e.call("GET", "/api/v1/allowlist", "")
	e.expect(r, 200, `"name": "scanner.dept.example.edu"`, `"status": "active"`, `"senders": [`)
	if v, _ := r.m["version"].(float64); v < 5 {
		t.Errorf("allowlist version %v after approve, suspend, reinstate, limits", r.m["version"])
	}
	e.expect(e.call("GET", "/api/v1/audit?device=scanner.dept.example.edu", ""), 200, `"action": "suspend"`, `"reason": "ndr loop"`)
	e.expect(e.call("GET", "/api/v1/audit?limit=-1", ""), 400)
}

func TestEdgesAndEvents(t *testing.T) {
	e := newEnv(t)
	e.expect(e.call("POST", "/api/v1/edges", `{"id":"Bad/Id"}`), 422, "only a-z")
	r := e.call("POST", "/api/v1/edges", `{"id":"bldg-12","name":"Building 12","site":"North"}`)
	e.expect(r, 201, `"enrolment_token"`)
	tok, _ := r.m["enrolment_token"].(string)
	if _, err := e.st.RedeemEnrolment(context.Background(), auth.HashToken(tok)); err != nil {
		t.Errorf("token does not redeem: %v", err)
	}
	e.expect(e.call("POST", "/api/v1/edges", `{"id":"bldg-12"}`), 409)
	e.expect(e.call("POST", "/api/v1/edges/bldg-12/enrolment", ""), 200, `"enrolment_token"`)
	e.expect(e.call("POST", "/api/v1/edges/nope/enrolment", ""), 404)
	e.expect(e.call("GET", "/api/v1/edges", ""), 200, `"id": "bldg-12"`, `"allowlist_version": 1`, `"enrolled": false`)

	e.st.AddEvent(context.Background(), event.Event{ID: "e1", Edge: "bldg-12", Time: time.Now(), Kind: event.NDR, Device: "scanner.dept.example.edu", Reason: "5.1.1"})
	e.st.AddEvent(context.Background(), event.Event{ID: "e2", Edge: "bldg-1", Time: time.Now(), Kind: event.RateLimit, Device: "other.example.edu"})
	r = e.call("GET", "/api/v1/events?edge=bldg-12", "")
	e.expect(r, 200, `"id": "e1"`)
	if strings.Contains(r.raw, `"e2"`) {
		t.Error("edge filter")
	}
	e.expect(e.call("GET", "/api/v1/events?kind=rate-limit", ""), 200, `"id": "e2"`)
	e.expect(e.call("GET", "/api/v1/events?limit=abc", ""), 400)
}
