package contract_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// failingBatches is central's real store whose batch writes fail while
// down is set, as when the database refuses a transaction.
type failingBatches struct {
	fleet.Store
	down   atomic.Bool
	failed atomic.Int64
}

func (f *failingBatches) AddEvents(ctx context.Context, es []event.Event) ([]bool, error) {
	if f.down.Load() {
		f.failed.Add(1)
		return nil, errors.New("batch refused")
	}
	return f.Store.AddEvents(ctx, es)
}

// TestEventBatches: a burst of events from two edges is stored in batches,
// each event exactly once, and every outbox empties on central's receipts;
// while batch writes fail, the events are stored one by one instead and
// nothing is lost.
func TestEventBatches(t *testing.T) {
	env := brokertest.Embedded(t)
	st := openStore(t)
	ctx := context.Background()
	ev := &failingBatches{Store: fleet.Store{S: st}}
	reg := &registration.Service{Store: st, EdgeSuspensionsPerHour: registration.DefaultEdgeSuspensionsPerHour}
	c := startCentralWith(t, env, st, reg, func(o *fleet.Options) { o.Events = ev })
	sp, dir := openSpool(t)
	enrolEdge(t, env, st, "edge-a")
	enrolEdge(t, env, st, "edge-b")
	a, b := startEdge(t, env, sp, "edge-a", dir), startEdge(t, env, sp, "edge-b", dir)
	testkit.WaitFor(t, 5*time.Second, "edges connected", func() bool { return a.c.Connected() && b.c.Connected() })
	stored := func(n int) func() bool {
		return func() bool {
			evs, err := st.ListEvents(ctx, store.EventFilter{Limit: 1000})
			return err == nil && len(evs) == n
		}
	}
	burst := func(k int) {
		for i := range k {
			for _, e := range []*edge{a, b} {
				e.outbox.Emit(event.Event{Kind: event.Refusal, ClientIP: "10.0.0.9", Reason: "not registered", Count: i + 1})
			}
		}
	}
	burst(150)
	testkit.WaitFor(t, 10*time.Second, "300 events stored", stored(300))
	batches := c.svc.Stats().EventBatches
	if batches == 0 || batches >= 300 {
		t.Fatalf("%d batches for 300 events", batches)
	}
	ev.down.Store(true)
	burst(50)
	testkit.WaitFor(t, 20*time.Second, "400 events stored one by one", stored(400))
	if ev.failed.Load() == 0 {
		t.Fatal("no batch write was attempted while they failed")
	}
	ev.down.Store(false)
	testkit.WaitFor(t, 10*time.Second, "outboxes emptied by receipts", func() bool { return a.outbox.Len() == 0 && b.outbox.Len() == 0 })
	evs, err := st.ListEvents(ctx, store.EventFilter{Limit: 1000})
	must(t, err)
	ids := map[string]bool{}
	for _, e := range evs {
		if ids[e.ID] {
			t.Fatalf("event %s stored twice", e.ID)
		}
		ids[e.ID] = true
	}
	t.Logf("300 events in %d batches", batches)
}
