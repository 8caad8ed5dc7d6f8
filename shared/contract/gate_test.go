package contract_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// TestEdgeCapsAndRevocation: an edge over its event rate or size cap is
// refused, logged and counted on its edge record, not obeyed; a revoked
// edge loses its session (embedded broker) and its credentials, its events
// are refused and it leaves the fleet view while its audit entries stay;
// central's own client id cannot be an edge id.
func TestEdgeCapsAndRevocation(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		env.UseAuth(fleet.Store{S: st})
		reg := &registration.Service{Store: st, ReservedEdgeIDs: []string{brokertest.CentralID}}
		c := startCentralWith(t, env, st, reg, func(o *fleet.Options) { o.MaxEventsPerMinute, o.MaxEventBytes = 10, 2048 })
		reg.EdgeRevoked = func(id string) { c.svc.EdgeRevoked(id); env.Kick(id) }
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-loud")
		e := startEdge(t, env, sp, "edge-loud", dir)
		testkit.WaitFor(t, 10*time.Second, "edge connected", e.c.Connected)

		e.outbox.Emit(event.Event{Kind: event.Refusal, ClientIP: "10.0.0.1", Reason: strings.Repeat("x", 4096)})
		for i := 0; i < 30; i++ {
			e.outbox.Emit(event.Event{Kind: event.Refusal, ClientIP: "10.0.0.2", Reason: "sender not registered", Count: i + 1})
		}
		testkit.WaitFor(t, 10*time.Second, "all handled", func() bool { s := c.svc.Stats(); return s.Events+s.Refused >= 31 })
		evs, err := st.ListEvents(ctx, store.EventFilter{Edge: "edge-loud", Limit: 1000})
		must(t, err)
		if len(evs) != 10 {
			t.Fatalf("%d events stored, want the cap of 10", len(evs))
		}
		for _, ev := range evs {
			if len(ev.Reason) > 100 {
				t.Fatal("the oversized event was stored")
			}
		}
		ed, err := st.Edge(ctx, "edge-loud")
		must(t, err)
		if ed.OverLimit < 1 || ed.OverLimitReason == "" {
			t.Fatalf("over-limit not recorded on the edge: %+v", ed)
		}

		// Revocation.
		if err := reg.RevokeEdge(ctx, "edge-loud", "staff:alice", ""); !errors.Is(err, registration.ErrReasonRequired) {
			t.Fatalf("revoke without reason: %v", err)
		}
		must(t, reg.RevokeEdge(ctx, "edge-loud", "staff:alice", "stolen Pi"))
		if !env.ForcesClientID { // the embedded broker drops the session and refuses the password
			testkit.WaitFor(t, 5*time.Second, "revoked edge disconnected", func() bool { return !e.c.Connected() })
			time.Sleep(1500 * time.Millisecond) // reconnect attempts
			if e.c.Connected() {
				t.Fatal("revoked edge reconnected")
			}
		}
		before := c.svc.Stats().Events
		e.outbox.Emit(event.Event{Kind: event.NDRUndeliverable, Device: "x.example.edu", Sender: "s@example.edu"})
		time.Sleep(500 * time.Millisecond)
		if got := c.svc.Stats().Events; got != before {
			t.Fatalf("an event of a revoked edge was stored")
		}
		edges, err := st.ListEdges(ctx)
		must(t, err)
		if len(edges) != 0 {
			t.Fatalf("revoked edge still in the fleet view: %+v", edges)
		}
		if _, err := (fleet.Store{S: st}).EdgePasswordHash(ctx, "edge-loud"); err == nil {
			t.Fatal("revoked edge still has credentials")
		}
		audit, err := st.ListAudit(ctx, store.AuditFilter{Edge: "edge-loud"})
		must(t, err)
		if len(audit) == 0 || audit[0].Action != "revoke-edge" || audit[0].Actor != "staff:alice" {
			t.Fatalf("audit: %+v", audit)
		}
		if err := reg.RevokeEdge(ctx, "edge-loud", "staff:alice", "again"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("revoking twice: %v", err)
		}
		if _, err := reg.CreateEdge(ctx, brokertest.CentralID, "", ""); !errors.Is(err, registration.ErrReservedEdgeID) {
			t.Fatalf("edge with central's client id: %v", err)
		}
	})
}
