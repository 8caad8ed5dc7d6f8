package app

// The link to central, kept in its own file like delivery.go: the
// enrolment file overlays the sync settings, and with sync on, the outbox
// receives every event and the central client keeps the device table on
// central's signed allowlist.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"

	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/enroll"
	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/topic"
	"github.com/postern/postern/shared/version"
)

// withEnrolment fills the sync settings the configuration leaves empty
// from the enrolment file in data_dir (written by `postern-edge enroll`).
func withEnrolment(cfg config.Config, log *slog.Logger) (config.Config, error) {
	st, err := enroll.Load(cfg.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	st.Merge(&cfg)
	log.Info("enrolled with central", "edge_id", cfg.Sync.EdgeID, "central", cfg.Sync.CentralURL, "mqtt", cfg.Sync.MQTTURL)
	return cfg, nil
}

// addSync attaches the "sync" stage when sync is enabled. It loads the
// persisted allowlist into the device table before the intake serves.
func (e *Edge) addSync() error {
	s := e.Config.Sync
	if !s.Enabled {
		return nil
	}
	if s.EdgeID == "" || s.MQTTURL == "" || s.PublicKey == "" {
		return errors.New("sync: sync.enabled is set but the edge is not enrolled (run postern-edge enroll, or set sync.edge_id, sync.mqtt_url, sync.public_key)")
	}
	pub, err := allowlist.ParsePublicKey(s.PublicKey)
	if err != nil {
		return fmt.Errorf("sync.public_key: %w", err)
	}
	log := e.Log.With("stage", "sync")
	ob, err := centralclient.NewOutbox(e.Spool.KV("outbox/"), s.EdgeID, 0, nil, log)
	if err != nil {
		return err
	}
	// The CA given at enrolment (if any) is trusted for both the broker
	// and central's HTTPS endpoint, so a private-CA site never needs a
	// plaintext fallback.
	trust := &tls.Config{MinVersion: tls.VersionTLS12}
	if st, err := enroll.Load(e.Config.DataDir); err == nil {
		if trust, err = st.TLSConfig(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	var tlsConf *tls.Config
	if u, err := url.Parse(s.MQTTURL); err == nil {
		switch u.Scheme {
		case "tls", "ssl", "mqtts", "wss":
			tlsConf = trust
		}
	}
	c, err := centralclient.New(centralclient.Options{
		EdgeID:            s.EdgeID,
		BrokerURL:         s.MQTTURL,
		Username:          s.Username,
		Password:          s.Password,
		TLS:               tlsConf,
		Topics:            topic.New(s.TopicPrefix),
		PublicKey:         pub,
		DataDir:           e.Config.DataDir,
		CentralURL:        s.CentralURL,
		HTTPClient:        centralclient.NewHTTPClient(trust),
		Allow:             e.Spool.KV("allow/"),
		Outbox:            ob,
		Registry:          e.Devices,
		HeartbeatInterval: s.HeartbeatInterval,
		Deliveries:        &e.Deliveries,
		QueueDepth:        func() int { return e.Spool.Stats().Messages },
		Software:          version.String(),
		Log:               log,
	})
	if err != nil {
		return err
	}
	e.Events.Set(ob)
	e.Add("sync", c.Run)
	return nil
}

// summarise counts what next delivers per device for the delivery summary
// (NDRs, from the null sender, are not the device's traffic) and the TLS
// results of device mail for TLSRPT.
func (e *Edge) summarise(next queue.Deliverer) queue.Deliverer {
	return summarisingDeliverer{next: next, e: e}
}

type summarisingDeliverer struct {
	next queue.Deliverer
	e    *Edge
}

func (d summarisingDeliverer) Deliver(ctx context.Context, job *delivery.Job) delivery.Outcome {
	out := d.next.Deliver(ctx, job)
	n := 0
	for _, r := range out.Results {
		if r.Status == delivery.Delivered {
			n++
		}
	}
	if job.From == "" || (n == 0 && (d.e.TLSRPT == nil || len(out.TLSResults) == 0)) {
		return out
	}
	env, err := d.e.Spool.Get(job.QueueID)
	if err != nil {
		return out
	}
	if n > 0 && env.Device != "" {
		d.e.Deliveries.Add(env.Device, n, out.Verification)
	}
	d.e.recordTLS(env, out)
	return out
}
