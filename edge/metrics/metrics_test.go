package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/spool"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestExposition(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), ValueLogFileSize: 1 << 20, GCInterval: -1, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	env := &spool.Envelope{From: "a@example.edu", ReceivedAt: now.Add(-90 * time.Second), NextAttempt: now,
		Recipients: []spool.Recipient{{Addr: "b@example.com"}}}
	if err := sp.Put(context.Background(), env, []byte("Subject: x\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	m := New()
	m.WatchSpool(sp, func() time.Time { return now })
	m.WatchDNS(func() DNSStats { return DNSStats{Lookups: 10, CacheHits: 4, Errors: 1, Stale: 2} })
	m.IncReceived()
	m.IncRefused("not-registered")
	m.IncDelivered(3)
	m.IncDeferred(2)
	m.IncBounced(1)
	m.IncNDR("failure")
	m.IncAttempt("tls")
	m.ObserveLatency(2 * time.Second)
	out := scrape(t, m)
	for _, want := range []string{
		"postern_edge_messages_received_total 1",
		`postern_edge_messages_refused_total{reason="not-registered"} 1`,
		"postern_edge_recipients_delivered_total 3",
		"postern_edge_recipients_deferred_total 2",
		"postern_edge_recipients_bounced_total 1",
		`postern_edge_dsn_generated_total{kind="failure"} 1`,
		`postern_edge_delivery_attempts_total{tls="tls"} 1`,
		"postern_edge_delivery_latency_seconds_count 1",
		"postern_edge_queue_messages 1",
		"postern_edge_queue_oldest_age_seconds 90",
		"postern_edge_queue_message_bytes 21",
		`postern_edge_spool_disk_bytes{kind="vlog"}`,
		"postern_edge_dns_lookups_total 10",
		"postern_edge_dns_cache_hit_ratio 0.4",
		"postern_edge_dns_stale_answers_total 2",
		"postern_edge_spool_reserve_bytes 1\n",
		"go_goroutines",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func TestNilMetricsCountNothing(t *testing.T) {
	var m *Metrics
	m.IncDelivered(1)
	m.IncNDR("x")
	m.ObserveLatency(time.Second)
	m.WatchDNS(func() DNSStats { return DNSStats{} })
}

func TestTLSOutcomeCounter(t *testing.T) {
	m := New()
	m.IncTLSOutcome("dane")
	m.IncTLSOutcome("dane")
	m.IncTLSOutcome("tls_failed")
	m.IncTLSOutcome("") // no server answered: not counted
	out := scrape(t, m)
	for _, want := range []string{`postern_edge_delivery_tls_total{outcome="dane"} 2`, `postern_edge_delivery_tls_total{outcome="tls_failed"} 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(out, `outcome=""`) {
		t.Error("an empty outcome was counted")
	}
	var nilM *Metrics
	nilM.IncTLSOutcome("dane")
}
