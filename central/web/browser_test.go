package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's Chromium: $POSTERN_TEST_CHROMIUM, then PATH.
func chromium(t *testing.T) string {
	if p := os.Getenv("POSTERN_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (CI must have it: apt-get install chromium)")
	}
	t.Skip("browser test skipped: chromium not found (apt-get install chromium, or set POSTERN_TEST_CHROMIUM)")
	return ""
}

// screenshotDir is where the page screenshots go: $POSTERN_TEST_OUT/
// central-web, or testdata/screenshots (git-ignored).
func screenshotDir(t *testing.T) string {
	dir := filepath.Join("testdata", "screenshots")
	if o := os.Getenv("POSTERN_TEST_OUT"); o != "" {
		dir = filepath.Join(o, "central-web")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// TestBrowserRegisterApprove drives headless Chromium through the whole
// flow: an owner fills the form, checks DNS, submits; staff logs in,
// confirms the sender through the shown link, approves; the device shows
// active to staff and owner. Each page is saved as a PNG.
func TestBrowserRegisterApprove(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	exe := chromium(t)
	e := newEnv(t, nil)
	e.staff("alice")
	dir := screenshotDir(t)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// expect asserts the text of the element sel contains every want.
	expect := func(step, sel string, want ...string) {
		t.Helper()
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: text of %s: %v", step, sel, err)
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Fatalf("%s: page lacks %q:\n%s", step, w, text)
			}
		}
	}
	base := e.srv.URL
	id := func(s string) chromedp.ID { return chromedp.ID(s) }

	// Owner: fill the form and check DNS on demand.
	do("register form",
		chromedp.Navigate(base+"/register"),
		chromedp.SendKeys(id("name"), "scanner.dept.example.edu"),
		chromedp.SendKeys(id("ips"), "10.1.2.3"),
		chromedp.SendKeys(id("owner"), "Ada Lovelace"),
		chromedp.SendKeys(id("department"), "Physics"),
		chromedp.SendKeys(id("contact_email"), "ada@dept.example.edu"),
		chromedp.SendKeys(id("senders"), "scanner@dept.example.edu"),
		chromedp.SendKeys(id("purpose"), "scan to mail for the physics office"),
	)
	shot("01-register-form.png")
	do("check DNS", chromedp.Click(id("check-dns")), chromedp.WaitVisible(id("fcrdns-result")))
	shot("02-register-dns-check.png")
	expect("DNS check", "#fcrdns-result", "matches", "reverse DNS of 10.1.2.3 is scanner.dept.example.edu; forward lookup matches")

	// Submit: the owner's device page.
	do("submit", chromedp.Click(id("submit")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	shot("03-owner-device-pending.png")
	expect("owner device page", "main", "Your request is registered", "scanner.dept.example.edu", "pending", "scanner@dept.example.edu", "unconfirmed")
	do("my devices", chromedp.Navigate(base+"/my"), chromedp.WaitVisible(id("owner-link")))
	shot("04-my-devices.png")
	expect("my devices", "main", "scanner.dept.example.edu", "Owner link of these registrations")

	// Staff: log in, see the pending request first.
	do("login form",
		chromedp.Navigate(base+"/staff/login"),
		chromedp.SendKeys(id("username"), "alice"),
		chromedp.SendKeys(id("password"), "password-of-alice"),
	)
	shot("05-staff-login.png")
	do("login", chromedp.Click(id("login")), chromedp.WaitVisible(id("devices")))
	shot("06-staff-console.png")
	expect("console", "main", "pending: 1", "scanner.dept.example.edu", "Ada Lovelace", "(unconfirmed)")

	// The device page shows the confirmation link (no mail configured);
	// following it confirms the sender.
	do("staff device", chromedp.Click(chromedp.CSS(`a[href="/staff/devices/scanner.dept.example.edu"]`)), chromedp.WaitVisible(id("confirm-links")))
	shot("07-staff-device-pending.png")
	expect("staff device", "main", "Staff actions", "Mail is not configured", "forward lookup matches")
	do("open confirmation link", chromedp.Click(chromedp.CSS("#confirm-links a")), chromedp.WaitVisible(id("confirm")))
	shot("08-confirm.png")
	do("confirm", chromedp.Click(id("confirm")), chromedp.WaitVisible(id("confirmed")))
	shot("09-confirmed.png")
	expect("confirmed", "main", "scanner@dept.example.edu is confirmed as a sender of scanner.dept.example.edu")

	// Approve: the device is active.
	do("approve",
		chromedp.Navigate(base+"/staff/devices/scanner.dept.example.edu"),
		chromedp.WaitVisible(id("no-warnings")),
		chromedp.SendKeys(id("approve-reason"), "DNS and sender checked"),
		chromedp.Click(id("act-approve")),
		chromedp.WaitVisible(chromedp.CSS("p.flash")),
	)
	shot("10-staff-device-approved.png")
	expect("approved", "main", "Device approved.", "active", "DNS and sender checked", "staff:alice")
	do("active list", chromedp.Navigate(base+"/staff?status=active"), chromedp.WaitVisible(id("devices")))
	shot("11-console-active.png")
	expect("active list", "#devices", "scanner.dept.example.edu", "active")
	do("owner sees active", chromedp.Navigate(base+"/my/devices/scanner.dept.example.edu"), chromedp.WaitVisible(chromedp.CSS("h1")))
	shot("12-owner-device-active.png")
	expect("owner active", "main", "active", "confirmed")
	do("edges", chromedp.Navigate(base+"/staff/edges"), chromedp.WaitVisible(id("edges")))
	shot("13-edges.png")
	t.Logf("screenshots in %s", dir)
}
