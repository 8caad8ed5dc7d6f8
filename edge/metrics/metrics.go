// Package metrics holds the edge's Prometheus metrics in a registry of its
// own (never the global one, so tests and several edges in one process do
// not collide) and serves them at /metrics on the admin listener.
//
// Stages count what they do through the fields of Metrics; state that
// already lives elsewhere (queue size, spool bytes, DNS cache figures) is
// read at scrape time through small Stats interfaces, so it is never stale
// and costs nothing between scrapes. Other packages may register their own
// collectors into Metrics.Registry.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postern/postern/edge/spool"
)

const ns = "postern_edge"

// Metrics are the edge's counters and histograms. A nil *Metrics is valid
// and counts nothing, so stages work without metrics in tests.
type Metrics struct {
	// Registry holds every edge metric; register more collectors here.
	Registry *prometheus.Registry

	// Received counts messages accepted at intake (spooled).
	Received prometheus.Counter
	// Refused counts intake refusals by reason (policy reason names).
	Refused *prometheus.CounterVec
	// Delivered, Deferred and Bounced count recipients: accepted by the
	// next hop, tried and left for a retry, and failed for good.
	Delivered prometheus.Counter
	Deferred  prometheus.Counter
	Bounced   prometheus.Counter
	// NDRs counts reports generated, by kind ("failure", "delay", "relayed").
	NDRs *prometheus.CounterVec
	// ReportsDropped counts reports not sent because their sender is
	// outside the affiliated domains and not a registered device's
	// sender, by kind ("failure", "delay", "relayed").
	ReportsDropped *prometheus.CounterVec
	// Attempts counts delivery attempts (one per message and domain) by
	// TLS use ("tls", "plaintext", "none" when no server answered).
	Attempts *prometheus.CounterVec
	// TLSOutcomes counts delivery attempts that reached a server by how
	// the connection was protected: plain, tls_unverified, tls_pkix,
	// dane, mta_sts, tls_failed (deferred for want of the required TLS).
	TLSOutcomes *prometheus.CounterVec
	// Latency observes, per delivered recipient, the seconds from receipt
	// at intake to acceptance by the next hop.
	Latency prometheus.Histogram
}

// New returns metrics registered in a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "messages_received_total",
			Help: "Messages accepted at intake and spooled."}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "messages_refused_total",
			Help: "Intake refusals by reason."}, []string{"reason"}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "recipients_delivered_total",
			Help: "Recipients accepted by the next hop."}),
		Deferred: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "recipients_deferred_total",
			Help: "Recipient delivery attempts that failed temporarily (will be retried)."}),
		Bounced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "recipients_bounced_total",
			Help: "Recipients that failed permanently or expired."}),
		NDRs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dsn_generated_total",
			Help: "Delivery status notifications generated, by kind (failure, delay, relayed)."}, []string{"kind"}),
		ReportsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dsn_dropped_total",
			Help: "Delivery status notifications not sent: sender outside the affiliated domains and not a registered device's sender, by kind."}, []string{"kind"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "delivery_attempts_total",
			Help: "Delivery attempts (one per message and destination domain), by TLS use."}, []string{"tls"}),
		TLSOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "delivery_tls_total",
			Help: "Delivery attempts that reached a server, by TLS outcome (plain, tls_unverified, tls_pkix, dane, mta_sts, tls_failed)."}, []string{"outcome"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_latency_seconds",
			Help:    "Seconds from receipt to acceptance by the next hop, per delivered recipient.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600}}),
	}
	m.Registry.MustRegister(m.Received, m.Refused, m.Delivered, m.Deferred, m.Bounced, m.NDRs, m.ReportsDropped, m.Attempts, m.TLSOutcomes, m.Latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// SpoolStats is the spool as seen at scrape time (*spool.Spool).
type SpoolStats interface{ Stats() spool.Stats }

// WatchSpool exports queue size, oldest message age and spool disk use,
// read from s at each scrape. now is the clock (nil: time.Now).
func (m *Metrics) WatchSpool(s SpoolStats, now func() time.Time) {
	if m == nil {
		return
	}
	if now == nil {
		now = time.Now
	}
	m.Registry.MustRegister(&spoolCollector{s: s, now: now})
}

var (
	descQueueSize = prometheus.NewDesc(ns+"_queue_messages", "Messages in the spool (waiting, in delivery or held).", nil, nil)
	descQueueAge  = prometheus.NewDesc(ns+"_queue_oldest_age_seconds", "Age of the oldest spooled message (0 when empty).", nil, nil)
	descMsgBytes  = prometheus.NewDesc(ns+"_queue_message_bytes", "Bytes of spooled message data.", nil, nil)
	descDisk      = prometheus.NewDesc(ns+"_spool_disk_bytes", "Disk used by the spool, by kind of file.", []string{"kind"}, nil)
	descDiskFree  = prometheus.NewDesc(ns+"_spool_disk_free_bytes", "Free space on the spool's file system.", nil, nil)
	descReserve   = prometheus.NewDesc(ns+"_spool_reserve_bytes", "Free-space reserve: below it new mail is refused (452).", nil, nil)
)

// reserver is a spool that has a free-space reserve (*spool.Spool).
type reserver interface{ MinFree() int64 }

type spoolCollector struct {
	s   SpoolStats
	now func() time.Time
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueueSize
	ch <- descQueueAge
	ch <- descMsgBytes
	ch <- descDisk
	ch <- descDiskFree
	if _, ok := c.s.(reserver); ok {
		ch <- descReserve
	}
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	age := 0.0
	if !st.Oldest.IsZero() {
		age = max(0, c.now().Sub(st.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descQueueSize, prometheus.GaugeValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(descQueueAge, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(descMsgBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(st.LSMBytes), "lsm")
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(st.VlogBytes), "vlog")
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, float64(st.OtherBytes), "other")
	ch <- prometheus.MustNewConstMetric(descDiskFree, prometheus.GaugeValue, float64(st.DiskFree))
	if r, ok := c.s.(reserver); ok {
		ch <- prometheus.MustNewConstMetric(descReserve, prometheus.GaugeValue, float64(r.MinFree()))
	}
}

// DNSStats are the resolver's counters at scrape time.
type DNSStats struct {
	Lookups   uint64 // questions asked by callers
	CacheHits uint64 // answered from the cache (positive or negative)
	Errors    uint64 // lookups that failed (timeout, SERVFAIL, ...)
	Stale     uint64 // answers served stale while the resolvers failed
}

// WatchDNS exports DNS lookups, cache hits and the hit ratio, read from
// stats at each scrape.
func (m *Metrics) WatchDNS(stats func() DNSStats) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&dnsCollector{stats: stats})
}

var (
	descDNSLookups = prometheus.NewDesc(ns+"_dns_lookups_total", "DNS lookups made by the edge (cached or not).", nil, nil)
	descDNSHits    = prometheus.NewDesc(ns+"_dns_cache_hits_total", "DNS lookups answered from the cache.", nil, nil)
	descDNSErrors  = prometheus.NewDesc(ns+"_dns_errors_total", "DNS lookups that failed.", nil, nil)
	descDNSRatio   = prometheus.NewDesc(ns+"_dns_cache_hit_ratio", "Cache hits / lookups since start (0 before any lookup).", nil, nil)
	descDNSStale   = prometheus.NewDesc(ns+"_dns_stale_answers_total", "Expired cached answers served because the resolvers failed (RFC 8767).", nil, nil)
)

type dnsCollector struct{ stats func() DNSStats }

func (c *dnsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDNSLookups
	ch <- descDNSHits
	ch <- descDNSErrors
	ch <- descDNSRatio
	ch <- descDNSStale
}

func (c *dnsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ratio := 0.0
	if st.Lookups > 0 {
		ratio = float64(st.CacheHits) / float64(st.Lookups)
	}
	ch <- prometheus.MustNewConstMetric(descDNSLookups, prometheus.CounterValue, float64(st.Lookups))
	ch <- prometheus.MustNewConstMetric(descDNSHits, prometheus.CounterValue, float64(st.CacheHits))
	ch <- prometheus.MustNewConstMetric(descDNSErrors, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(descDNSRatio, prometheus.GaugeValue, ratio)
	ch <- prometheus.MustNewConstMetric(descDNSStale, prometheus.CounterValue, float64(st.Stale))
}

// The helpers below let stages count through a nil *Metrics.

// IncDelivered adds n delivered recipients.
func (m *Metrics) IncDelivered(n int) {
	if m != nil && n > 0 {
		m.Delivered.Add(float64(n))
	}
}

// IncDeferred adds n deferred recipients.
func (m *Metrics) IncDeferred(n int) {
	if m != nil && n > 0 {
		m.Deferred.Add(float64(n))
	}
}

// IncBounced adds n permanently failed recipients.
func (m *Metrics) IncBounced(n int) {
	if m != nil && n > 0 {
		m.Bounced.Add(float64(n))
	}
}

// IncNDR counts one generated report of kind ("failure", "delay" or "relayed").
func (m *Metrics) IncNDR(kind string) {
	if m != nil {
		m.NDRs.WithLabelValues(kind).Inc()
	}
}

// IncReportDropped counts one report of kind not sent (see ReportsDropped).
func (m *Metrics) IncReportDropped(kind string) {
	if m != nil {
		m.ReportsDropped.WithLabelValues(kind).Inc()
	}
}

// IncAttempt counts one delivery attempt by TLS use.
func (m *Metrics) IncAttempt(tls string) {
	if m != nil {
		m.Attempts.WithLabelValues(tls).Inc()
	}
}

// IncTLSOutcome counts one attempt by its TLS outcome (a delivery.Verif*
// value); "" (no server answered) is not counted.
func (m *Metrics) IncTLSOutcome(outcome string) {
	if m != nil && outcome != "" {
		m.TLSOutcomes.WithLabelValues(outcome).Inc()
	}
}

// ObserveLatency records one delivered recipient's time in the queue.
func (m *Metrics) ObserveLatency(d time.Duration) {
	if m != nil {
		m.Latency.Observe(d.Seconds())
	}
}

// IncReceived counts one spooled message.
func (m *Metrics) IncReceived() {
	if m != nil {
		m.Received.Inc()
	}
}

// IncRefused counts one intake refusal for reason.
func (m *Metrics) IncRefused(reason string) {
	if m != nil {
		m.Refused.WithLabelValues(reason).Inc()
	}
}
