package app

// The delivery side of the edge, kept in its own file so the assembly in
// app.go stays readable: metrics, the outbound
// SMTP client, the queue runner and the queue tools on the admin endpoint.

import (
	"fmt"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/metrics"
	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/edge/tlspolicy"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/resolver"
)

// addDelivery builds the queue runner over e.Spool and attaches it as the
// "queue" stage; with an admin endpoint it mounts /metrics and /queue.
func (e *Edge) addDelivery() error {
	cfg := e.Config
	m := e.Metrics
	m.WatchSpool(e.Spool, nil)
	m.WatchDNS(func() metrics.DNSStats {
		st := e.Resolver.Stats()
		return metrics.DNSStats{Lookups: st.Lookups, CacheHits: st.CacheHits, Errors: st.Errors, Stale: st.Stale}
	})
	mode, err := delivery.ParseTLSMode(cfg.Delivery.TLS)
	if err != nil {
		return fmt.Errorf("delivery.tls: %w", err)
	}
	var tp delivery.TLSPolicy = delivery.StaticTLS{Mode: mode}
	if cfg.Delivery.Smarthost == "" {
		// Per-domain overrides, DANE and MTA-STS are about MX hosts; a
		// smarthost keeps delivery.tls.
		if tp, err = e.tlsPolicy(mode); err != nil {
			return err
		}
	}
	dc, err := delivery.New(delivery.Options{
		Hostname:          cfg.Hostname,
		Resolver:          e.Resolver,
		TLS:               tp,
		MXPort:            cfg.Delivery.MXPort,
		Smarthost:         cfg.Delivery.Smarthost,
		SmarthostUsername: cfg.Delivery.SmarthostUsername,
		SmarthostPassword: cfg.Delivery.SmarthostPassword,
		ConnectTimeout:    cfg.Delivery.ConnectTimeout,
		CommandTimeout:    cfg.Delivery.CommandTimeout,
		Log:               e.Log.With("stage", "delivery"),
	})
	if err != nil {
		return err
	}
	affiliated, err := address.NewDomainList(cfg.SMTP.AffiliatedDomains)
	if err != nil {
		return fmt.Errorf("smtp.affiliated_domains: %w", err)
	}
	r, err := queue.New(queue.Options{
		Spool:     e.Spool,
		Deliverer: e.summarise(dc),
		Hostname:  cfg.Hostname,
		EdgeID:    cfg.Sync.EdgeID,
		Delivery:  cfg.Delivery,
		Rules:     bounce.Rules{Affiliated: affiliated, Devices: e.Devices},
		Suspender: e.Devices,
		Events:    e.Events,
		Metrics:   m,
		Log:       e.Log.With("stage", "queue"),
	})
	if err != nil {
		return err
	}
	e.Queue = r
	if err := e.addTLSRPT(); err != nil {
		return err
	}
	if e.Admin != nil {
		e.Admin.Handle("GET /metrics", m.Handler())
		r.Mount(e.Admin)
	}
	e.Add("queue", r.Run)
	return nil
}

// tlsPolicy builds the outbound TLS policy for MX delivery: the
// delivery.tls_policy overrides, DANE through dns.validating_resolvers,
// MTA-STS (delivery.mta_sts) with its policies kept in the spool, and mode
// (delivery.tls) for the rest.
func (e *Edge) tlsPolicy(mode delivery.TLSMode) (*tlspolicy.Policy, error) {
	cfg := e.Config
	o := tlspolicy.Options{Default: mode, Log: e.Log.With("stage", "delivery")}
	for _, r := range cfg.Delivery.TLSPolicy {
		o.Rules = append(o.Rules, tlspolicy.Rule{Domain: r.Domain, Mode: r.Mode, MX: r.MX})
	}
	if len(cfg.DNS.ValidatingResolvers) > 0 {
		v, err := resolver.NewValidating(resolver.ValidatingOptions{Servers: cfg.DNS.ValidatingResolvers, Timeout: cfg.DNS.Timeout})
		if err != nil {
			return nil, fmt.Errorf("dns.validating_resolvers: %w", err)
		}
		o.DNSSEC = v
	}
	if cfg.Delivery.MTASTS {
		sts, err := tlspolicy.NewSTS(tlspolicy.STSOptions{TXT: e.Resolver.LookupTXT, Store: e.Spool.KV("mtasts/"),
			Log: e.Log.With("stage", "mta-sts")})
		if err != nil {
			return nil, err
		}
		o.STS = sts
	}
	p, err := tlspolicy.New(o)
	if err != nil {
		return nil, fmt.Errorf("delivery.tls_policy: %w", err)
	}
	return p, nil
}
