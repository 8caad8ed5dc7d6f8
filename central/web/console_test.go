package web_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// seed stores n pending devices dev1…devN (every fourth in Chemistry,
// every fifth with a mismatching DNS check), created in a shuffled order,
// directly in the store.
func (e *env) seed(n int) {
	e.t.Helper()
	ctx := context.Background()
	for k := range n {
		i := (k*7)%n + 1 // a permutation of 1..n when gcd(7, n) = 1
		name := fmt.Sprintf("dev%d.dept.example.edu", i)
		d := store.Device{Name: name, IPs: []string{fmt.Sprintf("10.2.%d.%d", i/250, i%250+1)}, Owner: "Owner " + fmt.Sprint(i), Department: "Physics",
			ContactEmail: "o@dept.example.edu", Purpose: "scan", FCrDNSOK: i%5 != 0, FCrDNS: "checked",
			Senders: []store.Sender{{Address: fmt.Sprintf("scan%d@dept.example.edu", i), ConfirmedAt: time.Now()}}}
		if i%4 == 0 {
			d.Department = "Chemistry"
		}
		if err := e.st.CreateDevice(ctx, d, "owner"); err != nil {
			e.t.Fatal(err)
		}
		// The store stamps requests with the real time (milliseconds):
		// keep them apart so that "oldest first" is the creation order.
		time.Sleep(2 * time.Millisecond)
	}
}

var deviceLink = regexp.MustCompile(`<th scope="row" data-label="DNS name"><a href="/staff/devices/([^"]+)">`)

func listed(body string) []string {
	var out []string
	for _, m := range deviceLink.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestDeviceListPagesSortsAndFilters(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(121)
	s := e.staff("alice")

	r := s.get("/staff")
	contains(t, r, 200, "1–50 of 121", `aria-sort="ascending"`, `rel="next"`)
	got := listed(r.body)
	must(t, len(got) == 50 && got[0] == "dev1.dept.example.edu" && got[1] == "dev2.dept.example.edu" && got[9] == "dev10.dept.example.edu",
		"natural order: %v", got[:12])
	r = s.get("/staff?page=3")
	contains(t, r, 200, "101–121 of 121", `rel="prev"`)
	must(t, !strings.Contains(r.body, `rel="next"`), "a next link on the last page")
	must(t, listed(r.body)[20] == "dev121.dept.example.edu", "last row: %v", listed(r.body))
	r = s.get("/staff?sort=name&dir=desc&n=25")
	contains(t, r, 200, "1–25 of 121", `aria-sort="descending"`)
	must(t, listed(r.body)[0] == "dev121.dept.example.edu" && len(listed(r.body)) == 25, "descending: %v", listed(r.body))
	r = s.get("/staff?department=Chemistry&dns=mismatch")
	contains(t, r, 200, "1–6 of 6")
	for _, n := range listed(r.body) {
		var i int
		fmt.Sscanf(n, "dev%d.", &i)
		must(t, i%20 == 0, "%s is not in Chemistry with a DNS mismatch", n)
	}
	contains(t, s.get("/staff?q=dev12"), 200, "1–3 of 3") // dev12, dev120, dev121
	contains(t, s.get("/staff?sort=bogus"), 400, "unknown sort order")
	contains(t, s.get("/staff?dns=maybe"), 400, "unknown DNS result")
	contains(t, s.get("/staff?page=99"), 200, "no rows on page 99")

	// Approve two and make one expire soon: the expiring filter.
	ctx := context.Background()
	must(t, e.st.ApproveDevice(ctx, "dev7.dept.example.edu", "staff:x", "", e.clock.Now().Add(10*24*time.Hour)) == nil, "approve")
	must(t, e.st.ApproveDevice(ctx, "dev8.dept.example.edu", "staff:x", "", e.clock.Now().Add(100*24*time.Hour)) == nil, "approve")
	r = s.get("/staff?expiring=30")
	contains(t, r, 200, "1–1 of 1", "dev7.dept.example.edu")

	// The review queue: pending only, oldest request first.
	r = s.get("/staff/queue")
	contains(t, r, 200, "Review queue", "1–50 of 119")
	q := listed(r.body)
	must(t, q[0] == "dev1.dept.example.edu" && q[1] == "dev8.dept.example.edu" == false && q[1] == "dev15.dept.example.edu", "oldest first: %v", q[:3])

	// CSV export of the current filter, every row, formula cells defused.
	must(t, e.st.CreateDevice(ctx, store.Device{Name: "evil.dept.example.edu", Owner: "=HYPERLINK(\"x\")", Department: "Chemistry", ContactEmail: "o@dept.example.edu", Purpose: "x"}, "owner") == nil, "evil")
	r = s.get("/staff/devices.csv?department=Chemistry")
	must(t, r.code == 200 && strings.HasPrefix(r.hdr.Get("Content-Type"), "text/csv"), "csv: %d %s", r.code, r.hdr.Get("Content-Type"))
	rows, err := csv.NewReader(strings.NewReader(r.body)).ReadAll()
	must(t, err == nil, "csv: %v", err)
	must(t, len(rows) == 1+30+1, "csv rows: %d", len(rows))
	found := false
	for _, row := range rows {
		if row[0] == "evil.dept.example.edu" {
			found = row[3] == `'=HYPERLINK("x")`
		}
	}
	must(t, found, "formula cell not defused")
}

func TestActionsNeedTheirOwnFormAndConfirmation(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(3)
	s := e.staff("alice")
	dev := "/staff/devices/dev1.dept.example.edu"
	r := s.get(dev)
	contains(t, r, 200, `id="form-approve"`, `href="/staff/devices/dev1.dept.example.edu/confirm/deny"`, `href="/staff/devices/dev1.dept.example.edu/confirm/revoke"`)
	// The approve form holds only its own fields: a reason typed there
	// cannot deny, and no button in it carries another action.
	form := regexp.MustCompile(`(?s)<form method="post" action="/staff/devices/dev1.dept.example.edu/approve".*?</form>`).FindString(r.body)
	must(t, form != "" && !strings.Contains(form, `name="action"`) && strings.Count(form, "<button") == 1, "approve form: %s", form)

	// Deny without confirmation shows the confirmation page with the
	// typed reason kept; nothing changes.
	r = s.post(dev+"/act", url.Values{"action": {"deny"}, "reason": {"duplicate of dev2"}})
	contains(t, r, 200, "Deny dev1.dept.example.edu?", ">duplicate of dev2</textarea>", `name="confirm" value="1"`)
	d, _ := e.st.Device(context.Background(), "dev1.dept.example.edu")
	must(t, d.Status == store.Pending, "deny without confirmation changed the status to %s", d.Status)
	// Confirming without a reason: the field error is tied to the field.
	r = s.post(dev+"/act", url.Values{"action": {"deny"}, "reason": {"  "}, "confirm": {"1"}})
	contains(t, r, 422, `aria-invalid="true"`, `aria-describedby="reason-hint err-reason"`, `id="err-reason"`, `id="error-summary"`)
	r = s.post(dev+"/act", url.Values{"action": {"deny"}, "reason": {"duplicate of dev2"}, "confirm": {"1"}})
	must(t, r.code == 303, "deny: %d", r.code)
	contains(t, s.get(r.loc), 200, "Request denied.", "duplicate of dev2")
	contains(t, s.get(dev+"/confirm/suspend"), 200, "cannot be suspended now")
	contains(t, s.get(dev+"/confirm/approve"), 404)
}

func TestApprovalWarnings(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	d := store.Device{Name: "copier.dept.example.edu", IPs: []string{"192.0.2.10"}, Owner: "Mary", ContactEmail: "m@dept.example.edu", Purpose: "x",
		BehindFirewall: true, FirewallAccepted: true, FCrDNS: "no reverse DNS (PTR) record for 192.0.2.10",
		Senders: []store.Sender{{Address: "mary.smith@dept.example.edu", Personal: true}}}
	must(t, e.st.CreateDevice(ctx, d, "owner") == nil, "create")
	s := e.staff("alice")
	dev := "/staff/devices/copier.dept.example.edu"
	contains(t, s.get(dev), 200, `id="ack-dns"`, `id="ack-public-ip"`, `id="ack-personal"`, `id="ack-unconfirmed"`, `id="ack-firewall"`, "no usable PTR record", "Publicly routable address 192.0.2.10")
	r := s.post(dev+"/approve", url.Values{"ack": {"dns", "public-ip", "personal", "firewall"}, "reason": {"called Mary"}})
	contains(t, r, 409, "tick off every warning", `value="called Mary"`, `id="err-ack"`)
	got, _ := e.st.Device(ctx, d.Name)
	must(t, got.Status == store.Pending, "approved with a warning not ticked off")
	r = s.post(dev+"/approve", url.Values{"ack": {"dns", "public-ip", "personal", "firewall", "unconfirmed"}, "reason": {"called Mary"}})
	must(t, r.code == 303, "approve: %d %s", r.code, r.body)
	a, _ := e.st.ListAudit(ctx, store.AuditFilter{Device: d.Name, Limit: 1})
	must(t, a[0].Action == "approve" && strings.Contains(a[0].Reason, "called Mary [warnings acknowledged: dns, public-ip, personal, unconfirmed, firewall]"), "audit: %+v", a[0])
}

func TestRevokedNameCanBeRequestedAgain(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.browser()
	must(t, owner.post("/register", goodForm()).code == http.StatusSeeOther, "register")
	s := e.staff("alice")
	dev := "/staff/devices/scanner.dept.example.edu"
	must(t, s.post(dev+"/act", url.Values{"action": {"revoke"}, "reason": {"wrong owner"}, "confirm": {"1"}}).code == 303, "revoke")
	again := e.browser()
	f := goodForm()
	f.Set("owner", "Grace Hopper")
	r := again.post("/register", f)
	must(t, r.code == http.StatusSeeOther, "request for a revoked name: %d %s", r.code, r.body)
	contains(t, s.get(dev), 200, "Earlier registrations of this name", "Ada Lovelace", "wrong owner", "Grace Hopper", "new request for a revoked name")
	// A pending (or active) name stays taken.
	f.Del("csrf")
	contains(t, e.browser().post("/register", f), 422, "already registered")
}

func TestEventsPage(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	base := e.clock.Now().Add(-2 * time.Hour).UTC().Truncate(time.Minute)
	for i := range 60 {
		ev := event.Event{ID: fmt.Sprintf("ev%d", i), Edge: "bldg-1", Time: base.Add(time.Duration(i) * time.Minute), Kind: event.Refusal,
			Device: "scanner.dept.example.edu", ClientIP: "10.1.2.3", Sender: "scan@dept.example.edu", Recipient: "x@gmail.com", Reason: "sender not registered"}
		if i%3 == 0 {
			ev.Device, ev.ClientIP, ev.Sender, ev.Edge = "", "10.7.7.7", "who@dept.example.edu", "bldg-2"
			ev.Reason = "client not registered"
		}
		if _, err := e.st.AddEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	s := e.staff("alice")
	contains(t, s.get("/staff/events"), 200, "1–50 of 60", `rel="next"`)
	r := s.get("/staff/events?client_ip=10.7.7.7")
	contains(t, r, 200, "1–20 of 20", "not registered", "client not registered")
	must(t, !strings.Contains(r.body, "sender not registered"), "filter by client shows other clients")
	contains(t, s.get("/staff/events?device=scanner.dept.example.edu&edge=bldg-1&kind=refusal&sender=SCAN@dept.example.edu&recipient=x@gmail.com"), 200, "1–40 of 40")
	since := base.Add(10 * time.Minute).Format("2006-01-02 15:04")
	until := base.Add(20 * time.Minute).Format("2006-01-02T15:04")
	contains(t, s.get("/staff/events?since="+url.QueryEscape(since)+"&until="+until), 200, "1–10 of 10")
	r = s.get("/staff/events?client_ip=not-an-ip&since=yesterday")
	contains(t, r, 400, `id="err-client_ip"`, `aria-describedby="err-client_ip"`, `value="not-an-ip"`, `id="err-since"`, `value="yesterday"`, "is not a time")
	contains(t, s.get("/staff/events?kind=bogus"), 400, "Unknown kind.")
	contains(t, e.browser().get("/staff/events"), 303)
}

func TestAuditPage(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(60)
	s := e.staff("alice")
	must(t, s.post("/staff/devices/dev3.dept.example.edu/act", url.Values{"action": {"deny"}, "reason": {"no"}, "confirm": {"1"}}).code == 303, "deny")
	r := s.get("/staff/audit")
	contains(t, r, 200, "1–50 of 61", `rel="next"`)
	contains(t, s.get("/staff/audit?page=2"), 200, "51–61 of 61")
	r = s.get("/staff/audit?actor=staff:alice")
	contains(t, r, 200, "1–1 of 1", "dev3.dept.example.edu")
	contains(t, s.get("/staff/audit?action=register&device=dev4.dept.example.edu"), 200, "1–1 of 1")
	contains(t, s.get("/staff/audit?until=2000-01-01"), 200, "none")
	contains(t, s.get("/staff/audit?since=soon"), 400, `id="err-since"`, `value="soon"`)
}

func TestBulkActions(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(10)
	s := e.staff("alice")
	ctx := context.Background()
	must(t, e.st.ApproveDevice(ctx, "dev2.dept.example.edu", "staff:x", "", e.clock.Now().Add(time.Hour)) == nil, "approve")

	// A selection: dev2 is active already and is listed as skipped.
	r := s.get("/staff/bulk?action=approve&sel=dev1.dept.example.edu&sel=dev2.dept.example.edu&sel=dev5.dept.example.edu")
	contains(t, r, 200, "approve: 2 devices will change", "Skipped (1)", "dev2.dept.example.edu (active)", `name="count" value="2"`, `id="ack-dns"`)
	// Posting a list that does not match its count is refused.
	contains(t, s.post("/staff/bulk", url.Values{"action": {"approve"}, "count": {"3"}, "name": {"dev1.dept.example.edu", "dev5.dept.example.edu"}}), 400, "does not match")
	// Without the DNS acknowledgement, dev5 (mismatch) stays pending.
	r = s.post("/staff/bulk", url.Values{"action": {"approve"}, "count": {"2"}, "name": {"dev1.dept.example.edu", "dev5.dept.example.edu"}})
	contains(t, r, 200, "1 of 2 done", "not every warning was acknowledged")
	d, _ := e.st.Device(ctx, "dev5.dept.example.edu")
	must(t, d.Status == store.Pending, "dev5 approved without acknowledging its DNS mismatch")

	// Everything matching a filter, with a reason for suspend.
	r = s.get("/staff/bulk?action=suspend&all=1&status=active")
	contains(t, r, 200, "suspend: 2 devices will change", "dev1.dept.example.edu", "dev2.dept.example.edu")
	contains(t, s.post("/staff/bulk", url.Values{"action": {"suspend"}, "count": {"2"}, "name": {"dev1.dept.example.edu", "dev2.dept.example.edu"}}), 422, "Give a reason")
	r = s.post("/staff/bulk", url.Values{"action": {"suspend"}, "count": {"2"}, "name": {"dev1.dept.example.edu", "dev2.dept.example.edu"}, "reason": {"bounces"}})
	contains(t, r, 200, "2 of 2 done")
	p, _ := e.st.ListDevicePage(ctx, store.DeviceQuery{Status: []store.Status{store.Suspended}})
	must(t, p.Total == 2, "suspended: %d", p.Total)
	// The bulk form needs CSRF like any POST.
	contains(t, s.post("/staff/bulk", url.Values{"csrf": {"forged-token-forged-token-forged-token"}, "action": {"reinstate"}, "count": {"1"}, "name": {"dev1.dept.example.edu"}}), 403)
	contains(t, s.get("/staff/bulk?action=frobnicate&all=1"), 400)
	contains(t, s.get("/staff/bulk?action=renew"), 400, "Tick the devices")
}

func TestStaffEditsRegistration(t *testing.T) {
	e := newEnv(t, nil)
	var changed atomic.Int32
	e.reg.Changed = func() { changed.Add(1) }
	ctx := context.Background()
	d := store.Device{Name: "scanner.dept.example.edu", IPs: []string{"10.1.2.9"}, Owner: "Ada", Department: "Physics", ContactEmail: "ada@dept.example.edu",
		Purpose: "scan", Senders: []store.Sender{{Address: "scanner@dept.example.edu", ConfirmedAt: time.Now()}}}
	must(t, e.st.CreateDevice(ctx, d, "owner") == nil, "create")
	must(t, e.st.ApproveDevice(ctx, d.Name, "staff:x", "", time.Now().Add(time.Hour)) == nil, "approve")
	s := e.staff("alice")
	dev := "/staff/devices/scanner.dept.example.edu"
	contains(t, s.get(dev+"/edit"), 200, `value="10.1.2.9"`, ">scanner@dept.example.edu</textarea>")

	bad := url.Values{"ips": {"10.1.2.x"}, "owner": {"Ada"}, "department": {"Physics"}, "contact_email": {""}, "senders": {"scanner@dept.example.edu"}, "purpose": {"scan"}}
	contains(t, s.post(dev+"/edit", bad), 422, `id="err-ips"`, `aria-describedby="err-ips"`, `value="10.1.2.x"`, `id="err-contact_email"`)

	// The DNS now matches with the right address; a new sender is added.
	good := url.Values{"ips": {"10.1.2.3"}, "owner": {"Ada Lovelace"}, "department": {"Physics"}, "contact_email": {"ada@dept.example.edu"},
		"senders": {"scanner@dept.example.edu\nscan2@dept.example.edu"}, "purpose": {"scan to mail"}}
	r := s.post(dev+"/edit", good)
	must(t, r.code == 303, "edit: %d %s", r.code, r.body)
	contains(t, s.get(r.loc), 200, "Registration changed.", "scan2@dept.example.edu", "senders added (to be confirmed): scan2@dept.example.edu", `id="confirm-links"`)
	got, _ := e.st.Device(ctx, d.Name)
	must(t, got.FCrDNSOK && got.Owner == "Ada Lovelace", "after edit: %+v", got)
	_, snap, _ := e.st.AllowlistSnapshot(ctx)
	must(t, len(snap) == 1 && len(snap[0].Senders) == 1, "an unconfirmed new sender reached the allowlist: %+v", snap)
	must(t, changed.Load() == 0, "adding an unconfirmed sender republished the allowlist")

	// Removing the confirmed sender changes what edges enforce.
	good.Set("senders", "scan2@dept.example.edu")
	delete(good, "csrf")
	must(t, s.post(dev+"/edit", good).code == 303, "remove sender")
	must(t, changed.Load() == 1, "removing a sender did not republish (%d)", changed.Load())
	delete(good, "csrf")
	r = s.post(dev+"/edit", good)
	must(t, r.code == 303 && strings.HasSuffix(r.loc, "done=unchanged"), "no-op edit: %d %s", r.code, r.loc)
	contains(t, s.get("/staff/devices/none.example.edu/edit"), 404)
}
