package notify_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/notify"
	"github.com/postern/postern/central/notify/notifytest"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
)

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

type env struct {
	st   store.Store
	sink *notifytest.Sink
	reg  *registration.Service
	n    *notify.Notifier
	clk  *clock
}

var ctx = context.Background()

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sink := notifytest.Start(t)
	clk := &clock{t: time.Date(2026, 3, 2, 9, 14, 0, 0, time.UTC)}
	m := &mailer.Mailer{Addr: sink.Addr, From: "postern@example.edu"}
	reg := &registration.Service{Store: st, Mail: m, BaseURL: "https://central.example.edu", Period: 365 * 24 * time.Hour,
		AffiliatedDomains: []string{"example.edu", ".example.edu"}, Clock: clk.Now}
	n := &notify.Notifier{Mail: m, Store: st, BaseURL: reg.BaseURL, Affiliated: reg.Affiliated, Clock: clk.Now}
	reg.Owners = n
	return &env{st: st, sink: sink, reg: reg, n: n, clk: clk}
}

func (e *env) register(t *testing.T, name, contact string) store.Device {
	t.Helper()
	d, errs, err := e.reg.Register(ctx, registration.Request{Name: name, Owner: "Ada Lovelace", ContactEmail: contact,
		Senders: "scanner@dept.example.edu", Purpose: "scan to mail"}, "owner-hash-"+name, "owner")
	if err != nil || len(errs) > 0 {
		t.Fatalf("register %s: %v %v", name, errs, err)
	}
	return d
}

// notices returns the owner notices the contact received (the sender
// confirmations go to the sender address, not to the contact).
func notices(s *notifytest.Sink, contact string) []notifytest.Message { return s.To(contact) }

func TestStatusNoticesOncePerEvent(t *testing.T) {
	e := newEnv(t)
	const contact = "ada@dept.example.edu"
	d := e.register(t, "scanner.dept.example.edu", contact)
	if sent, err := e.reg.SendOwnerLink(ctx, d, "https://central.example.edu/owner?key=secret-key", false); !sent || err != nil {
		t.Fatalf("received notice: %v %v", sent, err)
	}
	if sent, _ := e.reg.SendOwnerLink(ctx, d, "https://central.example.edu/owner?key=secret-key", false); sent {
		t.Fatal("received notice sent twice")
	}
	got := notices(e.sink, contact)
	if len(got) != 1 || got[0].Subject() != "Registration of scanner.dept.example.edu received" ||
		!strings.Contains(got[0].Body(), "https://central.example.edu/owner?key=secret-key") ||
		!strings.Contains(got[0].Body(), "confirmation link") {
		t.Fatalf("received notice: %+v", got)
	}

	act := func(a registration.Action, reason string) {
		t.Helper()
		if err := e.reg.Act(ctx, d.Name, a, "staff:bob", reason, true); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	act(registration.Deny, "the sender address must be a functional mailbox, not a person's")
	act(registration.Approve, "")
	act(registration.Suspend, "NDRs to scanner@dept.example.edu undeliverable")
	// A second suspension (another edge reporting) changes nothing and
	// mails nothing.
	act(registration.Suspend, "again")
	act(registration.Reinstate, "")
	act(registration.Revoke, "device retired")
	got = notices(e.sink, contact)
	var subjects []string
	for _, m := range got {
		subjects = append(subjects, m.Subject())
	}
	want := []string{
		"Registration of scanner.dept.example.edu received",
		"Registration of scanner.dept.example.edu denied",
		"Registration of scanner.dept.example.edu approved",
		"Device scanner.dept.example.edu suspended",
		"Device scanner.dept.example.edu reinstated",
		"Registration of scanner.dept.example.edu revoked",
	}
	if strings.Join(subjects, "\n") != strings.Join(want, "\n") {
		t.Fatalf("subjects:\n%s\nwant:\n%s", strings.Join(subjects, "\n"), strings.Join(want, "\n"))
	}
	body := func(i int) string { return got[i].Body() }
	for i, must := range map[int][]string{
		1: {"the sender address must be a functional mailbox, not a person's", "Change or request again", "/my/devices/scanner.dept.example.edu"},
		2: {"until\nTuesday 2 March 2027, 09:14 UTC", "scanner@dept.example.edu", "Renew"},
		3: {"NDRs to scanner@dept.example.edu undeliverable", "What to fix", "reinstate"},
		5: {"device retired", "/register"},
	} {
		for _, s := range must {
			if !strings.Contains(body(i), s) {
				t.Errorf("notice %q lacks %q:\n%s", got[i].Subject(), s, body(i))
			}
		}
	}
}

func TestOnlyAffiliatedContacts(t *testing.T) {
	e := newEnv(t)
	d := e.register(t, "copier.dept.example.edu", "someone@elsewhere.example.com")
	if sent, err := e.reg.SendOwnerLink(ctx, d, "https://central.example.edu/owner?key=k", false); sent || err != nil {
		t.Fatalf("owner link to an outside contact from the public form: %v %v", sent, err)
	}
	if err := e.reg.Act(ctx, d.Name, registration.Deny, "staff:bob", "no", false); err != nil {
		t.Fatal(err)
	}
	if m := e.sink.To("someone@elsewhere.example.com"); len(m) != 0 {
		t.Fatalf("outside contact mailed: %+v", m)
	}
	// Staff registering for someone may send the owner link anywhere.
	if sent, err := e.reg.SendOwnerLink(ctx, d, "https://central.example.edu/owner?key=k", true); !sent || err != nil {
		t.Fatalf("owner link by staff: %v %v", sent, err)
	}
}

func TestReasonCannotInjectHeaders(t *testing.T) {
	e := newEnv(t)
	d := e.register(t, "scanner.dept.example.edu", "ada@dept.example.edu")
	if err := e.reg.Act(ctx, d.Name, registration.Deny, "api:tok", "bad\r\nBcc: victim@example.com\r\n\r\n.\r\nMAIL FROM:<x@y>", false); err != nil {
		t.Fatal(err)
	}
	got := e.sink.To("ada@dept.example.edu")
	if len(got) != 1 {
		t.Fatalf("denial notices: %d", len(got))
	}
	head, _, _ := strings.Cut(got[0].Data, "\r\n\r\n")
	if strings.Contains(head, "Bcc") || len(e.sink.To("victim@example.com")) != 0 {
		t.Fatalf("header injected:\n%s", got[0].Data)
	}
	if !strings.Contains(got[0].Body(), "bad  Bcc: victim@example.com    .  MAIL FROM:<x@y>") {
		t.Fatalf("reason not kept on one line:\n%s", got[0].Body())
	}
}

func TestExpiryReminders(t *testing.T) {
	e := newEnv(t)
	const contact = "ada@dept.example.edu"
	d := e.register(t, "scanner.dept.example.edu", contact)
	if err := e.reg.Act(ctx, d.Name, registration.Approve, "staff:bob", "", true); err != nil {
		t.Fatal(err)
	}
	base := len(e.sink.To(contact))
	subjects := func() []string {
		var out []string
		for _, m := range e.sink.To(contact)[base:] {
			out = append(out, m.Subject())
		}
		return out
	}
	step := func(d time.Duration) {
		t.Helper()
		e.clk.Add(d)
		if _, err := e.reg.ExpireDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step(300 * 24 * time.Hour) // 65 days left: nothing
	if s := subjects(); len(s) != 0 {
		t.Fatalf("reminders 65 days before: %v", s)
	}
	step(40 * 24 * time.Hour) // 25 days left
	step(2 * time.Hour)       // again later: not twice
	if s := subjects(); len(s) != 1 || s[0] != "Registration of scanner.dept.example.edu expires in 25 days" {
		t.Fatalf("30-day reminder: %v", s)
	}
	// The 7-day reminder fails once (relay refuses): retried next hour.
	e.sink.Fail(true)
	step(19 * 24 * time.Hour) // 6 days left
	e.sink.Fail(false)
	if s := subjects(); len(s) != 1 {
		t.Fatalf("reminder while the relay refuses: %v", s)
	}
	step(30 * time.Minute) // within the hour: not yet
	step(31 * time.Minute)
	step(2 * time.Hour)
	if s := subjects(); len(s) != 2 || !strings.HasPrefix(s[1], "Registration of scanner.dept.example.edu expires in 6 days") {
		t.Fatalf("7-day reminder: %v", s)
	}
	if b := e.sink.To(contact)[base+1].Body(); !strings.Contains(b, `press "Renew"`) {
		t.Fatalf("reminder body:\n%s", b)
	}
	step(7 * 24 * time.Hour) // expired
	step(time.Hour)
	if s := subjects(); len(s) != 3 || s[2] != "Registration of scanner.dept.example.edu expired" {
		t.Fatalf("expired notice: %v", s)
	}
	// A renewal starts a new period: its reminders go out again.
	if err := e.reg.Act(ctx, d.Name, registration.Renew, "staff:bob", "", false); err != nil {
		t.Fatal(err)
	}
	step(340 * 24 * time.Hour)
	if s := subjects(); len(s) != 4 || !strings.Contains(s[3], "expires in") {
		t.Fatalf("reminder of the renewed period: %v", s)
	}
}

// TestRemindPages: more expiring registrations than one page, the
// soonest ones with contacts outside the affiliated domains (never
// mailed): every affiliated contact is reminded in one round, once.
func TestRemindPages(t *testing.T) {
	e := newEnv(t)
	now := e.clk.Now()
	const n = 205
	add := func(name, contact string, exp time.Time) {
		t.Helper()
		d := store.Device{Name: name, Owner: "Ada", ContactEmail: contact, Senders: []store.Sender{{Address: "s@dept.example.edu"}}}
		if err := e.st.CreateDevice(ctx, d, "cli"); err != nil {
			t.Fatal(err)
		}
		if err := e.st.ApproveDevice(ctx, name, "staff:bob", "", exp); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		add(fmt.Sprintf("outside%d.dept.example.edu", i), "x@elsewhere.example.com", now.Add(time.Duration(10+i)*24*time.Hour))
	}
	for i := range n {
		add(fmt.Sprintf("d%d.dept.example.edu", i), fmt.Sprintf("o%d@dept.example.edu", i), now.Add(20*24*time.Hour+time.Duration(i)*time.Minute))
	}
	if err := e.n.Remind(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(e.sink.Messages()); got != n {
		t.Fatalf("%d reminders, want %d", got, n)
	}
	e.clk.Add(2 * time.Hour)
	if err := e.n.Remind(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(e.sink.Messages()); got != n {
		t.Fatalf("%d reminders after a second round, want %d", got, n)
	}
}
