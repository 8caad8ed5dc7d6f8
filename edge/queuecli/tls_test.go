package queuecli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/edge/spool"
)

// queue show prints, per attempt, the TLS connection, how it was verified
// and a TLS note when there is one.
func TestShowPrintsTLSOutcome(t *testing.T) {
	now := time.Now()
	env := &spool.Envelope{ID: "Q1", From: "scanner@example.edu", ReceivedAt: now, NextAttempt: now,
		Recipients: []spool.Recipient{{Addr: "a@example.com"}},
		History: []spool.Attempt{
			{At: now, Host: "mx1.example.com [127.0.0.2]:25", Verification: "tls_failed", TLSNote: "mx1.example.com does not offer STARTTLS", Result: "temporary: ..."},
			{At: now, Host: "mx2.example.com [127.0.0.3]:25", TLS: "TLS1.3 TLS_AES_128_GCM_SHA256", Verification: "dane", Result: "delivered 1"},
			{At: now, Host: "mx3.example.com [127.0.0.4]:25", Verification: "plain", Result: "delivered 1"},
		}}
	var b bytes.Buffer
	PrintDetail(&b, &queue.Detail{Envelope: env}, now)
	out := b.String()
	if strings.Contains(out, "REQUIRETLS") {
		t.Errorf("REQUIRETLS shown for a message without it:\n%s", out)
	}
	env.RequireTLS = true
	b.Reset()
	PrintDetail(&b, &queue.Detail{Envelope: env}, now)
	out = b.String()
	for _, want := range []string{
		"REQUIRETLS:   yes",
		"TLS1.3 TLS_AES_128_GCM_SHA256 (dane)  delivered 1",
		"no TLS (tls_failed)",
		"TLS note: mx1.example.com does not offer STARTTLS",
		"[127.0.0.4]:25  no TLS  delivered 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
}
