package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// listingTests are the cases of the console's lists (Run runs them).
var listingTests = []struct {
	name string
	f    func(t *testing.T, s store.Store, handle func() store.Store)
}{
	{"DevicePageSortFilterCount", testDevicePage},
	{"AuditPage", testAuditPage},
	{"EventPage", testEventPage},
	{"RevokeFreesName", testRevokeFreesName},
	{"StaffEditDevice", testEditDevice},
}

func pageNames(t *testing.T, s store.Store, q store.DeviceQuery) ([]string, int) {
	t.Helper()
	p, err := s.ListDevicePage(ctx, q)
	must(t, err)
	var out []string
	for _, d := range p.Devices {
		out = append(out, d.Name)
	}
	return out, p.Total
}

func testDevicePage(t *testing.T, s store.Store, _ func() store.Store) {
	// dev1 … dev12 in a shuffled order, every third in Chemistry.
	for _, i := range []int{7, 2, 11, 1, 10, 3, 12, 5, 9, 4, 8, 6} {
		n := fmt.Sprintf("dev%d.example.edu", i)
		d := dev(n, "scan@"+n)
		if i%3 == 0 {
			d.Department = "Chemistry"
		}
		d.FCrDNSOK = i%2 == 0
		must(t, s.CreateDevice(ctx, d, "owner"))
		// Request times (milliseconds) differ, so "oldest first" is
		// the creation order.
		time.Sleep(2 * time.Millisecond)
	}
	// dev010 sorts beside dev10 (the same number), before dev11.
	must(t, s.CreateDevice(ctx, dev("dev010.example.edu", "scan@dev010.example.edu"), "owner"))
	soon, later := time.Now().Add(10*24*time.Hour), time.Now().Add(200*24*time.Hour)
	must(t, s.ApproveDevice(ctx, "dev4.example.edu", "staff:x", "", soon))
	must(t, s.ApproveDevice(ctx, "dev5.example.edu", "staff:x", "", later))
	must(t, s.SetSenderConfirmation(ctx, "dev6.example.edu", "scan@dev6.example.edu", "tok6", time.Now()))
	if _, _, err := s.ConfirmSender(ctx, "tok6", time.Now()); err != nil {
		t.Fatal(err)
	}
	ev := event.Event{ID: "ev-edge", Edge: "bldg-9", Time: time.Now(), Kind: event.Refusal, Device: "dev9.example.edu"}
	if _, err := s.AddEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}

	all := []string{"dev1.example.edu", "dev2.example.edu", "dev3.example.edu", "dev4.example.edu", "dev5.example.edu", "dev6.example.edu",
		"dev7.example.edu", "dev8.example.edu", "dev9.example.edu", "dev010.example.edu", "dev10.example.edu", "dev11.example.edu", "dev12.example.edu"}
	got, total := pageNames(t, s, store.DeviceQuery{Limit: 100})
	if !slices.Equal(got, all) || total != 13 {
		t.Errorf("natural order: got %v (total %d), want %v", got, total, all)
	}
	got, total = pageNames(t, s, store.DeviceQuery{Limit: 5, Offset: 5})
	if !slices.Equal(got, all[5:10]) || total != 13 {
		t.Errorf("second page: got %v (total %d)", got, total)
	}
	got, _ = pageNames(t, s, store.DeviceQuery{Limit: 3, Desc: true})
	if !slices.Equal(got, []string{"dev12.example.edu", "dev11.example.edu", "dev10.example.edu"}) {
		t.Errorf("descending: got %v", got)
	}
	cases := []struct {
		name  string
		q     store.DeviceQuery
		want  []string
		total int
	}{
		{"active", store.DeviceQuery{Status: []store.Status{store.Active}}, []string{"dev4.example.edu", "dev5.example.edu"}, 2},
		{"department", store.DeviceQuery{Department: "Chemistry", Limit: 2}, []string{"dev3.example.edu", "dev6.example.edu"}, 4},
		{"dns mismatch", store.DeviceQuery{DNS: store.DNSMismatch, Limit: 3}, []string{"dev1.example.edu", "dev3.example.edu", "dev5.example.edu"}, 7},
		{"dns ok", store.DeviceQuery{DNS: store.DNSMatch, Limit: 2}, []string{"dev2.example.edu", "dev4.example.edu"}, 6},
		{"expiring", store.DeviceQuery{ExpiringBefore: time.Now().Add(30 * 24 * time.Hour)}, []string{"dev4.example.edu"}, 1},
		{"confirmed senders", store.DeviceQuery{Senders: store.SendersConfirmed}, []string{"dev6.example.edu"}, 1},
		{"unconfirmed senders", store.DeviceQuery{Senders: store.SendersUnconfirmed, Limit: 1}, []string{"dev1.example.edu"}, 12},
		{"edge", store.DeviceQuery{Edge: "bldg-9"}, []string{"dev9.example.edu"}, 1},
		{"names", store.DeviceQuery{Names: []string{"dev12.example.edu", "dev2.example.edu", "nope"}}, []string{"dev2.example.edu", "dev12.example.edu"}, 2},
		{"query", store.DeviceQuery{Query: "DEV1", Limit: 2}, []string{"dev1.example.edu", "dev10.example.edu"}, 4},
		{"requested oldest first", store.DeviceQuery{Status: []store.Status{store.Pending}, Sort: store.SortRequested, Limit: 2}, []string{"dev7.example.edu", "dev2.example.edu"}, 11},
		{"expires", store.DeviceQuery{Status: []store.Status{store.Active}, Sort: store.SortExpires, Desc: true}, []string{"dev5.example.edu", "dev4.example.edu"}, 2},
		{"department sort", store.DeviceQuery{Sort: store.SortDepartment, Desc: true, Limit: 2}, []string{"dev11.example.edu", "dev10.example.edu"}, 13},
		{"department sort ascending", store.DeviceQuery{Sort: store.SortDepartment, Limit: 2}, []string{"dev3.example.edu", "dev6.example.edu"}, 13},
		{"nothing", store.DeviceQuery{Query: "zzz"}, nil, 0},
	}
	for _, c := range cases {
		got, total := pageNames(t, s, c.q)
		if !slices.Equal(got, c.want) || total != c.total {
			t.Errorf("%s: got %v (total %d), want %v (total %d)", c.name, got, total, c.want, c.total)
		}
	}
	p, err := s.ListDevicePage(ctx, store.DeviceQuery{Names: []string{"dev6.example.edu"}})
	must(t, err)
	if len(p.Devices) != 1 || len(p.Devices[0].Senders) != 1 || !p.Devices[0].Senders[0].Confirmed() {
		t.Errorf("page senders: %+v", p.Devices)
	}
	deps, err := s.Departments(ctx)
	must(t, err)
	if !slices.Equal(deps, []string{"Chemistry", "Physics"}) {
		t.Errorf("departments: %v", deps)
	}
}

func testAuditPage(t *testing.T, s store.Store, _ func() store.Store) {
	for i := range 7 {
		n := fmt.Sprintf("a%d.example.edu", i)
		must(t, s.CreateDevice(ctx, dev(n, "x@example.edu"), "owner"))
		if i%2 == 0 {
			must(t, s.DenyDevice(ctx, n, "staff:bob", "no"))
		}
	}
	p, err := s.ListAuditPage(ctx, store.AuditQuery{Limit: 3})
	must(t, err)
	if p.Total != 11 || p.More || len(p.Entries) != 3 || p.Entries[0].Device != "a6.example.edu" || p.Entries[0].Action != "deny" {
		t.Errorf("first page: total %d more %v %+v", p.Total, p.More, p.Entries)
	}
	p2, err := s.ListAuditPage(ctx, store.AuditQuery{Limit: 3, Offset: 3})
	must(t, err)
	if len(p2.Entries) != 3 || p2.Entries[0].ID >= p.Entries[2].ID {
		t.Errorf("second page not older than the first: %+v", p2.Entries)
	}
	p, err = s.ListAuditPage(ctx, store.AuditQuery{Actor: "staff:bob", Action: "deny"})
	must(t, err)
	if p.Total != 4 || len(p.Entries) != 4 {
		t.Errorf("actor+action: %d %+v", p.Total, p.Entries)
	}
	p, err = s.ListAuditPage(ctx, store.AuditQuery{Device: "a2.example.edu"})
	must(t, err)
	if p.Total != 2 || p.Entries[1].Action != "register" {
		t.Errorf("device: %+v", p.Entries)
	}
	p, err = s.ListAuditPage(ctx, store.AuditQuery{Until: time.Now().Add(-time.Hour)})
	must(t, err)
	if p.Total != 0 {
		t.Errorf("until an hour ago: %+v", p.Entries)
	}
	p, err = s.ListAuditPage(ctx, store.AuditQuery{Since: time.Now().Add(-time.Hour), Action: "register"})
	must(t, err)
	if p.Total != 7 {
		t.Errorf("since: %d", p.Total)
	}
}

func testEventPage(t *testing.T, s store.Store, _ func() store.Store) {
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	add := func(id, edge, kind, device, ip, sender, rcpt string, at time.Duration) {
		t.Helper()
		if _, err := s.AddEvent(ctx, event.Event{ID: id, Edge: edge, Time: base.Add(at), Kind: event.Kind(kind), Device: device, ClientIP: ip,
			Sender: sender, Recipient: rcpt, Reason: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	add("e1", "bldg-1", "ndr", "scanner.example.edu", "10.0.0.1", "Scan@Example.edu", "x@other.org", 0)
	add("e2", "bldg-2", "refusal", "", "10.0.0.7", "who@example.edu", "y@gmail.com", time.Minute)
	add("e3", "bldg-1", "refusal", "scanner.example.edu", "10.0.0.1", "scan@example.edu", "Y@gmail.com", 2*time.Minute)
	add("e4", "bldg-1", "rate-limit", "other.example.edu", "10.0.0.2", "o@example.edu", "z@other.org", 3*time.Minute)
	ids := func(q store.EventQuery) ([]string, int) {
		t.Helper()
		p, err := s.ListEventPage(ctx, q)
		must(t, err)
		var out []string
		for _, e := range p.Events {
			out = append(out, e.ID)
		}
		return out, p.Total
	}
	cases := []struct {
		name  string
		q     store.EventQuery
		want  []string
		total int
	}{
		{"all", store.EventQuery{}, []string{"e4", "e3", "e2", "e1"}, 4},
		{"page", store.EventQuery{Limit: 2, Offset: 2}, []string{"e2", "e1"}, 4},
		{"device", store.EventQuery{Device: "Scanner.example.edu"}, []string{"e3", "e1"}, 2},
		{"unregistered client", store.EventQuery{ClientIP: "10.0.0.7"}, []string{"e2"}, 1},
		{"sender any case", store.EventQuery{Sender: "SCAN@example.EDU"}, []string{"e3", "e1"}, 2},
		{"recipient", store.EventQuery{Recipient: "y@gmail.com"}, []string{"e3", "e2"}, 2},
		{"kind and edge", store.EventQuery{Kind: event.Refusal, Edge: "bldg-1"}, []string{"e3"}, 1},
		{"time range", store.EventQuery{Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, []string{"e3", "e2"}, 2},
		{"nothing", store.EventQuery{Edge: "nope"}, nil, 0},
	}
	for _, c := range cases {
		got, total := ids(c.q)
		if !slices.Equal(got, c.want) || total != c.total {
			t.Errorf("%s: got %v (total %d), want %v (total %d)", c.name, got, total, c.want, c.total)
		}
	}
}

func testRevokeFreesName(t *testing.T, s store.Store, _ func() store.Store) {
	n := "scanner.example.edu"
	must(t, s.CreateDevice(ctx, dev(n, "old@example.edu"), "owner"))
	must(t, s.ApproveDevice(ctx, n, "staff:x", "ok", time.Now().Add(time.Hour)))
	d := dev(n, "new@example.edu")
	d.Owner = "Grace Hopper"
	if err := s.CreateDevice(ctx, d, "owner"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("request for an active name: %v, want ErrExists", err)
	}
	must(t, s.RevokeDevice(ctx, n, "staff:x", "decommissioned"))
	v := version(t, s)
	must(t, s.CreateDevice(ctx, d, "owner"))
	if version(t, s) != v {
		t.Error("a new pending request changed the allowlist version")
	}
	got, err := s.Device(ctx, n)
	must(t, err)
	if got.Status != store.Pending || got.Owner != "Grace Hopper" || len(got.Senders) != 1 || got.Senders[0].Address != "new@example.edu" {
		t.Errorf("new registration: %+v", got)
	}
	arch, err := s.ArchivedDevices(ctx, n)
	must(t, err)
	if len(arch) != 1 || arch[0].Owner != "Ada Lovelace" || arch[0].Status != store.Revoked || arch[0].StatusReason != "decommissioned" ||
		!slices.Equal(arch[0].Senders, []string{"old@example.edu"}) {
		t.Errorf("archive: %+v", arch)
	}
	hist, err := s.ListAudit(ctx, store.AuditFilter{Device: n})
	must(t, err)
	if len(hist) != 4 || hist[0].Action != "register" || hist[0].FromStatus != store.Revoked || hist[1].Action != "revoke" {
		t.Errorf("history kept: %+v", hist)
	}
}

func snapshotSenders(t *testing.T, s store.Store, name string) []string {
	t.Helper()
	_, devs, err := s.AllowlistSnapshot(ctx)
	must(t, err)
	for _, d := range devs {
		if d.Name == name {
			return d.Senders
		}
	}
	t.Fatalf("%s not in the snapshot", name)
	return nil
}

func testEditDevice(t *testing.T, s store.Store, _ func() store.Store) {
	n := "scanner.example.edu"
	must(t, s.CreateDevice(ctx, dev(n, "a@example.edu"), "owner"))
	must(t, s.SetSenderConfirmation(ctx, n, "a@example.edu", "tok-a", time.Now()))
	if _, _, err := s.ConfirmSender(ctx, "tok-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	must(t, s.ApproveDevice(ctx, n, "staff:x", "", time.Now().Add(time.Hour)))
	v := version(t, s)
	e := store.StaffEdit{IPs: []string{"10.1.2.4"}, Owner: "Ada Lovelace", Department: "Physics", ContactEmail: "ada@example.edu",
		Purpose: "scan to mail and fax", Senders: []store.Sender{{Address: "a@example.edu"}, {Address: "b@example.edu"}}, FCrDNS: "ok", FCrDNSOK: true}
	res, err := s.StaffEditDevice(ctx, n, "staff:bob", e)
	must(t, err)
	if !slices.Equal(res.Added, []string{"b@example.edu"}) || res.AllowlistVersion != 0 || version(t, s) != v {
		t.Errorf("adding a sender: %+v, version %d -> %d", res, v, version(t, s))
	}
	if got := snapshotSenders(t, s, n); !slices.Equal(got, []string{"a@example.edu"}) {
		t.Errorf("an unconfirmed added sender is in the allowlist: %v", got)
	}
	d, err := s.Device(ctx, n)
	must(t, err)
	if !slices.Equal(d.IPs, []string{"10.1.2.4"}) || d.Purpose != "scan to mail and fax" || !d.FCrDNSOK || len(d.Senders) != 2 || !d.Senders[0].Confirmed() || d.Senders[1].Confirmed() {
		t.Errorf("after edit: %+v", d)
	}
	a, err := s.ListAudit(ctx, store.AuditFilter{Device: n, Limit: 1})
	must(t, err)
	if a[0].Action != "edit" || a[0].Actor != "staff:bob" || !strings.Contains(a[0].Reason, `IPs: "10.1.2.3, 2001:db8::3" -> "10.1.2.4"`) ||
		!strings.Contains(a[0].Reason, "senders added (to be confirmed): b@example.edu") || !strings.Contains(a[0].Reason, "purpose changed") {
		t.Errorf("edit audit: %+v", a[0])
	}
	// Confirming the new sender puts it in the allowlist.
	must(t, s.SetSenderConfirmation(ctx, n, "b@example.edu", "tok-b", time.Now()))
	if _, _, err := s.ConfirmSender(ctx, "tok-b", time.Now()); err != nil {
		t.Fatal(err)
	}
	if version(t, s) != v+1 || !slices.Equal(snapshotSenders(t, s, n), []string{"a@example.edu", "b@example.edu"}) {
		t.Errorf("confirmed added sender: version %d, senders %v", version(t, s), snapshotSenders(t, s, n))
	}
	// Removing a sender changes what edges enforce.
	e.Senders = []store.Sender{{Address: "b@example.edu"}}
	res, err = s.StaffEditDevice(ctx, n, "staff:bob", e)
	must(t, err)
	if res.AllowlistVersion != v+2 || version(t, s) != v+2 || !slices.Equal(snapshotSenders(t, s, n), []string{"b@example.edu"}) {
		t.Errorf("removing a sender: %+v, version %d", res, version(t, s))
	}
	// The same values again change nothing and write nothing.
	res, err = s.StaffEditDevice(ctx, n, "staff:bob", e)
	must(t, err)
	a2, _ := s.ListAudit(ctx, store.AuditFilter{Device: n})
	if len(res.Changes) != 0 || len(a2) != 6 {
		t.Errorf("no-op edit: %+v, %d audit entries", res, len(a2))
	}
	if _, err := s.StaffEditDevice(ctx, "none.example.edu", "staff:bob", e); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("edit of an unknown device: %v", err)
	}
}
