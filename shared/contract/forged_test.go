package contract_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// mailbox records the mail central sends to staff.
type mailbox struct {
	mu   sync.Mutex
	sent []string
}

func (m *mailbox) Send(_ context.Context, to, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, to+": "+subject)
	return nil
}

func (m *mailbox) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sent)
}

// TestForgedSuspensions: an edge's credentials (as a stolen enrolment
// file gives) are used to publish ten forged ndr-undeliverable events for
// devices the edge never relayed for: none is suspended, each becomes a
// suspension request with an audit entry naming the edge, and staff get a
// mail. Ten more, after forged delivery summaries for those devices:
// at most the hourly cap (3) are suspended, the rest are requests.
func TestForgedSuspensions(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		env.UseAuth(fleet.Store{S: st}) // the embedded broker checks the store's credentials
		var names []string
		for i := 0; i < 20; i++ {
			name := fmt.Sprintf("dev-%02d.example.edu", i)
			registerDevice(t, st, name)
			must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
			names = append(names, name)
		}
		mb := &mailbox{}
		reg := &registration.Service{Store: st, EdgeSuspensionsPerHour: 3, Mail: mb, StaffNotify: []string{"noc@example.edu"}}
		startCentralWith(t, env, st, reg)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-evil")
		enrolEdge(t, env, st, "edge-good")
		evil := startEdge(t, env, sp, "edge-evil", dir)
		good := startEdge(t, env, sp, "edge-good", dir)
		testkit.WaitFor(t, 10*time.Second, "good edge enforces the devices", func() bool { return good.status(names[19]) == "active" })

		suspended := func() int {
			n := 0
			for _, name := range names {
				d, err := st.Device(ctx, name)
				must(t, err)
				if d.Status == store.Suspended {
					n++
				}
			}
			return n
		}
		open := func() int {
			n, err := st.CountOpenSuspensionRequests(ctx)
			must(t, err)
			return n
		}
		forge := func(devs []string) {
			for _, name := range devs {
				evil.outbox.Emit(event.Event{Kind: event.NDRUndeliverable, Device: name, Sender: "scan@example.edu", Reason: "5.1.1 forged"})
			}
		}

		// Ten devices the edge never relayed for.
		forge(names[:10])
		testkit.WaitFor(t, 10*time.Second, "ten requests", func() bool { return open() == 10 })
		if n := suspended(); n != 0 {
			t.Fatalf("%d devices suspended on forged reports without prior traffic, want 0", n)
		}
		// Ten with forged prior traffic.
		for _, name := range names[10:] {
			evil.outbox.Emit(event.Event{Kind: event.Delivery, Device: name, Count: 1})
		}
		testkit.WaitFor(t, 10*time.Second, "delivery summaries stored", func() bool {
			evs, err := st.ListEvents(ctx, store.EventFilter{Kind: event.Delivery, Edge: "edge-evil"})
			return err == nil && len(evs) == 10
		})
		forge(names[10:])
		testkit.WaitFor(t, 10*time.Second, "all twenty reports handled", func() bool { return open()+suspended() == 20 })
		if n := suspended(); n != 3 {
			t.Fatalf("%d devices suspended, want the cap of 3", n)
		}
		if n := open(); n != 17 {
			t.Fatalf("%d open requests, want 17", n)
		}
		testkit.WaitFor(t, 5*time.Second, "suspensions reach the other edge", func() bool {
			n := 0
			for _, name := range names {
				if good.status(name) == "suspended" {
					n++
				}
			}
			return n == 3
		})
		if n := mb.count(); n != 17 {
			t.Errorf("%d staff mails, want 17", n)
		}
		// Everything is audited with the edge's id.
		audit, err := st.ListAudit(ctx, store.AuditFilter{Edge: "edge-evil", Limit: 1000})
		must(t, err)
		byAction := map[string]int{}
		for _, a := range audit {
			if a.Actor == "edge:edge-evil" {
				byAction[a.Action]++
			}
		}
		if byAction["suspend"] != 3 || byAction["suspend-request"] != 17 {
			t.Fatalf("audit by edge-evil: %v, want 3 suspend and 17 suspend-request", byAction)
		}
		// The same report again files no second request.
		forge(names[:1])
		time.Sleep(300 * time.Millisecond)
		if n := open(); n != 17 {
			t.Fatalf("%d open requests after a repeated report, want 17", n)
		}

		// Staff confirm one request and dismiss another.
		reqs, err := st.ListSuspensionRequests(ctx, store.RequestFilter{State: store.RequestOpen})
		must(t, err)
		if _, err := reg.DecideRequest(ctx, reqs[0].ID, "confirm", "staff:alice", "checked the bounces"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.DecideRequest(ctx, reqs[1].ID, "dismiss", "staff:alice", "forged"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.DecideRequest(ctx, reqs[1].ID, "confirm", "staff:alice", ""); err == nil {
			t.Fatal("a decided request was decided again")
		}
		d, err := st.Device(ctx, reqs[0].Device)
		must(t, err)
		if d.Status != store.Suspended || !strings.Contains(d.StatusReason, "edge-evil") {
			t.Fatalf("confirmed device: %s %q", d.Status, d.StatusReason)
		}
		d, err = st.Device(ctx, reqs[1].Device)
		must(t, err)
		if d.Status != store.Active {
			t.Fatalf("dismissed device is %s", d.Status)
		}
		testkit.WaitFor(t, 5*time.Second, "confirmed suspension reaches the other edge", func() bool { return good.status(reqs[0].Device) == "suspended" })
	})
}

// TestEvidenceAfterReport: an edge's report and the traffic that backs it
// can reach central in either order (central handles events in parallel,
// and a burst after an outage arrives at once). A report that became a
// request for lack of traffic is suspended once this edge's evidence for
// the device is stored; another edge's traffic does not count.
func TestEvidenceAfterReport(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		env.UseAuth(fleet.Store{S: st})
		const name = "copier.example.edu"
		registerDevice(t, st, name)
		must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
		reg := &registration.Service{Store: st, EdgeSuspensionsPerHour: 3}
		startCentralWith(t, env, st, reg)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		enrolEdge(t, env, st, "edge-b")
		a := startEdge(t, env, sp, "edge-a", dir)
		b := startEdge(t, env, sp, "edge-b", dir)
		testkit.WaitFor(t, 10*time.Second, "edges connected", func() bool { return a.c.Connected() && b.c.Connected() })
		open := func() int {
			n, err := st.CountOpenSuspensionRequests(ctx)
			must(t, err)
			return n
		}
		status := func() store.Status {
			d, err := st.Device(ctx, name)
			must(t, err)
			return d.Status
		}

		a.outbox.Emit(event.Event{Kind: event.NDRUndeliverable, Device: name, Sender: "scan@example.edu", QueueID: "N1", Reason: "5.1.1 user unknown"})
		testkit.WaitFor(t, 10*time.Second, "the report held as a request", func() bool { return open() == 1 })
		if s := status(); s != store.Active {
			t.Fatalf("device %s before any evidence, want active", s)
		}
		// Another edge's traffic is no evidence for edge-a's report.
		b.outbox.Emit(event.Event{Kind: event.NDR, Device: name, Sender: "scan@example.edu", QueueID: "Q0", Count: 1})
		testkit.WaitFor(t, 10*time.Second, "edge-b's event stored", func() bool {
			evs, err := st.ListEvents(ctx, store.EventFilter{Kind: event.NDR, Edge: "edge-b"})
			return err == nil && len(evs) == 1
		})
		if s, n := status(), open(); s != store.Active || n != 1 {
			t.Fatalf("after another edge's traffic: device %s, %d open requests; want active and 1", s, n)
		}
		// edge-a's own evidence, stored after its report.
		a.outbox.Emit(event.Event{Kind: event.NDR, Device: name, Sender: "scan@example.edu", QueueID: "Q1", Count: 1})
		testkit.WaitFor(t, 10*time.Second, "suspension once the evidence is stored", func() bool { return status() == store.Suspended })
		if n := open(); n != 0 {
			t.Fatalf("%d open requests after the automatic suspension, want 0", n)
		}
		rs, err := st.ListSuspensionRequests(ctx, store.RequestFilter{Edge: "edge-a", Device: name})
		must(t, err)
		if len(rs) != 1 || rs[0].State != store.RequestAuto {
			t.Fatalf("requests of edge-a: %+v, want one, decided automatically", rs)
		}
	})
}
