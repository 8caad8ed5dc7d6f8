package contract_test

import (
	"context"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/shared/testkit"
)

// TestPublishOnlyOnEnforcedChange: registering a pending device,
// confirming its sender and creating and enrolling an edge publish no
// snapshot; approving publishes exactly one, however often Changed is
// called for it (the registry's hook and the store poll), and the edge
// applies exactly one change: the delta.
func TestPublishOnlyOnEnforcedChange(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		reg := &registration.Service{Store: st, Period: 24 * time.Hour}
		c := startCentralWith(t, env, st, reg)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		e := startEdge(t, env, sp, "edge-a", dir)
		applied := func() int64 { n := e.c.Counters(); return n["snapshots_applied"] + n["deltas_applied"] }
		// The client counts a snapshot after it makes it current: wait
		// for the count too, or the first snapshot would be counted
		// against the change below.
		testkit.WaitFor(t, 5*time.Second, "edge has the first snapshot", func() bool { return e.c.Current() != nil && applied() >= 1 })
		base, baseApplied := c.svc.Stats().Published, applied()
		baseDeltas := e.c.Counters()["deltas_applied"]

		d, fe, err := reg.Register(ctx, registration.Request{Name: "scan.example.edu", IPs: "10.1.2.3", Owner: "Ada",
			ContactEmail: "ada@example.edu", Senders: "scan@example.edu", Purpose: "scan"}, "k", "owner")
		if err != nil || len(fe) > 0 {
			t.Fatalf("register: %v %v", err, fe)
		}
		if _, err := reg.CreateEdge(ctx, "edge-b", "b", "north"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.NewEnrolment(ctx, "edge-b"); err != nil {
			t.Fatal(err)
		}
		c.svc.Changed() // a store poll noticing nothing new
		time.Sleep(500 * time.Millisecond)
		if got := c.svc.Stats().Published; got != base {
			t.Fatalf("%d snapshots published for changes edges do not enforce", got-base)
		}
		if err := reg.Act(ctx, d.Name, registration.Approve, "staff:a", "ok", true); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 5*time.Second, "approval published", func() bool { return c.svc.Stats().Published == base+1 })
		for i := 0; i < 5; i++ {
			c.svc.Changed()
			time.Sleep(50 * time.Millisecond)
		}
		testkit.WaitFor(t, 5*time.Second, "edge applied the approval", func() bool { return e.status(d.Name) == "active" })
		time.Sleep(300 * time.Millisecond)
		if got := c.svc.Stats().Published; got != base+1 {
			t.Fatalf("one change published %d times", got-base)
		}
		if got := applied() - baseApplied; got != 1 {
			t.Fatalf("edge applied %d snapshots or deltas for one change", got)
		}
		if got := e.c.Counters()["deltas_applied"] - baseDeltas; got != 1 {
			t.Fatalf("edge applied %d deltas for the change, want it to take the delta", got)
		}
	})
}
