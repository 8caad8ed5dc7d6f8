package centralclient

import (
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/shared/event"
)

// TestDeliverySummary: deliveries are reported once per device and
// interval with how their connections were protected, then the counts
// start again.
func TestDeliverySummary(t *testing.T) {
	var d DeliverySummary
	d.Add("a.example.edu", 2, delivery.VerifDANE)
	d.Add("a.example.edu", 1, delivery.VerifPlain)
	d.Add("a.example.edu", 1, delivery.VerifDANE)
	d.Add("b.example.edu", 5, delivery.VerifMTASTS)
	d.Add("b.example.edu", 1, "")
	d.Add("", 3, delivery.VerifPlain)
	d.Add("c.example.edu", 0, delivery.VerifPlain)
	var got []event.Event
	now := time.Now()
	d.Flush(func(e event.Event) { got = append(got, e) }, now.Add(-time.Minute), now)
	by := map[string]event.Event{}
	for _, e := range got {
		by[e.Device] = e
	}
	a, b := by["a.example.edu"], by["b.example.edu"]
	if len(got) != 2 || a.Count != 4 || a.Detail["messages"] != "3" || b.Count != 6 || a.Kind != event.Delivery {
		t.Fatalf("summary: %+v", got)
	}
	if a.Detail["tls_dane"] != "2" || a.Detail["tls_plain"] != "1" || a.Detail["tls_pkix"] != "" ||
		b.Detail["tls_mta_sts"] != "1" || b.Detail["tls_unknown"] != "1" {
		t.Fatalf("TLS counts: a %v, b %v", a.Detail, b.Detail)
	}
	got = nil
	d.Flush(func(e event.Event) { got = append(got, e) }, now, now)
	if len(got) != 0 {
		t.Fatalf("second flush: %+v", got)
	}
}

// TestTLSDetailCoversVerifications: every way a delivered message's
// connection can be protected has its own count.
func TestTLSDetailCoversVerifications(t *testing.T) {
	for _, v := range []string{delivery.VerifPlain, delivery.VerifUnverified, delivery.VerifPKIX, delivery.VerifDANE, delivery.VerifMTASTS} {
		if TLSDetail[v] == "" || TLSDetail[v] == TLSUnknown {
			t.Errorf("verification %q has no detail key", v)
		}
	}
}
