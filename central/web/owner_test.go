package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/notify"
	"github.com/postern/postern/central/notify/notifytest"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/web"
	"github.com/postern/postern/shared/event"
)

// registered registers goodForm (with changes) from b and returns the
// device's page path.
func (b *browser) registered(t *testing.T, set func(url.Values)) string {
	t.Helper()
	f := goodForm()
	if set != nil {
		set(f)
	}
	r := b.post("/register", f)
	must(t, r.code == http.StatusSeeOther, "register: %d %s", r.code, r.body)
	return "/my/devices/" + f.Get("name")
}

func editForm(d store.Device) url.Values {
	var senders []string
	for _, s := range d.Senders {
		senders = append(senders, s.Address)
	}
	return url.Values{"ips": {strings.Join(d.IPs, ",")}, "owner": {d.Owner}, "department": {d.Department}, "contact_email": {d.ContactEmail},
		"senders": {strings.Join(senders, "\n")}, "purpose": {d.Purpose}, "op": {"save"}}
}

func (e *env) device(name string) store.Device {
	e.t.Helper()
	d, err := e.st.Device(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// TestOwnerEdit: a pending request and an active registration can be
// changed; a change of senders sends an active device back to review
// (out of the allowlist) and mails the new sender a link; bad input keeps
// the typed values and ties the error to its field.
func TestOwnerEdit(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	page := b.registered(t, nil)
	const name = "scanner.dept.example.edu"
	contains(t, b.get(page), 200, `href="/my/devices/scanner.dept.example.edu/edit"`, "Waiting for review")
	contains(t, b.get(page+"/edit"), 200, "Change scanner.dept.example.edu", `value="Ada Lovelace"`, "scanner@dept.example.edu</textarea>")

	f := editForm(e.device(name))
	f.Set("purpose", "scan to mail, second floor")
	r := b.post(page+"/edit", f)
	must(t, r.code == http.StatusSeeOther && strings.HasSuffix(r.loc, "?done=edited"), "pending edit: %d %s %s", r.code, r.loc, r.body)
	contains(t, b.get(r.loc), 200, "Your changes are saved.", "scan to mail, second floor")

	// Bad input: 422, the value kept, the error tied to the field.
	f.Set("senders", "not-an-address")
	r = b.post(page+"/edit", f)
	contains(t, r, 422, `id="error-summary"`, `aria-invalid="true" aria-describedby="err-senders"`, `id="err-senders"`, ">not-an-address</textarea>")
	must(t, e.device(name).Senders[0].Address == "scanner@dept.example.edu", "bad edit stored")
	f.Set("senders", "scanner@dept.example.edu")
	f.Set("owner", "Ada\r\nBcc: x@y")
	contains(t, b.post(page+"/edit", f), 400, "control characters")

	// Active: a purpose change stays active; a new sender goes back to
	// review and leaves the allowlist.
	ctx := context.Background()
	must(t, e.reg.Act(ctx, name, "approve", "staff:bob", "", true) == nil, "approve")
	v0, _ := e.st.AllowlistVersion(ctx)
	f = editForm(e.device(name))
	f.Set("purpose", "scanning")
	r = b.post(page+"/edit", f)
	must(t, strings.HasSuffix(r.loc, "?done=edited") && e.device(name).Status == store.Active, "active purpose edit: %s %s", r.loc, e.device(name).Status)
	contains(t, b.get(page+"/edit"), 200, `id="review-note"`)
	f.Set("senders", "scanner@dept.example.edu\nscan2@dept.example.edu")
	r = b.post(page+"/edit", f)
	must(t, strings.HasSuffix(r.loc, "?done=review"), "active sender edit: %s", r.loc)
	d := e.device(name)
	v1, _ := e.st.AllowlistVersion(ctx)
	must(t, d.Status == store.Pending && v1 == v0+1, "after sender edit: %s, version %d -> %d", d.Status, v0, v1)
	_, snap, _ := e.st.AllowlistSnapshot(ctx)
	must(t, len(snap) == 0, "device in review still in the allowlist: %+v", snap)
	must(t, d.Senders[0].Confirmed() == false && d.Senders[0].Address == "scan2@dept.example.edu", "new sender: %+v", d.Senders)
	must(t, d.Senders[1].Address == "scanner@dept.example.edu", "kept sender: %+v", d.Senders)
	must(t, e.reg.PendingLinks(name)["scan2@dept.example.edu"] != "", "no confirmation link for the new sender")
	contains(t, b.get(r.loc), 200, "back in review")
}

// TestOwnerLifecycle: re-request after a denial, withdraw through a
// confirmation page, renew only in the last 30 days (the new period starts
// at the old expiry).
func TestOwnerLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.Clock = e.clock.Now
	b := e.browser()
	page := b.registered(t, nil)
	const name = "scanner.dept.example.edu"
	ctx := context.Background()
	must(t, e.reg.Act(ctx, name, "deny", "staff:bob", "use a functional sender", false) == nil, "deny")
	contains(t, b.get(page), 200, "Denied", "use a functional sender", "Change or request again", `id="rerequest"`)
	// Re-request with changes from the edit form.
	f := editForm(e.device(name))
	f.Set("op", "rerequest")
	r := b.post(page+"/edit", f)
	must(t, strings.HasSuffix(r.loc, "?done=rerequested") && e.device(name).Status == store.Pending, "rerequest: %s %s", r.loc, e.device(name).Status)
	// Re-request unchanged.
	must(t, e.reg.Act(ctx, name, "deny", "staff:bob", "still no", false) == nil, "deny")
	r = b.post(page+"/rerequest", nil)
	must(t, r.code == http.StatusSeeOther && e.device(name).Status == store.Pending, "rerequest button: %d %s", r.code, e.device(name).Status)
	contains(t, b.post(page+"/rerequest", nil), 409, "Not done")

	// Renew: refused while more than 30 days are left.
	must(t, e.reg.Act(ctx, name, "approve", "staff:bob", "", true) == nil, "approve")
	exp := e.device(name).ExpiresAt
	contains(t, b.post(page+"/renew", nil), 409, "last 30 days")
	e.clock.Add(340 * 24 * time.Hour)
	contains(t, b.get(page), 200, `id="renew"`)
	r = b.post(page+"/renew", nil)
	must(t, r.code == http.StatusSeeOther, "renew: %d %s", r.code, r.body)
	must(t, e.device(name).ExpiresAt.Equal(exp.Add(365*24*time.Hour)), "renewed until %v, want %v", e.device(name).ExpiresAt, exp.Add(365*24*time.Hour))

	// Withdraw: a GET asks, the POST does it.
	contains(t, b.get(page+"/withdraw"), 200, "Withdraw scanner.dept.example.edu?", `id="withdraw-confirm"`)
	must(t, e.device(name).Status == store.Active, "GET withdrew")
	r = b.post(page+"/withdraw", nil)
	must(t, r.code == http.StatusSeeOther && e.device(name).Status == store.Revoked, "withdraw: %d %s", r.code, e.device(name).Status)
	_, snap, _ := e.st.AllowlistSnapshot(ctx)
	must(t, len(snap) == 0, "withdrawn device in the allowlist")
	body := b.get(page).body
	must(t, !strings.Contains(body, `id="edit"`) && !strings.Contains(body, `id="withdraw"`), "actions offered on a revoked registration")
	contains(t, b.get(page+"/edit"), 409, "cannot be changed")
}

// TestOwnerActionsAsAttacker: another owner's key, no key or a forged
// CSRF token change nothing and learn nothing (404 like a missing name).
func TestOwnerActionsAsAttacker(t *testing.T) {
	e := newEnv(t, nil)
	victim := e.browser()
	page := victim.registered(t, nil)
	const name = "scanner.dept.example.edu"
	attacker := e.browser()
	attacker.registered(t, func(f url.Values) { f.Set("name", "printer.dept.example.edu"); f.Set("ips", "") })
	stranger := e.browser()
	form := editForm(e.device(name))
	form.Set("senders", "evil@dept.example.edu")
	for who, b := range map[string]*browser{"other owner": attacker, "no key": stranger} {
		for _, p := range []string{page + "/edit", page + "/withdraw", page} {
			contains(t, b.get(p), 404, "no device of yours")
		}
		for _, p := range []string{page + "/edit", page + "/withdraw", page + "/renew", page + "/rerequest"} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if r := b.post(p, f); r.code != 404 {
				t.Errorf("%s: POST %s: %d", who, p, r.code)
			}
		}
	}
	r := victim.post(page+"/withdraw", url.Values{"csrf": {"forged-token-0123456789abcdef0123456789"}})
	must(t, r.code == http.StatusForbidden, "withdraw with a forged CSRF token: %d", r.code)
	d := e.device(name)
	must(t, d.Status == store.Pending && d.Senders[0].Address == "scanner@dept.example.edu", "changed by an attacker: %+v", d)
}

// TestOwnerReports: the device page tells what the relay saw, for the
// device and, while it is pending and its DNS check matched, for its
// registered address; a request naming someone else's address (DNS does
// not match) does not show that address's attempts.
func TestOwnerReports(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	page := b.registered(t, nil)
	at := e.clock.Now().Add(-time.Hour)
	ctx := context.Background()
	e.st.AddEvent(ctx, event.Event{ID: "r1", Edge: "bldg-1", Time: at, Kind: event.Refusal, ClientIP: "10.1.2.3",
		Sender: "scanner@dept.example.edu", Recipient: "x@gmail.com", Reason: "client not registered"})
	e.st.AddEvent(ctx, event.Event{ID: "r2", Edge: "bldg-1", Time: at, Kind: event.Refusal, ClientIP: "10.1.2.77",
		Recipient: "y@gmail.com", Reason: "client not registered"})
	r := b.get(page)
	contains(t, r, 200, "Your device at 10.1.2.3 tried to send from scanner@dept.example.edu to x@gmail.com and was refused because its registration is pending (not yet approved)",
		`<time datetime="`+at.UTC().Format(time.RFC3339)+`"`, "1 h ago")
	must(t, !strings.Contains(r.body, "y@gmail.com"), "another address's attempt shown")

	// Someone on the LAN registers a name whose DNS does not give the
	// victim's address, naming that address.
	spy := e.browser()
	spyPage := spy.registered(t, func(f url.Values) { f.Set("name", "copier.dept.example.edu"); f.Set("ips", "10.1.2.3") })
	r = spy.get(spyPage)
	contains(t, r, 200, "attempts from its IP addresses are shown once the DNS check matches")
	must(t, !strings.Contains(r.body, "x@gmail.com"), "a mismatched registration sees the address's attempts")

	// Once active, edges name the device: its own events are shown.
	must(t, e.reg.Act(ctx, "scanner.dept.example.edu", "approve", "staff:bob", "", true) == nil, "approve")
	e.st.AddEvent(ctx, event.Event{ID: "n1", Edge: "bldg-1", Time: e.clock.Now(), Kind: event.NDR, Device: "scanner.dept.example.edu",
		Sender: "scanner@dept.example.edu", Recipient: "gone@example.org", Reason: "550 5.1.1 no such user"})
	r = b.get(page)
	contains(t, r, 200, "Mail from scanner@dept.example.edu to gone@example.org could not be delivered; a bounce was sent to the sender")
	must(t, !strings.Contains(r.body, "x@gmail.com"), "address-only attempts shown for an active device")
}

// TestOwnerStats: last seen, delivered recipients, bounces, refusals and
// the TLS version, with an accessible chart and a table of the numbers.
func TestOwnerStats(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	page := b.registered(t, nil)
	const name = "scanner.dept.example.edu"
	ctx := context.Background()
	now := e.clock.Now()
	for i, ev := range []event.Event{
		{Kind: event.Delivery, Count: 7, Time: now.Add(-3 * 24 * time.Hour)},
		{Kind: event.Delivery, Count: 5, Time: now.Add(-time.Hour)},
		{Kind: event.NDR, Time: now.Add(-2 * time.Hour)},
		{Kind: event.Refusal, Count: 3, Time: now.Add(-40 * 24 * time.Hour)},
		{Kind: event.TLS, Time: now.Add(-30 * time.Minute), Detail: map[string]string{"tls_version": "TLS 1.3", "cipher": "TLS_AES_128_GCM_SHA256"}},
	} {
		ev.ID, ev.Edge, ev.Device = "s"+string(rune('a'+i)), "bldg-1", name
		if _, err := e.st.AddEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	r := b.get(page)
	contains(t, r, 200, "Traffic, last 30 days", "<th scope=\"row\">Recipients delivered</th><td>12</td>", "<th scope=\"row\">Bounces (NDRs)</th><td>1</td>",
		"<th scope=\"row\">Refused</th><td>0</td>", "TLS 1.3 TLS_AES_128_GCM_SHA256", `role="img"`, `<title id="chart-scanner.dept.example.edu-t">`,
		`id="stats-days"`, "30 min ago")
	must(t, regexp.MustCompile(`<rect class="c-del"[^>]*><title>[^<]* delivered: 7</title>`).MatchString(r.body), "no bar of 7 delivered")
}

// TestOwnerMails: with owner notices on, the request-received mail
// carries an owner link that opens the registration in another browser,
// and approval is mailed.
func TestOwnerMails(t *testing.T) {
	e := newEnv(t, nil)
	sink := notifytest.Start(t)
	m := &mailer.Mailer{Addr: sink.Addr, From: "postern@dept.example.edu"}
	e.reg.Mail = m
	e.reg.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	e.reg.Owners = &notify.Notifier{Mail: m, Store: e.st, BaseURL: e.srv.URL, Affiliated: e.reg.Affiliated, Clock: e.clock.Now}
	b := e.browser()
	r := b.post("/register", goodForm())
	must(t, strings.HasSuffix(r.loc, "done=registered-mailed"), "register: %s", r.loc)
	got := sink.To("ada@dept.example.edu")
	must(t, len(got) == 1 && strings.Contains(got[0].Subject(), "received"), "received mail: %+v", got)
	link := regexp.MustCompile(`http://\S+/owner\?key=\S+`).FindString(got[0].Body())
	must(t, link != "", "no owner link in:\n%s", got[0].Body())
	other := e.browser()
	p := strings.TrimPrefix(link, e.srv.URL)
	contains(t, other.get(p), 200, `id="open-owner"`)
	u, _ := url.Parse(link)
	r = other.post("/owner", url.Values{"key": {u.Query().Get("key")}})
	must(t, r.code == http.StatusSeeOther, "owner link: %d", r.code)
	contains(t, other.get("/my/devices/scanner.dept.example.edu"), 200, "Waiting for review")
	must(t, e.reg.Act(context.Background(), "scanner.dept.example.edu", "approve", "staff:bob", "", true) == nil, "approve")
	got = sink.To("ada@dept.example.edu")
	must(t, len(got) == 2 && strings.Contains(got[1].Subject(), "approved") && strings.Contains(got[1].Body(), e.srv.URL+"/my/devices/scanner.dept.example.edu"),
		"approval mail: %+v", got)
}

// TestOverviewAndEdgePage: staff see edges offline and behind first, the
// fleet's per-day chart, and an edge's counters and queue history; others
// are sent to the login.
func TestOverviewAndEdgePage(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, id := range []string{"bldg-1", "bldg-2"} {
		if _, err := e.reg.CreateEdge(ctx, id, "Building "+id, ""); err != nil {
			t.Fatal(err)
		}
		e.st.SetEdgeCredentials(ctx, id, id, "sha256:x")
	}
	now := e.clock.Now()
	e.st.UpdateEdgeStatus(ctx, "bldg-1", store.EdgeStatus{Online: true, LastSeen: now.Add(-10 * time.Minute), AllowlistVersion: 1, QueueDepth: 4,
		Counters: map[string]int64{"smtp_accepted": 9}})
	e.st.UpdateEdgeStatus(ctx, "bldg-1", store.EdgeStatus{Online: true, LastSeen: now, AllowlistVersion: 1, QueueDepth: 6, Counters: map[string]int64{"smtp_accepted": 12}})
	e.st.UpdateEdgeStatus(ctx, "bldg-2", store.EdgeStatus{Online: false, LastSeen: now.Add(-3 * time.Hour), AllowlistVersion: 1})
	e.st.AddEvent(ctx, event.Event{ID: "u1", Edge: "bldg-1", Time: now, Kind: event.Refusal, ClientIP: "10.7.7.7", Count: 5})
	b := e.browser()
	r := b.get("/staff/overview")
	must(t, r.code == http.StatusSeeOther, "overview without login: %d", r.code)
	s := e.staff("alice")
	r = s.get("/staff/overview")
	contains(t, r, 200, `id="n-online">1<`, `id="n-offline">1<`, `id="n-queued">6<`, `id="n-unreg">5<`, `role="img"`, "3 h ago")
	must(t, strings.Index(r.body, `href="/staff/edges/bldg-2"`) < strings.Index(r.body, `href="/staff/edges/bldg-1"`), "offline edge not first")
	r = s.get("/staff/edges/bldg-1")
	contains(t, r, 200, "Edge bldg-1", `<th scope="row">smtp_accepted</th><td>12</td>`, `id="edge-samples"`, `action="/staff/edges/bldg-1/revoke"`, "Revoke and remove")
	must(t, strings.Count(r.body, "<tr><th scope=\"row\">") >= 3, "queue samples missing")
	contains(t, s.get("/staff/edges/nope"), 404)
}

func TestDisplayTimeZone(t *testing.T) {
	zone, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(o *web.Options) { o.DisplayTimeZone = zone })
	b := e.browser()
	page := b.registered(t, nil)
	created := e.device("scanner.dept.example.edu").CreatedAt
	want := created.In(zone).Format("2006-01-02 15:04 MST")
	contains(t, b.get(page), 200, `title="`+want+`"`, "just now")
}

// TestRegisterErrorsTiedToFields: a refused registration lists its
// errors in a summary linking to the fields, marks each field invalid and
// describes it by its message, and keeps the typed values.
func TestRegisterErrorsTiedToFields(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	f := goodForm()
	f.Set("contact_email", "not an address")
	f.Set("purpose", "")
	r := b.post("/register", f)
	contains(t, r, 422, `id="error-summary"`, `href="#contact_email"`, `href="#purpose"`,
		`id="contact_email" name="contact_email" type="email" value="not an address" required autocomplete="email" aria-invalid="true" aria-describedby="err-contact_email"`,
		`aria-invalid="true" aria-describedby="err-purpose"`, `id="err-purpose"`)
	must(t, !strings.Contains(r.body, `id="name" name="name" value="scanner.dept.example.edu" placeholder="scanner.dept.example.edu" required autocomplete="off" aria-invalid`), "a valid field is marked invalid")
}
