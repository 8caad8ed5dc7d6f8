// Package storetest is the one test suite every central/store.Store
// implementation must pass (SQLite and PostgreSQL run it from their own
// tests). It checks behaviour through the interface only: status rules,
// version bumps, snapshot contents, de-duplication, one-time enrolment,
// session expiry, and that concurrent writers on separate handles get
// distinct increasing allowlist versions.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// Opener returns a function that opens a new handle to one fresh, empty
// database each time it is called (handles are closed by the suite).
type Opener func(t *testing.T) (handle func() store.Store)

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store, handle func() store.Store)
	}{
		{"DeviceCreateAndGet", testDeviceCreate},
		{"ListDevicesFilters", testListDevices},
		{"Transitions", testTransitions},
		{"VersionBumps", testVersionBumps},
		{"Snapshot", testSnapshot},
		{"ExpireDue", testExpire},
		{"ReinstatementEpoch", testReinstatementEpoch},
		{"SenderConfirmation", testConfirm},
		{"Audit", testAudit},
		{"Events", testEvents},
		{"EventBatch", testEventBatch},
		{"Edges", testEdges},
		{"UsersSessionsTokens", testUsers},
		{"TokenScopesAndRevocation", testTokens},
		{"PasswordChangeEndsSessions", testPasswordChange},
		{"SenderByToken", testSenderByToken},
		{"PendingCounts", testPendingCounts},
		{"ConcurrentApprovals", testConcurrent},
		{"SnapshotConsistentUnderWrites", testSnapshotConsistency},
		{"SuspendByEdge", testSuspendByEdge},
		{"PruneEvents", testPruneEvents},
		{"OwnerEdit", testOwnerEdit},
		{"OwnerNotices", testNotices},
		{"DeviceReportsAndDailyCounts", testDeviceReports},
		{"EdgeSamples", testEdgeSamples},
	}
	tests = append(tests, listingTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := open(t)
			var handles []store.Store
			var mu sync.Mutex
			handle := func() store.Store {
				s := h()
				mu.Lock()
				handles = append(handles, s)
				mu.Unlock()
				return s
			}
			t.Cleanup(func() {
				for _, s := range handles {
					s.Close()
				}
			})
			tc.f(t, handle(), handle)
		})
	}
}

var ctx = context.Background()

func dev(name string, senders ...string) store.Device {
	d := store.Device{
		Name: name, IPs: []string{"10.1.2.3", "2001:db8::3"}, Owner: "Ada Lovelace", Department: "Physics",
		ContactEmail: "ada@example.edu", Purpose: "scan to mail", MessagesPerHour: 100, RecipientsPerHour: 200,
		OwnerKeyHash: "owner-" + name,
	}
	for _, s := range senders {
		d.Senders = append(d.Senders, store.Sender{Address: s})
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func version(t *testing.T, s store.Store) int64 {
	t.Helper()
	v, err := s.AllowlistVersion(ctx)
	must(t, err)
	return v
}

func testDeviceCreate(t *testing.T, s store.Store, _ func() store.Store) {
	d := dev("scanner.physics.example.edu", "scanner@physics.example.edu", "copier@physics.example.edu")
	d.BehindFirewall, d.FirewallAccepted = true, true
	d.Senders[0].Personal = true
	must(t, s.CreateDevice(ctx, d, "owner"))
	if err := s.CreateDevice(ctx, d, "owner"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	got, err := s.Device(ctx, d.Name)
	must(t, err)
	if got.Status != store.Pending || got.Owner != d.Owner || got.Department != d.Department || got.ContactEmail != d.ContactEmail ||
		got.Purpose != d.Purpose || !got.BehindFirewall || !got.FirewallAccepted || got.MessagesPerHour != 100 || got.RecipientsPerHour != 200 ||
		got.OwnerKeyHash != d.OwnerKeyHash || !slices.Equal(got.IPs, d.IPs) {
		t.Fatalf("device round trip: got %+v", got)
	}
	if len(got.Senders) != 2 || got.Senders[0].Address != "copier@physics.example.edu" || got.Senders[1].Address != "scanner@physics.example.edu" ||
		!got.Senders[1].Personal || got.Senders[0].Personal || got.Senders[0].Confirmed() {
		t.Fatalf("senders: got %+v", got.Senders)
	}
	if got.CreatedAt.IsZero() || !got.ExpiresAt.IsZero() {
		t.Fatalf("times: created %v expires %v", got.CreatedAt, got.ExpiresAt)
	}
	if _, err := s.Device(ctx, "nope.example.edu"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing device: got %v", err)
	}
	must(t, s.SetFCrDNS(ctx, d.Name, "reverse DNS of 10.1.2.3 is scanner; forward lookup matches", true))
	got, _ = s.Device(ctx, d.Name)
	if !got.FCrDNSOK || got.FCrDNS == "" {
		t.Fatalf("fcrdns not stored: %+v", got)
	}
	if err := s.SetFCrDNS(ctx, "nope.example.edu", "x", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetFCrDNS on missing: %v", err)
	}
}

func testListDevices(t *testing.T, s store.Store, _ func() store.Store) {
	for _, n := range []string{"b.example.edu", "a.example.edu", "c.example.edu", "d_x.example.edu"} {
		d := dev(n, "fn@"+n)
		if n == "c.example.edu" {
			d.Owner, d.OwnerKeyHash = "Grace Hopper", "owner-grace"
		}
		must(t, s.CreateDevice(ctx, d, "owner"))
	}
	must(t, s.ApproveDevice(ctx, "a.example.edu", "staff:x", "", time.Now().Add(time.Hour)))
	names := func(f store.DeviceFilter) []string {
		ds, err := s.ListDevices(ctx, f)
		must(t, err)
		var out []string
		for _, d := range ds {
			out = append(out, d.Name)
		}
		return out
	}
	cases := []struct {
		name string
		f    store.DeviceFilter
		want []string
	}{
		{"all, pending first", store.DeviceFilter{}, []string{"b.example.edu", "c.example.edu", "d_x.example.edu", "a.example.edu"}},
		{"active", store.DeviceFilter{Status: []store.Status{store.Active}}, []string{"a.example.edu"}},
		{"two states", store.DeviceFilter{Status: []store.Status{store.Active, store.Pending}, Limit: 2}, []string{"b.example.edu", "c.example.edu"}},
		{"offset", store.DeviceFilter{Offset: 3}, []string{"a.example.edu"}},
		{"query owner", store.DeviceFilter{Query: "HOPPER"}, []string{"c.example.edu"}},
		{"query sender", store.DeviceFilter{Query: "fn@b."}, []string{"b.example.edu"}},
		{"query ip", store.DeviceFilter{Query: "2001:db8::3", Status: []store.Status{store.Active}}, []string{"a.example.edu"}},
		{"like wildcard escaped", store.DeviceFilter{Query: "d_x"}, []string{"d_x.example.edu"}},
		{"underscore literal", store.DeviceFilter{Query: "_"}, []string{"d_x.example.edu"}},
		{"owner key", store.DeviceFilter{OwnerKeyHash: "owner-grace"}, []string{"c.example.edu"}},
		{"nothing", store.DeviceFilter{Query: "zzz"}, nil},
	}
	for _, c := range cases {
		if got := names(c.f); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	counts, err := s.CountDevices(ctx)
	must(t, err)
	if counts[store.Pending] != 3 || counts[store.Active] != 1 {
		t.Errorf("counts: %v", counts)
	}
}

// testTransitions walks every action from every state.
func testTransitions(t *testing.T, s store.Store, _ func() store.Store) {
	exp := time.Now().Add(24 * time.Hour)
	actions := map[string]func(name string) error{
		"approve":   func(n string) error { return s.ApproveDevice(ctx, n, "staff:a", "ok", exp) },
		"deny":      func(n string) error { return s.DenyDevice(ctx, n, "staff:a", "no") },
		"suspend":   func(n string) error { return s.SuspendDevice(ctx, n, "staff:a", "ndr") },
		"reinstate": func(n string) error { return s.ReinstateDevice(ctx, n, "staff:a", "fixed") },
		"revoke":    func(n string) error { return s.RevokeDevice(ctx, n, "staff:a", "gone") },
		"renew":     func(n string) error { return s.RenewDevice(ctx, n, "staff:a", "yearly", exp) },
	}
	// reach puts a new device into state st.
	i := 0
	reach := func(st store.Status) string {
		i++
		n := fmt.Sprintf("t%d.example.edu", i)
		must(t, s.CreateDevice(ctx, dev(n), "owner"))
		switch st {
		case store.Active:
			must(t, actions["approve"](n))
		case store.Denied:
			must(t, actions["deny"](n))
		case store.Suspended:
			must(t, actions["approve"](n))
			must(t, actions["suspend"](n))
		case store.Revoked:
			must(t, actions["revoke"](n))
		case store.Expired:
			must(t, s.ApproveDevice(ctx, n, "staff:a", "", time.Now().Add(-time.Second)))
			if _, err := s.ExpireDue(ctx, time.Now(), "system"); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	// want[from][action] = resulting state, "" = ErrTransition.
	want := map[store.Status]map[string]store.Status{
		store.Pending:   {"approve": store.Active, "deny": store.Denied, "revoke": store.Revoked},
		store.Active:    {"suspend": store.Suspended, "revoke": store.Revoked, "renew": store.Active},
		store.Suspended: {"suspend": store.Suspended, "reinstate": store.Active, "revoke": store.Revoked, "renew": store.Suspended},
		store.Denied:    {"approve": store.Active, "revoke": store.Revoked},
		store.Revoked:   {},
		store.Expired:   {"revoke": store.Revoked, "renew": store.Active},
	}
	for _, from := range store.Statuses {
		for _, act := range []string{"approve", "deny", "suspend", "reinstate", "revoke", "renew"} {
			n := reach(from)
			if got, _ := s.Device(ctx, n); got.Status != from {
				t.Fatalf("setup: %s is %s, want %s", n, got.Status, from)
			}
			err := actions[act](n)
			to, ok := want[from][act]
			if !ok {
				if !errors.Is(err, store.ErrTransition) {
					t.Errorf("%s from %s: got %v, want ErrTransition", act, from, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s from %s: %v", act, from, err)
				continue
			}
			if got, _ := s.Device(ctx, n); got.Status != to {
				t.Errorf("%s from %s: status %s, want %s", act, from, got.Status, to)
			}
		}
	}
	if err := s.ApproveDevice(ctx, "missing.example.edu", "staff:a", "", exp); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("approve missing: %v", err)
	}
	n := reach(store.Pending)
	must(t, s.ApproveDevice(ctx, n, "staff:a", "ok", exp))
	got, _ := s.Device(ctx, n)
	if got.ExpiresAt.UnixMilli() != exp.UnixMilli() || got.StatusReason != "ok" {
		t.Errorf("approve: expires %v reason %q", got.ExpiresAt, got.StatusReason)
	}
}

// testVersionBumps checks which changes move the allowlist version.
func testVersionBumps(t *testing.T, s store.Store, _ func() store.Store) {
	exp := time.Now().Add(time.Hour)
	if v := version(t, s); v < 1 {
		t.Fatalf("initial version %d, want >= 1", v)
	}
	steps := []struct {
		name string
		f    func() error
		bump bool
	}{
		{"register", func() error { return s.CreateDevice(ctx, dev("v.example.edu"), "owner") }, false},
		{"deny", func() error { return s.DenyDevice(ctx, "v.example.edu", "s", "") }, false},
		{"approve", func() error { return s.ApproveDevice(ctx, "v.example.edu", "s", "", exp) }, true},
		{"renew active", func() error { return s.RenewDevice(ctx, "v.example.edu", "s", "", exp.Add(time.Hour)) }, false},
		{"limits", func() error { return s.SetLimits(ctx, "v.example.edu", "s", 5, 6) }, true},
		{"same limits", func() error { return s.SetLimits(ctx, "v.example.edu", "s", 5, 6) }, false},
		{"suspend", func() error { return s.SuspendDevice(ctx, "v.example.edu", "edge:e1", "ndr") }, true},
		{"suspend again (no-op)", func() error { return s.SuspendDevice(ctx, "v.example.edu", "edge:e2", "ndr") }, false},
		{"reinstate", func() error { return s.ReinstateDevice(ctx, "v.example.edu", "s", "") }, true},
		{"failed reinstate", func() error { s.ReinstateDevice(ctx, "v.example.edu", "s", ""); return nil }, false},
		{"revoke", func() error { return s.RevokeDevice(ctx, "v.example.edu", "s", "") }, true},
		{"register second", func() error { return s.CreateDevice(ctx, dev("w.example.edu"), "owner") }, false},
		{"limits of pending", func() error { return s.SetLimits(ctx, "w.example.edu", "s", 1, 1) }, false},
		{"sender confirmation", func() error { return nil }, false},
	}
	for _, st := range steps {
		before := version(t, s)
		if err := st.f(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := version(t, s)
		if st.bump && after != before+1 {
			t.Errorf("%s: version %d -> %d, want +1", st.name, before, after)
		}
		if !st.bump && after != before {
			t.Errorf("%s: version %d -> %d, want unchanged", st.name, before, after)
		}
	}
}

func testSnapshot(t *testing.T, s store.Store, _ func() store.Store) {
	exp := time.Now().Add(time.Hour)
	must(t, s.CreateDevice(ctx, dev("b.example.edu", "z@b.example.edu", "a@b.example.edu"), "owner"))
	must(t, s.CreateDevice(ctx, dev("a.example.edu"), "owner"))
	must(t, s.CreateDevice(ctx, dev("pending.example.edu", "p@example.edu"), "owner"))
	must(t, s.CreateDevice(ctx, dev("revoked.example.edu"), "owner"))
	must(t, s.ApproveDevice(ctx, "a.example.edu", "s", "", exp))
	must(t, s.ApproveDevice(ctx, "b.example.edu", "s", "", exp))
	must(t, s.ApproveDevice(ctx, "revoked.example.edu", "s", "", exp))
	must(t, s.RevokeDevice(ctx, "revoked.example.edu", "s", ""))
	must(t, s.SuspendDevice(ctx, "b.example.edu", "edge:e1", "NDR to z@b.example.edu undeliverable"))
	ver, devs, err := s.AllowlistSnapshot(ctx)
	must(t, err)
	if ver != version(t, s) {
		t.Errorf("snapshot version %d, store %d", ver, version(t, s))
	}
	want := []store.AllowlistDevice{
		{Name: "a.example.edu", Status: store.Active, MessagesPerHour: 100, RecipientsPerHour: 200},
		{Name: "b.example.edu", Status: store.Suspended, Reason: "NDR to z@b.example.edu undeliverable",
			Senders: []string{"a@b.example.edu", "z@b.example.edu"}, MessagesPerHour: 100, RecipientsPerHour: 200},
	}
	if fmt.Sprint(devs) != fmt.Sprint(want) {
		t.Errorf("snapshot devices:\n got %+v\nwant %+v", devs, want)
	}
}

// testReinstatementEpoch: the snapshot carries, per device, the
// allowlist version of its latest reinstatement; suspending does not move
// it, reinstating again does.
func testReinstatementEpoch(t *testing.T, s store.Store, _ func() store.Store) {
	exp := time.Now().Add(24 * time.Hour)
	must(t, s.CreateDevice(ctx, dev("r.example.edu"), "owner"))
	must(t, s.CreateDevice(ctx, dev("q.example.edu"), "owner"))
	must(t, s.ApproveDevice(ctx, "r.example.edu", "s", "", exp))
	must(t, s.ApproveDevice(ctx, "q.example.edu", "s", "", exp))
	epoch := func(name string) int64 {
		t.Helper()
		_, devs, err := s.AllowlistSnapshot(ctx)
		must(t, err)
		for _, d := range devs {
			if d.Name == name {
				return d.Reinstated
			}
		}
		t.Fatalf("%s not in the snapshot", name)
		return 0
	}
	if e := epoch("r.example.edu"); e != 0 {
		t.Fatalf("never reinstated: epoch %d", e)
	}
	must(t, s.SuspendDevice(ctx, "r.example.edu", "edge:e1", "ndr"))
	if e := epoch("r.example.edu"); e != 0 {
		t.Fatalf("suspension moved the epoch to %d", e)
	}
	must(t, s.ReinstateDevice(ctx, "r.example.edu", "staff:a", "fixed"))
	first := version(t, s)
	if e := epoch("r.example.edu"); e != first {
		t.Fatalf("epoch %d after reinstatement at version %d", e, first)
	}
	must(t, s.SetLimits(ctx, "r.example.edu", "s", 7, 8))
	must(t, s.SuspendDevice(ctx, "r.example.edu", "edge:e2", "ndr"))
	if e := epoch("r.example.edu"); e != first {
		t.Fatalf("later changes moved the epoch to %d", e)
	}
	must(t, s.ReinstateDevice(ctx, "r.example.edu", "staff:a", "fixed again"))
	if e, v := epoch("r.example.edu"), version(t, s); e != v || e <= first {
		t.Fatalf("second reinstatement: epoch %d, version %d (first %d)", e, v, first)
	}
	if e := epoch("q.example.edu"); e != 0 {
		t.Fatalf("another device's reinstatement moved q's epoch to %d", e)
	}
}

func testExpire(t *testing.T, s store.Store, _ func() store.Store) {
	now := time.Now()
	must(t, s.CreateDevice(ctx, dev("old.example.edu"), "owner"))
	must(t, s.CreateDevice(ctx, dev("new.example.edu"), "owner"))
	must(t, s.ApproveDevice(ctx, "old.example.edu", "s", "", now.Add(-time.Minute)))
	must(t, s.ApproveDevice(ctx, "new.example.edu", "s", "", now.Add(time.Hour)))
	before := version(t, s)
	names, err := s.ExpireDue(ctx, now, "system")
	must(t, err)
	if !slices.Equal(names, []string{"old.example.edu"}) {
		t.Fatalf("expired %v", names)
	}
	if v := version(t, s); v != before+1 {
		t.Errorf("expire bumped %d -> %d", before, v)
	}
	names, err = s.ExpireDue(ctx, now, "system")
	must(t, err)
	if len(names) != 0 || version(t, s) != before+1 {
		t.Errorf("second expire: %v, version %d", names, version(t, s))
	}
	must(t, s.RenewDevice(ctx, "old.example.edu", "staff:a", "recertified", now.Add(time.Hour)))
	if d, _ := s.Device(ctx, "old.example.edu"); d.Status != store.Active {
		t.Errorf("renewed device is %s", d.Status)
	}
}

func testConfirm(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateDevice(ctx, dev("c.example.edu", "scan@example.edu", "copy@example.edu"), "owner"))
	sent := time.Now().Truncate(time.Millisecond)
	must(t, s.SetSenderConfirmation(ctx, "c.example.edu", "scan@example.edu", "hash-1", sent))
	must(t, s.SetSenderConfirmation(ctx, "c.example.edu", "copy@example.edu", "hash-2", sent))
	if err := s.SetSenderConfirmation(ctx, "c.example.edu", "nobody@example.edu", "h", sent); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown sender: %v", err)
	}
	if _, _, err := s.ConfirmSender(ctx, "wrong", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("wrong token: %v", err)
	}
	if _, _, err := s.ConfirmSender(ctx, "", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("empty token: %v", err)
	}
	d, a, err := s.ConfirmSender(ctx, "hash-1", time.Now())
	must(t, err)
	if d != "c.example.edu" || a != "scan@example.edu" {
		t.Errorf("confirmed %s %s", d, a)
	}
	if _, _, err := s.ConfirmSender(ctx, "hash-1", time.Now()); err != nil {
		t.Errorf("confirm twice: %v", err)
	}
	got, _ := s.Device(ctx, "c.example.edu")
	for _, sn := range got.Senders {
		if sn.Confirmed() != (sn.Address == "scan@example.edu") {
			t.Errorf("sender %s confirmed=%v", sn.Address, sn.Confirmed())
		}
		if !sn.ConfirmSentAt.Equal(sent) {
			t.Errorf("sender %s sent at %v, want %v", sn.Address, sn.ConfirmSentAt, sent)
		}
	}
}

func testAudit(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateDevice(ctx, dev("a.example.edu"), "owner"))
	must(t, s.ApproveDevice(ctx, "a.example.edu", "staff:alice", "looks fine", time.Now().Add(time.Hour)))
	must(t, s.SuspendDevice(ctx, "a.example.edu", "edge:bldg-12", "NDR to scanner@x undeliverable"))
	must(t, s.CreateDevice(ctx, dev("b.example.edu"), "owner"))
	must(t, s.CreateEdge(ctx, store.Edge{ID: "bldg-12"}))
	entries, err := s.ListAudit(ctx, store.AuditFilter{Device: "a.example.edu"})
	must(t, err)
	if len(entries) != 3 {
		t.Fatalf("audit for a: %+v", entries)
	}
	last := entries[0]
	if last.Action != "suspend" || last.Actor != "edge:bldg-12" || last.Reason != "NDR to scanner@x undeliverable" ||
		last.FromStatus != store.Active || last.ToStatus != store.Suspended || last.AllowlistVersion != version(t, s) || last.Time.IsZero() {
		t.Errorf("last entry: %+v", last)
	}
	if entries[1].Action != "approve" || entries[1].Actor != "staff:alice" || entries[1].Reason != "looks fine" {
		t.Errorf("approve entry: %+v", entries[1])
	}
	if entries[2].Action != "register" || entries[2].AllowlistVersion != 0 {
		t.Errorf("register entry: %+v", entries[2])
	}
	all, err := s.ListAudit(ctx, store.AuditFilter{Limit: 2})
	must(t, err)
	if len(all) != 2 || all[0].Edge != "bldg-12" {
		t.Errorf("all, limit 2: %+v", all)
	}
	edge, err := s.ListAudit(ctx, store.AuditFilter{Edge: "bldg-12"})
	must(t, err)
	if len(edge) != 1 || edge[0].Action != "create-edge" {
		t.Errorf("edge audit: %+v", edge)
	}
}

func testEventBatch(t *testing.T, s store.Store, _ func() store.Store) {
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	e2 := event.Event{ID: "e2", Edge: "bldg-2", Time: base, Kind: event.Refusal, Reason: "sender not registered", Count: 3}
	if _, err := s.AddEvent(ctx, e2); err != nil {
		t.Fatal(err)
	}
	// New, stored before, repeated within the batch.
	b1 := event.Event{ID: "b1", Edge: "bldg-3", Time: base, Kind: event.Refusal, ClientIP: "10.0.0.3", Count: 1}
	got, err := s.AddEvents(ctx, []event.Event{b1, e2, b1})
	must(t, err)
	if len(got) != 3 || !got[0] || got[1] || got[2] {
		t.Errorf("batch inserted %v, want [true false false]", got)
	}
	// A batch with an invalid event stores nothing.
	if _, err := s.AddEvents(ctx, []event.Event{{ID: "b2", Edge: "bldg-3", Time: base, Kind: event.Refusal}, {ID: "", Edge: "x", Kind: event.NDR, Time: base}}); err == nil {
		t.Error("batch with an invalid event accepted")
	}
	if es, err := s.ListEvents(ctx, store.EventFilter{Edge: "bldg-3"}); err != nil || len(es) != 1 {
		t.Errorf("events of bldg-3 after the batches: %d %v, want only b1", len(es), err)
	}
	// A batch larger than one statement, half of it stored before.
	var big []event.Event
	for i := range 700 {
		big = append(big, event.Event{ID: fmt.Sprintf("big-%d", i), Edge: "bldg-4", Time: base, Kind: event.Refusal, Count: i})
	}
	if _, err := s.AddEvents(ctx, big[:350]); err != nil {
		t.Fatal(err)
	}
	got, err = s.AddEvents(ctx, big)
	must(t, err)
	for i, ins := range got {
		if ins != (i >= 350) {
			t.Fatalf("event %d of the large batch: inserted %v", i, ins)
		}
	}
	if es, err := s.ListEvents(ctx, store.EventFilter{Edge: "bldg-4", Limit: 1000}); err != nil || len(es) != 700 {
		t.Errorf("events of bldg-4: %d %v, want 700", len(es), err)
	}
	// Batches count into the per-day totals exactly as single events do,
	// once per stored event: e2 (3) + b1 (1) + big (1 + 1 + 2 + ... + 699).
	want := int64(3 + 1 + 1 + 699*700/2)
	for _, dev := range []string{store.DeviceAll, ""} {
		days, err := s.DailyCounts(ctx, dev, base.Add(-48*time.Hour))
		must(t, err)
		var n int64
		for _, d := range days {
			if d.Kind == event.Refusal {
				n += d.N
			}
		}
		if n != want {
			t.Errorf("daily refusal count of %q after batches: %d, want %d (%+v)", dev, n, want, days)
		}
	}
}

func testEvents(t *testing.T, s store.Store, _ func() store.Store) {
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	e1 := event.Event{ID: "e1", Edge: "bldg-1", Time: base, Kind: event.NDR, Device: "Scanner.example.edu", ClientIP: "10.0.0.1",
		Sender: "scan@example.edu", Recipient: "x@other.org", QueueID: "q1", Reason: "5.1.1 no such user", Count: 1, Detail: map[string]string{"status": "5.1.1"}}
	e2 := event.Event{ID: "e2", Edge: "bldg-2", Time: base.Add(time.Minute), Kind: event.Refusal, Device: "scanner.example.edu", Reason: "sender not registered", Count: 3}
	e3 := event.Event{ID: "e3", Edge: "bldg-1", Time: base.Add(2 * time.Minute), Kind: event.RateLimit, Device: "other.example.edu"}
	for _, e := range []event.Event{e1, e2, e3} {
		ins, err := s.AddEvent(ctx, e)
		must(t, err)
		if !ins {
			t.Errorf("%s not inserted", e.ID)
		}
	}
	ins, err := s.AddEvent(ctx, e1)
	must(t, err)
	if ins {
		t.Error("duplicate event inserted")
	}
	if _, err := s.AddEvent(ctx, event.Event{ID: "", Edge: "x", Kind: event.NDR, Time: base}); err == nil {
		t.Error("invalid event accepted")
	}
	ids := func(f store.EventFilter) []string {
		es, err := s.ListEvents(ctx, f)
		must(t, err)
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	cases := []struct {
		f    store.EventFilter
		want []string
	}{
		{store.EventFilter{}, []string{"e3", "e2", "e1"}},
		{store.EventFilter{Device: "scanner.example.edu"}, []string{"e2", "e1"}},
		{store.EventFilter{Edge: "bldg-1"}, []string{"e3", "e1"}},
		{store.EventFilter{Kind: event.Refusal}, []string{"e2"}},
		{store.EventFilter{Limit: 1}, []string{"e3"}},
	}
	for _, c := range cases {
		if got := ids(c.f); !slices.Equal(got, c.want) {
			t.Errorf("%+v: got %v, want %v", c.f, got, c.want)
		}
	}
	es, _ := s.ListEvents(ctx, store.EventFilter{Kind: event.NDR})
	if len(es) != 1 || es[0].Detail["status"] != "5.1.1" || !es[0].Time.Equal(base) || es[0].QueueID != "q1" || es[0].Count != 1 ||
		es[0].Device != "scanner.example.edu" || es[0].Sender != "scan@example.edu" || es[0].Recipient != "x@other.org" {
		t.Errorf("event round trip: %+v", es)
	}
}

func testEdges(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateEdge(ctx, store.Edge{ID: "bldg-12", Name: "Building 12", Site: "North"}))
	must(t, s.CreateEdge(ctx, store.Edge{ID: "bldg-1"}))
	if err := s.CreateEdge(ctx, store.Edge{ID: "bldg-12"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate edge: %v", err)
	}
	must(t, s.SetEdgeEnrolment(ctx, "bldg-12", "tok-hash", time.Now().Add(time.Hour)))
	must(t, s.SetEdgeEnrolment(ctx, "bldg-1", "old-hash", time.Now().Add(-time.Second)))
	if err := s.SetEdgeEnrolment(ctx, "nope", "x", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("enrolment of missing edge: %v", err)
	}
	if _, err := s.RedeemEnrolment(ctx, "old-hash"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := s.RedeemEnrolment(ctx, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("empty token: %v", err)
	}
	// Concurrent redemption of one token: exactly one wins.
	var wins, losses int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := s.RedeemEnrolment(ctx, "tok-hash")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && e.ID == "bldg-12" && e.Site == "North":
				wins++
			case errors.Is(err, store.ErrNotFound):
				losses++
			default:
				t.Errorf("redeem: %+v %v", e, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != 3 {
		t.Errorf("redeem: %d wins, %d losses", wins, losses)
	}
	if _, err := s.EdgeByUsername(ctx, "bldg-12"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("not yet enrolled edge found by username: %v", err)
	}
	must(t, s.SetEdgeCredentials(ctx, "bldg-12", "bldg-12", "sha256:abc"))
	e, err := s.EdgeByUsername(ctx, "bldg-12")
	must(t, err)
	if !e.Enrolled || e.PasswordHash != "sha256:abc" || e.Name != "Building 12" {
		t.Errorf("edge by username: %+v", e)
	}
	seen := time.Now().Truncate(time.Millisecond).UTC()
	must(t, s.UpdateEdgeStatus(ctx, "bldg-12", store.EdgeStatus{Online: true, LastSeen: seen, AllowlistVersion: 7, QueueDepth: 3, Outbox: 1,
		Software: "1.0", Counters: map[string]int64{"smtp_accepted": 10}}))
	// A last will: offline, no time — keeps the last report.
	must(t, s.UpdateEdgeStatus(ctx, "bldg-12", store.EdgeStatus{Online: false}))
	e, err = s.Edge(ctx, "bldg-12")
	must(t, err)
	if e.Status.Online || !e.Status.LastSeen.Equal(seen) || e.Status.AllowlistVersion != 7 || e.Status.QueueDepth != 3 ||
		e.Status.Outbox != 1 || e.Status.Software != "1.0" || e.Status.Counters["smtp_accepted"] != 10 {
		t.Errorf("edge status: %+v", e.Status)
	}
	if err := s.UpdateEdgeStatus(ctx, "nope", store.EdgeStatus{LastSeen: seen}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("status of missing edge: %v", err)
	}
	edges, err := s.ListEdges(ctx)
	must(t, err)
	if len(edges) != 2 || edges[0].ID != "bldg-1" || edges[1].ID != "bldg-12" {
		t.Errorf("list edges: %+v", edges)
	}
}

func testUsers(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateUser(ctx, store.User{Name: "alice", PasswordHash: "$argon2id$x"}))
	if err := s.CreateUser(ctx, store.User{Name: "alice"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate user: %v", err)
	}
	u, err := s.User(ctx, "alice")
	must(t, err)
	if u.PasswordHash != "$argon2id$x" {
		t.Errorf("user: %+v", u)
	}
	must(t, s.SetUserPassword(ctx, "alice", "$argon2id$y"))
	if u, _ := s.User(ctx, "alice"); u.PasswordHash != "$argon2id$y" {
		t.Errorf("password not changed: %+v", u)
	}
	if _, err := s.User(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing user: %v", err)
	}
	users, _ := s.ListUsers(ctx)
	if len(users) != 1 {
		t.Errorf("users: %+v", users)
	}
	now := time.Now()
	must(t, s.CreateSession(ctx, store.Session{IDHash: "s1", User: "alice", ExpiresAt: now.Add(time.Hour)}))
	must(t, s.CreateSession(ctx, store.Session{IDHash: "s2", User: "alice", ExpiresAt: now.Add(-time.Second)}))
	if se, err := s.Session(ctx, "s1", now); err != nil || se.User != "alice" {
		t.Errorf("session: %+v %v", se, err)
	}
	if _, err := s.Session(ctx, "s1", now.Add(2*time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after expiry: %v", err)
	}
	if _, err := s.Session(ctx, "s2", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session: %v", err)
	}
	must(t, s.DeleteExpiredSessions(ctx, now))
	must(t, s.DeleteSession(ctx, "s1"))
	if _, err := s.Session(ctx, "s1", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted session: %v", err)
	}
	must(t, s.CreateAPIToken(ctx, store.APIToken{Hash: "t1", User: "alice", Label: "ci"}))
	if tok, err := s.APIToken(ctx, "t1"); err != nil || tok.User != "alice" || tok.Label != "ci" {
		t.Errorf("token: %+v %v", tok, err)
	}
	if _, err := s.APIToken(ctx, "t2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing token: %v", err)
	}
}

// testConcurrent approves devices from two store handles at once: every
// approval must get its own version, and the versions must be exactly the
// next N numbers.
func testConcurrent(t *testing.T, s store.Store, handle func() store.Store) {
	const n = 16
	other := handle()
	for i := range n {
		must(t, s.CreateDevice(ctx, dev(fmt.Sprintf("c%02d.example.edu", i)), "owner"))
	}
	start := version(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		h := s
		if i%2 == 1 {
			h = other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- h.ApproveDevice(ctx, fmt.Sprintf("c%02d.example.edu", i), "staff:x", "", time.Now().Add(time.Hour))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	if v := version(t, other); v != start+n {
		t.Fatalf("version %d after %d approvals from %d, want %d", v, n, start, start+n)
	}
	var versions []int64
	for i := range n {
		a, err := s.ListAudit(ctx, store.AuditFilter{Device: fmt.Sprintf("c%02d.example.edu", i), Limit: 1})
		must(t, err)
		versions = append(versions, a[0].AllowlistVersion)
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	for i, v := range versions {
		if v != start+int64(i)+1 {
			t.Fatalf("approval versions %v: not distinct and consecutive from %d", versions, start+1)
		}
	}
}

// testSnapshotConsistency reads snapshots while another handle approves
// devices one by one: each snapshot's device count must match its version.
func testSnapshotConsistency(t *testing.T, s store.Store, handle func() store.Store) {
	const n = 12
	writer := handle()
	for i := range n {
		must(t, s.CreateDevice(ctx, dev(fmt.Sprintf("s%02d.example.edu", i)), "owner"))
	}
	base := version(t, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := writer.ApproveDevice(ctx, fmt.Sprintf("s%02d.example.edu", i), "staff:x", "", time.Now().Add(time.Hour)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reads := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		v, devs, err := s.AllowlistSnapshot(ctx)
		must(t, err)
		reads++
		if int64(len(devs)) != v-base {
			t.Fatalf("snapshot version %d has %d devices, want %d", v, len(devs), v-base)
		}
	}
	t.Logf("%d consistent snapshots read during %d approvals", reads, n)
}

// testSuspendByEdge: an edge's report suspends a device only with relay
// evidence from that edge and within the cap; otherwise it is one open
// request per device and edge; concurrent reports never exceed the cap.
func testSuspendByEdge(t *testing.T, s store.Store, handle func() store.Store) {
	ctx := context.Background()
	must(t, s.CreateEdge(ctx, store.Edge{ID: "e1"}))
	must(t, s.CreateEdge(ctx, store.Edge{ID: "e2"}))
	var names []string
	for i := 0; i < 8; i++ {
		n := fmt.Sprintf("d%d.example.edu", i)
		must(t, s.CreateDevice(ctx, dev(n, "s@example.edu"), "owner"))
		must(t, s.ApproveDevice(ctx, n, "staff", "", time.Now().Add(time.Hour)))
		names = append(names, n)
	}
	since := time.Now().Add(-time.Hour)
	req := func(edge, name string) store.EdgeSuspensionResult {
		t.Helper()
		r, err := s.SuspendByEdge(ctx, store.EdgeSuspension{Edge: edge, Device: name, Reason: "r", RelayedSince: since, CapSince: since, Cap: 2})
		must(t, err)
		return r
	}
	// No evidence: a request, once.
	if r := req("e1", names[0]); r.Outcome != store.EdgeRequested || !r.New || r.Request.Why != store.WhyNoTraffic {
		t.Fatalf("no evidence: %+v", r)
	}
	if r := req("e1", names[0]); r.Outcome != store.EdgeRequested || r.New {
		t.Fatalf("repeat: %+v", r)
	}
	// Evidence from another edge does not count.
	_, err := s.AddEvent(ctx, event.Event{ID: event.NewID(), Edge: "e2", Time: time.Now(), Kind: event.Delivery, Device: names[1], Count: 1})
	must(t, err)
	if r := req("e1", names[1]); r.Outcome != store.EdgeRequested {
		t.Fatalf("other edge's evidence: %+v", r)
	}
	for _, n := range names[2:] {
		_, err := s.AddEvent(ctx, event.Event{ID: event.NewID(), Edge: "e1", Time: time.Now(), Kind: event.Delivery, Device: n, Count: 1})
		must(t, err)
	}
	// Six concurrent reports with evidence, on separate handles: two
	// suspensions (the cap), four requests.
	var wg sync.WaitGroup
	results := make([]store.EdgeSuspensionResult, 6)
	for i, n := range names[2:] {
		wg.Add(1)
		h := handle()
		go func() {
			defer wg.Done()
			r, err := h.SuspendByEdge(ctx, store.EdgeSuspension{Edge: "e1", Device: n, Reason: "r", RelayedSince: since, CapSince: since, Cap: 2})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	count := map[store.EdgeSuspensionOutcome]int{}
	for _, r := range results {
		count[r.Outcome]++
	}
	if count[store.EdgeSuspended] != 2 || count[store.EdgeRequested] != 4 {
		t.Fatalf("outcomes %v, want 2 suspended and 4 requested", count)
	}
	// Already suspended: nothing.
	for i, r := range results {
		if r.Outcome == store.EdgeSuspended {
			if again := req("e1", names[2+i]); again.Outcome != store.EdgeNothing {
				t.Fatalf("suspended device again: %+v", again)
			}
			break
		}
	}
	n, err := s.CountOpenSuspensionRequests(ctx)
	must(t, err)
	if n != 6 {
		t.Fatalf("%d open requests, want 6", n)
	}
	open, err := s.ListSuspensionRequests(ctx, store.RequestFilter{State: store.RequestOpen})
	must(t, err)
	q, err := s.DecideSuspensionRequest(ctx, open[0].ID, true, "staff:a", "ok")
	must(t, err)
	if q.State != store.RequestConfirmed {
		t.Fatalf("decided: %+v", q)
	}
	d, err := s.Device(ctx, q.Device)
	must(t, err)
	if d.Status != store.Suspended {
		t.Fatalf("confirmed device is %s", d.Status)
	}
	if _, err := s.DecideSuspensionRequest(ctx, open[0].ID, false, "staff:a", ""); !errors.Is(err, store.ErrTransition) {
		t.Fatalf("decided twice: %v", err)
	}
	if _, err := s.DecideSuspensionRequest(ctx, 99999, false, "staff:a", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown request: %v", err)
	}
	if _, err := s.SuspendByEdge(ctx, store.EdgeSuspension{Edge: "nope", Device: names[0]}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown edge: %v", err)
	}
}

// testPruneEvents: events received before the cut-off are deleted, their
// per-device counts survive, and pruning again counts nothing twice.
func testPruneEvents(t *testing.T, s store.Store, handle func() store.Store) {
	ctx := context.Background()
	add := func(kind event.Kind, device string, count int) {
		_, err := s.AddEvent(ctx, event.Event{ID: event.NewID(), Edge: "e1", Time: time.Now(), Kind: kind, Device: device, Count: count})
		must(t, err)
	}
	add(event.Refusal, "a.example.edu", 5)
	add(event.Delivery, "a.example.edu", 0)
	add(event.Refusal, "", 3)
	cut := time.Now().Add(time.Second)
	// Two handles prune at once: each event is counted once.
	var wg sync.WaitGroup
	var total int64
	var mu sync.Mutex
	for i := 0; i < 2; i++ {
		h := handle()
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := h.PruneEvents(ctx, cut)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 3 {
		t.Fatalf("pruned %d events, want 3", total)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	must(t, err)
	if len(evs) != 0 {
		t.Fatalf("%d events left", len(evs))
	}
	time.Sleep(1100 * time.Millisecond) // received after the cut-off
	add(event.Refusal, "a.example.edu", 2)
	n, err := s.PruneEvents(ctx, cut)
	must(t, err)
	if n != 0 {
		t.Fatalf("pruned %d newer events", n)
	}
	c, err := s.DeviceEventCounts(ctx, "A.example.edu")
	must(t, err)
	if c[event.Refusal] != 7 || c[event.Delivery] != 1 {
		t.Fatalf("counts %v, want refusal 7 and delivery 1", c)
	}
}
