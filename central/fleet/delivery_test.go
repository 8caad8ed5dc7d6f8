package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/shared/event"
)

// TestDeliverySummaryTLS: the TLS counts of an edge's delivery summary
// are kept and shown in the event's reason; junk and inconsistent counts
// from a hostile edge are dropped, and its free text is not shown.
func TestDeliverySummaryTLS(t *testing.T) {
	var d centralclient.DeliverySummary
	d.Add("scanner.example.edu", 2, delivery.VerifDANE)
	d.Add("scanner.example.edu", 1, delivery.VerifDANE)
	d.Add("scanner.example.edu", 1, delivery.VerifPlain)
	d.Add("scanner.example.edu", 3, delivery.VerifMTASTS)
	var evs []event.Event
	now := time.Now()
	d.Flush(func(e event.Event) { evs = append(evs, e) }, now.Add(-5*time.Minute), now)
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0]
	normaliseDelivery(&e)
	want := "delivery summary: 7 recipients in 4 messages; TLS: 2 DANE, 1 MTA-STS, 1 plaintext"
	if e.Reason != want {
		t.Errorf("reason %q, want %q", e.Reason, want)
	}
	if e.Detail["tls_dane"] != "2" || e.Detail["tls_mta_sts"] != "1" || e.Detail["tls_plain"] != "1" || e.Detail["since"] == "" {
		t.Errorf("detail %v", e.Detail)
	}

	hostile := event.Event{Kind: event.Delivery, Reason: "<b>click here</b>", Detail: map[string]string{
		"messages": "2", "recipients": "2", "tls_dane": "-4", "tls_plain": "x", "tls_pkix": "1", "evil": strings.Repeat("a", 5000)}}
	normaliseDelivery(&hostile)
	if hostile.Reason != "delivery summary: 2 recipients in 2 messages; TLS: 1 TLS verified (PKIX)" {
		t.Errorf("hostile reason %q", hostile.Reason)
	}
	if len(hostile.Detail) != 3 || hostile.Detail["tls_pkix"] != "1" {
		t.Errorf("hostile detail kept %v", hostile.Detail)
	}

	over := event.Event{Kind: event.Delivery, Detail: map[string]string{"messages": "1", "recipients": "1", "tls_dane": "5"}}
	normaliseDelivery(&over)
	if _, ok := over.Detail["tls_dane"]; ok || !strings.Contains(over.Reason, "inconsistent") {
		t.Errorf("counts above the messages kept: %v, %q", over.Detail, over.Reason)
	}
}
