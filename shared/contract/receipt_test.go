package contract_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// TestEventsEndToEndAcrossBrokerLoss: with central down, the edge emits
// 79 events (one a suspension report) and the broker acknowledges them;
// the broker then loses them (embedded: restart; Mosquitto: kill -9 before
// its autosave). Once central is back every event is stored, because the
// edge deletes an event only on central's receipt, not on the broker's
// PUBACK.
func TestEventsEndToEndAcrossBrokerLoss(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		const name = "lab.example.edu"
		registerDevice(t, st, name)
		must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
		c := startCentral(t, env, st)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		e := startEdge(t, env, sp, "edge-a", dir)
		testkit.WaitFor(t, 10*time.Second, "edge connected", e.c.Connected)
		e.outbox.Emit(event.Event{Kind: event.Delivery, Device: name, Count: 1})
		testkit.WaitFor(t, 10*time.Second, "first event receipted", func() bool { return e.outbox.Len() == 0 })
		c.stop()

		const n = 79
		for i := 0; i < n-1; i++ {
			e.outbox.Emit(event.Event{Kind: event.Refusal, ClientIP: fmt.Sprintf("10.0.0.%d", i), Reason: "sender not registered"})
		}
		e.outbox.Emit(event.Event{Kind: event.NDRUndeliverable, Device: name, Sender: "scan@example.edu", Reason: "5.1.1"})
		testkit.WaitFor(t, 10*time.Second, "broker acknowledged every event", func() bool { return e.c.Counters()["events_sent"] >= n+1 })
		if got := e.outbox.Len(); got != n {
			t.Fatalf("outbox holds %d events after the PUBACKs, want %d (kept until central's receipt)", got, n)
		}
		env.Kill()
		env.Start()
		startCentral(t, env, st)
		testkit.WaitFor(t, 20*time.Second, "every event stored", func() bool {
			evs, err := st.ListEvents(ctx, store.EventFilter{Edge: "edge-a", Limit: 1000})
			return err == nil && len(evs) == n+1
		})
		testkit.WaitFor(t, 10*time.Second, "outbox empty after the receipts", func() bool { return e.outbox.Len() == 0 })
		d, err := st.Device(ctx, name)
		must(t, err)
		if d.Status != store.Suspended {
			t.Fatalf("the suspension report was not acted on: %s", d.Status)
		}
	})
}
