package app

// SMTP TLS reporting (RFC 8460), kept in its own file like delivery.go:
// the counts of the TLS results of device mail and the stage that sends
// the daily reports, as the edge's own mail through its queue or by
// HTTPS.

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/edge/tlsrpt"
)

// addTLSRPT attaches the "tlsrpt" stage when delivery.tlsrpt is on
// (config.TLSRPTFrom) and sets e.TLSRPT, which the delivery summary feeds.
func (e *Edge) addTLSRPT() error {
	cfg := e.Config
	from, on := cfg.TLSRPTFrom()
	if !on {
		return nil
	}
	log := e.Log.With("stage", "tlsrpt")
	reports := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_edge_tlsrpt_reports_total",
		Help: "TLS reports (RFC 8460) by transport (mailto, https) and result (sent, failed)."}, []string{"via", "result"})
	if err := e.Metrics.Registry.Register(reports); err != nil {
		return err
	}
	rec, err := tlsrpt.NewRecorder(e.Spool.KV("tlsrpt/"), 0, log)
	if err != nil {
		return err
	}
	rep, err := tlsrpt.NewReporter(tlsrpt.Options{
		Recorder:   rec,
		TXT:        e.Resolver.LookupTXT,
		Submitter:  cfg.Hostname,
		From:       from,
		Mail:       e.queueReport,
		MaxReports: cfg.Delivery.TLSRPT.MaxReportsPerDay,
		MaxRUA:     cfg.Delivery.TLSRPT.MaxRUAPerDomain,
		Sent:       func(via, result string) { reports.WithLabelValues(via, result).Inc() },
		Log:        log,
	})
	if err != nil {
		return err
	}
	e.TLSRPT = rec
	log.Info("TLS reports on", "from", from)
	e.Add("tlsrpt", rep.Run)
	return nil
}

// queueReport spools a TLS report as the edge's own message: from the
// report address (affiliated, so a bounce stays inside), to one rua
// recipient, delivered by the queue like any other mail.
func (e *Edge) queueReport(ctx context.Context, from, to string, data []byte) error {
	now := time.Now()
	env := &spool.Envelope{From: from, Recipients: []spool.Recipient{{Addr: to, State: spool.Pending}},
		ClientName: e.Config.Hostname, ReceivedAt: now, NextAttempt: now}
	if err := e.Spool.Put(ctx, env, data); err != nil {
		return err
	}
	e.Log.Info("TLS report queued", "queue_id", env.ID, "to", to)
	return nil
}

// recordTLS counts the TLS results of an attempt for TLSRPT: only for
// mail of a registered device (so no report exists because of an
// unregistered client's mail), never for the edge's own reports.
func (e *Edge) recordTLS(env *spool.Envelope, out delivery.Outcome) {
	if e.TLSRPT == nil || env == nil || env.Device == "" || env.From == "" || env.Bounce {
		return
	}
	e.TLSRPT.Record(time.Now(), out.TLSResults)
}
