// Package app assembles the running central service: the store (SQLite in
// data_dir, or PostgreSQL from database.url), the registration service,
// the web pages, the JSON API, the embedded MQTT broker (or an external
// one) and the fleet service that publishes the signed allowlist.
//
// Change notification: the registration service calls Changed after every
// change it makes; Changed is the fleet service's trigger, which builds
// and publishes a new snapshot. Changes made elsewhere — the CLI while
// serve runs, another central instance on the same PostgreSQL — are
// noticed by a watcher that polls the store's allowlist version every
// VersionPoll and triggers a publish when it moved.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/central/api"
	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/broker"
	"github.com/postern/postern/central/broker/dynsec"
	"github.com/postern/postern/central/config"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/leader"
	"github.com/postern/postern/central/mailer"
	"github.com/postern/postern/central/notify"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/postgres"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/web"
	"github.com/postern/postern/shared/configfile"
	"github.com/postern/postern/shared/resolver"
	"github.com/postern/postern/shared/topic"
)

// VersionPoll is how often serve looks for allowlist changes made outside
// this process.
var VersionPoll = 2 * time.Second

// KeyFile is the allowlist signing key inside data_dir.
const KeyFile = "allowlist.key"

// OpenStore opens the configured store: PostgreSQL when database.url is a
// postgres URL, else SQLite in data_dir.
func OpenStore(ctx context.Context, cfg config.Config) (store.Store, error) {
	u := cfg.Database.URL
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		return postgres.Open(ctx, u, nil)
	}
	path := filepath.Join(cfg.DataDir, sqlite.FileName)
	if rest, ok := strings.CutPrefix(u, "sqlite://"); ok && rest != "" {
		path = rest
	} else if rest, ok := strings.CutPrefix(u, "file:"); ok && rest != "" {
		path = rest
	}
	return sqlite.Open(ctx, path, nil)
}

// BaseURL is http.base_url, or a URL made from http.listen.
func BaseURL(cfg config.Config) string {
	if cfg.HTTP.BaseURL != "" {
		return strings.TrimRight(cfg.HTTP.BaseURL, "/")
	}
	scheme := "http"
	if cfg.HTTP.TLSCert != "" {
		scheme = "https"
	}
	host, port, _ := net.SplitHostPort(cfg.HTTP.Listen)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// Registry builds the registry logic from the configuration (used by
// serve and the CLI). changed may be nil.
func Registry(cfg config.Config, st store.Store, changed func(), log *slog.Logger) (*registration.Service, error) {
	res, err := resolver.New(resolver.Options{Servers: cfg.DNS.Resolvers, Timeout: cfg.DNS.Timeout, Log: log})
	if err != nil {
		return nil, fmt.Errorf("dns resolver: %w", err)
	}
	reg := &registration.Service{
		Store: st, DNS: res, BaseURL: BaseURL(cfg), Period: cfg.Policy.RegistrationPeriod,
		DefaultMessagesPerHour: cfg.Policy.DefaultMessagesHour, DefaultRecipientsPerHour: cfg.Policy.DefaultRcptsHour,
		AffiliatedDomains: cfg.Policy.AffiliatedDomains, ConfirmTTL: cfg.Register.ConfirmationLifetime, Changed: changed, Log: log,
		EdgeSuspensionsPerHour: cfg.Edges.AutoSuspensionsPerHour, RelayWindow: cfg.Edges.RelayEvidenceWindow,
		StaffNotify: cfg.Mail.StaffNotify,
	}
	for _, id := range []string{cfg.MQTT.ClientID, cfg.MQTT.Username, cfg.MQTT.DynsecUsername} {
		if id != "" {
			reg.ReservedEdgeIDs = append(reg.ReservedEdgeIDs, id)
		}
	}
	if cfg.Mail.Smarthost != "" {
		reg.Mail = &mailer.Mailer{Addr: cfg.Mail.Smarthost, From: cfg.Mail.From, Username: cfg.Mail.Username, Password: cfg.Mail.Password}
	}
	if cfg.Mail.OwnerNotices() {
		reg.Owners = &notify.Notifier{Mail: reg.Mail, Store: st, BaseURL: reg.BaseURL, Affiliated: reg.Affiliated,
			TimeZone: cfg.HTTP.Location(), Log: log}
	}
	return reg, nil
}

// Handler is central's whole HTTP surface: the sync endpoints, the API and
// the web pages.
func Handler(syncHandler, apiHandler, webHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	if syncHandler != nil {
		mux.Handle("/api/v1/sync/", syncHandler)
	}
	mux.Handle("/api/v1/", apiHandler)
	mux.Handle("/", webHandler)
	return mux
}

// withHealth serves the load balancer's /healthz and /readyz (see
// web.Health) in front of h.
func withHealth(h http.Handler, health web.Health) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", health.Healthz)
	mux.HandleFunc("GET /readyz", health.Readyz)
	mux.Handle("/", h)
	return mux
}

// notifier forwards Changed to the sync service once it exists.
type notifier struct {
	mu sync.Mutex
	f  func()
}

func (n *notifier) set(f func()) { n.mu.Lock(); n.f = f; n.mu.Unlock() }

// Changed triggers a snapshot publish.
func (n *notifier) Changed() {
	n.mu.Lock()
	f := n.f
	n.mu.Unlock()
	if f != nil {
		f()
	}
}

// Serve runs central and blocks until ctx is cancelled.
func Serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	note := &notifier{}
	reg, err := Registry(cfg, st, note.Changed, log.With("component", "registry"))
	if err != nil {
		return err
	}
	if reg.Mail == nil {
		log.Warn("mail.smarthost is not set: sender confirmation links are shown to staff on each device page instead of being mailed")
	}
	key, err := LoadSigningKey(cfg)
	if err != nil {
		return err
	}
	fp, err := PinSigningKey(ctx, st, key)
	if err != nil {
		return err
	}
	log.Info("allowlist signing key loaded", "fingerprint", fp)
	topics := topic.New(cfg.MQTT.TopicPrefix)
	adapter := fleet.Store{S: st, Log: log}

	var tlsCfg *tls.Config
	if cfg.HTTP.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		if err != nil {
			return fmt.Errorf("http.tls_cert: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	so := fleet.Options{
		ClientID: cfg.MQTT.ClientID, Topics: topics, Key: key,
		ValidFor: cfg.Allowlist.ValidFor, RepublishInterval: cfg.Allowlist.RepublishInterval,
		Source: adapter, Events: adapter, Status: adapter, Enrol: adapter, Auth: adapter, Suspender: reg, Gate: adapter,
		MaxEventsPerMinute: cfg.Edges.MaxEventsPerMinute, MaxEventBytes: cfg.Edges.MaxEventBytes,
		Edge: fleet.EdgeSettings{CentralURL: BaseURL(cfg), AffiliatedDomains: cfg.Policy.AffiliatedDomains},
		Log:  log,
	}
	var kick func(id string) bool
	if cfg.MQTT.URL != "" {
		so.BrokerURL, so.Username, so.Password = cfg.MQTT.URL, cfg.MQTT.Username, cfg.MQTT.Password
		so.SharedGroup = cfg.MQTT.SharedGroup
		so.Edge.MQTTURL = cfg.MQTT.URL
		if u, _ := url.Parse(cfg.MQTT.URL); u != nil && (u.Scheme == "tls" || u.Scheme == "ssl" || u.Scheme == "mqtts") {
			so.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
			if cfg.MQTT.CAFile != "" {
				pem, err := os.ReadFile(cfg.MQTT.CAFile)
				if err != nil {
					return fmt.Errorf("mqtt.ca_file: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("mqtt.ca_file: no certificates in %s", cfg.MQTT.CAFile)
				}
				so.TLS.RootCAs = pool
			}
		}
	} else {
		brokerTLS, err := BrokerTLS(cfg)
		if err != nil {
			return err
		}
		b, err := broker.Start(broker.Options{Listen: cfg.MQTT.Listen, TLS: brokerTLS, Topics: topics, CentralClientID: cfg.MQTT.ClientID, Edges: adapter, Log: log})
		if err != nil {
			return err
		}
		defer b.Close()
		kick = b.Kick
		so.BrokerURL, so.Dial = "tcp://inproc", b.Dial
		so.Edge.MQTTURL = brokerURL(cfg, b.Addr().String(), brokerTLS != nil)
	}
	if err := CheckEdgeMQTTURL(so.Edge.MQTTURL, cfg.MQTT.AllowPlaintextEdges); err != nil {
		return err
	}
	var prov *dynsec.Provisioner
	if cfg.MQTT.DynsecUsername != "" {
		prov, err = dynsec.Start(dynsec.Options{BrokerURL: cfg.MQTT.URL, Username: cfg.MQTT.DynsecUsername,
			Password: cfg.MQTT.DynsecPassword, TLS: so.TLS, Topics: topics, Log: log})
		if err != nil {
			return err
		}
		defer prov.Close()
		pe := newProvisioningEnroller(so.Enrol, st, prov, log.With("component", "dynsec"))
		so.Enrol = pe
		so.Edge.OnCredentials = func(id, password string) error { return pe.credentials(ctx, id, password) }
	}
	var elect *leader.Postgres
	if d, ok := st.(interface{ DB() *sql.DB }); ok && cfg.Database.URL != "" {
		key, err := leader.Key(ctx, d.DB())
		if err != nil {
			return err
		}
		elect = leader.NewPostgres(d.DB(), key, cfg.Database.LeaderInterval, log)
		so.Leader, so.PollInterval = elect, cfg.Database.LeaderInterval
	}
	svc, err := fleet.New(so)
	if err != nil {
		return err
	}
	note.set(svc.Changed)
	reg.EdgeRevoked = func(id string) {
		svc.EdgeRevoked(id)
		if kick != nil {
			kick(id)
		}
		if prov != nil {
			revokeOnBroker(ctx, prov, id, log)
		}
	}

	proxy, err := auth.NewProxy(cfg.HTTP.IdentityHeader, cfg.HTTP.TrustedProxies)
	if err != nil {
		return err
	}
	lc := cfg.Login
	throttle := auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: lc.FreeAttempts, Backoff: lc.Backoff, LockAfter: lc.LockAfter, LockFor: lc.LockDuration}, nil)
	w, err := web.New(web.Options{Registry: reg, Store: st, BaseURL: BaseURL(cfg), SessionLifetime: cfg.HTTP.SessionLifetime,
		SecureCookies: strings.HasPrefix(BaseURL(cfg), "https://"), Proxy: proxy, Log: log,
		Throttle: throttle, Hashes: auth.NewHashes(lc.MaxConcurrentHashes),
		SubmitLimit: auth.NewRateLimit(cfg.Register.SubmissionsPerHour, time.Hour, nil), CheckLimit: auth.NewRateLimit(cfg.Register.DNSChecksPerHour, time.Hour, nil),
		MaxPendingPerContact: cfg.Register.MaxPendingPerContact, MaxPendingPerAddress: cfg.Register.MaxPendingPerAddress,
		TokenLifetime: cfg.API.TokenLifetime, MaxTokenLifetime: cfg.API.MaxTokenLifetime, DisplayTimeZone: cfg.HTTP.Location()})
	if err != nil {
		return err
	}
	a, err := api.New(api.Options{Registry: reg, Store: st, Log: log, Throttle: throttle, Proxy: proxy, BaseURL: BaseURL(cfg),
		TokenLifetime: cfg.API.TokenLifetime, MaxTokenLifetime: cfg.API.MaxTokenLifetime})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: withHealth(Handler(svc.Handler(), a, w), web.Health{
			Store:  func(ctx context.Context) error { _, err := st.AllowlistVersion(ctx); return err },
			Broker: svc.Connected, Log: log,
		}), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, TLSConfig: tlsCfg,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	log.Info("central web console, API and enrolment listening", "addr", ln.Addr().String(), "url", BaseURL(cfg))

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	wg.Go(func() {
		if err := svc.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("sync: %w", err)
		}
	})
	if elect != nil {
		wg.Go(func() { elect.Run(ctx) })
	}
	wg.Go(func() { housekeeping(ctx, st, reg, note, log) })
	wg.Go(func() { pruneEvents(ctx, st, cfg.Events, log) })
	if prov != nil {
		wg.Go(func() { pruneBroker(ctx, prov, adapter.EdgeActive, log) })
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	return runErr
}

// BrokerTLS is the embedded broker's TLS configuration from mqtt.tls_cert
// and mqtt.tls_key (nil: plain MQTT), independent of http.tls_cert.
func BrokerTLS(cfg config.Config) (*tls.Config, error) {
	if cfg.MQTT.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.MQTT.TLSCert, cfg.MQTT.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("mqtt.tls_cert: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// CheckEdgeMQTTURL refuses to hand edges a plaintext broker URL for a
// non-loopback host unless mqtt.allow_plaintext_edges is set: their MQTT
// password and events would cross the network in clear.
func CheckEdgeMQTTURL(u string, allowPlaintext bool) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("mqtt: edge broker URL %q: %w", u, err)
	}
	switch p.Scheme {
	case "tls", "ssl", "mqtts", "wss":
		return nil
	}
	if ip := net.ParseIP(p.Hostname()); (ip != nil && ip.IsLoopback()) || p.Hostname() == "localhost" || allowPlaintext {
		return nil
	}
	return configfile.Errorf("mqtt.allow_plaintext_edges",
		"edges would be told the plaintext broker URL %s; set mqtt.tls_cert and mqtt.tls_key (embedded broker) or use a tls:// mqtt.url, or set mqtt.allow_plaintext_edges = true", u)
}

// brokerURL is the address edges are told for the embedded broker.
func brokerURL(cfg config.Config, listen string, tlsOn bool) string {
	host, port, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if u, err := url.Parse(BaseURL(cfg)); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
	}
	scheme := "tcp"
	if tlsOn {
		scheme = "tls"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// pruneEvents deletes events older than events.retention every
// events.prune_interval (per-device counters keep their counts).
func pruneEvents(ctx context.Context, st store.Store, cfg config.Events, log *slog.Logger) {
	tick := time.NewTicker(cfg.PruneInterval)
	defer tick.Stop()
	for {
		n, err := st.PruneEvents(ctx, time.Now().Add(-cfg.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("pruning old events failed", "err", err)
		case n > 0:
			log.Info("old events pruned", "events", n, "retention", cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// housekeeping expires registrations, drops old sessions and notices
// allowlist changes made outside this process.
func housekeeping(ctx context.Context, st store.Store, reg *registration.Service, note *notifier, log *slog.Logger) {
	poll := time.NewTicker(VersionPoll)
	defer poll.Stop()
	hourly := time.NewTicker(time.Minute)
	defer hourly.Stop()
	last, _ := st.AllowlistVersion(ctx)
	expire := func() {
		if _, err := reg.ExpireDue(ctx); err != nil && ctx.Err() == nil {
			log.Error("expiring registrations failed", "err", err)
		}
		if err := st.DeleteExpiredSessions(ctx, time.Now()); err != nil && ctx.Err() == nil {
			log.Error("deleting expired sessions failed", "err", err)
		}
	}
	expire()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hourly.C:
			expire()
		case <-poll.C:
			v, err := st.AllowlistVersion(ctx)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("reading the allowlist version failed", "err", err)
				}
				continue
			}
			if v != last {
				log.Info("allowlist changed outside this process; publishing", "version", v, "previous", last)
				last = v
				note.Changed()
			}
		}
	}
}
