package web_test

import (
	"bytes"
	"context"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/web"
)

// syncBuf is a log sink safe for concurrent handlers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func login(b *browser, user, pw string) resp {
	return b.post("/staff/login", url.Values{"username": {user}, "password": {pw}, "next": {"/staff"}})
}

func TestLoginThrottle(t *testing.T) {
	logs := &syncBuf{}
	e := newEnvWith(t, func(o *web.Options) {
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 3, Backoff: time.Minute, LockAfter: 5, LockFor: 15 * time.Minute}, o.Clock)
		o.Log = slog.New(slog.NewTextHandler(logs, nil))
	})
	e.staff("alice")
	e.opts.Throttle.Reset("ip:127.0.0.1", "user:alice") // the helper's own login
	b := e.browser()
	for range 3 {
		contains(t, login(b, "alice", "guess"), 401, "Wrong user name or password")
	}
	// Beyond the free attempts even the right password is refused until the
	// backoff has passed, without hashing.
	r := login(b, "alice", "password-of-alice")
	contains(t, r, 429, "Too many failed logins", "Try again in a minute")
	must(t, r.hdr.Get("Retry-After") == "60", "Retry-After %q", r.hdr.Get("Retry-After"))
	e.clock.Add(time.Minute)
	must(t, login(b, "alice", "password-of-alice").code == http.StatusSeeOther, "right password after the backoff refused")

	// Per user name: guesses against alice from many addresses (through a
	// trusted proxy) lock the name, not the addresses.
	e.opts.Throttle.Reset("ip:127.0.0.1")
	e2 := newEnvWith(t, func(o *web.Options) {
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 3, Backoff: time.Minute, LockAfter: 5, LockFor: 15 * time.Minute}, o.Clock)
		o.Proxy, _ = auth.NewProxy("", []string{"127.0.0.1"})
	})
	e2.staff("alice")
	e2.opts.Throttle.Reset("ip:127.0.0.1", "user:alice")
	from := func(ip, user, pw string) resp {
		f := url.Values{"username": {user}, "password": {pw}, "csrf": {b.csrf()}}
		bb := e2.browser()
		bb.c.Jar.SetCookies(mustURL(e2.srv.URL), []*http.Cookie{{Name: web.CSRFCookie, Value: f.Get("csrf")}})
		req, _ := http.NewRequest("POST", e2.srv.URL+"/staff/login", strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", ip)
		return bb.do(req)
	}
	codes := []int{}
	for i := range 5 {
		codes = append(codes, from("198.51.100."+string(rune('1'+i)), "alice", "guess").code)
	}
	must(t, codes[0] == 401 && codes[2] == 401 && codes[3] == 429, "distributed guesses against one name: %v", codes)
	// Per address: one address guessing many names.
	codes = codes[:0]
	for _, u := range []string{"u1", "u2", "u3", "u4"} {
		codes = append(codes, from("203.0.113.9", u, "guess").code)
	}
	must(t, codes[2] == 401 && codes[3] == 429, "one address, many names: %v", codes)
	must(t, from("203.0.113.10", "bob", "x").code == 401, "an unrelated address and name were throttled")

	// No typed secret reaches the log: a password typed into the name
	// field of a failed login is not logged.
	login(e.browser(), "Secret-Typed-In-Name-Field", "x")
	must(t, !strings.Contains(logs.String(), "Secret-Typed-In-Name-Field"), "unknown user name logged:\n%s", logs.String())
	must(t, !strings.Contains(logs.String(), "password-of-alice") && !strings.Contains(logs.String(), "guess"), "password logged:\n%s", logs.String())
	must(t, strings.Contains(logs.String(), "staff login failed"), "failed login not logged")
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

// TestLoginHashBound: with every hash slot taken, a login is answered 503
// at once and hashes nothing; a flood of wrong passwords never succeeds.
func TestLoginHashBound(t *testing.T) {
	e := newEnvWith(t, func(o *web.Options) {
		o.Hashes = auth.NewHashes(2)
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 1000, Backoff: time.Second, LockAfter: 1000, LockFor: time.Minute}, o.Clock)
	})
	e.staff("alice")
	ctx := context.Background()
	for range 2 {
		must(t, e.opts.Hashes.Acquire(ctx, 0), "free slot refused")
	}
	r := login(e.browser(), "alice", "password-of-alice")
	contains(t, r, 503, "busy")
	must(t, r.hdr.Get("Retry-After") == "1", "Retry-After %q", r.hdr.Get("Retry-After"))
	e.opts.Hashes.Release()
	e.opts.Hashes.Release()
	must(t, login(e.browser(), "alice", "password-of-alice").code == http.StatusSeeOther, "login after the slots were freed")

	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{}
	for range 40 {
		wg.Go(func() {
			b := e.browser()
			c := login(b, "alice", "wrong").code
			mu.Lock()
			seen[c]++
			mu.Unlock()
		})
	}
	wg.Wait()
	must(t, seen[http.StatusSeeOther] == 0 && seen[401]+seen[503] == 40, "flood answers: %v", seen)
}

// TestAPITokenThrottle: failed tokens from one address are throttled
// (shared with the login throttle), and expired or read-only tokens are
// refused as they should be.
func TestAPITokens(t *testing.T) {
	e := newEnvWith(t, func(o *web.Options) {
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 3, Backoff: time.Minute, LockAfter: 5, LockFor: 15 * time.Minute}, o.Clock)
	})
	s := e.staff("alice")
	e.opts.Throttle.Reset("ip:127.0.0.1", "user:alice")
	api := func(method, path, tok, body string) resp {
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return s.do(req)
	}

	// Console: create a read-only token (shown once), list, use, revoke.
	r := s.post("/staff/tokens", url.Values{"label": {"monitoring"}, "scope": {"read-only"}, "days": {"30"}})
	contains(t, r, 200, "Token created", "monitoring", "read-only")
	ro := regexp.MustCompile(`<pre>([A-Za-z0-9_-]{43})</pre>`).FindStringSubmatch(r.body)
	must(t, ro != nil, "no token shown")
	id := auth.HashToken(ro[1])[:16]
	must(t, !strings.Contains(s.get("/staff/tokens").body, ro[1]), "token shown again on the list")
	contains(t, api("GET", "/api/v1/devices", ro[1], ""), 200, `"devices"`)
	contains(t, api("POST", "/api/v1/devices", ro[1], `{}`), 403, "read-only")
	contains(t, api("POST", "/api/v1/tokens", ro[1], `{"scope":"read-write"}`), 403, "read-only")
	contains(t, s.post("/staff/tokens", url.Values{"scope": {"admin"}}), 422, "scope")
	contains(t, s.post("/staff/tokens", url.Values{"scope": {"read-only"}, "days": {"9999"}}), 422, "expiry")
	contains(t, s.post("/staff/tokens", url.Values{"scope": {"read-only"}, "label": {"a\r\nb"}}), 422, "control characters")

	// API: a read-write token makes, lists and revokes tokens; a minted
	// token never outlives the one that made it.
	r = s.post("/staff/tokens", url.Values{"label": {"ci"}, "scope": {"read-write"}, "days": {"2"}})
	rw := regexp.MustCompile(`<pre>([A-Za-z0-9_-]{43})</pre>`).FindStringSubmatch(r.body)[1]
	r = api("POST", "/api/v1/tokens", rw, `{"label":"child","scope":"read-only","expires_in":"2000h"}`)
	contains(t, r, 201, `"token"`, `"scope": "read-only"`)
	child, _ := e.st.ListAPITokens(context.Background(), "alice")
	var childTok, rwTok store.APIToken
	for _, tk := range child {
		switch tk.Label {
		case "child":
			childTok = tk
		case "ci":
			rwTok = tk
		}
	}
	must(t, !childTok.ExpiresAt.After(rwTok.ExpiresAt), "minted token outlives its parent: %v > %v", childTok.ExpiresAt, rwTok.ExpiresAt)
	contains(t, api("GET", "/api/v1/tokens", rw, ""), 200, id, "monitoring", "child")
	must(t, !strings.Contains(api("GET", "/api/v1/tokens", rw, "").body, auth.HashToken(ro[1])), "a token hash is listed")
	contains(t, api("DELETE", "/api/v1/tokens/"+childTok.ID, rw, ""), 200, "revoked")
	contains(t, api("DELETE", "/api/v1/tokens/"+childTok.ID, rw, ""), 404)

	// Console revocation ends the token at once.
	r = s.post("/staff/tokens/"+id+"/revoke", nil)
	must(t, r.code == http.StatusSeeOther, "revoke: %d", r.code)
	contains(t, api("GET", "/api/v1/devices", ro[1], ""), 401, "invalid API token")
	contains(t, s.get("/staff/audit"), 200, "revoke-api-token")

	// Expiry.
	e.clock.Add(49 * time.Hour)
	contains(t, api("GET", "/api/v1/devices", rw, ""), 401, "expired")

	// Failed tokens from this address: after the free attempts, 429 with
	// Retry-After, without even looking the token up.
	e.clock.Add(time.Hour) // forget the failures above
	for range 3 {
		contains(t, api("GET", "/api/v1/devices", "guess", ""), 401)
	}
	r = api("GET", "/api/v1/devices", "guess", "")
	contains(t, r, 429, "too many failed API tokens")
	must(t, r.hdr.Get("Retry-After") != "", "no Retry-After")
	// The same address is throttled at the login too.
	contains(t, login(e.browser(), "alice", "password-of-alice"), 429)
}

func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	e := newEnv(t, nil)
	one := e.staff("alice")
	two := e.browser()
	must(t, login(two, "alice", "password-of-alice").code == http.StatusSeeOther, "second login")
	contains(t, one.get("/staff/account"), 200, "Change password")
	contains(t, one.post("/staff/account/password", url.Values{"current": {"wrong"}, "new": {"a-new-password"}, "again": {"a-new-password"}}), 401, "current password is wrong")
	contains(t, one.post("/staff/account/password", url.Values{"current": {"password-of-alice"}, "new": {"short"}, "again": {"short"}}), 422, "at least")
	contains(t, one.post("/staff/account/password", url.Values{"current": {"password-of-alice"}, "new": {"a-new-password"}, "again": {"other-password"}}), 422, "differ")
	r := one.post("/staff/account/password", url.Values{"current": {"password-of-alice"}, "new": {"a-new-password"}, "again": {"a-new-password"}})
	must(t, r.code == http.StatusSeeOther, "change: %d %s", r.code, r.body)
	contains(t, one.get(r.loc), 200, "Password changed")
	must(t, two.get("/staff").code == http.StatusSeeOther, "the other session survived the password change")
	contains(t, login(e.browser(), "alice", "password-of-alice"), 401)
	must(t, login(e.browser(), "alice", "a-new-password").code == http.StatusSeeOther, "new password refused")
	contains(t, e.browser().get("/staff/account"), 303)
}

// TestOwnerLinks: an owner link changes a browser only through the
// confirmation button, only with a key that owns a registration, and a
// key planted in a browser never owns the visitor's next registration.
func TestOwnerLinks(t *testing.T) {
	e := newEnv(t, nil)
	attacker := e.browser()
	f := goodForm()
	f.Set("name", "printer.dept.example.edu")
	f.Set("ips", "10.1.2.5")
	must(t, attacker.post("/register", f).code == http.StatusSeeOther, "attacker registers")
	planted := attacker.cookie(web.OwnerCookie)

	nobody, _ := auth.NewToken()
	victim := e.browser()
	contains(t, victim.get("/owner?key="+nobody), 404, "No registration belongs")
	contains(t, victim.post("/owner", url.Values{"key": {nobody}}), 404)
	contains(t, victim.post("/owner", url.Values{"key": {planted}, "csrf": {"forged-forged-forged-forged-forged"}}), 403, "CSRF")
	must(t, victim.cookie(web.OwnerCookie) == "", "a refused owner link set the cookie")
	// The victim is talked into pressing the button, then registers.
	must(t, victim.post("/owner", url.Values{"key": {planted}}).code == http.StatusSeeOther, "owner POST")
	must(t, victim.post("/register", goodForm()).code == http.StatusSeeOther, "victim registers")
	d, _ := e.st.Device(context.Background(), "scanner.dept.example.edu")
	must(t, d.OwnerKeyHash != auth.HashToken(planted), "the planted key owns the victim's registration")
	contains(t, attacker.get("/my/devices/scanner.dept.example.edu"), 404)

	// A tampered cookie with many keys is cut to MaxOwnerKeys.
	var many []string
	for range 30 {
		k, _ := auth.NewToken()
		many = append(many, k)
	}
	b := e.browser()
	b.c.Jar.SetCookies(mustURL(e.srv.URL), []*http.Cookie{{Name: web.OwnerCookie, Value: strings.Join(many, ".")}})
	must(t, b.post("/owner", url.Values{"key": {planted}}).code == http.StatusSeeOther, "owner POST")
	must(t, len(strings.Split(b.cookie(web.OwnerCookie), ".")) == web.MaxOwnerKeys, "cookie keeps %d keys", len(strings.Split(b.cookie(web.OwnerCookie), ".")))
}

// mailSink is a real SMTP server on loopback standing in for the relay.
type mailSink struct {
	mu   sync.Mutex
	msgs []string // "rcpt|data"
}

func (s *mailSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &mailSession{s: s}, nil }

type mailSession struct {
	s  *mailSink
	to string
}

func (x *mailSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (x *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error { x.to = to; return nil }
func (x *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, x.to+"|"+string(b))
	x.s.mu.Unlock()
	return err
}
func (x *mailSession) Reset()        {}
func (x *mailSession) Logout() error { return nil }

func (s *mailSink) to(rcpt string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if strings.HasPrefix(m, rcpt+"|") {
			out = append(out, m)
		}
	}
	return out
}

func (e *env) withMail() *mailSink {
	s := &mailSink{}
	srv := smtp.NewServer(s)
	srv.Domain = "relay.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go srv.Serve(ln)
	e.t.Cleanup(func() { srv.Close() })
	e.reg.Mail = &mailer.Mailer{Addr: ln.Addr().String(), From: "postern@example.edu"}
	e.reg.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	return s
}

func TestOwnerLinkMailedToAffiliatedContact(t *testing.T) {
	e := newEnv(t, nil)
	mail := e.withMail()
	e.dns.AddMX("other.example.org", 10, "mx.dept.example.edu")
	b := e.browser()
	f := goodForm()
	f.Set("senders", "scanner@dept.example.edu\nlab@other.example.org")
	r := b.post("/register", f)
	must(t, r.code == http.StatusSeeOther && strings.HasSuffix(r.loc, "done=registered-mailed"), "register: %d %s", r.code, r.loc)
	got := mail.to("ada@dept.example.edu")
	must(t, len(got) == 1, "owner link mails: %d", len(got))
	link := regexp.MustCompile(`http://127\.0\.0\.1:\d+/owner\?key=[A-Za-z0-9_-]+`).FindString(got[0])
	must(t, link != "" && strings.HasSuffix(link, b.cookie(web.OwnerCookie)), "owner link in the mail: %q", got[0])
	must(t, len(mail.to("scanner@dept.example.edu")) == 1 && len(mail.to("lab@other.example.org")) == 0, "confirmations of an anonymous request went outside")
	// The mailed link opens the device in another browser.
	other := e.browser()
	contains(t, other.get(strings.TrimPrefix(link, e.srv.URL)), 200, "Open my devices")
	must(t, other.post("/owner", url.Values{"key": {b.cookie(web.OwnerCookie)}}).code == http.StatusSeeOther, "owner POST")
	contains(t, other.get("/my"), 200, "scanner.dept.example.edu")
	// The owner re-sends: affiliated senders only; staff reach the rest.
	contains(t, other.post("/my/devices/scanner.dept.example.edu/resend", nil), 200, "lab@other.example.org) get theirs from staff")
	must(t, len(mail.to("scanner@dept.example.edu")) == 2 && len(mail.to("lab@other.example.org")) == 0, "owner re-send went outside")
	s := e.staff("alice")
	contains(t, s.get("/staff/devices/scanner.dept.example.edu"), 200, "outside the affiliated domains, staff send it")
	must(t, s.post("/staff/devices/scanner.dept.example.edu/resend", nil).code == http.StatusSeeOther, "staff resend")
	must(t, len(mail.to("lab@other.example.org")) == 1, "staff re-send did not reach the outside sender")

	// A contact outside the affiliated domains gets no mail.
	f = goodForm()
	f.Set("name", "printer.dept.example.edu")
	f.Set("ips", "10.1.2.5")
	f.Set("contact_email", "someone@other.example.org")
	r = b.post("/register", f)
	must(t, r.code == http.StatusSeeOther && strings.HasSuffix(r.loc, "done=registered"), "register: %d %s", r.code, r.loc)
	must(t, len(mail.to("someone@other.example.org")) == 0, "owner link mailed outside")
}

func TestRegisterLimits(t *testing.T) {
	e := newEnvWith(t, func(o *web.Options) {
		o.SubmitLimit = auth.NewRateLimit(4, time.Hour, o.Clock)
		o.CheckLimit = auth.NewRateLimit(2, time.Hour, o.Clock)
		o.MaxPendingPerContact = 2
		o.MaxPendingPerAddress = 3
	})
	b := e.browser()
	f := goodForm()
	f.Set("op", "check")
	contains(t, b.post("/register", f), 200, "DNS check")
	contains(t, b.post("/register", f), 200, "DNS check")
	r := b.post("/register", f)
	contains(t, r, 429, "Too many requests from your address")
	must(t, r.hdr.Get("Retry-After") == "1800", "Retry-After %q", r.hdr.Get("Retry-After"))
	contains(t, b.post("/my/devices/x.example.edu/check", nil), 404) // not an owner: no check at all

	reg := func(name, contact string) resp {
		f := goodForm()
		f.Set("name", name)
		f.Set("ips", "")
		f.Set("contact_email", contact)
		return b.post("/register", f)
	}
	must(t, reg("d1.dept.example.edu", "ada@dept.example.edu").code == 303, "first")
	must(t, reg("d2.dept.example.edu", "ADA@dept.example.edu").code == 303, "second")
	contains(t, reg("d3.dept.example.edu", "ada@dept.example.edu"), 429, "this contact address has 2 requests waiting")
	must(t, reg("d3.dept.example.edu", "bob@dept.example.edu").code == 303, "other contact")
	// Four submissions this hour: the fifth is refused before anything else.
	contains(t, reg("d4.dept.example.edu", "carol@dept.example.edu"), 429, "Too many requests from your address")
	e.clock.Add(time.Hour)
	contains(t, reg("d4.dept.example.edu", "carol@dept.example.edu"), 429, "3 requests from your network address are waiting")
	// Once staff have handled one, there is room again.
	s := e.staff("alice")
	must(t, s.post("/staff/devices/d1.dept.example.edu/act", url.Values{"action": {"deny"}, "reason": {"dup"}, "confirm": {"1"}}).code == 303, "deny")
	must(t, reg("d4.dept.example.edu", "carol@dept.example.edu").code == 303, "after a deny")
}

func TestControlCharactersRefused(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	for field, v := range map[string]string{
		"owner": "Ada\r\nBcc: victim@example.org", "department": "Physics\nX-Header: 1", "contact_email": "ada@dept.example.edu\r\nBcc: x@y.org",
		"name": "scanner.dept.example.edu\x00",
	} {
		f := goodForm()
		f.Set(field, v)
		contains(t, b.post("/register", f), 400, `id="err-`+field+`"`, "control characters")
	}
	f := goodForm()
	f.Set("purpose", "scan to mail\r\nfor the lab")
	must(t, b.post("/register", f).code == http.StatusSeeOther, "multi-line purpose refused")

	tok, hash := auth.NewToken()
	e.st.CreateUser(context.Background(), store.User{Name: "robot"})
	e.st.CreateAPIToken(context.Background(), store.APIToken{Hash: hash, User: "robot"})
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/devices", strings.NewReader(`{"name":"copier.dept.example.edu","owner":"A\r\nBcc: x@y.org",
		"contact_email":"a@dept.example.edu","senders":["copier@dept.example.edu"],"purpose":"p"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	contains(t, b.do(req), 400, "control characters", `"owner"`)
}

func TestConfirmationLinkExpiresAndIsResent(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.Clock = e.clock.Now
	e.reg.ConfirmTTL = 7 * 24 * time.Hour
	must(t, e.browser().post("/register", goodForm()).code == http.StatusSeeOther, "register")
	s := e.staff("alice")
	dev := "/staff/devices/scanner.dept.example.edu"
	linkRe := regexp.MustCompile(`href="(http://[^"]+/confirm\?token=[^"]+)"`)
	old, _ := url.Parse(html.UnescapeString(linkRe.FindStringSubmatch(s.get(dev).body)[1]))
	e.clock.Add(8 * 24 * time.Hour)
	s = e.staff("bob") // alice's session has expired meanwhile
	sender := e.browser()
	contains(t, sender.post("/confirm", url.Values{"token": {old.Query().Get("token")}}), 410, "has expired")
	must(t, s.post(dev+"/resend", nil).code == http.StatusSeeOther, "resend")
	fresh, _ := url.Parse(html.UnescapeString(linkRe.FindStringSubmatch(s.get(dev).body)[1]))
	must(t, fresh.Query().Get("token") != old.Query().Get("token"), "same token after re-send")
	contains(t, sender.post("/confirm", url.Values{"token": {fresh.Query().Get("token")}}), 200, "is confirmed")
}

// TestNewPostsNeedCSRF: every POST added for owner links, tokens and
// passwords is refused without the CSRF token, from any visitor.
func TestNewPostsNeedCSRF(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.browser()
	must(t, owner.post("/register", goodForm()).code == http.StatusSeeOther, "register")
	s := e.staff("alice")
	for _, c := range []struct {
		b    *browser
		path string
		form url.Values
	}{
		{e.browser(), "/owner", url.Values{"key": {owner.cookie(web.OwnerCookie)}}},
		{owner, "/my/devices/scanner.dept.example.edu/resend", nil},
		{s, "/staff/tokens", url.Values{"scope": {"read-write"}}},
		{s, "/staff/tokens/0123456789abcdef/revoke", nil},
		{s, "/staff/account/password", url.Values{"current": {"password-of-alice"}, "new": {"mallory-was-here"}, "again": {"mallory-was-here"}}},
	} {
		f := c.form
		if f == nil {
			f = url.Values{}
		}
		f.Set("csrf", "")
		contains(t, c.b.post(c.path, f), 403, "CSRF check failed")
	}
	toks, _ := e.st.ListAPITokens(context.Background(), "")
	must(t, len(toks) == 0, "a forged token creation went through")
	must(t, login(e.browser(), "alice", "password-of-alice").code == http.StatusSeeOther, "a forged password change went through")
}
