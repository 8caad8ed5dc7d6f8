package registration_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

func TestLooksPersonal(t *testing.T) {
	cases := map[string]bool{
		"mary.smith": true, "j.smith": true, "mary-jane.doe": true, "john_doe": true, "mary": true, "John.Smith+scan": true,
		"scanner": false, "scanner-2": false, "copier-3": false, "noreply": false, "no-reply": false, "lab.alerts": false,
		"physics.office": false, "it.support": false, "fax": false, "bldg12": false, "hvac.controller": false,
		"xyzzy": false, "a.b.c.d": false, "edith": false, "kit.harris": true,
	}
	for local, want := range cases {
		if got := registration.LooksPersonal(local); got != want {
			t.Errorf("LooksPersonal(%q) = %v, want %v", local, got, want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"scanner@Dept.Example.EDU": "scanner@dept.example.edu", " a.b@x.org ": "a.b@x.org", "x+y@a.b.": "x+y@a.b",
	}
	for in, want := range good {
		a, err := registration.ParseAddress(in)
		if err != nil || a.String() != want {
			t.Errorf("ParseAddress(%q) = %v, %v; want %s", in, a, err, want)
		}
	}
	for _, in := range []string{"", "scanner", "@x.org", "a@", "a@b", "a..b@x.org", ".a@x.org", "a b@x.org", "<a@x.org>",
		"Name <a@x.org>", "a@-x.org", "a@x..org", strings.Repeat("a", 65) + "@x.org", "a@" + strings.Repeat("x", 64) + ".org", "a@[10.0.0.1]"} {
		if _, err := registration.ParseAddress(in); err == nil {
			t.Errorf("ParseAddress(%q) accepted", in)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", "x..y@z", "@", "a@b@c.d", "\x00@x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := registration.ParseAddress(s)
		if err != nil {
			return
		}
		b, err := registration.ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("round trip of %q: %v %v", s, b, err)
		}
	})
}

// sink is a real SMTP server on loopback (go-smtp) standing in for
// mail.smarthost; it keeps "rcpt|message" per delivery.
type sink struct {
	mu   sync.Mutex
	sent []string
}

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct {
	s  *sink
	to string
}

func (x *sinkSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (x *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error { x.to = to; return nil }
func (x *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	x.s.mu.Lock()
	x.s.sent = append(x.s.sent, x.to+"|"+string(b))
	x.s.mu.Unlock()
	return err
}
func (x *sinkSession) Reset()        {}
func (x *sinkSession) Logout() error { return nil }

func startSink(t *testing.T) (*sink, string) {
	s := &sink{}
	srv := smtp.NewServer(s)
	srv.Domain = "smarthost.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s, ln.Addr().String()
}

func newService(t *testing.T) (*registration.Service, *dnstest.Server, *atomic.Int32) {
	srv := dnstest.Start(t)
	srv.AddA("scanner.dept.example.edu", "10.1.2.3")
	srv.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	srv.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	srv.AddA("mx.dept.example.edu", "10.9.9.9")
	srv.AddRR("nullmx.example.edu. 300 IN MX 0 .")
	r, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var n atomic.Int32
	return &registration.Service{Store: st, DNS: r, BaseURL: "http://central.test", Period: 365 * 24 * time.Hour,
		DefaultMessagesPerHour: 100, DefaultRecipientsPerHour: 200, AffiliatedDomains: []string{"example.edu", ".example.edu"},
		Changed: func() { n.Add(1) }}, srv, &n
}

func good() registration.Request {
	return registration.Request{Name: "Scanner.Dept.Example.edu.", IPs: "10.1.2.3", Owner: "Ada", Department: "Physics",
		ContactEmail: "ada@dept.example.edu", Senders: "scanner@dept.example.edu, mary.smith@dept.example.edu", Purpose: "scan to mail"}
}

func TestValidateFields(t *testing.T) {
	s, _, _ := newService(t)
	cases := []struct {
		field string
		mod   func(r *registration.Request)
		want  string
	}{
		{"name", func(r *registration.Request) { r.Name = "" }, "required"},
		{"name", func(r *registration.Request) { r.Name = "scanner" }, "full DNS name"},
		{"name", func(r *registration.Request) { r.Name = "scan ner.example.edu" }, "not a valid DNS name"},
		{"ips", func(r *registration.Request) { r.IPs = "10.1.2" }, "not an IP address"},
		{"ips", func(r *registration.Request) { r.IPs = "0.0.0.0" }, "cannot be"},
		{"owner", func(r *registration.Request) { r.Owner = " " }, "required"},
		{"owner", func(r *registration.Request) { r.Owner = strings.Repeat("x", 201) }, "at most 200"},
		{"department", func(r *registration.Request) { r.Department = "a\x01b" }, "control characters"},
		{"contact_email", func(r *registration.Request) { r.ContactEmail = "ada" }, "not an e-mail address"},
		{"senders", func(r *registration.Request) { r.Senders = "" }, "at least one"},
		{"senders", func(r *registration.Request) { r.Senders = "scanner@" }, "not an e-mail address"},
		{"senders", func(r *registration.Request) { r.Senders = "scanner@nowhere.example.edu" }, "cannot receive mail"},
		{"senders", func(r *registration.Request) { r.Senders = "scanner@nullmx.example.edu" }, "cannot receive mail"},
		{"senders", func(r *registration.Request) { r.Senders = strings.Repeat("a@dept.example.edu ", 11) }, "at most 10"},
		{"purpose", func(r *registration.Request) { r.Purpose = "" }, "required"},
		{"firewall_accepted", func(r *registration.Request) { r.BehindFirewall = true }, "responsibility"},
	}
	for _, c := range cases {
		r := good()
		c.mod(&r)
		_, errs := s.Validate(context.Background(), r)
		if len(errs) != 1 || !strings.Contains(errs[c.field], c.want) {
			t.Errorf("%s: got %v, want one error on %s containing %q", c.field, errs, c.field, c.want)
		}
	}
	c, errs := s.Validate(context.Background(), good())
	if len(errs) != 0 || !c.FCrDNS.OK || c.Name != "scanner.dept.example.edu" || len(c.Senders) != 2 || c.Senders[0].Personal || !c.Senders[1].Personal {
		t.Errorf("good request: %+v %v", c, errs)
	}
}

func TestRegisterConfirmApprove(t *testing.T) {
	ctx := context.Background()
	s, _, changed := newService(t)
	mail, addr := startSink(t)
	s.Mail = &mailer.Mailer{Addr: addr, From: "postern@example.edu"}
	d, errs, err := s.Register(ctx, good(), "owner-hash", "owner")
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	if d.Status != store.Pending || !d.FCrDNSOK || !strings.Contains(d.FCrDNS, "forward lookup matches") || d.MessagesPerHour != 100 {
		t.Errorf("device %+v", d)
	}
	mail.mu.Lock()
	sent := append([]string(nil), mail.sent...)
	mail.mu.Unlock()
	if len(sent) != 2 {
		t.Fatalf("sent %v", sent)
	}
	if _, errs, _ := s.Register(ctx, good(), "other", "owner"); !strings.Contains(errs["name"], "already registered") {
		t.Errorf("duplicate: %v", errs)
	}
	if err := s.Act(ctx, d.Name, registration.Approve, "staff:a", "", false); !errors.Is(err, registration.ErrUnconfirmed) {
		t.Errorf("approve unconfirmed: %v", err)
	}
	for _, m := range sent {
		if !strings.Contains(m, "Subject: Confirm ") || !strings.Contains(m, "scanner.dept.example.edu") {
			t.Errorf("confirmation mail:\n%s", m)
		}
		tok := m[strings.Index(m, "token=")+6:]
		tok = tok[:strings.IndexAny(tok, "\r\n ")]
		if _, _, err := s.Confirm(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Confirm(ctx, "bogus"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bogus token: %v", err)
	}
	before := changed.Load()
	if err := s.Act(ctx, d.Name, registration.Approve, "staff:a", "", false); err != nil {
		t.Fatal(err)
	}
	if changed.Load() != before+1 {
		t.Error("Changed not called after approve")
	}
	if err := s.Act(ctx, d.Name, registration.Suspend, "staff:a", "", false); !errors.Is(err, registration.ErrReasonRequired) {
		t.Errorf("suspend without reason: %v", err)
	}
	if err := s.Act(ctx, d.Name, "explode", "staff:a", "x", false); !errors.Is(err, registration.ErrUnknownAction) {
		t.Errorf("unknown action: %v", err)
	}
	if err := s.Act(ctx, d.Name, registration.Suspend, "staff:a", "spam", false); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Store.Device(ctx, d.Name)
	if got.Status != store.Suspended || got.StatusReason != "spam" || got.ExpiresAt.IsZero() {
		t.Errorf("after suspend: %+v", got)
	}
}

func TestLinksWithoutMail(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t)
	d, errs, err := s.Register(ctx, good(), "h", "owner")
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	links := s.PendingLinks(d.Name)
	if len(links) != 2 || !strings.HasPrefix(links["scanner@dept.example.edu"], "http://central.test/confirm?token=") {
		t.Fatalf("links %v", links)
	}
	tok := strings.TrimPrefix(links["scanner@dept.example.edu"], "http://central.test/confirm?token=")
	if _, a, err := s.Confirm(ctx, tok); err != nil || a != "scanner@dept.example.edu" {
		t.Fatal(a, err)
	}
	if len(s.PendingLinks(d.Name)) != 1 {
		t.Error("confirmed link still pending")
	}
	if err := s.Act(ctx, d.Name, registration.Approve, "staff:a", "checked by phone", true); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Store.ListAudit(ctx, store.AuditFilter{Device: d.Name, Limit: 1})
	if !strings.Contains(a[0].Reason, "approved with unconfirmed sender mary.smith@dept.example.edu") {
		t.Errorf("forced approval reason %q", a[0].Reason)
	}
}

func TestCreateEdge(t *testing.T) {
	s, _, _ := newService(t)
	tok, err := s.CreateEdge(context.Background(), "bldg-12", "Building 12", "North")
	if err != nil || len(tok) < 40 {
		t.Fatal(tok, err)
	}
	if _, err := s.CreateEdge(context.Background(), "Bad/ID", "", ""); err == nil {
		t.Error("bad edge id accepted")
	}
}
