package registration_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/testkit"
)

func (s *sink) recipients() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.sent {
		out = append(out, m[:strings.IndexByte(m, '|')])
	}
	return out
}

func TestPublicRequestMailsOnlyAffiliated(t *testing.T) {
	ctx := context.Background()
	s, dns, _ := newService(t)
	dns.AddMX("other.example.org", 10, "mx.dept.example.edu")
	mail, addr := startSink(t)
	s.Mail = &mailer.Mailer{Addr: addr, From: "postern@example.edu"}
	r := good()
	r.Senders = "scanner@dept.example.edu, lab@other.example.org"
	d, errs, err := s.Register(ctx, r, "h", "owner")
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	if got := mail.recipients(); !slices.Equal(got, []string{"scanner@dept.example.edu"}) {
		t.Fatalf("an anonymous request mailed %v, want only the affiliated sender", got)
	}
	left, err := s.ResendConfirmations(ctx, d.Name)
	if err != nil || !slices.Equal(left, []string{"lab@other.example.org"}) {
		t.Fatalf("owner resend: left %v, %v", left, err)
	}
	if got := mail.recipients(); len(got) != 2 || got[1] != "scanner@dept.example.edu" {
		t.Fatalf("owner resend mailed %v", got)
	}
	if err := s.SendConfirmations(ctx, d.Name); err != nil {
		t.Fatal(err)
	}
	if got := mail.recipients(); !slices.Contains(got, "lab@other.example.org") {
		t.Fatalf("staff resend did not reach the outside sender: %v", got)
	}

	// The same request through the API (staff) mails every sender.
	r.Name = "copier.dept.example.edu"
	r.IPs = ""
	before := len(mail.recipients())
	if _, errs, err := s.Register(ctx, r, "h2", "api:robot"); err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	if got := mail.recipients()[before:]; len(got) != 2 {
		t.Fatalf("staff registration mailed %v", got)
	}

	// The owner link goes to the contact only when affiliated, or when
	// staff send it.
	d.ContactEmail = "ada@dept.example.edu"
	if sent, err := s.SendOwnerLink(ctx, d, "http://central.test/owner?key=k", false); !sent || err != nil {
		t.Fatalf("owner link to affiliated contact: %v %v", sent, err)
	}
	d.ContactEmail = "ada@other.example.org"
	before = len(mail.recipients())
	if sent, err := s.SendOwnerLink(ctx, d, "http://central.test/owner?key=k", false); sent || err != nil || len(mail.recipients()) != before {
		t.Fatalf("owner link of an anonymous request went to an outside contact: %v %v", sent, err)
	}
	if sent, err := s.SendOwnerLink(ctx, d, "http://central.test/owner?key=k", true); !sent || err != nil {
		t.Fatalf("owner link sent by staff: %v %v", sent, err)
	}
	mail.mu.Lock()
	last := mail.sent[len(mail.sent)-1]
	mail.mu.Unlock()
	if !strings.Contains(last, "http://central.test/owner?key=k") || !strings.Contains(last, "Subject: Owner link for scanner.dept.example.edu") {
		t.Errorf("owner link mail:\n%s", last)
	}
}

func TestConfirmationLinksExpire(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newService(t)
	clk := testkit.NewClock()
	s.Clock = clk.Now
	s.ConfirmTTL = 7 * 24 * time.Hour
	d, errs, err := s.Register(ctx, good(), "h", "owner")
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	token := func(addr string) string {
		return strings.TrimPrefix(s.PendingLinks(d.Name)[addr], "http://central.test/confirm?token=")
	}
	old := token("scanner@dept.example.edu")
	clk.Advance(7*24*time.Hour + time.Minute)
	if _, _, err := s.Confirm(ctx, old); !errors.Is(err, registration.ErrLinkExpired) {
		t.Fatalf("expired link: %v", err)
	}
	if err := s.SendConfirmations(ctx, d.Name); err != nil {
		t.Fatal(err)
	}
	fresh := token("scanner@dept.example.edu")
	if fresh == old {
		t.Fatal("re-send kept the old token")
	}
	if _, _, err := s.Confirm(ctx, old); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old link after re-send: %v", err)
	}
	if _, a, err := s.Confirm(ctx, fresh); err != nil || a != "scanner@dept.example.edu" {
		t.Fatalf("fresh link: %s %v", a, err)
	}
	// A confirmed sender may open its (old) link again without an error.
	clk.Advance(30 * 24 * time.Hour)
	if _, _, err := s.Confirm(ctx, fresh); err != nil {
		t.Errorf("re-opening a used link: %v", err)
	}
}

func TestControlCharactersRefused(t *testing.T) {
	s, _, _ := newService(t)
	set := map[string]func(*registration.Request, string){
		"name":          func(r *registration.Request, v string) { r.Name = v },
		"ips":           func(r *registration.Request, v string) { r.IPs = v },
		"owner":         func(r *registration.Request, v string) { r.Owner = v },
		"department":    func(r *registration.Request, v string) { r.Department = v },
		"contact_email": func(r *registration.Request, v string) { r.ContactEmail = v },
		"senders":       func(r *registration.Request, v string) { r.Senders = v },
	}
	bad := []string{"Ada\r\nBcc: victim@example.org", "Ada\nX", "Ada\rX", "Ada\tX", "Ada\x00", "Ada\x7f", "Ada\u0085X", "Ada\u2028X"}
	for field, f := range set {
		for _, v := range bad {
			if field == "senders" && strings.ContainsAny(v, "\r\n\t") {
				continue // separators in the sender list
			}
			r := good()
			f(&r, v)
			_, errs := s.Validate(context.Background(), r)
			if errs[field] != registration.MsgControl || !errs.HasControl() {
				t.Errorf("%s=%q: errors %v", field, v, errs)
			}
		}
	}
	r := good()
	r.Purpose = "scan to mail\r\nfor the lab\tand office"
	if _, errs := s.Validate(context.Background(), r); len(errs) != 0 {
		t.Errorf("multi-line purpose refused: %v", errs)
	}
	r.Purpose = "x\x1b[31m"
	if _, errs := s.Validate(context.Background(), r); errs["purpose"] != registration.MsgControl {
		t.Errorf("escape in purpose: %v", errs)
	}
}
