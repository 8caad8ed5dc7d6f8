// Package config holds the edge's configuration: one struct tree decoded
// from one TOML file, defaults set in code, and one Validate function that
// names the offending key. deploy/edge.example.toml documents every key.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/configfile"
	"github.com/postern/postern/shared/loopback"
)

// Config is the whole edge configuration.
type Config struct {
	// Hostname is the name the edge uses in its banner, EHLO, Received
	// headers and as Reporting-MTA in NDRs.
	Hostname string `toml:"hostname"`
	// DataDir holds the Badger spool, the TLS certificate when generated,
	// the enrolment state and the persisted allowlist.
	DataDir string `toml:"data_dir"`
	// MemoryLimit is the soft limit on the Go runtime's memory (bytes,
	// debug.SetMemoryLimit): near it the collector runs more often, so
	// the heap stays near what is live instead of growing to twice that.
	// Absent from the file it is smtp.max_inflight_bytes + 96 MiB; 0
	// turns it off. GOMEMLIMIT in the environment overrides it.
	MemoryLimit int64 `toml:"memory_limit"`

	Log      Log      `toml:"log"`
	SMTP     SMTP     `toml:"smtp"`
	DNS      DNS      `toml:"dns"`
	Policy   Policy   `toml:"policy"`
	Devices  []Device `toml:"devices"`
	Delivery Delivery `toml:"delivery"`
	Spool    Spool    `toml:"spool"`
	Admin    Admin    `toml:"admin"`
	Sync     Sync     `toml:"sync"`
}

// Log configures logging.
type Log struct {
	Format string `toml:"format"` // "text" or "json"
	Level  string `toml:"level"`  // debug, info, warn, error
}

// SMTP configures the intake (the listener devices talk to).
type SMTP struct {
	Listen            []string      `toml:"listen"`
	TLSListen         []string      `toml:"tls_listen"` // implicit TLS (port 465 style)
	TLSCert           string        `toml:"tls_cert"`
	TLSKey            string        `toml:"tls_key"`
	TLSMinVersion     string        `toml:"tls_min_version"` // "1.0", "1.1", "1.2", "1.3"
	LocalNetworks     []string      `toml:"local_networks"`
	AffiliatedDomains []string      `toml:"affiliated_domains"`
	MaxMessageSize    int64         `toml:"max_message_size"` // bytes
	MaxRecipients     int           `toml:"max_recipients"`
	MaxLineLength     int           `toml:"max_line_length"` // octets incl. CRLF
	CommandTimeout    time.Duration `toml:"command_timeout"`
	DataTimeout       time.Duration `toml:"data_timeout"`
	MaxConnections    int           `toml:"max_connections"`
	MaxConnectionsIP  int           `toml:"max_connections_per_ip"`
	MaxErrors         int           `toml:"max_errors"`
	// MaxInflightBytes bounds the message bytes held in memory at intake
	// across all connections (reserved at DATA by the declared SIZE, or
	// max_message_size); beyond it the edge answers 452 4.3.1.
	MaxInflightBytes int64 `toml:"max_inflight_bytes"`
	// IPv6PrefixLength is the prefix IPv6 clients are counted by for the
	// per-IP connection limit and the rate limits of unregistered clients.
	IPv6PrefixLength int `toml:"ipv6_prefix_length"`
	// MaxSessionDuration ends a connection this long after it was opened
	// (421 4.4.2).
	MaxSessionDuration time.Duration `toml:"max_session_duration"`
	// MaxTransactions is the number of messages (accepted MAIL commands)
	// one connection may send (421 4.7.0 beyond).
	MaxTransactions int `toml:"max_transactions_per_session"`
}

// DNS configures the resolver used for FCrDNS, sender checks and MX lookup.
type DNS struct {
	// Resolvers are host:port (or host, port 53) of recursive resolvers.
	// Empty means the nameservers of /etc/resolv.conf.
	Resolvers []string      `toml:"resolvers"`
	Timeout   time.Duration `toml:"timeout"`
	// CacheSize is the number of answers kept (positive and negative).
	CacheSize int `toml:"cache_size"`
	// ValidatingResolvers are resolvers (IP or IP:port) that validate
	// DNSSEC, such as a local unbound. Only their AD bit is trusted, and
	// only through them are MX and TLSA answers taken as authenticated for
	// DANE. Empty: no DANE.
	ValidatingResolvers []string `toml:"validating_resolvers"`
	// ServeStale is how long past its TTL a cached answer is still used
	// while every resolver fails (RFC 8767); 0 turns serving stale off.
	ServeStale time.Duration `toml:"serve_stale"`
}

// Policy holds relay-policy texts and default limits.
type Policy struct {
	RegisterURL       string `toml:"register_url"`
	BulkURL           string `toml:"bulk_url"`
	Contact           string `toml:"contact"`
	MessagesPerHour   int    `toml:"messages_per_hour"`
	RecipientsPerHour int    `toml:"recipients_per_hour"`
}

// Device is a statically registered device, for standalone edges.
type Device struct {
	Name              string   `toml:"name"`
	Senders           []string `toml:"senders"`
	Status            string   `toml:"status"` // "active" or "suspended"
	MessagesPerHour   int      `toml:"messages_per_hour"`
	RecipientsPerHour int      `toml:"recipients_per_hour"`
}

// Delivery configures the queue runner and outbound SMTP.
type Delivery struct {
	// Smarthost (host:port) relays all mail through one server instead of MX.
	Smarthost         string `toml:"smarthost"`
	SmarthostUsername string `toml:"smarthost_username"`
	SmarthostPassword string `toml:"smarthost_password"`
	// TLS is "opportunistic", "required" or "verify".
	TLS                  string        `toml:"tls"`
	MXPort               int           `toml:"mx_port"`
	Concurrency          int           `toml:"concurrency"`
	PerDomainConcurrency int           `toml:"per_domain_concurrency"`
	ConnectTimeout       time.Duration `toml:"connect_timeout"`
	CommandTimeout       time.Duration `toml:"command_timeout"`
	RetryMin             time.Duration `toml:"retry_min"`
	RetryMax             time.Duration `toml:"retry_max"`
	MaxQueueLifetime     time.Duration `toml:"max_queue_lifetime"`
	DelayWarning         time.Duration `toml:"delay_warning"` // 0 = off
	// MTASTS fetches and applies the MTA-STS policy (RFC 8461) of
	// destination domains that publish one.
	MTASTS bool `toml:"mta_sts"`
	// TLSPolicy are per-domain overrides (Postfix's smtp_tls_policy_maps).
	TLSPolicy []TLSPolicy `toml:"tls_policy"`
	// TLSRPT configures SMTP TLS reporting (RFC 8460).
	TLSRPT TLSRPT `toml:"tlsrpt"`
}

// TLSRPT is [delivery.tlsrpt]: daily aggregate reports of outbound TLS
// results to the domains that publish a _smtp._tls TXT record.
type TLSRPT struct {
	// Mode is "auto" (on when the edge has a real host name and From is
	// in an affiliated domain), "on" or "off".
	Mode string `toml:"mode"`
	// From is the address reports come from; empty: postmaster@<hostname>.
	// It must be in smtp.affiliated_domains, so that a report that
	// bounces comes back inside the organisation.
	From string `toml:"from"`
	// MaxReportsPerDay bounds the reports sent per day.
	MaxReportsPerDay int `toml:"max_reports_per_day"`
	// MaxRUAPerDomain bounds the addresses one domain's report goes to.
	MaxRUAPerDomain int `toml:"max_rua_per_domain"`
}

// TLSPolicy is one [[delivery.tls_policy]] entry. It replaces DANE,
// MTA-STS and delivery.tls for its domain.
type TLSPolicy struct {
	// Domain is the destination domain; a leading dot (".example.com")
	// matches its subdomains instead.
	Domain string `toml:"domain"`
	// Mode is "none" (never STARTTLS), "may" (opportunistic), "encrypt"
	// (TLS required, certificate unchecked), "verify" (TLS with a
	// certificate valid for the MX host name) or "dane" (TLS
	// authenticated by DNSSEC-signed TLSA records; a host without usable
	// TLSA records is not used). encrypt and stronger never fall back to
	// plaintext: the attempt is deferred.
	Mode string `toml:"mode"`
	// MX, when set, pins the MX hosts used for the domain: host names or
	// "*.example.com" patterns (one label); other MX hosts are skipped.
	MX []string `toml:"mx"`
}

// TLSPolicyModes are the values of delivery.tls_policy[].mode.
var TLSPolicyModes = []string{"none", "may", "encrypt", "verify", "dane"}

// Spool tunes the Badger store.
type Spool struct {
	// ValueLogFileSize caps each value-log file (bytes); small values keep
	// 32-bit ARM within its address space.
	ValueLogFileSize int64         `toml:"value_log_file_size"`
	GCInterval       time.Duration `toml:"gc_interval"`
	// MinFree is the free space (bytes) below which new mail is refused
	// with 452 4.3.1; 0 = automatic (16 MiB + half a value-log file,
	// capped at a quarter of the volume, at least 8 MiB).
	MinFree int64 `toml:"min_free"`
}

// Admin configures the local HTTP endpoint (health, metrics, queue tools).
type Admin struct {
	Listen string `toml:"listen"`
	// Token is required from non-loopback clients (Authorization: Bearer).
	Token string `toml:"token"`
	// Pprof mounts Go's runtime profiles at /debug/pprof/ (off by default).
	Pprof bool `toml:"pprof"`
}

// Sync configures the link to central. Enrolment fills these in a file in
// the data folder; values here override it.
type Sync struct {
	Enabled     bool   `toml:"enabled"`
	EdgeID      string `toml:"edge_id"`
	CentralURL  string `toml:"central_url"`
	MQTTURL     string `toml:"mqtt_url"`
	Username    string `toml:"username"`
	Password    string `toml:"password"`
	TopicPrefix string `toml:"topic_prefix"`
	// PublicKey is central's Ed25519 allowlist key, base64.
	PublicKey         string        `toml:"public_key"`
	HeartbeatInterval time.Duration `toml:"heartbeat_interval"`
}

// Default returns the production defaults. With dev set it returns the
// defaults for a developer run on loopback with no file at all.
func Default(dev bool) Config {
	c := Config{
		Hostname: defaultHostname(),
		DataDir:  "/var/lib/postern-edge",
		Log:      Log{Format: "text", Level: "info"},
		SMTP: SMTP{
			Listen:           []string{"0.0.0.0:25"},
			TLSMinVersion:    "1.2",
			LocalNetworks:    []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"},
			MaxMessageSize:   25 << 20,
			MaxRecipients:    50,
			MaxLineLength:    1000,
			CommandTimeout:   5 * time.Minute,
			DataTimeout:      10 * time.Minute,
			MaxConnections:   200,
			MaxConnectionsIP: 10,
			MaxErrors:        10,
			// A quarter of a 1 GiB Raspberry Pi: ten 25 MiB messages.
			MaxInflightBytes:   256 << 20,
			IPv6PrefixLength:   64,
			MaxSessionDuration: 30 * time.Minute,
			MaxTransactions:    100,
		},
		DNS: DNS{Timeout: 5 * time.Second, CacheSize: 10000, ServeStale: 24 * time.Hour},
		Policy: Policy{
			RegisterURL:       "https://postern.example.edu/register",
			BulkURL:           "https://lists.example.edu/",
			Contact:           "the IT service desk",
			MessagesPerHour:   200,
			RecipientsPerHour: 500,
		},
		Delivery: Delivery{
			TLS:                  "opportunistic",
			MXPort:               25,
			Concurrency:          32,
			PerDomainConcurrency: 8,
			ConnectTimeout:       30 * time.Second,
			CommandTimeout:       5 * time.Minute,
			RetryMin:             5 * time.Minute,
			RetryMax:             time.Hour,
			MaxQueueLifetime:     5 * 24 * time.Hour,
			DelayWarning:         4 * time.Hour,
			MTASTS:               true,
			TLSRPT:               TLSRPT{Mode: "auto", MaxReportsPerDay: 100, MaxRUAPerDomain: 2},
		},
		Spool: Spool{ValueLogFileSize: 64 << 20, GCInterval: 5 * time.Minute},
		Admin: Admin{Listen: "127.0.0.1:9025"},
		Sync: Sync{
			TopicPrefix:       "postern/v1",
			HeartbeatInterval: 30 * time.Second,
		},
	}
	if dev {
		c.Hostname = "edge.localhost"
		c.DataDir = "data/edge"
		c.SMTP.Listen = []string{"127.0.0.1:2525"}
		c.SMTP.LocalNetworks = []string{"127.0.0.0/8", "::1/128"}
		c.SMTP.AffiliatedDomains = []string{"example.edu", ".example.edu"}
		c.Admin.Listen = "127.0.0.1:9025"
		// Nothing leaves loopback in a dev run: names resolve at devlab's
		// DNS server (deploy/dev/devlab) and all mail goes to its sink.
		c.DNS.Resolvers = []string{"127.0.0.1:5354"}
		c.Delivery.Smarthost = "127.0.0.1:2526"
		c.Policy.RegisterURL = "http://127.0.0.1:8480/register"
	}
	c.MemoryLimit = DefaultMemoryLimit(c.SMTP.MaxInflightBytes)
	return c
}

func defaultHostname() string {
	h, err := osHostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// MemoryHeadroom is what DefaultMemoryLimit adds to the intake budget:
// the rest of the edge (Badger's tables and caches, delivery, central
// sync) and the collector's working room.
const MemoryHeadroom = 96 << 20

// DefaultMemoryLimit is memory_limit when the file does not set it.
func DefaultMemoryLimit(maxInflightBytes int64) int64 {
	return maxInflightBytes + MemoryHeadroom
}

// minMemoryHeadroom is the least memory_limit may leave above the intake
// budget: a limit at the budget itself would keep the collector running
// without end while the budget is full.
const minMemoryHeadroom = 64 << 20

// Load returns the defaults overlaid with the file at path (if path is not
// empty), validated. memory_limit, when the file leaves it out, follows
// the file's smtp.max_inflight_bytes.
func Load(path string, dev bool) (Config, error) {
	c := Default(dev)
	if path != "" {
		c.MemoryLimit = -1 // not in the file unless decoding sets it
		if err := configfile.Load(path, &c); err != nil {
			return c, err
		}
		if c.MemoryLimit == -1 {
			c.MemoryLimit = DefaultMemoryLimit(c.SMTP.MaxInflightBytes)
		}
	}
	return c, c.Validate()
}

// Validate checks every value and reports the first bad one by key.
func (c *Config) Validate() error {
	e := configfile.Errorf
	if strings.TrimSpace(c.Hostname) == "" {
		return e("hostname", "must not be empty")
	}
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
	if len(c.SMTP.Listen) == 0 && len(c.SMTP.TLSListen) == 0 {
		return e("smtp.listen", "at least one listener is needed")
	}
	for i, a := range c.SMTP.Listen {
		if err := checkHostPort(a); err != nil {
			return e(fmt.Sprintf("smtp.listen[%d]", i), "%v", err)
		}
	}
	for i, a := range c.SMTP.TLSListen {
		if err := checkHostPort(a); err != nil {
			return e(fmt.Sprintf("smtp.tls_listen[%d]", i), "%v", err)
		}
	}
	if (c.SMTP.TLSCert == "") != (c.SMTP.TLSKey == "") {
		return e("smtp.tls_cert", "smtp.tls_cert and smtp.tls_key must be set together")
	}
	switch c.SMTP.TLSMinVersion {
	case "1.0", "1.1", "1.2", "1.3":
	default:
		return e("smtp.tls_min_version", "must be 1.0, 1.1, 1.2 or 1.3, not %q", c.SMTP.TLSMinVersion)
	}
	if len(c.SMTP.LocalNetworks) == 0 {
		return e("smtp.local_networks", "must list at least one CIDR (no client could send otherwise)")
	}
	for i, n := range c.SMTP.LocalNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return e(fmt.Sprintf("smtp.local_networks[%d]", i), "%q is not a CIDR: %v", n, err)
		}
		if p.Bits() == 0 {
			return e(fmt.Sprintf("smtp.local_networks[%d]", i), "%q would make an open relay", n)
		}
	}
	for i, d := range c.SMTP.AffiliatedDomains {
		if _, err := address.ParsePattern(d); err != nil {
			return e(fmt.Sprintf("smtp.affiliated_domains[%d]", i), "%v", err)
		}
	}
	if c.SMTP.MaxMessageSize < 1024 {
		return e("smtp.max_message_size", "must be at least 1024 bytes")
	}
	if c.SMTP.MaxRecipients < 1 {
		return e("smtp.max_recipients", "must be at least 1")
	}
	if c.SMTP.MaxLineLength < 1000 {
		return e("smtp.max_line_length", "must be at least 1000 (RFC 5321 §4.5.3.1.6)")
	}
	if c.SMTP.CommandTimeout < time.Second {
		return e("smtp.command_timeout", "must be at least 1s")
	}
	if c.SMTP.DataTimeout < time.Second {
		return e("smtp.data_timeout", "must be at least 1s")
	}
	if c.SMTP.MaxConnections < 1 {
		return e("smtp.max_connections", "must be at least 1")
	}
	if c.SMTP.MaxConnectionsIP < 1 {
		return e("smtp.max_connections_per_ip", "must be at least 1")
	}
	if c.SMTP.MaxErrors < 1 {
		return e("smtp.max_errors", "must be at least 1")
	}
	if c.SMTP.MaxInflightBytes < c.SMTP.MaxMessageSize {
		return e("smtp.max_inflight_bytes", "must be at least smtp.max_message_size (%d), or no message of the maximum size could be received", c.SMTP.MaxMessageSize)
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < c.SMTP.MaxInflightBytes+minMemoryHeadroom {
		return e("memory_limit", "must be 0 (off) or at least smtp.max_inflight_bytes + 64 MiB (%d); leave it out for smtp.max_inflight_bytes + 96 MiB", c.SMTP.MaxInflightBytes+minMemoryHeadroom)
	}
	if c.SMTP.IPv6PrefixLength < 32 || c.SMTP.IPv6PrefixLength > 128 {
		return e("smtp.ipv6_prefix_length", "must be between 32 and 128 (64 counts a whole subnet as one client, 128 each address)")
	}
	if c.SMTP.MaxSessionDuration < c.SMTP.DataTimeout {
		return e("smtp.max_session_duration", "must be at least smtp.data_timeout (%s)", c.SMTP.DataTimeout)
	}
	if c.SMTP.MaxTransactions < 1 {
		return e("smtp.max_transactions_per_session", "must be at least 1")
	}
	for i, r := range c.DNS.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			if net.ParseIP(r) == nil {
				return e(fmt.Sprintf("dns.resolvers[%d]", i), "%q is not an IP or IP:port", r)
			}
		}
	}
	for i, r := range c.DNS.ValidatingResolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			if net.ParseIP(r) == nil {
				return e(fmt.Sprintf("dns.validating_resolvers[%d]", i), "%q is not an IP or IP:port", r)
			}
		}
	}
	if c.DNS.Timeout < 100*time.Millisecond {
		return e("dns.timeout", "must be at least 100ms")
	}
	if c.DNS.CacheSize < 0 {
		return e("dns.cache_size", "must not be negative")
	}
	if c.DNS.ServeStale < 0 || c.DNS.ServeStale > 7*24*time.Hour {
		return e("dns.serve_stale", "must be between 0 (off) and 168h")
	}
	if c.Policy.MessagesPerHour < 1 {
		return e("policy.messages_per_hour", "must be at least 1")
	}
	if c.Policy.RecipientsPerHour < 1 {
		return e("policy.recipients_per_hour", "must be at least 1")
	}
	seen := map[string]bool{}
	for i, d := range c.Devices {
		k := fmt.Sprintf("devices[%d]", i)
		n, err := address.CanonicalDomain(d.Name)
		if err != nil {
			return e(k+".name", "%v", err)
		}
		if seen[n] {
			return e(k+".name", "device %q is listed twice", d.Name)
		}
		seen[n] = true
		for j, s := range d.Senders {
			if _, err := address.Parse(s); err != nil {
				return e(fmt.Sprintf("%s.senders[%d]", k, j), "%v", err)
			}
		}
		switch d.Status {
		case "", "active", "suspended":
		default:
			return e(k+".status", "must be \"active\" or \"suspended\", not %q", d.Status)
		}
		if d.MessagesPerHour < 0 {
			return e(k+".messages_per_hour", "must not be negative")
		}
		if d.RecipientsPerHour < 0 {
			return e(k+".recipients_per_hour", "must not be negative")
		}
	}
	if c.Delivery.Smarthost != "" {
		if err := checkHostPort(c.Delivery.Smarthost); err != nil {
			return e("delivery.smarthost", "%v", err)
		}
	}
	if (c.Delivery.SmarthostUsername == "") != (c.Delivery.SmarthostPassword == "") {
		return e("delivery.smarthost_username", "smarthost_username and smarthost_password must be set together")
	}
	switch c.Delivery.TLS {
	case "opportunistic", "required", "verify":
	default:
		return e("delivery.tls", "must be \"opportunistic\", \"required\" or \"verify\", not %q", c.Delivery.TLS)
	}
	if c.Delivery.MXPort < 1 || c.Delivery.MXPort > 65535 {
		return e("delivery.mx_port", "must be a port number")
	}
	if c.Delivery.Concurrency < 1 {
		return e("delivery.concurrency", "must be at least 1")
	}
	if c.Delivery.PerDomainConcurrency < 1 {
		return e("delivery.per_domain_concurrency", "must be at least 1")
	}
	if c.Delivery.ConnectTimeout < time.Second {
		return e("delivery.connect_timeout", "must be at least 1s")
	}
	if c.Delivery.CommandTimeout < time.Second {
		return e("delivery.command_timeout", "must be at least 1s")
	}
	if c.Delivery.RetryMin < time.Second {
		return e("delivery.retry_min", "must be at least 1s")
	}
	if c.Delivery.RetryMax < c.Delivery.RetryMin {
		return e("delivery.retry_max", "must not be below delivery.retry_min")
	}
	if c.Delivery.MaxQueueLifetime < c.Delivery.RetryMin {
		return e("delivery.max_queue_lifetime", "must not be below delivery.retry_min")
	}
	if c.Delivery.DelayWarning < 0 || (c.Delivery.DelayWarning > 0 && c.Delivery.DelayWarning >= c.Delivery.MaxQueueLifetime) {
		return e("delivery.delay_warning", "must be 0 (off) or below delivery.max_queue_lifetime (its default is 4h: with a max_queue_lifetime of 4h or less, set delay_warning lower or to \"0s\")")
	}
	if err := c.validateTLSPolicy(); err != nil {
		return err
	}
	if c.Spool.ValueLogFileSize < 1<<20 || c.Spool.ValueLogFileSize > 1<<30 {
		return e("spool.value_log_file_size", "must be between 1 MiB and 1 GiB")
	}
	if c.Spool.GCInterval < time.Second {
		return e("spool.gc_interval", "must be at least 1s")
	}
	if c.Spool.MinFree != 0 && c.Spool.MinFree < 8<<20 {
		return e("spool.min_free", "must be 0 (automatic) or at least 8 MiB (8388608): Badger needs room to flush its memtables")
	}
	if c.Admin.Listen != "" && !strings.HasPrefix(c.Admin.Listen, "unix:") {
		if err := checkHostPort(c.Admin.Listen); err != nil {
			return e("admin.listen", "%v", err)
		}
		if !loopback.HostPort(c.Admin.Listen) && len(c.Admin.Token) < 16 {
			return e("admin.token", "a token of at least 16 characters is required when admin.listen is not loopback")
		}
	}
	if c.Sync.CentralURL != "" {
		u, err := url.Parse(c.Sync.CentralURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return e("sync.central_url", "must be an http(s) URL")
		}
	}
	if c.Sync.MQTTURL != "" {
		u, err := url.Parse(c.Sync.MQTTURL)
		if err != nil || u.Host == "" {
			return e("sync.mqtt_url", "must be a URL like tcp://host:1883 or tls://host:8883")
		}
		switch u.Scheme {
		case "tcp", "mqtt", "tls", "ssl", "mqtts", "ws", "wss":
		default:
			return e("sync.mqtt_url", "unsupported scheme %q", u.Scheme)
		}
	}
	if strings.Trim(c.Sync.TopicPrefix, "/") == "" || strings.ContainsAny(c.Sync.TopicPrefix, "+#") {
		return e("sync.topic_prefix", "must be a non-empty topic without wildcards")
	}
	if c.Sync.HeartbeatInterval < time.Second {
		return e("sync.heartbeat_interval", "must be at least 1s")
	}
	return nil
}

func checkHostPort(a string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", a, err)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", a)
	}
	return nil
}

func (c *Config) validateTLSPolicy() error {
	e := configfile.Errorf
	seen := map[string]bool{}
	for i, p := range c.Delivery.TLSPolicy {
		k := fmt.Sprintf("delivery.tls_policy[%d]", i)
		d := strings.ToLower(strings.TrimSuffix(p.Domain, "."))
		if _, err := address.CanonicalDomain(strings.TrimPrefix(d, ".")); err != nil || d == "" {
			return e(k+".domain", "%q is not a domain (or .domain for its subdomains)", p.Domain)
		}
		if seen[d] {
			return e(k+".domain", "%q is listed twice", p.Domain)
		}
		seen[d] = true
		ok := false
		for _, m := range TLSPolicyModes {
			ok = ok || p.Mode == m
		}
		if !ok {
			return e(k+".mode", "must be one of %s, not %q", strings.Join(TLSPolicyModes, ", "), p.Mode)
		}
		if p.Mode == "dane" && len(c.DNS.ValidatingResolvers) == 0 {
			return e(k+".mode", "\"dane\" needs dns.validating_resolvers (a DNSSEC-validating resolver)")
		}
		for j, mx := range p.MX {
			if _, err := address.CanonicalDomain(strings.TrimPrefix(strings.TrimSuffix(mx, "."), "*.")); err != nil {
				return e(fmt.Sprintf("%s.mx[%d]", k, j), "%q is not a host name or *.domain pattern", mx)
			}
		}
	}
	if err := c.validateTLSRPT(); err != nil {
		return err
	}
	if len(c.Delivery.TLSPolicy) > 0 && c.Delivery.Smarthost != "" {
		return e("delivery.tls_policy", "per-domain TLS policies apply to MX delivery, not to delivery.smarthost (which uses delivery.tls)")
	}
	return nil
}

// validateTLSRPT checks [delivery.tlsrpt].
func (c *Config) validateTLSRPT() error {
	e := configfile.Errorf
	r := c.Delivery.TLSRPT
	switch r.Mode {
	case "auto", "on", "off":
	default:
		return e("delivery.tlsrpt.mode", "must be \"auto\", \"on\" or \"off\", not %q", r.Mode)
	}
	if r.MaxReportsPerDay < 1 {
		return e("delivery.tlsrpt.max_reports_per_day", "must be at least 1")
	}
	if r.MaxRUAPerDomain < 1 {
		return e("delivery.tlsrpt.max_rua_per_domain", "must be at least 1")
	}
	if r.From != "" {
		if _, err := address.Parse(r.From); err != nil {
			return e("delivery.tlsrpt.from", "%v", err)
		}
	}
	if r.Mode == "on" {
		if c.Delivery.Smarthost != "" {
			return e("delivery.tlsrpt.mode", "TLS reports are about MX delivery; with delivery.smarthost set, use \"off\" or \"auto\"")
		}
		if ok, why := c.tlsrptFrom(); !ok {
			return e("delivery.tlsrpt.from", "%s", why)
		}
	}
	return nil
}

// TLSRPTFrom returns the address TLS reports come from, and whether
// reports are sent: mode "on", or "auto" with a real host name; never
// with a smarthost (its TLS is not the destinations').
func (c *Config) TLSRPTFrom() (string, bool) {
	r := c.Delivery.TLSRPT
	if r.Mode == "off" || c.Delivery.Smarthost != "" || (r.Mode == "auto" && !RealHostname(c.Hostname)) {
		return "", false
	}
	if ok, _ := c.tlsrptFrom(); !ok {
		return "", false
	}
	return c.tlsrptAddress(), true
}

func (c *Config) tlsrptAddress() string {
	if c.Delivery.TLSRPT.From != "" {
		return c.Delivery.TLSRPT.From
	}
	return "postmaster@" + strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
}

// tlsrptFrom checks that the report address is in an affiliated domain.
func (c *Config) tlsrptFrom() (bool, string) {
	from := c.tlsrptAddress()
	a, err := address.Parse(from)
	if err != nil {
		return false, fmt.Sprintf("%s: %v", from, err)
	}
	l, err := address.NewDomainList(c.SMTP.AffiliatedDomains)
	if err != nil || !l.Contains(a.Domain) {
		return false, fmt.Sprintf("%s is not in smtp.affiliated_domains: a report that bounces must come back inside the organisation", from)
	}
	return true, ""
}

// RealHostname reports whether h is a name the internet can know the
// edge by: a domain name with a dot, not an address, not under a
// special-use or local-only name (localhost, .local, .test, .invalid,
// .example, .internal, .lan, .home.arpa …).
func RealHostname(h string) bool {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
	if h == "" || !strings.Contains(h, ".") {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	for _, suffix := range []string{"localhost", "local", "localdomain", "test", "invalid", "example", "internal", "lan", "home.arpa", "arpa"} {
		if h == suffix || strings.HasSuffix(h, "."+suffix) {
			return false
		}
	}
	return true
}
