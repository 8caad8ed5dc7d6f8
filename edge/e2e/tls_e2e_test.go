package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTLSPolicyThroughBinary: a [[delivery.tls_policy]] "encrypt" for a
// domain whose MX does not offer STARTTLS keeps the message queued (no
// plaintext fallback), and the outcome shows in `queue show` and in
// /metrics; a domain without an override still gets opportunistic
// delivery, recorded as plain.
func TestTLSPolicyThroughBinary(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	e := newEdge(t, w.dns.Addr, w.config("")+`
[[delivery.tls_policy]]
domain = "example.com"
mode = "encrypt"
`)
	e.start()
	held := send(t, e.smtp, []string{"a@example.com"}, "From: scanner@example.edu\r\nSubject: tls 1\r\n\r\nx\r\n")
	deadline := time.Now().Add(10 * time.Second)
	var out string
	for {
		out = e.queueCmd(t, "show", held)
		if strings.Contains(out, "(tls_failed)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tls_failed attempt in queue show:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "does not offer STARTTLS") || !strings.Contains(out, "4.7.5") {
		t.Errorf("queue show lacks the reason:\n%s", out)
	}
	if n := len(w.rcptMX.Messages()); n != 0 {
		t.Errorf("the MX received %d message(s) in plaintext under mode encrypt", n)
	}

	// No override for example.edu: opportunistic, plaintext is fine.
	send(t, e.smtp, []string{"someone@example.edu"}, "From: scanner@example.edu\r\nSubject: tls 2\r\n\r\nx\r\n")
	w.ndrMX.Wait(t, 1, 10*time.Second)

	// The attempt is counted just after the MX took the message.
	wants := []string{`postern_edge_delivery_tls_total{outcome="tls_failed"} 1`, `postern_edge_delivery_tls_total{outcome="plain"} 1`}
	var metrics string
	for deadline = time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + e.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		mb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if metrics = string(mb); strings.Contains(metrics, wants[0]) && strings.Contains(metrics, wants[1]) {
			return
		}
	}
	t.Errorf("/metrics lacks %v:\n%s", wants, grepLines(metrics, "delivery_tls"))
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
