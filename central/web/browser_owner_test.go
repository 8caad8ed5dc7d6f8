package web_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// pageDriver is one headless Chromium tab with the helpers the browser
// tests share.
type pageDriver struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	base string
}

// ownerScreenshots is where the screenshots go: $POSTERN_SCREENSHOTS, or
// a temporary directory of the test (never the repository).
func ownerScreenshots(t *testing.T) string {
	dir := os.Getenv("POSTERN_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, "central-web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newPageDriver(t *testing.T, e *env) *pageDriver {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	exe := chromium(t)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(cancelT)
	return &pageDriver{t: t, ctx: ctx, dir: ownerScreenshots(t), base: e.srv.URL}
}

func (p *pageDriver) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", step, err)
	}
}

func (p *pageDriver) shot(name string) {
	p.t.Helper()
	buf, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, name), buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pageDriver) expect(step, sel string, want ...string) {
	p.t.Helper()
	text, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("%s: text of %s: %v", step, sel, err)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			p.t.Fatalf("%s: page lacks %q:\n%s", step, w, text)
		}
	}
}

func (p *pageDriver) eval(js string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// narrow checks the page fits a 390 px wide phone: the page itself
// does not scroll sideways (wide tables scroll inside their box).
func (p *pageDriver) narrow(step, path, shot string) {
	p.t.Helper()
	p.do(step+" at 390 px", chromedp.EmulateViewport(390, 844), chromedp.Navigate(p.base+path), chromedp.WaitVisible(chromedp.CSS("h1")))
	if w := p.eval(`String(document.documentElement.scrollWidth)`); w != "390" {
		wide := p.eval(`Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > 391).slice(-3).map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().right)).join(", ")`)
		p.t.Errorf("%s: the page is %s px wide at 390 px (%s)", step, w, wide)
	}
	p.shot(shot)
	p.do("back to desktop", chromedp.EmulateViewport(1280, 900))
}

// TestBrowserOwnerFlows: an owner registers, changes the request (a bad
// value shows an error summary that has the focus and the field marked),
// sees what the relay saw from the device's address while pending, is
// denied, requests review again, is approved, renews, and withdraws.
func TestBrowserOwnerFlows(t *testing.T) {
	e := newEnv(t, nil)
	e.reg.Clock = e.clock.Now
	p := newPageDriver(t, e)
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	ctx := context.Background()
	const name = "scanner.dept.example.edu"
	page := "/my/devices/" + name

	p.do("register",
		chromedp.Navigate(p.base+"/register"),
		chromedp.SendKeys(id("name"), name),
		chromedp.SendKeys(id("ips"), "10.1.2.3"),
		chromedp.SendKeys(id("owner"), "Ada Lovelace"),
		chromedp.SendKeys(id("contact_email"), "ada@dept.example.edu"),
		chromedp.SendKeys(id("senders"), "scanner@dept.example.edu"),
		chromedp.SendKeys(id("purpose"), "scan to mail"),
		chromedp.Click(id("submit")),
		chromedp.WaitVisible(id("next-step")),
	)
	p.expect("pending page", "main", "Waiting for review", "Change the registration", "Withdraw")
	e.st.AddEvent(ctx, event.Event{ID: "b1", Edge: "bldg-1", Time: e.clock.Now().Add(-2 * time.Hour), Kind: event.Refusal, ClientIP: "10.1.2.3",
		Sender: "scanner@dept.example.edu", Recipient: "x@gmail.com", Reason: "client not registered"})
	p.do("reload", chromedp.Navigate(p.base+page), chromedp.WaitVisible(id("reports")))
	p.expect("reports", "#reports", "Your device at 10.1.2.3 tried to send from scanner@dept.example.edu to x@gmail.com and was refused because its registration is pending")
	if title := p.eval(`document.querySelector("#reports time").title`); !strings.HasSuffix(title, "UTC") {
		t.Errorf("time's title %q is not the exact time", title)
	}
	p.shot("owner-01-pending-reports.png")

	// Edit with a bad sender: the error summary has the focus, the field
	// is marked and described, the typed value stays.
	p.do("edit", chromedp.Click(id("edit")), chromedp.WaitVisible(id("senders")))
	p.do("bad sender", chromedp.SetValue(id("senders"), "not-an-address"), chromedp.Click(id("save")), chromedp.WaitVisible(id("error-summary")))
	p.shot("owner-02-edit-error.png")
	if got := p.eval(`document.activeElement.id`); got != "error-summary" {
		t.Errorf("focus after a failed submit is on %q, not the error summary", got)
	}
	if got := p.eval(`document.getElementById("senders").getAttribute("aria-describedby") + " " + document.getElementById("senders").value`); got != "err-senders not-an-address" {
		t.Errorf("senders field after the error: %q", got)
	}
	p.do("good edit", chromedp.SetValue(id("senders"), "scanner@dept.example.edu"), chromedp.SetValue(id("purpose"), "scan to mail, floor 2"),
		chromedp.Click(id("save")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	p.expect("saved", "main", "Your changes are saved.", "scan to mail, floor 2")

	// Denied: change and request again.
	if err := e.reg.Act(ctx, name, "deny", "staff:bob", "give the department", false); err != nil {
		t.Fatal(err)
	}
	p.do("denied", chromedp.Navigate(p.base+page), chromedp.WaitVisible(id("next-step")))
	p.expect("denied page", "#next-step", "Denied", "give the department")
	p.shot("owner-03-denied.png")
	p.do("change and request again", chromedp.Click(id("edit")), chromedp.WaitVisible(id("department")),
		chromedp.SendKeys(id("department"), "Physics"), chromedp.Click(id("save")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	p.expect("re-requested", "main", "back in review", "Physics")
	if d, _ := e.st.Device(ctx, name); d.Status != store.Pending {
		t.Fatalf("after re-request: %s", d.Status)
	}

	// Approved, near its expiry: renew.
	if err := e.reg.Act(ctx, name, "approve", "staff:bob", "", true); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(350 * 24 * time.Hour)
	p.do("active", chromedp.Navigate(p.base+page), chromedp.WaitVisible(id("renew")))
	p.shot("owner-04-active-renew.png")
	p.do("renew", chromedp.Click(id("renew")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	p.expect("renewed", "main", "The registration is renewed.")
	p.narrow("owner device page", page, "owner-05-device-390px.png")
	p.narrow("edit page", page+"/edit", "owner-06-edit-390px.png")

	// Withdraw through the confirmation page.
	p.do("withdraw", chromedp.Navigate(p.base+page), chromedp.WaitVisible(id("withdraw")), chromedp.Click(id("withdraw")), chromedp.WaitVisible(id("withdraw-confirm")))
	p.shot("owner-07-withdraw-confirm.png")
	p.do("confirm withdraw", chromedp.Click(id("withdraw-confirm")), chromedp.WaitVisible(chromedp.CSS("p.flash")), chromedp.WaitVisible(id("next-step")))
	p.expect("withdrawn", "p.flash", "The registration is withdrawn")
	p.expect("withdrawn", "#next-step", "Ended")
	if d, _ := e.st.Device(ctx, name); d.Status != store.Revoked {
		t.Fatalf("after withdraw: %s", d.Status)
	}
	p.shot("owner-08-withdrawn.png")
	t.Logf("screenshots in %s", p.dir)
}

// TestBrowserOverviewAndEdge: staff see the fleet overview, open an
// edge, issue an enrolment token (shown once: a reload does not show it
// or re-post the form) and revoke the edge with a reason.
func TestBrowserOverviewAndEdge(t *testing.T) {
	e := newEnv(t, nil)
	e.staff("alice")
	ctx := context.Background()
	if _, err := e.reg.CreateEdge(ctx, "bldg-1", "Building 1", "North"); err != nil {
		t.Fatal(err)
	}
	e.st.SetEdgeCredentials(ctx, "bldg-1", "bldg-1", "sha256:x")
	now := e.clock.Now()
	for i := range 6 {
		e.st.UpdateEdgeStatus(ctx, "bldg-1", store.EdgeStatus{Online: true, LastSeen: now.Add(time.Duration(i-6) * 10 * time.Minute),
			AllowlistVersion: 1, QueueDepth: i * 3, Outbox: i, Counters: map[string]int64{"smtp_accepted": int64(10 * i), "delivered": int64(9 * i)}})
	}
	for i := range 10 {
		e.st.AddEvent(ctx, event.Event{ID: "f" + string(rune('a'+i)), Edge: "bldg-1", Time: now.Add(-time.Duration(i) * 24 * time.Hour), Kind: event.Delivery,
			Device: "x.dept.example.edu", Count: 20 + i*5})
		e.st.AddEvent(ctx, event.Event{ID: "g" + string(rune('a'+i)), Edge: "bldg-1", Time: now.Add(-time.Duration(i) * 24 * time.Hour), Kind: event.Refusal,
			ClientIP: "10.9.0.1", Count: i})
	}
	p := newPageDriver(t, e)
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	p.do("login", chromedp.Navigate(p.base+"/staff/login"), chromedp.SendKeys(id("username"), "alice"),
		chromedp.SendKeys(id("password"), "password-of-alice"), chromedp.Click(id("login")), chromedp.WaitVisible(chromedp.CSS("h1")))
	p.do("overview", chromedp.Navigate(p.base+"/staff/overview"), chromedp.WaitVisible(id("chart-fleet")))
	p.expect("overview", "main", "Fleet overview", "1 edges online", "bldg-1", "current")
	if got := p.eval(`document.querySelectorAll("#chart-fleet rect").length > 10 ? "bars" : "none"`); got != "bars" {
		t.Errorf("fleet chart has no bars")
	}
	p.shot("staff-01-overview.png")
	p.narrow("overview", "/staff/overview", "staff-02-overview-390px.png")

	p.do("edge page", chromedp.Navigate(p.base+"/staff/overview"), chromedp.WaitVisible(id("chart-fleet")),
		chromedp.Click(chromedp.CSS(`a[href="/staff/edges/bldg-1"]`)), chromedp.WaitVisible(id("edge-status")))
	p.expect("edge page", "main", "Edge bldg-1", "smtp_accepted", "Queue, last 24 hours", "Revoke and remove")
	p.shot("staff-03-edge.png")
	p.do("new token", chromedp.Click(id("new-token")), chromedp.WaitVisible(id("enrol-token")))
	p.expect("token", "#enrol-token", "postern-edge enroll -central", "-token ")
	p.shot("staff-04-edge-token.png")
	p.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("p.error")))
	if got := p.eval(`document.getElementById("enrol-token") ? "shown" : "gone"`); got != "gone" {
		t.Error("the token is shown again after a reload")
	}
	p.narrow("edge page", "/staff/edges/bldg-1", "staff-05-edge-390px.png")
	p.do("revoke", chromedp.Navigate(p.base+"/staff/edges/bldg-1"), chromedp.WaitVisible(id("revoke-reason")),
		chromedp.SendKeys(id("revoke-reason"), "building closed"), chromedp.Click(id("revoke")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	p.expect("revoked", "main", "Edge revoked")
	if ed, _ := e.st.Edge(ctx, "bldg-1"); !ed.Revoked() {
		t.Error("edge not revoked")
	}
	t.Logf("screenshots in %s", p.dir)
}
