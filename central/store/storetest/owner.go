package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

func edit(d store.Device, senders ...string) store.DeviceEdit {
	e := store.DeviceEdit{Name: d.Name, IPs: d.IPs, Owner: d.Owner, Department: d.Department, ContactEmail: d.ContactEmail,
		Purpose: d.Purpose, BehindFirewall: d.BehindFirewall, FirewallAccepted: d.FirewallAccepted, FCrDNS: d.FCrDNS, FCrDNSOK: d.FCrDNSOK}
	for _, a := range senders {
		e.Senders = append(e.Senders, store.Sender{Address: a})
	}
	return e
}

func testOwnerEdit(t *testing.T, s store.Store, _ func() store.Store) {
	d := dev("scan.example.edu", "a@example.edu", "b@example.edu")
	must(t, s.CreateDevice(ctx, d, "owner"))
	must(t, s.SetSenderConfirmation(ctx, d.Name, "a@example.edu", "tok-a", time.Now()))
	if _, _, err := s.ConfirmSender(ctx, "tok-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Pending: fields change, the kept sender keeps its confirmation, the
	// removed one goes, the new one is unconfirmed; no version bump.
	v0 := version(t, s)
	e := edit(d, "a@example.edu", "c@example.edu")
	e.Purpose, e.IPs = "scan to mail, floor 2", []string{"10.1.2.4"}
	from, to, err := s.OwnerEditDevice(ctx, e, "owner")
	must(t, err)
	if from != store.Pending || to != store.Pending || version(t, s) != v0 {
		t.Fatalf("pending edit: %s -> %s, version %d -> %d", from, to, v0, version(t, s))
	}
	got, err := s.Device(ctx, d.Name)
	must(t, err)
	if got.Purpose != "scan to mail, floor 2" || len(got.IPs) != 1 || got.IPs[0] != "10.1.2.4" || len(got.Senders) != 2 ||
		got.Senders[0].Address != "a@example.edu" || !got.Senders[0].Confirmed() || got.Senders[1].Address != "c@example.edu" || got.Senders[1].Confirmed() {
		t.Fatalf("after pending edit: %+v", got)
	}
	// Active: a purpose change stays active without a bump; a sender
	// change goes back to review and leaves the allowlist.
	must(t, s.ApproveDevice(ctx, d.Name, "staff:bob", "", time.Now().Add(time.Hour)))
	v1 := version(t, s)
	e = edit(got, "a@example.edu", "c@example.edu")
	e.Purpose = "scanning"
	if from, to, err := s.OwnerEditDevice(ctx, e, "owner"); err != nil || from != store.Active || to != store.Active || version(t, s) != v1 {
		t.Fatalf("active purpose edit: %s -> %s %v, version %d -> %d", from, to, err, v1, version(t, s))
	}
	e = edit(got, "a@example.edu", "d@example.edu")
	if from, to, err := s.OwnerEditDevice(ctx, e, "owner"); err != nil || from != store.Active || to != store.Pending || version(t, s) != v1+1 {
		t.Fatalf("active sender edit: %s -> %s %v, version %d -> %d", from, to, err, v1, version(t, s))
	}
	_, snap, err := s.AllowlistSnapshot(ctx)
	must(t, err)
	if len(snap) != 0 {
		t.Fatalf("device back in review is still in the snapshot: %+v", snap)
	}
	hist, err := s.ListAudit(ctx, store.AuditFilter{Device: d.Name, Limit: 1})
	must(t, err)
	if len(hist) != 1 || hist[0].Action != "edit" || hist[0].ToStatus != store.Pending || hist[0].AllowlistVersion != v1+1 {
		t.Fatalf("audit of the edit: %+v", hist)
	}
	// Denied: an edit with Rerequest goes back to pending.
	must(t, s.DenyDevice(ctx, d.Name, "staff:bob", "no"))
	e = edit(got, "a@example.edu")
	e.Rerequest = true
	if from, to, err := s.OwnerEditDevice(ctx, e, "owner"); err != nil || from != store.Denied || to != store.Pending {
		t.Fatalf("re-request: %s -> %s %v", from, to, err)
	}
	// Revoked: no edits.
	must(t, s.Transition(ctx, d.Name, store.ActWithdraw, "owner", "not needed", time.Time{}))
	if got, _ := s.Device(ctx, d.Name); got.Status != store.Revoked {
		t.Fatalf("withdrawn device is %s", got.Status)
	}
	if _, _, err := s.OwnerEditDevice(ctx, e, "owner"); !errors.Is(err, store.ErrTransition) {
		t.Fatalf("edit of a revoked device: %v", err)
	}
	if _, _, err := s.OwnerEditDevice(ctx, store.DeviceEdit{Name: "nope.example.edu"}, "owner"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("edit of a missing device: %v", err)
	}
	if err := s.Transition(ctx, d.Name, store.ActRerequest, "owner", "", time.Time{}); !errors.Is(err, store.ErrTransition) {
		t.Fatalf("re-request of a revoked device: %v", err)
	}
}

func testNotices(t *testing.T, s store.Store, _ func() store.Store) {
	now := time.Now()
	ok, err := s.ClaimNotice(ctx, "a.example.edu", "expiring-30", "123", now)
	must(t, err)
	again, err := s.ClaimNotice(ctx, "a.example.edu", "expiring-30", "123", now)
	must(t, err)
	other, err := s.ClaimNotice(ctx, "a.example.edu", "expiring-30", "456", now)
	must(t, err)
	if !ok || again || !other {
		t.Fatalf("claims: first %v, again %v, other key %v", ok, again, other)
	}
	must(t, s.ReleaseNotice(ctx, "a.example.edu", "expiring-30", "123"))
	if ok, err := s.ClaimNotice(ctx, "a.example.edu", "expiring-30", "123", now); err != nil || !ok {
		t.Fatalf("claim after release: %v %v", ok, err)
	}

	for i, days := range []int{40, 20, 5} {
		d := dev(fmt.Sprintf("d%d.example.edu", i), "x@example.edu")
		must(t, s.CreateDevice(ctx, d, "owner"))
		must(t, s.ApproveDevice(ctx, d.Name, "staff:bob", "", now.Add(time.Duration(days)*24*time.Hour)))
	}
	must(t, s.CreateDevice(ctx, dev("pending.example.edu", "x@example.edu"), "owner"))
	exp, err := s.ExpiringDevices(ctx, now, now.Add(30*24*time.Hour), "", 0)
	must(t, err)
	if len(exp) != 2 || exp[0].Name != "d2.example.edu" || exp[1].Name != "d1.example.edu" {
		t.Fatalf("expiring within 30 days: %+v", exp)
	}
	if exp, err := s.ExpiringDevices(ctx, now.Add(7*24*time.Hour), now.Add(30*24*time.Hour), "", 0); err != nil || len(exp) != 1 || exp[0].Name != "d1.example.edu" {
		t.Fatalf("expiring in 7 to 30 days: %+v %v", exp, err)
	}
	// A claimed reminder for this expiry leaves the device out; one for
	// another expiry (before a renewal) does not.
	d1 := exp[1]
	_, err = s.ClaimNotice(ctx, d1.Name, "expiring-30", fmt.Sprint(d1.ExpiresAt.UnixMilli()), now)
	must(t, err)
	_, err = s.ClaimNotice(ctx, "d2.example.edu", "expiring-30", "12345", now)
	must(t, err)
	exp, err = s.ExpiringDevices(ctx, now, now.Add(30*24*time.Hour), "expiring-30", 0)
	must(t, err)
	if len(exp) != 1 || exp[0].Name != "d2.example.edu" {
		t.Fatalf("expiring without a claimed reminder: %+v", exp)
	}
}

func testDeviceReports(t *testing.T, s store.Store, _ func() store.Store) {
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	add := func(id string, at time.Time, kind event.Kind, device, ip string, count int) {
		t.Helper()
		if _, err := s.AddEvent(ctx, event.Event{ID: id, Edge: "e1", Time: at, Kind: kind, Device: device, ClientIP: ip,
			Recipient: "x@gmail.com", Reason: "registration pending", Count: count}); err != nil {
			t.Fatal(err)
		}
	}
	add("own-refusal", base, event.Refusal, "scan.example.edu", "10.1.2.3", 0)
	add("own-ndr", base.Add(time.Minute), event.NDR, "scan.example.edu", "10.1.2.3", 0)
	add("own-delivery", base.Add(2*time.Minute), event.Delivery, "scan.example.edu", "", 7)
	add("ip-refusal", base.Add(3*time.Minute), event.Refusal, "", "10.1.2.3", 2)
	add("ip-old", base.Add(-48*time.Hour), event.Refusal, "", "10.1.2.3", 0)
	add("other-ip", base.Add(4*time.Minute), event.Refusal, "", "10.9.9.9", 0)
	add("other-dev", base.Add(5*time.Minute), event.Refusal, "other.example.edu", "10.1.2.3", 0)
	ids := func(evs []event.Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.ID)
		}
		return out
	}
	got, err := s.DeviceReports(ctx, "scan.example.edu", nil, time.Time{}, 10)
	must(t, err)
	if fmt.Sprint(ids(got)) != "[own-ndr own-refusal]" {
		t.Fatalf("device only: %v", ids(got))
	}
	got, err = s.DeviceReports(ctx, "scan.example.edu", []string{"10.1.2.3"}, base.Add(-24*time.Hour), 10)
	must(t, err)
	if fmt.Sprint(ids(got)) != "[ip-refusal own-ndr own-refusal]" {
		t.Fatalf("device and its address: %v", ids(got))
	}
	got, err = s.DeviceReports(ctx, "scan.example.edu", []string{"10.1.2.3"}, base.Add(-24*time.Hour), 2)
	must(t, err)
	if fmt.Sprint(ids(got)) != "[ip-refusal own-ndr]" {
		t.Fatalf("limit 2: %v", ids(got))
	}

	// Per-day counts: an event's Count, de-duplicated, per device and for
	// the fleet.
	add("own-refusal", base, event.Refusal, "scan.example.edu", "10.1.2.3", 0)
	days, err := s.DailyCounts(ctx, "scan.example.edu", base.Add(-24*time.Hour))
	must(t, err)
	byKind := map[event.Kind]int64{}
	for _, c := range days {
		byKind[c.Kind] += c.N
		if c.Day.Hour() != 0 || c.Day.Minute() != 0 || c.Day.Location() != time.UTC {
			t.Errorf("day %v is not 00:00 UTC", c.Day)
		}
	}
	if byKind[event.Refusal] != 1 || byKind[event.NDR] != 1 || byKind[event.Delivery] != 7 {
		t.Fatalf("device per-day counts: %v", byKind)
	}
	all, err := s.DailyCounts(ctx, store.DeviceAll, base.Add(-24*time.Hour))
	must(t, err)
	var refusals int64
	for _, c := range all {
		if c.Kind == event.Refusal {
			refusals += c.N
		}
	}
	if refusals != 1+2+1+1 {
		t.Fatalf("fleet refusals in the last day: %d (%+v)", refusals, all)
	}
	old, err := s.DailyCounts(ctx, store.DeviceAll, base.Add(-72*time.Hour))
	must(t, err)
	if len(old) <= len(all) {
		t.Fatalf("from 3 days back: %d rows, from 1 day back: %d", len(old), len(all))
	}

	last, err := s.LatestEvent(ctx, "scan.example.edu", "")
	must(t, err)
	if last.ID != "own-delivery" {
		t.Fatalf("latest event: %s", last.ID)
	}
	if _, err := s.LatestEvent(ctx, "scan.example.edu", event.TLS); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("latest TLS event of a device without one: %v", err)
	}
}

func testEdgeSamples(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateEdge(ctx, store.Edge{ID: "e1"}))
	t0 := time.Now().Truncate(store.EdgeSampleSlot)
	for i, q := range []int{3, 5, 8} {
		// Two reports in the first slot: the later one counts.
		at := t0.Add(time.Duration(i) * store.EdgeSampleSlot)
		if i == 0 {
			must(t, s.UpdateEdgeStatus(ctx, "e1", store.EdgeStatus{Online: true, LastSeen: at, QueueDepth: 1}))
			at = at.Add(time.Minute)
		}
		must(t, s.UpdateEdgeStatus(ctx, "e1", store.EdgeStatus{Online: true, LastSeen: at, QueueDepth: q, Outbox: i}))
	}
	got, err := s.EdgeSamples(ctx, "e1", t0)
	must(t, err)
	if len(got) != 3 || got[0].QueueDepth != 3 || got[1].QueueDepth != 5 || got[2].QueueDepth != 8 || got[2].Outbox != 2 || !got[0].Online || !got[0].Time.Equal(t0) {
		t.Fatalf("samples: %+v", got)
	}
	if got, _ := s.EdgeSamples(ctx, "e1", t0.Add(store.EdgeSampleSlot)); len(got) != 2 {
		t.Fatalf("samples from the second slot: %+v", got)
	}
}
