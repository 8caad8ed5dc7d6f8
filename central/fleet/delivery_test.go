package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/shared/event"
)

// TestDeliverySummaryTLS: the TLS counts of an edge's delivery summary
// are kept and shown in the event's reason; junk and inconsistent counts
// from a hostile edge are dropped, and its free text is not shown.
func TestDeliverySummaryTLS(t *testing.T) {
	// As an edge's centralclient.DeliverySummary reports 7 recipients in
	// 4 messages: 2 over DANE, 1 MTA-STS, 1 plaintext.
	now := time.Now()
	evs := []event.Event{{Kind: event.Delivery, Time: now, Device: "scanner.example.edu", Count: 7, Reason: "delivery summary",
		Detail: map[string]string{"messages": "4", "recipients": "7", "since": now.Add(-5 * time.Minute).UTC().Format(time.RFC3339),
			"tls_dane": "2", "tls_mta_sts": "1", "tls_plain": "1"}}}
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
