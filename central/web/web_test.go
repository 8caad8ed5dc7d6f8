package web_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/web"
	"github.com/postern/postern/shared/event"
)

func TestPublicPages(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	cases := []struct {
		path  string
		code  int
		texts []string
	}{
		{"/", 200, []string{"Postern device registration", "example.edu", "Register a device"}},
		{"/register", 200, []string{"DNS name of the device", `name="csrf"`, "Check DNS", "I take responsibility"}},
		{"/my", 200, []string{"This browser has no registrations yet"}},
		{"/confirm?token=nothing", 200, []string{"Press the button"}},
		{"/confirm", 200, []string{"not valid"}},
		{"/staff/login", 200, []string{"Staff login", "user add NAME"}},
		{"/static/style.css", 200, []string{"font-family"}},
		{"/nope", 404, nil},
		{"/owner?key=short", 400, []string{"incomplete"}},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			r := b.get(c.path)
			contains(t, r, c.code, c.texts...)
			if c.code == 200 && !strings.HasPrefix(c.path, "/static") {
				must(t, r.hdr.Get("X-Frame-Options") == "DENY" && strings.Contains(r.hdr.Get("Content-Security-Policy"), "frame-ancestors 'none'"),
					"security headers missing: %v", r.hdr)
			}
		})
	}
	u, _ := url.Parse(e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		must(t, c.Name == web.CSRFCookie, "unexpected cookie %s", c.Name)
	}
}

func TestRegisterCheckAndSubmit(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	f := goodForm()
	f.Set("op", "check")
	contains(t, b.post("/register", f), 200, "DNS check (scanner.dept.example.edu): matches", "reverse DNS of 10.1.2.3 is scanner.dept.example.edu; forward lookup matches")
	// The check on demand for a mismatching name explains how to fix it.
	f.Set("name", "copier.dept.example.edu")
	f.Set("ips", "10.1.2.4")
	contains(t, b.post("/register", f), 200, "does not match", "copier.dept.example.edu resolves to 10.1.2.9, not 10.1.2.4: fix the A record")

	r := b.post("/register", goodForm())
	must(t, r.code == http.StatusSeeOther && r.loc == "/my/devices/scanner.dept.example.edu?done=registered", "submit: %d %s %s", r.code, r.loc, r.body)
	key := b.cookie(web.OwnerCookie)
	must(t, len(key) >= 40, "no owner cookie")
	r = b.get(r.loc)
	contains(t, r, 200, "Your request is registered", "scanner.dept.example.edu", "pending", "scanner@dept.example.edu", "unconfirmed",
		"forward lookup matches", "No refusals or bounces reported", "register")
	must(t, !strings.Contains(r.body, "Looks personal"), "owner sees the staff-only personal flag")
	contains(t, b.get("/my"), 200, `href="/my/devices/scanner.dept.example.edu"`, "owner?key="+key)
	keyHash := auth.HashToken(key)
	d, err := e.st.Device(context.Background(), "scanner.dept.example.edu")
	must(t, err == nil && d.OwnerKeyHash == keyHash && d.Status == store.Pending, "stored %+v %v", d, err)

	// A second device from the same browser gets a key of its own; the
	// browser keeps both.
	f = goodForm()
	f.Set("name", "printer.dept.example.edu")
	f.Set("ips", "")
	r = b.post("/register", f)
	must(t, r.code == http.StatusSeeOther, "second: %d %s", r.code, r.body)
	keys := strings.Split(b.cookie(web.OwnerCookie), ".")
	must(t, len(keys) == 2 && keys[1] == key && keys[0] != key, "owner keys after a second registration: %v", keys)
	p, _ := e.st.Device(context.Background(), "printer.dept.example.edu")
	must(t, p.OwnerKeyHash == auth.HashToken(keys[0]) && p.OwnerKeyHash != keyHash, "second device shares the first one's key")
	contains(t, b.get("/my"), 200, "printer.dept.example.edu", "scanner.dept.example.edu", "owner?key="+keys[0])

	// The owner's device page shows the latest events and can re-run the check.
	e.st.AddEvent(context.Background(), event.Event{ID: "ev1", Edge: "bldg-1", Time: time.Now(), Kind: event.Refusal, Device: "scanner.dept.example.edu",
		ClientIP: "10.1.2.3", Sender: "me@x.org", Reason: "sender not registered", Count: 4})
	contains(t, b.get("/my/devices/scanner.dept.example.edu"), 200,
		"Your device at 10.1.2.3 tried to send from me@x.org 4 times and was refused (the relay said: sender not registered).")
	contains(t, b.post("/my/devices/scanner.dept.example.edu/check", nil), 200, "DNS check (scanner.dept.example.edu): matches")

	// Same name again: refused on the name field.
	contains(t, b.post("/register", goodForm()), 422, "already registered")
}

func TestRegisterBadInput(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	cases := []struct {
		field, value, want string
	}{
		{"name", "", "required"},
		{"name", "scanner", "give the full DNS name"},
		{"name", "scan_ner!.example.edu", "not a valid DNS name"},
		{"ips", "10.1.2.300", "is not an IP address"},
		{"owner", "", "required"},
		{"department", strings.Repeat("d", 201), "at most 200 characters"},
		{"contact_email", "ada-at-example", "not an e-mail address"},
		{"senders", "", "at least one functional sender"},
		{"senders", "scanner@nowhere.example.org", "cannot receive mail"},
		{"purpose", "", "required"},
		{"behind_firewall", "1", "take responsibility"},
	}
	for _, c := range cases {
		t.Run(c.field+"="+c.value, func(t *testing.T) {
			f := goodForm()
			f.Set(c.field, c.value)
			r := b.post("/register", f)
			field := c.field
			if field == "behind_firewall" {
				field = "firewall_accepted"
			}
			contains(t, r, 422, `id="err-`+field+`"`, html.EscapeString(c.want), "Some fields need attention")
			// The typed values are kept.
			if c.field != "name" {
				contains(t, r, 422, `value="scanner.dept.example.edu"`)
			}
		})
	}
	n, _ := e.st.CountDevices(context.Background())
	must(t, len(n) == 0, "a bad request was stored: %v", n)
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	staff := e.staff("alice")
	owner := e.browser()
	must(t, owner.post("/register", goodForm()).code == http.StatusSeeOther, "setup register")
	cases := []struct {
		name string
		b    *browser
		path string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", e.browser(), "/register", goodForm(), nil},
		{"wrong token", owner, "/register", withCSRF(goodForm(), "x"+strings.Repeat("y", 42)), nil},
		{"cross-site origin", owner, "/register", goodForm(), map[string]string{"Origin": "https://evil.example"}},
		{"login without token", e.browser(), "/staff/login", url.Values{"username": {"alice"}, "password": {"password-of-alice"}}, nil},
		{"staff action with empty token", staff, "/staff/devices/scanner.dept.example.edu/act", withCSRF(url.Values{"action": {"approve"}, "force": {"1"}}, ""), nil},
		{"staff action with another browser's token", staff, "/staff/devices/scanner.dept.example.edu/act", withCSRF(url.Values{"action": {"approve"}, "force": {"1"}}, owner.csrf()), nil},
		{"logout", staff, "/staff/logout", withCSRF(url.Values{}, "nope"), nil},
		{"confirm", owner, "/confirm", withCSRF(url.Values{"token": {"t"}}, ""), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.form.Get("csrf") == "" && c.form.Has("csrf") {
				c.form.Del("csrf")
				c.form["csrf"] = []string{""}
			}
			form := c.form
			var r resp
			if c.hdr != nil || !form.Has("csrf") && c.b != owner && c.b != staff {
				req, _ := http.NewRequest("POST", e.srv.URL+c.path, strings.NewReader(formWithout(form, c.b, c.hdr != nil).Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				for k, v := range c.hdr {
					req.Header.Set(k, v)
				}
				r = c.b.do(req)
			} else {
				r = c.b.post(c.path, form)
			}
			contains(t, r, 403, "CSRF check failed")
		})
	}
	d, _ := e.st.Device(context.Background(), "scanner.dept.example.edu")
	must(t, d.Status == store.Pending, "a forged action went through: %s", d.Status)
	must(t, len(listDevices(t, e)) == 1, "a forged registration went through")
	contains(t, staff.get("/staff"), 200, "Devices") // still logged in
}

func withCSRF(f url.Values, tok string) url.Values { f["csrf"] = []string{tok}; return f }

// formWithout returns f with the browser's own token when keep is set
// (used for the Origin case), else without any token.
func formWithout(f url.Values, b *browser, keep bool) url.Values {
	if keep {
		f.Set("csrf", b.csrf())
	}
	return f
}

func listDevices(t *testing.T, e *env) []store.Device {
	ds, err := e.st.ListDevices(context.Background(), store.DeviceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestOwnerSeesOnlyOwnDevices(t *testing.T) {
	e := newEnv(t, nil)
	alice, bob := e.browser(), e.browser()
	must(t, alice.post("/register", goodForm()).code == http.StatusSeeOther, "alice register")
	f := goodForm()
	f.Set("name", "printer.dept.example.edu")
	f.Set("ips", "10.1.2.5")
	must(t, bob.post("/register", f).code == http.StatusSeeOther, "bob register")

	contains(t, bob.get("/my/devices/scanner.dept.example.edu"), 404, "no device of yours")
	contains(t, bob.post("/my/devices/scanner.dept.example.edu/check", nil), 404)
	contains(t, bob.get("/my/devices/missing.example.edu"), 404, "no device of yours") // same answer as "not yours"
	r := bob.get("/my")
	must(t, !strings.Contains(r.body, "scanner.dept.example.edu") && strings.Contains(r.body, "printer.dept.example.edu"), "bob's list: %s", r.body)
	contains(t, e.browser().get("/my/devices/scanner.dept.example.edu"), 404) // no owner cookie at all
	// Staff pages are not for owners.
	r = alice.get("/staff/devices/printer.dept.example.edu")
	must(t, r.code == http.StatusSeeOther && strings.HasPrefix(r.loc, "/staff/login"), "owner reached a staff page: %d", r.code)

	// Alice's owner link opens her devices in another browser, after the
	// confirmation button.
	other := e.browser()
	key := alice.cookie(web.OwnerCookie)
	contains(t, other.get("/owner?key="+url.QueryEscape(key)), 200, "Open my devices", `name="key" value="`+key+`"`)
	must(t, other.cookie(web.OwnerCookie) == "", "the GET of an owner link set the owner cookie")
	r = other.post("/owner", url.Values{"key": {key}})
	must(t, r.code == http.StatusSeeOther && r.loc == "/my", "owner link: %d %s", r.code, r.loc)
	contains(t, other.get("/my/devices/scanner.dept.example.edu"), 200, "Ada Lovelace")
}

func TestStaffLogin(t *testing.T) {
	e := newEnv(t, nil)
	e.staff("alice") // creates the user
	b := e.browser()
	r := b.get("/staff?status=pending")
	must(t, r.code == http.StatusSeeOther && r.loc == "/staff/login?next=%2Fstaff%3Fstatus%3Dpending", "anonymous console: %d %s", r.code, r.loc)
	for _, p := range []string{"/staff/devices/x.example.edu", "/staff/edges", "/staff/audit"} {
		r := b.get(p)
		must(t, r.code == http.StatusSeeOther && strings.HasPrefix(r.loc, "/staff/login"), "anonymous %s: %d", p, r.code)
	}
	r = b.post("/staff/devices/x.example.edu/act", url.Values{"action": {"approve"}})
	must(t, r.code == http.StatusSeeOther && strings.HasPrefix(r.loc, "/staff/login"), "anonymous action: %d", r.code)
	r = b.post("/staff/edges", url.Values{"id": {"e1"}})
	must(t, r.code == http.StatusSeeOther && strings.HasPrefix(r.loc, "/staff/login"), "anonymous edge create: %d", r.code)

	contains(t, b.post("/staff/login", url.Values{"username": {"alice"}, "password": {"wrong"}}), 401, "Wrong user name or password")
	contains(t, b.post("/staff/login", url.Values{"username": {"mallory"}, "password": {"password-of-alice"}}), 401, "Wrong user name or password")
	contains(t, b.post("/staff/login", url.Values{"username": {"alice"}, "password": {""}}), 401)
	r = b.post("/staff/login", url.Values{"username": {"alice"}, "password": {"password-of-alice"}, "next": {"//evil.example/"}})
	must(t, r.code == http.StatusSeeOther && r.loc == "/staff", "open redirect: %s", r.loc)
	sc := r.hdr.Values("Set-Cookie")
	must(t, len(sc) == 1 && strings.Contains(sc[0], "HttpOnly") && strings.Contains(sc[0], "SameSite=Lax") && strings.Contains(sc[0], "Max-Age=3600"), "session cookie %v", sc)
	contains(t, b.get("/staff"), 200, "Log out alice")

	// Sessions expire.
	e.clock.Add(61 * time.Minute)
	r = b.get("/staff")
	must(t, r.code == http.StatusSeeOther, "expired session still valid: %d", r.code)
	e.clock.Add(-61 * time.Minute)
	contains(t, b.get("/staff"), 200)
	// Logout ends the session on the server, even if the cookie is kept.
	sess := b.cookie(web.SessionCookie)
	must(t, b.post("/staff/logout", nil).code == http.StatusSeeOther, "logout")
	_, err := e.st.Session(context.Background(), auth.HashToken(sess), time.Now())
	must(t, err != nil, "session survives logout")
}

func TestStaffConsoleAndActions(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.browser()
	must(t, owner.post("/register", goodForm()).code == http.StatusSeeOther, "register")
	f := goodForm()
	f.Set("name", "copier.dept.example.edu")
	f.Set("ips", "10.1.2.4")
	f.Set("senders", "mary.smith@dept.example.edu")
	must(t, owner.post("/register", f).code == http.StatusSeeOther, "register copier")
	s := e.staff("alice")

	contains(t, s.get("/staff"), 200, "scanner.dept.example.edu", "copier.dept.example.edu", "pending: 2", "mismatch", "(personal?)")
	r := s.get("/staff?status=active")
	must(t, !strings.Contains(r.body, `href="/staff/devices/scanner`), "status filter")
	r = s.get("/staff?q=mary")
	must(t, strings.Contains(r.body, "copier.dept") && !strings.Contains(r.body, `href="/staff/devices/scanner`), "search")
	contains(t, s.get("/staff?status=bogus"), 400)

	dev := "/staff/devices/scanner.dept.example.edu"
	r = s.get(dev)
	contains(t, r, 200, "Staff actions", "Mail is not configured", "act-approve", "act-deny", "act-revoke")
	must(t, !strings.Contains(r.body, "act-suspend") && !strings.Contains(r.body, "act-reinstate"), "a pending device offers suspend or reinstate")
	link := regexp.MustCompile(`href="(http://[^"]+/confirm\?token=[^"]+)"`).FindStringSubmatch(r.body)
	must(t, link != nil, "no confirmation link on the staff page")
	contains(t, s.get("/staff/devices/copier.dept.example.edu"), 200, "yes — ask for a functional address")

	act := func(action, reason string, force bool) resp {
		v := url.Values{"action": {action}, "reason": {reason}, "confirm": {"1"}}
		if force {
			v["ack"] = []string{"unconfirmed", "personal", "dns"}
		}
		return s.post(dev+"/act", v)
	}
	contains(t, act("approve", "", false), 409, "tick off every warning", `id="ack-unconfirmed"`)
	// The sender confirms through the link (a page with a button, then POST).
	u, _ := url.Parse(html.UnescapeString(link[1]))
	sender := e.browser()
	contains(t, sender.get(u.RequestURI()), 200, "Press the button")
	contains(t, sender.post("/confirm", url.Values{"token": {u.Query().Get("token")}}), 200, "scanner@dept.example.edu is confirmed as a sender of scanner.dept.example.edu")
	contains(t, sender.post("/confirm", url.Values{"token": {"forged"}}), 404, "not valid")

	steps := []struct {
		action, reason string
		code           int
		status         store.Status
		text           string
	}{
		{"approve", "", 303, store.Active, "Device approved."},
		{"deny", "no", 409, store.Active, "not allowed in the device"},
		{"suspend", "", 422, store.Active, "Give a reason: the owner sees it."},
		{"suspend", "bounces to scanner@", 303, store.Suspended, "Device suspended."},
		{"reinstate", "fixed", 303, store.Active, "Device reinstated."},
		{"renew", "", 303, store.Active, "Registration renewed."},
		{"frobnicate", "x", 404, store.Active, "unknown action"},
		{"revoke", "device retired", 303, store.Revoked, "Registration revoked."},
	}
	for _, st := range steps {
		r := act(st.action, st.reason, false)
		must(t, r.code == st.code, "%s: %d, want %d: %s", st.action, r.code, st.code, r.body)
		if r.code == 303 {
			r = s.get(r.loc)
		}
		contains(t, r, 200*b2i(st.code == 303)+st.code*b2i(st.code != 303), html.EscapeString(st.text))
		d, _ := e.st.Device(context.Background(), "scanner.dept.example.edu")
		must(t, d.Status == st.status, "after %s: %s, want %s", st.action, d.Status, st.status)
	}
	contains(t, s.get(dev), 200, "staff:alice", "device retired", "revoked")
	contains(t, s.get("/staff/audit"), 200, "staff:alice", "approve", "sender:scanner@dept.example.edu")

	// Forced approval of a device with an unconfirmed personal sender.
	cop := "/staff/devices/copier.dept.example.edu"
	r = s.post(cop+"/approve", url.Values{"ack": {"unconfirmed", "personal", "dns"}, "reason": {"checked by phone"}})
	must(t, r.code == 303, "approve with warnings ticked off: %d %s", r.code, r.body)
	contains(t, s.get(cop), 200, "approved with unconfirmed sender mary.smith@dept.example.edu", "warnings acknowledged: dns, personal, unconfirmed")

	contains(t, s.post(cop+"/limits", url.Values{"mph": {"x"}, "rph": {"1"}}), 422, "whole number", `aria-invalid="true"`, `value="x"`, `aria-describedby="limits-hint err-mph"`)
	contains(t, s.post(cop+"/limits", url.Values{"mph": {"-1"}, "rph": {"1"}}), 422, "between 1 and 1000000", `value="-1"`)
	contains(t, s.post(cop+"/limits", url.Values{"mph": {"0"}, "rph": {"1"}}), 422, "0 would mean the edge&#39;s default")
	r = s.post(cop+"/limits", url.Values{"mph": {"5"}, "rph": {"7"}})
	must(t, r.code == 303, "limits: %d", r.code)
	contains(t, s.get(r.loc), 200, "5 messages/hour, 7 recipients/hour", "Limits changed.")
	r = s.post(cop+"/limits", url.Values{"mph": {""}, "rph": {"7"}})
	must(t, r.code == 303, "default limit: %d", r.code)
	contains(t, s.get(r.loc), 200, "edge default, 7 recipients/hour")
	d, _ := e.st.Device(context.Background(), "copier.dept.example.edu")
	must(t, d.MessagesPerHour == 0 && d.RecipientsPerHour == 7, "default limit stored as %d", d.MessagesPerHour)
	contains(t, s.post(cop+"/check", nil), 200, "copier.dept.example.edu resolves to 10.1.2.9, not 10.1.2.4")
	r = s.post(cop+"/resend", nil)
	must(t, r.code == 303, "resend: %d", r.code)

	for _, p := range []string{"/staff/devices/none.example.edu"} {
		contains(t, s.get(p), 404)
		contains(t, s.post(p+"/act", url.Values{"action": {"approve"}, "ack": {"dns"}}), 404)
		contains(t, s.post(p+"/act", url.Values{"action": {"revoke"}, "reason": {"x"}, "confirm": {"1"}}), 404)
		contains(t, s.get(p+"/confirm/revoke"), 404)
		contains(t, s.post(p+"/limits", url.Values{"mph": {"1"}, "rph": {"1"}}), 404)
		contains(t, s.post(p+"/check", nil), 404)
		contains(t, s.post(p+"/resend", nil), 404)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestEdgesPage(t *testing.T) {
	e := newEnv(t, nil)
	s := e.staff("alice")
	contains(t, s.get("/staff/edges"), 200, "No edges yet", `id="current-version">1<`)
	contains(t, s.post("/staff/edges", url.Values{"id": {"Bad ID"}}), 422, "only a-z")
	// The token is shown once, on the GET the POST redirects to; a reload
	// shows it no more (and re-posts nothing).
	r := s.post("/staff/edges", url.Values{"id": {"bldg-12"}, "name": {"Building 12"}, "site": {"North"}})
	must(t, r.code == http.StatusSeeOther && strings.HasPrefix(r.loc, "/staff/edges/bldg-12?shown="), "create: %d %s", r.code, r.loc)
	shown := r.loc
	r = s.get(shown)
	contains(t, r, 200, "postern-edge enroll -central", "not enrolled")
	again := s.get(shown)
	contains(t, again, 200, "shown once already")
	must(t, !strings.Contains(again.body, "-token "), "token shown on reload")
	other := e.staff("bob")
	must(t, !strings.Contains(other.get(shown).body, "-token "), "another staff member sees the token")
	tok := regexp.MustCompile(`-token ([A-Za-z0-9_-]{43})`).FindStringSubmatch(r.body)
	must(t, tok != nil, "no token shown")
	ed, err := e.st.RedeemEnrolment(context.Background(), auth.HashToken(tok[1]))
	must(t, err == nil && ed.ID == "bldg-12", "shown token does not redeem: %v", err)
	contains(t, s.post("/staff/edges", url.Values{"id": {"bldg-12"}}), 409, "exists already")
	contains(t, s.post("/staff/edges", url.Values{"id": {"e2"}, "name": {strings.Repeat("n", 201)}}), 422, "at most 200")
	r = s.post("/staff/edges/bldg-12/token", nil)
	must(t, r.code == http.StatusSeeOther, "new token: %d", r.code)
	contains(t, s.get(r.loc), 200, "Enrolment token for <strong>bldg-12")
	contains(t, s.post("/staff/edges/nope/token", nil), 404)
	e.st.SetEdgeCredentials(context.Background(), "bldg-12", "bldg-12", "sha256:x")
	e.st.UpdateEdgeStatus(context.Background(), "bldg-12", store.EdgeStatus{Online: true, LastSeen: time.Now(), AllowlistVersion: 1, QueueDepth: 17, Counters: map[string]int64{"smtp_accepted": 3}})
	contains(t, s.get("/staff/edges"), 200, "online", "1 of 1", "<td>17</td>", "smtp_accepted=3")
}

func TestProxyIdentity(t *testing.T) {
	trusted, _ := auth.NewProxy("X-Remote-User", []string{"127.0.0.1"})
	e := newEnv(t, trusted)
	e.staff("carol")
	b := e.browser()
	get := func(user string) resp {
		req, _ := http.NewRequest("GET", e.srv.URL+"/staff", nil)
		req.Header.Set("X-Remote-User", user)
		return b.do(req)
	}
	contains(t, get("carol"), 200, "Log out carol")
	must(t, get("mallory").code == http.StatusSeeOther, "unknown SSO user let in")

	untrusted, _ := auth.NewProxy("X-Remote-User", []string{"10.0.0.1"})
	e2 := newEnv(t, untrusted)
	e2.staff("carol")
	req, _ := http.NewRequest("GET", e2.srv.URL+"/staff", nil)
	req.Header.Set("X-Remote-User", "carol")
	must(t, e2.browser().do(req).code == http.StatusSeeOther, "identity header from an untrusted address accepted")
}
