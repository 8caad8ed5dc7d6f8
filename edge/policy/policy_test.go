package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/ratelimit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	pol   *Policy
	reg   *devices.Table
	clock *clock
	msgs  *ratelimit.Limiter
	rcpts *ratelimit.Limiter
}

func newFixture(t testing.TB) *fixture { return newFixtureWith(t, nil, true) }

// newFixtureWith applies edit to the configuration, and applies a central
// allowlist (version 1, listing central.example.edu) when withCentral.
func newFixtureWith(t testing.TB, edit func(*config.Config), withCentral bool) *fixture {
	t.Helper()
	c := &clock{t0}
	cfg := config.Default(false)
	cfg.SMTP.LocalNetworks = []string{"127.0.0.0/8", "10.0.0.0/8", "fd00::/8"}
	cfg.SMTP.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	cfg.SMTP.MaxRecipients = 5
	cfg.Policy.MessagesPerHour = 3
	cfg.Policy.RecipientsPerHour = 8
	cfg.Policy.RegisterURL = "https://reg.example.edu/"
	cfg.Policy.BulkURL = "https://lists.example.edu/"
	cfg.Policy.Contact = "helpdesk@example.edu"
	if edit != nil {
		edit(&cfg)
	}
	pc, err := NewConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New([]config.Device{
		{Name: "scanner.example.edu", Senders: []string{"Scan@Example.EDU"}},
		{Name: "open.example.edu"},
		{Name: "susp.example.edu", Status: "suspended"},
		{Name: "limited.example.edu", MessagesPerHour: 1, RecipientsPerHour: 2},
	}, nil, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if withCentral {
		reg.SetCentral(1, t0, []devices.Device{{Name: "central.example.edu", Senders: []string{"central@example.org"}}}, t0.Add(time.Hour))
	}
	f := &fixture{reg: reg, clock: c, msgs: ratelimit.New(c.now), rcpts: ratelimit.New(c.now)}
	f.pol = New(pc, reg, f.msgs, f.rcpts)
	return f
}

func domains(m map[string]DomainStatus) DomainChecker {
	return func(d string) DomainStatus {
		if s, ok := m[d]; ok {
			return s
		}
		return DomainOK
	}
}

var named = func(n string) Identity { return Identity{Name: n} }

// code returns the reply code or 0 for accept, with the enhanced code.
func code(r *Reply) string {
	if r == nil {
		return "ok"
	}
	return r.Error()[:9]
}

func TestPolicy(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name    string
		ip      string
		id      Identity
		sender  string
		dom     map[string]DomainStatus
		rcpts   []string
		stale   bool
		want    []string // MAIL, then each RCPT ("ok" or "550 5.7.1")
		wantTxt string   // substring of the last reply text
	}{
		{name: "non-local client refused at MAIL", ip: "192.0.2.7", sender: "a@example.edu",
			want: []string{"554 5.7.1"}},
		{name: "non-local IPv6", ip: "2001:db8::1", sender: "a@example.edu", want: []string{"554 5.7.1"}},
		{name: "IPv4-mapped local", ip: "::ffff:10.1.2.3", sender: "a@example.edu", rcpts: []string{"x@example.edu"},
			want: []string{"ok", "ok"}},
		{name: "affiliated rcpt from unregistered", ip: "10.0.0.9", id: Identity{Explain: "no PTR record"},
			sender: "a@example.edu", rcpts: []string{"x@example.edu", "y@dept.example.edu", "Z@EXAMPLE.EDU."},
			want: []string{"ok", "ok", "ok", "ok"}},
		{name: "external from unregistered (no PTR)", ip: "10.0.0.9", id: Identity{Explain: "no PTR record"},
			sender: "a@example.edu", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "550 5.7.1"},
			wantTxt: "https://reg.example.edu/"},
		{name: "external, FCrDNS mismatch", ip: "10.0.0.9", id: Identity{Explain: "PTR=scanner.example.edu, A=10.0.0.8"},
			sender: "scan@example.edu", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "550 5.7.1"},
			wantTxt: "PTR=scanner.example.edu"},
		{name: "external, DNS failure is 4xx", ip: "10.0.0.9", id: Identity{TempFail: true},
			sender: "a@example.edu", rcpts: []string{"x@example.edu", "x@gmail.com"}, want: []string{"ok", "ok", "451 4.4.3"}},
		{name: "external, confirmed name not registered", ip: "10.0.0.9", id: named("printer.example.edu"),
			sender: "a@example.edu", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "550 5.7.1"}, wantTxt: "not registered"},
		{name: "registered device, registered sender", ip: "10.0.0.9", id: named("scanner.example.edu"),
			sender: "scan@example.edu", rcpts: []string{"x@gmail.com", "y@example.edu"}, want: []string{"ok", "ok", "ok"}},
		{name: "registered sender case-insensitive", ip: "10.0.0.9", id: named("scanner.example.edu"),
			sender: "SCAN@example.EDU", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "ok"}},
		{name: "registered device, other sender, external", ip: "10.0.0.9", id: named("scanner.example.edu"),
			sender: "someone@example.edu", rcpts: []string{"x@example.edu", "x@gmail.com"},
			want: []string{"ok", "ok", "550 5.7.1"}, wantTxt: "not registered for device scanner.example.edu"},
		{name: "device without sender list: any valid sender", ip: "10.0.0.9", id: named("open.example.edu"),
			sender: "whoever@elsewhere.org", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "ok"}},
		{name: "suspended device refused at MAIL", ip: "10.0.0.9", id: named("susp.example.edu"),
			sender: "a@example.edu", want: []string{"550 5.7.1"}, wantTxt: "helpdesk@example.edu"},
		{name: "null sender refused", ip: "10.0.0.9", id: named("open.example.edu"), sender: "",
			want: []string{"550 5.7.1"}},
		{name: "bad sender syntax", ip: "10.0.0.9", sender: "no-at-sign", want: []string{"553 5.1.7"}},
		{name: "sender literal", ip: "10.0.0.9", sender: "a@[10.0.0.1]", want: []string{"553 5.1.7"}},
		{name: "sender domain without mail", ip: "10.0.0.9", id: named("open.example.edu"), sender: "a@nomail.example.org",
			dom: map[string]DomainStatus{"nomail.example.org": DomainNoMail}, want: []string{"550 5.1.8"}},
		{name: "sender domain DNS failure", ip: "10.0.0.9", id: named("open.example.edu"), sender: "a@slow.example.org",
			dom: map[string]DomainStatus{"slow.example.org": DomainTempFail}, want: []string{"451 4.4.3"}},
		{name: "affiliated sender needs no DNS", ip: "10.0.0.9", sender: "a@dept.example.edu",
			dom:   map[string]DomainStatus{"example.edu": DomainTempFail, "dept.example.edu": DomainTempFail},
			rcpts: []string{"x@example.edu"}, want: []string{"ok", "ok"}},
		{name: "unregistered client, external sender refused at MAIL", ip: "10.0.0.9", id: Identity{Explain: "no PTR record"},
			sender: "victim@example.com", want: []string{"550 5.7.1"}, wantTxt: "https://reg.example.edu/"},
		{name: "confirmed but unregistered name, external sender", ip: "10.0.0.9", id: named("printer.example.edu"),
			sender: "victim@example.com", want: []string{"550 5.7.1"}, wantTxt: "organisation's domains"},
		{name: "unregistered client, DNS failure, external sender is 4xx", ip: "10.0.0.9", id: Identity{TempFail: true},
			sender: "victim@example.com", want: []string{"451 4.4.3"}},
		{name: "registered device, unlisted external sender", ip: "10.0.0.9", id: named("scanner.example.edu"),
			sender: "victim@example.com", want: []string{"550 5.7.1"}, wantTxt: "not registered for device scanner.example.edu"},
		{name: "central device, registered external sender", ip: "10.0.0.9", id: named("central.example.edu"),
			sender: "central@example.org", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "ok"}},
		{name: "central device, stale allowlist, external sender is 4xx", ip: "10.0.0.9", id: named("central.example.edu"),
			sender: "other@example.org", stale: true, want: []string{"451 4.7.0"}},
		{name: "two @ in sender", ip: "10.0.0.9", sender: "victim@example.com@example.edu",
			want: []string{"550 5.7.1"}, wantTxt: "'@' in its local part"},
		{name: "two @ in sender, registered device", ip: "10.0.0.9", id: named("open.example.edu"),
			sender: "a@b@example.edu", want: []string{"550 5.7.1"}},
		{name: "full-width sender domain refused", ip: "10.0.0.9", sender: "a@ｅｘａｍｐｌｅ.edu", want: []string{"553 5.1.7"}},
		{name: "full-width recipient domain refused", ip: "10.0.0.9", sender: "a@example.edu",
			rcpts: []string{"x@ｅｘａｍｐｌｅ.edu", "x@example。edu", "x@example.edu"}, want: []string{"ok", "553 5.1.3", "553 5.1.3", "ok"}},
		{name: "too many recipients", ip: "10.0.0.9", sender: "a@example.edu",
			rcpts: []string{"1@example.edu", "2@example.edu", "3@example.edu", "4@example.edu", "5@example.edu", "6@example.edu"},
			want:  []string{"ok", "ok", "ok", "ok", "ok", "ok", "452 4.5.3"}},
		{name: "duplicate recipient counted once", ip: "10.0.0.9", sender: "a@example.edu",
			rcpts: []string{"1@example.edu", "1@Example.edu", "2@example.edu", "3@example.edu", "4@example.edu", "5@example.edu"},
			want:  []string{"ok", "ok", "ok", "ok", "ok", "ok", "ok"}},
		{name: "central device while allowlist fresh", ip: "10.0.0.9", id: named("central.example.edu"),
			sender: "central@example.org", rcpts: []string{"x@gmail.com"}, want: []string{"ok", "ok"}},
		{name: "central device, stale allowlist: 4xx external, affiliated flows", ip: "10.0.0.9", id: named("central.example.edu"),
			sender: "a@example.edu", rcpts: []string{"x@example.edu", "x@gmail.com"}, stale: true,
			want: []string{"ok", "ok", "451 4.7.0"}},
		{name: "static device unaffected by stale allowlist", ip: "10.0.0.9", id: named("open.example.edu"),
			sender: "a@example.edu", rcpts: []string{"x@gmail.com"}, stale: true, want: []string{"ok", "ok"}},
		{name: "recipient syntax", ip: "10.0.0.9", sender: "a@example.edu", rcpts: []string{"nobody"},
			want: []string{"ok", "553 5.1.3"}},
		{name: "IPv6 local unregistered affiliated", ip: "fd00::5", sender: "a@example.edu", rcpts: []string{"x@example.edu"},
			want: []string{"ok", "ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.stale {
				f.clock.t = t0.Add(2 * time.Hour)
			}
			txn := NewTxn(ip(tc.ip), tc.id)
			var got []string
			last := f.pol.Mail(txn, tc.sender, domains(tc.dom))
			got = append(got, code(last))
			if last == nil {
				for _, r := range tc.rcpts {
					_, _, last = f.pol.Rcpt(txn, r)
					got = append(got, code(last))
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v (last: %v)", got, tc.want, last)
			}
			if tc.wantTxt != "" && (last == nil || !strings.Contains(last.Text, tc.wantTxt)) {
				t.Fatalf("reply %v does not mention %q", last, tc.wantTxt)
			}
		})
	}
}

// TestOpenRelay: none of the classic relay tricks gets a message outside
// the affiliated domains from an unregistered client, and routing tricks
// are refused even towards affiliated domains.
func TestOpenRelay(t *testing.T) {
	unregistered := Identity{Explain: "no PTR record"}
	tests := []struct {
		rcpt string
		want string
	}{
		{"user%evil.com@example.edu", "550 5.7.1"}, // percent hack
		{"evil.com!user@example.edu", "550 5.7.1"}, // bang path
		{"user@evil.com@example.edu", "550 5.7.1"}, // quoted "user@evil.com" unquoted by go-smtp
		{"user@[192.0.2.1]", "550 5.7.1"},          // IP literal
		{"user@[IPv6:2001:db8::1]", "550 5.7.1"},   // IPv6 literal
		{"user@example.edu.evil.com", "550 5.7.1"}, // lookalike suffix
		{"user@evilexample.edu", "550 5.7.1"},      // no label boundary
		{"user@example.edu.", "ok"},                // trailing dot: same domain
		{"User@EXAMPLE.Edu", "ok"},                 // mixed case
		{"user@xn--exmple-cua.edu", "550 5.7.1"},   // punycode lookalike (exämple)
		{"user@xn--xample-2of.edu", "550 5.7.1"},   // Cyrillic 'е' lookalike
		{"user@gmail.com", "550 5.7.1"},            // plain external
		{"user@sub.dept.example.edu", "ok"},        // deep subdomain
		{"user@example.edu..", "5xx"},              // double trailing dot: invalid or not affiliated
	}
	for _, tc := range tests {
		t.Run(tc.rcpt, func(t *testing.T) {
			f := newFixture(t)
			txn := NewTxn(netip.MustParseAddr("10.0.0.9"), unregistered)
			if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
				t.Fatal(r)
			}
			_, _, r := f.pol.Rcpt(txn, tc.rcpt)
			if got := code(r); got != tc.want && !(tc.want == "5xx" && got[0] == '5') {
				t.Fatalf("Rcpt(%q) = %v, want %s", tc.rcpt, r, tc.want)
			}
		})
	}
}

// TestRoutingRefusedForRegistered: routing characters are refused whoever
// sends (delivery could not represent the quoted form correctly anyway).
func TestRoutingRefusedForRegistered(t *testing.T) {
	f := newFixture(t)
	txn := NewTxn(netip.MustParseAddr("10.0.0.9"), named("open.example.edu"))
	if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
		t.Fatal(r)
	}
	for _, rc := range []string{"a%b@gmail.com", "b!a@gmail.com", "a@b@gmail.com"} {
		if _, _, r := f.pol.Rcpt(txn, rc); code(r) != "550 5.7.1" {
			t.Fatalf("%s: %v", rc, r)
		}
	}
}

// TestOwnSender: a registered device's transaction is its own only with
// one of its registered senders; with another (affiliated) sender it is
// an unregistered client's: affiliated recipients only, and Own is false
// so the envelope names no device.
func TestOwnSender(t *testing.T) {
	f := newFixture(t)
	ip := netip.MustParseAddr("10.0.0.9")
	for _, tc := range []struct {
		id       Identity
		sender   string
		own      bool
		external string
	}{
		{named("scanner.example.edu"), "scan@example.edu", true, "ok"},
		{named("scanner.example.edu"), "nobody@example.edu", false, "550 5.7.1"},
		{named("open.example.edu"), "anyone@example.edu", true, "ok"},
		{Identity{Explain: "no PTR record"}, "scan@example.edu", false, "550 5.7.1"},
	} {
		txn := NewTxn(ip, tc.id)
		if r := f.pol.Mail(txn, tc.sender, domains(nil)); r != nil {
			t.Fatalf("%v %s: MAIL %v", tc.id, tc.sender, r)
		}
		if txn.Own != tc.own {
			t.Errorf("%v %s: Own = %v, want %v", tc.id, tc.sender, txn.Own, tc.own)
		}
		if _, _, r := f.pol.Rcpt(txn, "nosuch@example.edu"); r != nil {
			t.Errorf("%v %s: affiliated RCPT %v", tc.id, tc.sender, r)
		}
		if _, _, r := f.pol.Rcpt(txn, "x@gmail.com"); code(r) != tc.external {
			t.Errorf("%v %s: external RCPT %v, want %s", tc.id, tc.sender, r, tc.external)
		}
		f.pol.Abort(txn)
		if txn.Own {
			t.Errorf("Own survives Abort")
		}
	}
}

// TestNoSnapshotYet: an edge that takes its devices from central but has
// no allowlist yet answers 451 4.7.0, never a 5xx, wherever the allowlist
// would decide; what needs no allowlist keeps its answer.
func TestNoSnapshotYet(t *testing.T) {
	f := newFixtureWith(t, func(c *config.Config) { c.Sync.Enabled = true }, false)
	ip := netip.MustParseAddr("10.0.0.9")
	for _, tc := range []struct {
		name   string
		id     Identity
		sender string
		rcpt   string
		want   []string
	}{
		{"named client, external recipient", named("central.example.edu"), "a@example.edu", "x@gmail.com", []string{"ok", "451 4.7.0"}},
		{"named client, external sender", named("central.example.edu"), "central@example.org", "", []string{"451 4.7.0"}},
		{"named client, affiliated mail flows", named("central.example.edu"), "a@example.edu", "x@example.edu", []string{"ok", "ok"}},
		{"no name: certain refusal", Identity{Explain: "no PTR record"}, "a@example.edu", "x@gmail.com", []string{"ok", "550 5.7.1"}},
		{"no name, external sender: certain", Identity{Explain: "no PTR record"}, "victim@example.com", "", []string{"550 5.7.1"}},
		{"static device unaffected", named("open.example.edu"), "a@example.edu", "x@gmail.com", []string{"ok", "ok"}},
		{"static device, unlisted sender: certain", named("scanner.example.edu"), "victim@example.com", "", []string{"550 5.7.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			txn := NewTxn(ip, tc.id)
			r := f.pol.Mail(txn, tc.sender, domains(nil))
			got := []string{code(r)}
			if r == nil && tc.rcpt != "" {
				_, _, r = f.pol.Rcpt(txn, tc.rcpt)
				got = append(got, code(r))
			}
			f.pol.Abort(txn)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v (%v)", got, tc.want, r)
			}
		})
	}
	// Once a snapshot is applied the same client is decided for good.
	f.reg.SetCentral(1, t0, []devices.Device{{Name: "central.example.edu", Senders: []string{"central@example.org"}}}, t0.Add(time.Hour))
	txn := NewTxn(ip, named("central.example.edu"))
	if r := f.pol.Mail(txn, "central@example.org", domains(nil)); r != nil {
		t.Fatal(r)
	}
	if _, _, r := f.pol.Rcpt(txn, "x@gmail.com"); r != nil {
		t.Fatal(r)
	}
	txn = NewTxn(ip, named("printer.example.edu"))
	if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
		t.Fatal(r)
	}
	if _, _, r := f.pol.Rcpt(txn, "x@gmail.com"); code(r) != "550 5.7.1" {
		t.Fatalf("unregistered name after the snapshot: %v", r)
	}
}

// TestIPv6RateKeyPerPrefix: unregistered IPv6 clients share one bucket
// per prefix, so a host cannot reset its limit by changing address.
func TestIPv6RateKeyPerPrefix(t *testing.T) {
	f := newFixture(t) // 3 messages per hour, /64
	send := func(ip string) *Reply {
		txn := NewTxn(netip.MustParseAddr(ip), Identity{})
		if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
			return r
		}
		f.pol.Commit(txn)
		return nil
	}
	for i, ip := range []string{"fd00::1", "fd00::2", "fd00::ffff:1"} {
		if r := send(ip); r != nil {
			t.Fatalf("message %d: %v", i, r)
		}
	}
	if r := send("fd00::abcd"); code(r) != "450 4.7.1" {
		t.Fatalf("4th message from the same /64: %v", r)
	}
	if r := send("fd00:0:0:1::1"); r != nil {
		t.Fatalf("another /64 limited: %v", r)
	}
	// With /128 every address counts alone.
	g := newFixtureWith(t, func(c *config.Config) { c.SMTP.IPv6PrefixLength = 128 }, true)
	for i := range 5 {
		txn := NewTxn(netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1)), Identity{})
		if r := g.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
			t.Fatalf("/128, address %d: %v", i, r)
		}
		g.pol.Commit(txn)
	}
}

func TestRateLimits(t *testing.T) {
	f := newFixture(t)
	ip := netip.MustParseAddr("10.0.0.9")
	send := func(txn *Txn, n int) (string, *Reply) {
		if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
			return "MAIL", r
		}
		for i := 0; i < n; i++ {
			if _, _, r := f.pol.Rcpt(txn, string(rune('a'+i))+"@example.edu"); r != nil {
				return "RCPT", r
			}
		}
		f.pol.Commit(txn)
		return "", nil
	}
	// Unregistered client: default limits, keyed by IP (3 msgs, 8 rcpts).
	txn := NewTxn(ip, Identity{})
	for i := 0; i < 3; i++ {
		if st, r := send(txn, 1); r != nil {
			t.Fatalf("message %d: %s %v", i, st, r)
		}
	}
	st, r := send(txn, 1)
	if st != "MAIL" || code(r) != "450 4.7.1" || !strings.Contains(r.Text, "https://lists.example.edu/") {
		t.Fatalf("4th message: %s %v", st, r)
	}
	// Another IP has its own bucket.
	if st, r := send(NewTxn(netip.MustParseAddr("10.0.0.10"), Identity{}), 1); r != nil {
		t.Fatalf("other client limited: %s %v", st, r)
	}
	// An hour later the bucket has refilled.
	f.clock.t = f.clock.t.Add(time.Hour)
	if st, r := send(txn, 1); r != nil {
		t.Fatalf("after an hour: %s %v", st, r)
	}

	// Device with its own limits: 1 msg/h, 2 rcpts/h.
	dev := NewTxn(netip.MustParseAddr("10.0.0.20"), named("limited.example.edu"))
	st, r = send(dev, 3)
	if st != "RCPT" || code(r) != "450 4.7.1" || !strings.Contains(r.Text, "2 recipients per hour") {
		t.Fatalf("recipient limit: %s %v", st, r)
	}
	// The aborted transaction's tokens come back.
	f.pol.Abort(dev)
	if st, r := send(dev, 2); r != nil {
		t.Fatalf("after abort: %s %v", st, r)
	}
	if st, r := send(dev, 1); st != "MAIL" || code(r) != "450 4.7.1" {
		t.Fatalf("device message limit: %s %v", st, r)
	}
	// The device's limit is keyed by name, not IP: same name from another IP.
	if st, r := send(NewTxn(netip.MustParseAddr("10.0.0.21"), named("limited.example.edu")), 1); st != "MAIL" || r == nil {
		t.Fatalf("device limit bypassed from another IP: %s %v", st, r)
	}
	if f.msgs.Hits() == 0 || f.rcpts.Hits() == 0 {
		t.Fatal("limit hits not counted")
	}
}

func TestSecondMailReplacesTransaction(t *testing.T) {
	f := newFixture(t)
	txn := NewTxn(netip.MustParseAddr("10.0.0.9"), Identity{})
	for i := 0; i < 10; i++ { // never commits: no tokens may leak
		if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
			t.Fatalf("MAIL %d: %v", i, r)
		}
	}
	if got := f.msgs.Remaining("ip:10.0.0.9", 3); got != 2 {
		t.Fatalf("remaining %d, want 2", got)
	}
}

func TestCheckHeader(t *testing.T) {
	tests := []struct {
		name, msg, want string
	}{
		{"ok", "From: Scanner <scan@example.edu>\r\nSubject: x\r\n\r\nbody\r\n", "ok"},
		{"ok, group-free list", "From: a@example.edu, b@example.edu\r\n\r\n", "ok"},
		{"ok, unknown charset word", "From: =?windows-1252?Q?K=F6nig?= <k@example.edu>\r\n\r\nx\r\n", "ok"},
		{"ok, folded", "From: Scanner\r\n <scan@example.edu>\r\n\r\n", "ok"},
		{"ok, headers only", "From: a@example.edu\r\n", "ok"},
		{"missing", "Subject: x\r\n\r\nFrom: a@example.edu\r\n", "550 5.6.0"},
		{"empty message", "", "550 5.6.0"},
		{"no header section", "\r\nFrom: a@b\r\n", "550 5.6.0"},
		{"twice", "From: a@example.edu\r\nFrom: b@example.edu\r\n\r\n", "550 5.6.0"},
		{"empty From", "From: \r\n\r\n", "550 5.6.0"},
		{"garbage From", "From: <<<\r\n\r\n", "550 5.6.0"},
		{"bad header line", "From: a@example.edu\r\nthis is not a header\r\n\r\n", "550 5.6.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := code(CheckHeader([]byte(tc.msg))); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRepliesAreOneLine(t *testing.T) {
	r := NotRegistered("10.0.0.1", "PTR=a\r\nb", "https://x/")
	if strings.ContainsAny(r.Text, "\r\n") {
		t.Fatalf("reply text spans lines: %q", r.Text)
	}
}

func TestReplyLength(t *testing.T) {
	r := NotRegistered("10.0.0.1", strings.Repeat("PTR=x.example.edu ", 100), "https://x/")
	if len(r.Error())+2 > 512 {
		t.Fatalf("reply line of %d octets", len(r.Error())+2)
	}
}

func TestQuotedLocalParts(t *testing.T) {
	f := newFixture(t)
	txn := NewTxn(netip.MustParseAddr("10.0.0.9"), Identity{})
	if r := f.pol.Mail(txn, "a@example.edu", domains(nil)); r != nil {
		t.Fatal(r)
	}
	// go-smtp hands over quoted local parts without their quotes.
	canon, _, r := f.pol.Rcpt(txn, "john smith@Example.EDU")
	if r != nil || canon != `"john smith"@example.edu` {
		t.Fatalf("quoted local part: %q %v", canon, r)
	}
	if _, _, r := f.pol.Rcpt(txn, "user@evil.com@example.edu"); code(r) != "550 5.7.1" {
		t.Fatalf(`"user@evil.com"@example.edu: %v`, r)
	}
	for in, want := range map[string]string{
		"a@b":        "a@b",
		"a b@c":      `"a b"@c`,
		`a"b@c`:      `"a\"b"@c`,
		"a.@c":       `"a."@c`,
		"x@y@c":      `"x@y"@c`,
		"ünï@c":      "ünï@c",
		"noat":       "noat",
		`back\sl@c`:  `"back\\sl"@c`,
		"a..b@c":     `"a..b"@c`,
		"o'neil+x@c": "o'neil+x@c",
		"@c":         "@c",
	} {
		if got := requote(in); got != want {
			t.Errorf("requote(%q) = %q, want %q", in, got, want)
		}
	}
}
