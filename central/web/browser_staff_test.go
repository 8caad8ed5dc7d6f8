package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// staffShots is where the staff console's screenshots go:
// $POSTERN_SCREENSHOTS, or a temporary directory.
func staffShots(t *testing.T) string {
	dir := os.Getenv("POSTERN_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, "staff-console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// chrome drives one headless Chromium for a test.
type chrome struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	base string
}

func newChrome(t *testing.T, e *env, width, height int) *chrome {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	exe := chromium(t)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(width, height))
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(cancelT)
	c := &chrome{t: t, ctx: ctx, dir: staffShots(t), base: e.srv.URL}
	if width < 600 {
		c.do("phone viewport", chromedp.EmulateViewport(int64(width), int64(height), chromedp.EmulateMobile))
	}
	return c
}

func (c *chrome) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, actions...); err != nil {
		c.t.Fatalf("%s: %v", step, err)
	}
}

func (c *chrome) shot(name string) {
	c.t.Helper()
	buf, err := chromedp.Run(c.ctx, chromedp.FullScreenshot(90))
	if err != nil {
		c.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, name), buf, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chrome) text(step, sel string, want ...string) string {
	c.t.Helper()
	text, err := chromedp.Run(c.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		c.t.Fatalf("%s: text of %s: %v", step, sel, err)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			c.t.Fatalf("%s: %s lacks %q:\n%s", step, sel, w, text)
		}
	}
	return text
}

func eval[T any](c *chrome, step, js string) T {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		c.t.Fatalf("%s: %v", step, err)
	}
	return v
}

// focusOn waits until the element with this id has the focus.
func (c *chrome) focusOn(id string) {
	c.t.Helper()
	if _, err := chromedp.Run(c.ctx, chromedp.Poll[bool](`document.activeElement && document.activeElement.id === '`+id+`'`, chromedp.WithPollingTimeout(5*time.Second))); err != nil {
		got := eval[string](c, "focus", `document.activeElement ? document.activeElement.tagName + '#' + document.activeElement.id : ''`)
		c.t.Fatalf("focus is on %q, want #%s: %v", got, id, err)
	}
}

func (c *chrome) login(name string) {
	c.t.Helper()
	c.do("login", chromedp.Navigate(c.base+"/staff/login"),
		chromedp.SendKeys(chromedp.ID("username"), name), chromedp.SendKeys(chromedp.ID("password"), "password-of-"+name),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("devices")))
}

func (e *env) seedEvents(n int) {
	e.t.Helper()
	base := e.clock.Now().Add(-time.Duration(n) * time.Minute)
	for i := range n {
		ev := event.Event{ID: fmt.Sprintf("bev%d", i), Edge: "bldg-1", Time: base.Add(time.Duration(i) * time.Minute), Kind: event.Refusal,
			Device: "dev5.dept.example.edu", ClientIP: "10.2.0.6", Sender: "scan5@dept.example.edu", Recipient: "someone@gmail.com", Reason: "registration pending"}
		if i%4 == 0 {
			ev.Device, ev.ClientIP, ev.Sender, ev.Reason = "", "10.9.8.7", "printer@dept.example.edu", "client not registered"
		}
		if _, err := e.st.AddEvent(context.Background(), ev); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestBrowserStaffConsole drives the staff console in Chromium at desktop
// width: sorting and paging the device list, filters, the review queue,
// Enter in a field submitting only its own form, approval warnings, the
// deny confirmation with a field error, editing a registration, bulk
// approval and the events and audit pages.
func TestBrowserStaffConsole(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(61)
	e.seedEvents(30)
	e.staff("alice")
	c := newChrome(t, e, 1280, 900)
	c.login("alice")
	c.shot("01-devices.png")
	c.text("device list", "#devices", "1–50 of 61", "dev1.dept.example.edu", "dev2.dept.example.edu")
	first := eval[string](c, "first row", `document.querySelector('#devices tbody th a').textContent`)
	must(t, first == "dev1.dept.example.edu", "first row %s", first)

	// Sort by name, descending (the header link), then page.
	c.do("sort desc", chromedp.Click(chromedp.CSS(`#devices thead th[aria-sort] a`)), chromedp.WaitVisible(chromedp.CSS(`th[aria-sort="descending"]`)))
	first = eval[string](c, "first row", `document.querySelector('#devices tbody th a').textContent`)
	must(t, first == "dev61.dept.example.edu", "descending first row %s", first)
	c.do("next page", chromedp.Click(chromedp.ID("page-next")), chromedp.WaitVisible(chromedp.ID("page-prev")))
	c.text("page 2", "#pager-summary", "51–61 of 61")
	c.shot("02-devices-desc-page2.png")

	// Filters: department and DNS result.
	c.do("filter", chromedp.Navigate(c.base+"/staff"), chromedp.SetValue(chromedp.ID("f-department"), "Chemistry"),
		chromedp.SetValue(chromedp.ID("f-dns"), "mismatch"), chromedp.Click(chromedp.ID("apply-filters")),
		chromedp.WaitReady(chromedp.CSS(`#f-dns option[value="mismatch"][selected]`)))
	c.text("filtered", "#pager-summary", "1–3 of 3")
	c.shot("03-devices-filtered.png")

	// The review queue, oldest first.
	c.do("queue", chromedp.Navigate(c.base+"/staff/queue"), chromedp.WaitVisible(chromedp.ID("devices")))
	c.text("queue", "main", "Review queue", "1–50 of 61")
	c.shot("04-review-queue.png")

	// dev5 has a DNS mismatch. Enter in the approval note submits the
	// approval form only: it is refused for the unticked warning, the
	// note is kept and focus is on the error summary.
	dev := c.base + "/staff/devices/dev5.dept.example.edu"
	c.do("device", chromedp.Navigate(dev), chromedp.WaitVisible(chromedp.ID("warnings")))
	c.shot("05-device-warnings.png")
	c.do("enter in note", chromedp.SendKeys(chromedp.ID("approve-reason"), "checked with the owner"+kb.Enter), chromedp.WaitVisible(chromedp.ID("error-summary")))
	c.text("refused", "#error-summary", "tick off every warning")
	c.focusOn("error-summary")
	kept := eval[string](c, "kept", `document.getElementById('approve-reason').value`)
	must(t, kept == "checked with the owner", "note not kept: %q", kept)
	c.shot("06-device-warning-refused.png")
	d, _ := e.st.Device(context.Background(), "dev5.dept.example.edu")
	must(t, d.Status == store.Pending, "Enter changed the status to %s", d.Status)
	c.do("approve anyway", chromedp.Click(chromedp.ID("ack-dns")), chromedp.Click(chromedp.ID("act-approve")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	c.text("approved", "main", "Device approved.", "warnings acknowledged: dns")
	c.shot("07-device-approved.png")

	// Deny dev6: the confirmation page; an empty reason is a field error.
	c.do("deny link", chromedp.Navigate(c.base+"/staff/devices/dev6.dept.example.edu"), chromedp.Click(chromedp.ID("act-deny")), chromedp.WaitVisible(chromedp.ID("form-confirm")))
	c.shot("08-deny-confirm.png")
	c.do("deny without reason", chromedp.Click(chromedp.ID("confirm-action")), chromedp.WaitVisible(chromedp.ID("err-reason")))
	c.focusOn("error-summary")
	inv := eval[string](c, "aria-invalid", `document.getElementById('reason').getAttribute('aria-invalid') + ' ' + document.getElementById('reason').getAttribute('aria-describedby')`)
	must(t, inv == "true reason-hint err-reason", "field error not tied: %q", inv)
	c.shot("09-deny-reason-missing.png")
	c.do("deny", chromedp.SendKeys(chromedp.ID("reason"), "duplicate of dev7"), chromedp.Click(chromedp.ID("confirm-action")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	c.text("denied", "main", "Request denied.", "duplicate of dev7")

	// Edit a registration: a bad address is a field error with the value
	// kept, then a valid change is saved and shown in the history.
	c.do("edit", chromedp.Navigate(c.base+"/staff/devices/dev9.dept.example.edu"), chromedp.Click(chromedp.ID("edit")), chromedp.WaitVisible(chromedp.ID("form-edit")),
		chromedp.SetValue(chromedp.ID("ips"), "10.2.0.300"), chromedp.Click(chromedp.ID("save-edit")), chromedp.WaitVisible(chromedp.ID("err-ips")))
	c.focusOn("error-summary")
	c.shot("10-edit-error.png")
	c.do("edit save", chromedp.SetValue(chromedp.ID("ips"), "10.2.0.10"), chromedp.SetValue(chromedp.ID("purpose"), "scan to mail for the lab"),
		chromedp.Click(chromedp.ID("save-edit")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	c.text("edited", "main", "Registration changed.", "purpose changed", "scan to mail for the lab")

	// Bulk: tick two devices, review, confirm.
	c.do("bulk select", chromedp.Navigate(c.base+"/staff?status=pending"), chromedp.WaitVisible(chromedp.ID("devices")),
		chromedp.Click(chromedp.CSS(`input[value="dev1.dept.example.edu"]`)), chromedp.Click(chromedp.CSS(`input[value="dev2.dept.example.edu"]`)),
		chromedp.SetValue(chromedp.ID("bulk-action"), "approve"), chromedp.Click(chromedp.ID("bulk-selected")), chromedp.WaitVisible(chromedp.ID("bulk-confirm")))
	c.text("bulk confirm", "#bulk-count", "approve: 2 devices will change")
	c.shot("11-bulk-confirm.png")
	c.do("bulk apply", chromedp.Click(chromedp.ID("bulk-apply")), chromedp.WaitVisible(chromedp.ID("bulk-results")))
	c.text("bulk results", "#bulk-summary", "2 of 2 done")
	c.shot("12-bulk-results.png")

	// Events: the refusals of an unregistered client.
	c.do("events", chromedp.Navigate(c.base+"/staff/events"), chromedp.SendKeys(chromedp.ID("client_ip"), "10.9.8.7"+kb.Enter),
		chromedp.WaitReady(chromedp.CSS(`#client_ip[value="10.9.8.7"]`)))
	c.text("events", "main", "1–8 of 8", "not registered", "client not registered", "printer@dept.example.edu")
	c.shot("13-events-unregistered-client.png")
	c.do("audit", chromedp.Navigate(c.base+"/staff/audit?actor=staff:alice"), chromedp.WaitVisible(chromedp.ID("audit")))
	c.text("audit", "#audit", "approve", "deny", "duplicate of dev7")
	c.shot("14-audit.png")
	t.Logf("screenshots in %s", c.dir)
}

// TestBrowserStaffPhone loads the staff pages at 390 px: the page never
// scrolls sideways (tables stack or scroll inside themselves) and every
// control is at least 24 px high.
func TestBrowserStaffPhone(t *testing.T) {
	e := newEnv(t, nil)
	e.seed(30)
	e.seedEvents(20)
	e.staff("alice")
	c := newChrome(t, e, 390, 844)
	c.login("alice")
	pages := []struct{ path, shot, sel string }{
		{"/staff", "20-phone-devices.png", "devices"},
		{"/staff/queue", "21-phone-queue.png", "devices"},
		{"/staff/devices/dev5.dept.example.edu", "22-phone-device.png", "warnings"},
		{"/staff/devices/dev5.dept.example.edu/confirm/revoke", "23-phone-revoke.png", "form-confirm"},
		{"/staff/devices/dev5.dept.example.edu/edit", "27-phone-edit.png", "form-edit"},
		{"/staff/events", "24-phone-events.png", "events"},
		{"/staff/audit", "25-phone-audit.png", "audit"},
		{"/staff/bulk?action=approve&all=1&status=pending", "26-phone-bulk.png", "bulk-confirm"},
	}
	for _, p := range pages {
		c.do(p.path, chromedp.Navigate(c.base+p.path), chromedp.WaitVisible(chromedp.ID(p.sel)))
		c.shot(p.shot)
		w := eval[float64](c, p.path+" width", `document.documentElement.scrollWidth`)
		if w > 390 {
			wide := eval[[]string](c, "wide", `Array.from(document.querySelectorAll('body *')).filter(el => el.getBoundingClientRect().right > 391 || el.scrollWidth > 391).map(el => el.tagName + '#' + el.id + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))`)
			t.Fatalf("%s: page is %v px wide at 390 px: %v", p.path, w, wide)
		}
		small := eval[[]string](c, p.path+" targets", `Array.from(document.querySelectorAll('main button, main input:not([type=hidden]), main select, main textarea, main .pager a, main th a, header a, header button'))
			.filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && (r.height < 24 || r.width < 24); })
			.map(el => el.outerHTML.slice(0, 80))`)
		must(t, len(small) == 0, "%s: targets under 24 px: %v", p.path, small)
	}
	t.Logf("screenshots in %s", c.dir)
}
