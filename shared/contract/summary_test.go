package contract_test

import (
	"context"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// The edge's delivery summary carries how the messages' connections were
// protected; central stores the counts and shows them in the reason.
func TestDeliverySummaryTLSCounts(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		startCentral(t, env, st)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		a := startEdge(t, env, sp, "edge-a", dir)

		var sum centralclient.DeliverySummary
		sum.Add("copier.example.edu", 2, delivery.VerifDANE)
		sum.Add("copier.example.edu", 1, delivery.VerifMTASTS)
		sum.Add("copier.example.edu", 1, delivery.VerifPlain)
		now := time.Now()
		sum.Flush(a.outbox.Emit, now.Add(-5*time.Minute), now)

		var evs []event.Event
		testkit.WaitFor(t, 5*time.Second, "delivery summary stored", func() bool {
			var err error
			evs, err = st.ListEvents(ctx, store.EventFilter{Kind: event.Delivery})
			return err == nil && len(evs) == 1
		})
		e := evs[0]
		want := "delivery summary: 4 recipients in 3 messages; TLS: 1 DANE, 1 MTA-STS, 1 plaintext"
		if e.Reason != want || e.Detail["tls_dane"] != "1" || e.Detail["tls_plain"] != "1" || e.Count != 4 {
			t.Errorf("stored %q %v, want %q", e.Reason, e.Detail, want)
		}
	})
}
