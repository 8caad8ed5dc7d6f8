// Package app assembles the running edge from its stages and runs them
// until the context ends:
//
//	smtpd (intake: policy -> spool)  ->  spool  ->  queue runner (delivery)
//	devices <- centralclient (allowlist)   events -> centralclient outbox
//	admin (health, readiness, metrics, queue tools)
//
// Build wires the intake, spool, device table, resolver and admin endpoint,
// and attaches the other stages (queue runner, link to central) with Add;
// Run runs them all.
// Shutdown order guarantees that the spool is closed only after the SMTP
// server has stopped and every DATA handler has finished its write.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/edge/admin"
	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/metrics"
	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/edge/ratelimit"
	"github.com/postern/postern/edge/smtpd"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/edge/tlsrpt"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/resolver"
)

// Stage is a long-running part of the edge; it returns when ctx ends.
type Stage func(ctx context.Context) error

// Edge is an assembled edge. Its fields are the shared parts other stages
// need.
type Edge struct {
	Config   config.Config
	Log      *slog.Logger
	Spool    *spool.Spool
	Devices  *devices.Table
	Resolver *resolver.Resolver
	Policy   *policy.Policy
	SMTP     *smtpd.Server
	// Admin is nil when admin.listen is empty.
	Admin *admin.Server
	// Events forwards intake events to the sink set with SetEvents.
	Events *EventSwitch
	// Queue is the queue runner and Metrics the Prometheus metrics
	// (delivery.go); other stages may register collectors in
	// Metrics.Registry.
	Queue   *queue.Runner
	Metrics *metrics.Metrics
	// Deliveries counts delivered recipients per device for central's
	// delivery summary (central.go).
	Deliveries centralclient.DeliverySummary
	// TLSRPT counts TLS results for the daily TLS reports (tlsrpt.go);
	// nil when delivery.tlsrpt is off.
	TLSRPT *tlsrpt.Recorder

	stages []namedStage
}

type namedStage struct {
	name string
	run  Stage
}

// EventSwitch is an Events whose destination is set later (by the sync
// stage); until then events are logged at debug level and dropped.
type EventSwitch struct {
	log  *slog.Logger
	sink atomic.Pointer[smtpd.Events]
}

// Set directs events to sink.
func (s *EventSwitch) Set(sink smtpd.Events) { s.sink.Store(&sink) }

// Emit implements smtpd.Events.
func (s *EventSwitch) Emit(e event.Event) {
	if p := s.sink.Load(); p != nil && *p != nil {
		(*p).Emit(e)
		return
	}
	s.log.Debug("event (no sink)", "kind", string(e.Kind), "device", e.Device, "client_ip", e.ClientIP, "reason", e.Reason, "count", e.Count)
}

// Build opens the spool and wires the intake. It binds the SMTP and admin
// listeners, so a port in use is reported here. Close it (or Run it).
func Build(cfg config.Config, log *slog.Logger) (*Edge, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("app: data_dir: %w", err)
	}
	cfg, err := withEnrolment(cfg, log) // sync.go
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	applyMemoryLimit(cfg, log)
	e := &Edge{Config: cfg, Log: log, Events: &EventSwitch{log: log}}
	sp, err := spool.Open(spool.Options{
		Dir:              filepath.Join(cfg.DataDir, "spool"),
		ValueLogFileSize: cfg.Spool.ValueLogFileSize,
		GCInterval:       cfg.Spool.GCInterval,
		MinFree:          cfg.Spool.MinFree,
		Log:              log.With("stage", "spool"),
	})
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	e.Spool = sp
	fail := func(err error) (*Edge, error) {
		sp.Close()
		return nil, fmt.Errorf("app: %w", err)
	}
	if e.Devices, err = devices.New(cfg.Devices, sp.KV("susp/"), time.Now); err != nil {
		return fail(err)
	}
	serveStale := cfg.DNS.ServeStale
	if serveStale == 0 {
		serveStale = -1 // dns.serve_stale = 0 means off
	}
	if e.Resolver, err = resolver.New(resolver.Options{
		Servers: cfg.DNS.Resolvers, Timeout: cfg.DNS.Timeout, CacheSize: cfg.DNS.CacheSize,
		ServeStale: serveStale, Log: log.With("stage", "resolver"),
	}); err != nil {
		return fail(err)
	}
	pc, err := policy.NewConfig(cfg)
	if err != nil {
		return fail(err)
	}
	e.Policy = policy.New(pc, e.Devices, ratelimit.New(nil), ratelimit.New(nil))
	tlsConf, err := smtpd.TLSConfig(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey, cfg.SMTP.TLSMinVersion, cfg.DataDir, cfg.Hostname)
	if err != nil {
		return fail(err)
	}
	e.Metrics = metrics.New()
	if e.SMTP, err = smtpd.New(smtpd.Options{
		Hostname: cfg.Hostname,
		EdgeID:   cfg.Sync.EdgeID,
		SMTP:     cfg.SMTP,
		TLS:      tlsConf,
		Policy:   e.Policy,
		DNS:      smtpd.NewDNS(e.Resolver),
		Spool:    sp,
		Events:   e.Events,
		Metrics:  e.Metrics,
		Log:      log.With("stage", "smtpd"),
	}); err != nil {
		return fail(err)
	}
	if err := e.SMTP.Listen(); err != nil {
		return fail(err)
	}
	if cfg.Admin.Listen != "" {
		e.Admin = admin.New(cfg.Admin.Listen, cfg.Admin.Token, log.With("stage", "admin"))
		if cfg.Admin.Pprof {
			e.Admin.EnableProfiling()
		}
		if err := e.Admin.Listen(); err != nil {
			e.SMTP.Close()
			return fail(err)
		}
		e.Admin.AddStatus("spool", func() (string, error) {
			return spoolStatus(sp.Stats().DiskFree, sp.MinFree())
		})
	}
	if err := e.addDelivery(); err != nil {
		e.SMTP.Close()
		return fail(err)
	}
	if err := e.addSync(); err != nil { // central.go
		e.SMTP.Close()
		return fail(err)
	}
	return e, nil
}

// spoolStatus is the /readyz line of the spool: free space and the reserve
// below which new mail is refused.
func spoolStatus(free, reserve int64) (string, error) {
	if free < reserve {
		return "", fmt.Errorf("free space %s is below the reserve %s (spool.min_free): new mail is refused with 452", mib(free), mib(reserve))
	}
	return fmt.Sprintf("free %s, reserve %s", mib(free), mib(reserve)), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Add attaches a stage to run alongside the intake; Build adds the queue
// runner and, with sync on, the link to central.
// Stages stop before the spool is closed.
func (e *Edge) Add(name string, s Stage) { e.stages = append(e.stages, namedStage{name, s}) }

// Run runs every stage until ctx ends or one fails, then shuts down in
// order: SMTP intake and other stages first, the spool last.
func (e *Edge) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(e.stages)+2)
	start := func(name string, s Stage) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("smtp", e.SMTP.Serve)
	if e.Admin != nil {
		start("admin", e.Admin.Serve)
	}
	for _, s := range e.stages {
		start(s.name, s.run)
	}
	e.Log.Info("edge running", "hostname", e.Config.Hostname, "smtp", fmt.Sprint(e.SMTP.Addrs()), "devices", len(e.Devices.Devices()))
	<-ctx.Done()
	wg.Wait()
	e.SMTP.Close()
	var err error
	select {
	case err = <-errc:
	default:
	}
	if cerr := e.Spool.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("app: close spool: %w", cerr)
	}
	return err
}

// Run builds the edge from cfg and runs it until ctx is cancelled.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	e, err := Build(cfg, log)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}
