// Package config holds central's configuration: one struct tree decoded
// from one TOML file, defaults in code, and one Validate function that names
// the offending key. deploy/central.example.toml documents every key.
package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"time"
	// The display time zone must load on hosts without a zoneinfo
	// database.
	_ "time/tzdata"

	"github.com/postern/postern/shared/configfile"
)

// Config is the whole central configuration.
type Config struct {
	// DataDir holds the SQLite database and the allowlist signing key.
	DataDir string `toml:"data_dir"`

	Log       Log       `toml:"log"`
	HTTP      HTTP      `toml:"http"`
	Database  Database  `toml:"database"`
	MQTT      MQTT      `toml:"mqtt"`
	Mail      Mail      `toml:"mail"`
	DNS       DNS       `toml:"dns"`
	Allowlist Allowlist `toml:"allowlist"`
	Policy    Policy    `toml:"policy"`
	Login     Login     `toml:"login"`
	Register  Register  `toml:"register"`
	API       API       `toml:"api"`
	Edges     Edges     `toml:"edges"`
	Events    Events    `toml:"events"`
}

// Login throttles password guessing at the staff login and failed API
// token use, per client address and per user name.
type Login struct {
	// FreeAttempts may be made without delay.
	FreeAttempts int `toml:"free_attempts"`
	// Backoff is the delay after the first attempt beyond free_attempts;
	// it doubles with each further one.
	Backoff time.Duration `toml:"backoff"`
	// LockAfter attempts lock the address or name for LockDuration.
	LockAfter    int           `toml:"lock_after"`
	LockDuration time.Duration `toml:"lock_duration"`
	// MaxConcurrentHashes bounds the argon2id hashes computed at once.
	MaxConcurrentHashes int `toml:"max_concurrent_hashes"`
}

// Register limits the public registration form per client address.
type Register struct {
	SubmissionsPerHour   int `toml:"submissions_per_hour"`
	DNSChecksPerHour     int `toml:"dns_checks_per_hour"`
	MaxPendingPerContact int `toml:"max_pending_per_contact"`
	MaxPendingPerAddress int `toml:"max_pending_per_address"`
	// ConfirmationLifetime is how long a sender confirmation link works.
	ConfirmationLifetime time.Duration `toml:"confirmation_lifetime"`
}

// API configures API tokens made in the console or the API.
type API struct {
	// TokenLifetime is the expiry of a new token when none is asked for.
	TokenLifetime    time.Duration `toml:"token_lifetime"`
	MaxTokenLifetime time.Duration `toml:"max_token_lifetime"`
}

// Edges bounds what one edge's word can do.
type Edges struct {
	// AutoSuspensionsPerHour is how many devices one edge may get
	// suspended per hour without staff; further reports become
	// suspension requests.
	AutoSuspensionsPerHour int `toml:"auto_suspensions_per_hour"`
	// RelayEvidenceWindow: an edge's report suspends a device by itself
	// only if the edge reported traffic for it within this window.
	RelayEvidenceWindow time.Duration `toml:"relay_evidence_window"`
	// MaxEventsPerMinute and MaxEventBytes cap one edge's events; events
	// beyond them are refused, logged and counted on the edges page.
	MaxEventsPerMinute int `toml:"max_events_per_minute"`
	MaxEventBytes      int `toml:"max_event_bytes"`
}

// Events configures how long edge events are kept.
type Events struct {
	// Retention is how long events are kept; per-device counters outlive
	// them.
	Retention time.Duration `toml:"retention"`
	// PruneInterval is how often old events are removed.
	PruneInterval time.Duration `toml:"prune_interval"`
}

// Log configures logging.
type Log struct {
	Format string `toml:"format"`
	Level  string `toml:"level"`
}

// HTTP configures the web console, the registration form and the API.
type HTTP struct {
	Listen string `toml:"listen"`
	// BaseURL is the externally visible URL (links in e-mails, enrolment).
	BaseURL string `toml:"base_url"`
	// TLSCert/TLSKey serve HTTPS directly; leave empty behind a proxy.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// SessionLifetime bounds a login session.
	SessionLifetime time.Duration `toml:"session_lifetime"`
	// IdentityHeader, when set, trusts this header (e.g. "X-Remote-User")
	// as the staff identity, but only from TrustedProxies.
	IdentityHeader string   `toml:"identity_header"`
	TrustedProxies []string `toml:"trusted_proxies"`
	// DisplayTimeZone is the IANA zone the pages and owner mails show
	// times in ("" or "UTC": UTC).
	DisplayTimeZone string `toml:"display_time_zone"`
}

// Location is the display time zone (UTC when unset or unknown; Validate
// refuses an unknown one).
func (h HTTP) Location() *time.Location {
	if h.DisplayTimeZone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(h.DisplayTimeZone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Database selects the store.
type Database struct {
	// URL empty means SQLite in data_dir; postgres://… means PostgreSQL.
	URL string `toml:"url"`
	// LeaderInterval (PostgreSQL only): how often an instance that does
	// not publish the allowlist tries to take over, the publisher checks
	// it still holds the lock, and every instance reads the store's
	// version to notice changes made through another instance.
	LeaderInterval time.Duration `toml:"leader_interval"`
}

// MQTT configures the broker link.
type MQTT struct {
	// Listen is the embedded broker's TCP listener; empty disables it.
	Listen string `toml:"listen"`
	// URL uses an external broker instead (tcp://, tls://).
	URL         string `toml:"url"`
	Username    string `toml:"username"`
	Password    string `toml:"password"`
	CAFile      string `toml:"ca_file"`
	TopicPrefix string `toml:"topic_prefix"`
	// ClientID is the persistent session name of this central instance.
	ClientID string `toml:"client_id"`
	// SharedGroup (external broker only): subscribe to the edges' events
	// and status as the MQTT shared subscription $share/<group>/…, so
	// the instances in one group split the events instead of each
	// receiving all of them. "" subscribes plainly.
	SharedGroup string `toml:"shared_group"`
	// TLSCert/TLSKey make the embedded broker listen with TLS
	// (independent of http.tls_cert).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// AllowPlaintextEdges lets central hand edges a tcp:// URL for an
	// embedded broker without TLS on a non-loopback address.
	AllowPlaintextEdges bool `toml:"allow_plaintext_edges"`
	// DynsecUsername and DynsecPassword (external Mosquitto only): the
	// account with the dynamic security plugin's control role through
	// which central creates each edge's broker account at enrolment and
	// deletes it on revocation. Empty: edge accounts are not provisioned.
	DynsecUsername string `toml:"dynsec_username"`
	DynsecPassword string `toml:"dynsec_password"`
}

// Mail configures central's own outgoing mail (confirmations, notices).
type Mail struct {
	Smarthost string `toml:"smarthost"`
	From      string `toml:"from"`
	Username  string `toml:"username"`
	Password  string `toml:"password"`
	// StaffNotify are the addresses told about new suspension requests.
	StaffNotify []string `toml:"staff_notify"`
	// NotifyOwners mails registrations' contacts about their requests
	// (nil: on when Smarthost is set).
	NotifyOwners *bool `toml:"notify_owners"`
}

// OwnerNotices reports whether owners are mailed.
func (m Mail) OwnerNotices() bool {
	return m.Smarthost != "" && (m.NotifyOwners == nil || *m.NotifyOwners)
}

// DNS configures the resolver for the live FCrDNS check.
type DNS struct {
	Resolvers []string      `toml:"resolvers"`
	Timeout   time.Duration `toml:"timeout"`
}

// Allowlist configures snapshot publication.
type Allowlist struct {
	// ValidFor is how long edges keep enforcing a snapshot they cannot refresh.
	ValidFor time.Duration `toml:"valid_for"`
	// RepublishInterval re-signs and republishes even without changes, so
	// valid_until keeps moving while central is healthy.
	RepublishInterval time.Duration `toml:"republish_interval"`
	// SigningKeyFile is the allowlist signing key (PEM). Empty means
	// <data_dir>/allowlist.key, made on first start. With several
	// instances every one must load the same key: the store keeps the
	// public key of the first and refuses an instance with another.
	SigningKeyFile string `toml:"signing_key_file"`
}

// Policy holds registration defaults.
type Policy struct {
	AffiliatedDomains   []string      `toml:"affiliated_domains"`
	RegistrationPeriod  time.Duration `toml:"registration_period"`
	DefaultMessagesHour int           `toml:"default_messages_per_hour"`
	DefaultRcptsHour    int           `toml:"default_recipients_per_hour"`
}

// Default returns production defaults, or with dev set the defaults for a
// loopback developer run with no file.
func Default(dev bool) Config {
	c := Config{
		DataDir: "/var/lib/postern-central",
		Log:     Log{Format: "text", Level: "info"},
		HTTP: HTTP{
			Listen:          "0.0.0.0:8443",
			SessionLifetime: 8 * time.Hour,
			DisplayTimeZone: "UTC",
		},
		MQTT: MQTT{
			Listen:      "0.0.0.0:8883",
			TopicPrefix: "postern/v1",
			ClientID:    "postern-central",
			SharedGroup: "postern-central",
		},
		Database:  Database{LeaderInterval: time.Second},
		Mail:      Mail{From: "postern@localhost"},
		DNS:       DNS{Timeout: 5 * time.Second},
		Allowlist: Allowlist{ValidFor: 7 * 24 * time.Hour, RepublishInterval: time.Hour},
		Policy: Policy{
			RegistrationPeriod:  365 * 24 * time.Hour,
			DefaultMessagesHour: 200,
			DefaultRcptsHour:    500,
		},
		Login: Login{FreeAttempts: 5, Backoff: time.Second, LockAfter: 10, LockDuration: 15 * time.Minute, MaxConcurrentHashes: 4},
		Register: Register{SubmissionsPerHour: 10, DNSChecksPerHour: 60, MaxPendingPerContact: 5, MaxPendingPerAddress: 10,
			ConfirmationLifetime: 7 * 24 * time.Hour},
		API: API{TokenLifetime: 90 * 24 * time.Hour, MaxTokenLifetime: 365 * 24 * time.Hour},
		Edges: Edges{
			AutoSuspensionsPerHour: 3,
			RelayEvidenceWindow:    7 * 24 * time.Hour,
			MaxEventsPerMinute:     600,
			MaxEventBytes:          16 << 10,
		},
		Events: Events{Retention: 90 * 24 * time.Hour, PruneInterval: time.Hour},
	}
	if dev {
		c.DataDir = "data/central"
		c.HTTP.Listen = "127.0.0.1:8480"
		c.HTTP.BaseURL = "http://127.0.0.1:8480"
		c.MQTT.Listen = "127.0.0.1:18883"
		c.Policy.AffiliatedDomains = []string{"example.edu", ".example.edu"}
		// Nothing leaves loopback in a dev run: devlab (deploy/dev/devlab)
		// answers DNS and receives central's mail.
		c.DNS.Resolvers = []string{"127.0.0.1:5354"}
		c.Mail.Smarthost = "127.0.0.1:2526"
		c.Mail.From = "postern@example.edu"
	}
	return c
}

// Load returns the defaults overlaid with the file at path (if any), validated.
func Load(path string, dev bool) (Config, error) {
	c := Default(dev)
	if path != "" {
		if err := configfile.Load(path, &c); err != nil {
			return c, err
		}
	}
	return c, c.Validate()
}

// Validate reports the first bad value by key.
func (c *Config) Validate() error {
	e := configfile.Errorf
	if c.DataDir == "" {
		return e("data_dir", "must not be empty")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return e("log.format", "must be \"text\" or \"json\", not %q", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		return e("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return e("http.listen", "%q is not host:port", c.HTTP.Listen)
	}
	if c.HTTP.BaseURL != "" {
		u, err := url.Parse(c.HTTP.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return e("http.base_url", "must be an http(s) URL")
		}
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		return e("http.tls_cert", "http.tls_cert and http.tls_key must be set together")
	}
	if c.HTTP.DisplayTimeZone != "" {
		if _, err := time.LoadLocation(c.HTTP.DisplayTimeZone); err != nil {
			return e("http.display_time_zone", "%q is not a known time zone (use an IANA name such as \"Europe/Berlin\")", c.HTTP.DisplayTimeZone)
		}
	}
	if c.HTTP.SessionLifetime < time.Minute {
		return e("http.session_lifetime", "must be at least 1m")
	}
	if c.HTTP.IdentityHeader != "" && len(c.HTTP.TrustedProxies) == 0 {
		return e("http.trusted_proxies", "must list the proxy addresses when http.identity_header is set")
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err2 := netip.ParseAddr(p); err2 != nil {
				return e(fmt.Sprintf("http.trusted_proxies[%d]", i), "%q is not an IP or CIDR", p)
			}
		}
	}
	if c.Database.URL != "" {
		u, err := url.Parse(c.Database.URL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql" && u.Scheme != "sqlite" && u.Scheme != "file") {
			return e("database.url", "must be postgres://… (or empty for SQLite in data_dir)")
		}
	}
	if c.MQTT.Listen == "" && c.MQTT.URL == "" {
		return e("mqtt.listen", "either mqtt.listen (embedded broker) or mqtt.url (external broker) is needed")
	}
	if c.MQTT.Listen != "" {
		if _, _, err := net.SplitHostPort(c.MQTT.Listen); err != nil {
			return e("mqtt.listen", "%q is not host:port", c.MQTT.Listen)
		}
	}
	if c.MQTT.URL != "" {
		u, err := url.Parse(c.MQTT.URL)
		if err != nil || u.Host == "" {
			return e("mqtt.url", "must be a URL like tcp://host:1883 or tls://host:8883")
		}
		switch u.Scheme {
		case "tcp", "mqtt", "tls", "ssl", "mqtts", "ws", "wss":
		default:
			return e("mqtt.url", "unsupported scheme %q", u.Scheme)
		}
	}
	if strings.Trim(c.MQTT.TopicPrefix, "/") == "" || strings.ContainsAny(c.MQTT.TopicPrefix, "+#") {
		return e("mqtt.topic_prefix", "must be a non-empty topic without wildcards")
	}
	if c.MQTT.ClientID == "" {
		return e("mqtt.client_id", "must not be empty")
	}
	if c.MQTT.DynsecUsername != "" {
		if c.MQTT.URL == "" {
			return e("mqtt.dynsec_username", "needs mqtt.url (an external Mosquitto); the embedded broker checks edges against the store itself")
		}
		if c.MQTT.DynsecPassword == "" {
			return e("mqtt.dynsec_password", "must be set with mqtt.dynsec_username")
		}
		if c.MQTT.DynsecUsername == c.MQTT.Username || c.MQTT.DynsecUsername == c.MQTT.ClientID {
			return e("mqtt.dynsec_username", "must differ from mqtt.username and mqtt.client_id (the broker forces client id = username, so one account cannot hold two connections)")
		}
	}
	if strings.ContainsAny(c.MQTT.SharedGroup, "/+#") {
		return e("mqtt.shared_group", "%q must not contain /, + or #", c.MQTT.SharedGroup)
	}
	if c.Database.LeaderInterval < 100*time.Millisecond || c.Database.LeaderInterval > 30*time.Second {
		return e("database.leader_interval", "%v must be between 100ms and 30s", c.Database.LeaderInterval)
	}
	if c.Mail.Smarthost != "" {
		if _, _, err := net.SplitHostPort(c.Mail.Smarthost); err != nil {
			return e("mail.smarthost", "%q is not host:port", c.Mail.Smarthost)
		}
	}
	for i, r := range c.DNS.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil && net.ParseIP(r) == nil {
			return e(fmt.Sprintf("dns.resolvers[%d]", i), "%q is not an IP or IP:port", r)
		}
	}
	if c.DNS.Timeout < 100*time.Millisecond {
		return e("dns.timeout", "must be at least 100ms")
	}
	if c.Allowlist.ValidFor < time.Hour {
		return e("allowlist.valid_for", "must be at least 1h")
	}
	if c.Allowlist.RepublishInterval < time.Second || c.Allowlist.RepublishInterval >= c.Allowlist.ValidFor {
		return e("allowlist.republish_interval", "must be at least 1s and below allowlist.valid_for")
	}
	if c.Policy.RegistrationPeriod < 24*time.Hour {
		return e("policy.registration_period", "must be at least 24h")
	}
	if c.Policy.DefaultMessagesHour < 1 {
		return e("policy.default_messages_per_hour", "must be at least 1")
	}
	if c.Policy.DefaultRcptsHour < 1 {
		return e("policy.default_recipients_per_hour", "must be at least 1")
	}
	return c.validateTrust()
}

func (c *Config) validateTrust() error {
	e := configfile.Errorf
	l := c.Login
	if l.FreeAttempts < 1 || l.FreeAttempts > 100 {
		return e("login.free_attempts", "must be from 1 to 100")
	}
	if l.LockDuration < time.Minute || l.LockDuration > 24*time.Hour {
		return e("login.lock_duration", "must be from 1m to 24h")
	}
	if l.Backoff < 10*time.Millisecond || l.Backoff > l.LockDuration {
		return e("login.backoff", "must be at least 10ms and at most login.lock_duration")
	}
	if l.LockAfter < l.FreeAttempts || l.LockAfter > 1000 {
		return e("login.lock_after", "must be at least login.free_attempts and at most 1000")
	}
	if l.MaxConcurrentHashes < 1 || l.MaxConcurrentHashes > 64 {
		return e("login.max_concurrent_hashes", "must be from 1 to 64 (each hash takes 19 MiB)")
	}
	r := c.Register
	for _, v := range []struct {
		key string
		n   int
	}{
		{"register.submissions_per_hour", r.SubmissionsPerHour}, {"register.dns_checks_per_hour", r.DNSChecksPerHour},
		{"register.max_pending_per_contact", r.MaxPendingPerContact}, {"register.max_pending_per_address", r.MaxPendingPerAddress},
	} {
		if v.n < 1 || v.n > 100000 {
			return e(v.key, "must be from 1 to 100000")
		}
	}
	if r.ConfirmationLifetime < time.Hour {
		return e("register.confirmation_lifetime", "must be at least 1h")
	}
	if c.API.MaxTokenLifetime < time.Hour {
		return e("api.max_token_lifetime", "must be at least 1h")
	}
	if c.API.TokenLifetime < time.Hour || c.API.TokenLifetime > c.API.MaxTokenLifetime {
		return e("api.token_lifetime", "must be at least 1h and at most api.max_token_lifetime")
	}
	if (c.MQTT.TLSCert == "") != (c.MQTT.TLSKey == "") {
		return e("mqtt.tls_cert", "mqtt.tls_cert and mqtt.tls_key must be set together")
	}
	for i, a := range c.Mail.StaffNotify {
		if _, err := mail.ParseAddress(a); err != nil || strings.ContainsAny(a, "\r\n") {
			return e(fmt.Sprintf("mail.staff_notify[%d]", i), "%q is not a mail address", a)
		}
	}
	if c.Edges.AutoSuspensionsPerHour < 0 || c.Edges.AutoSuspensionsPerHour > 1000 {
		return e("edges.auto_suspensions_per_hour", "must be between 0 and 1000")
	}
	if c.Edges.RelayEvidenceWindow < time.Hour {
		return e("edges.relay_evidence_window", "must be at least 1h")
	}
	if c.Edges.MaxEventsPerMinute < 1 {
		return e("edges.max_events_per_minute", "must be at least 1")
	}
	if c.Edges.MaxEventBytes < 1024 {
		return e("edges.max_event_bytes", "must be at least 1024")
	}
	if c.Events.Retention < 24*time.Hour || c.Events.Retention < c.Edges.RelayEvidenceWindow {
		return e("events.retention", "must be at least 24h and at least edges.relay_evidence_window")
	}
	if c.Events.PruneInterval < time.Minute || c.Events.PruneInterval > c.Events.Retention {
		return e("events.prune_interval", "must be at least 1m and at most events.retention")
	}
	return nil
}
