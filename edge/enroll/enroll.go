// Package enroll joins an edge to central: it redeems the one-time token
// staff created for the edge (`postern-edge enroll -central URL -token T`)
// over HTTPS with go-retryablehttp, and keeps what central answers — the
// edge id, the broker address and MQTT credentials, central's allowlist
// public key and the initial configuration — in the data folder.
//
// Guarantees: the enrolment file is written atomically with mode 0600 (it
// holds the MQTT password), and an enrolment never half-overwrites an
// existing one. Values in the edge's configuration file override the
// enrolment (Merge fills only what the configuration leaves empty).
package enroll

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/atomicfile"
	"github.com/postern/postern/shared/topic"
)

// Path is central's enrolment endpoint (POST, JSON {"token": …}).
const Path = "/api/v1/sync/enroll"

// FileName is the enrolment file in the data folder.
const FileName = "enrolment.json"

// State is what central returned at enrolment.
type State struct {
	EdgeID      string `json:"edge_id"`
	MQTTURL     string `json:"mqtt_url"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	TopicPrefix string `json:"topic_prefix"`
	PublicKey   string `json:"public_key"`
	CentralURL  string `json:"central_url"`
	Config      struct {
		HeartbeatInterval string   `json:"heartbeat_interval,omitempty"`
		AffiliatedDomains []string `json:"affiliated_domains,omitempty"`
	} `json:"config"`
	EnrolledAt time.Time `json:"enrolled_at"`
	// CAPEM is the CA given at enrolment (-ca), kept so that the MQTT TLS
	// connection and the HTTPS snapshot fetch trust the same private CA
	// (empty: system roots).
	CAPEM string `json:"ca_pem,omitempty"`
}

// ErrInsecureURL: central's URL is not https:// (and plain http:// was not
// allowed for a loopback address).
var ErrInsecureURL = errors.New("central URL must be https://")

// CheckCentralURL accepts https://host[:port] and, only with allowHTTP
// and only for a loopback host (developer runs), http://.
func CheckCentralURL(centralURL string, allowHTTP bool) error {
	u, err := url.Parse(centralURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("enrol: central URL %q: %w (https://host[:port])", centralURL, ErrInsecureURL)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if !allowHTTP {
			return fmt.Errorf("enrol: central URL %q: %w (plain http:// only with -allow-http for a loopback address)", centralURL, ErrInsecureURL)
		}
		if !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("enrol: central URL %q: %w (plain http:// is only for loopback development)", centralURL, ErrInsecureURL)
		}
		return nil
	}
	return fmt.Errorf("enrol: central URL %q: %w", centralURL, ErrInsecureURL)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// TLSConfig is the TLS client configuration for central and its broker:
// the enrolment CA if one was given, else the system roots.
func (s *State) TLSConfig() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAPEM == "" {
		return c, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.CAPEM)) {
		return nil, errors.New("enrolment: ca_pem holds no certificate")
	}
	c.RootCAs = pool
	return c, nil
}

// Validate checks that central's answer is usable.
func (s *State) Validate() error {
	if err := topic.ValidEdgeID(s.EdgeID); err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	if s.Username == "" || s.Password == "" {
		return errors.New("enrolment: no MQTT credentials")
	}
	if _, err := allowlist.ParsePublicKey(s.PublicKey); err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	if u, err := url.Parse(s.MQTTURL); err != nil || u.Host == "" {
		return fmt.Errorf("enrolment: bad mqtt_url %q", s.MQTTURL)
	}
	if s.Config.HeartbeatInterval != "" {
		if _, err := time.ParseDuration(s.Config.HeartbeatInterval); err != nil {
			return fmt.Errorf("enrolment: bad heartbeat_interval: %w", err)
		}
	}
	return nil
}

// Enroll redeems token at central (base URL centralURL). hc may be nil
// (3 retries with backoff). A refused token is not retried.
//
// centralURL must be https:// (see CheckCentralURL; allowHTTP admits
// http:// to a loopback address for development).
func Enroll(ctx context.Context, hc *retryablehttp.Client, centralURL, token string, allowHTTP bool) (State, error) {
	var st State
	if err := CheckCentralURL(centralURL, allowHTTP); err != nil {
		return st, err
	}
	if strings.TrimSpace(token) == "" {
		return st, errors.New("enrol: empty token")
	}
	if hc == nil {
		hc = retryablehttp.NewClient()
		hc.RetryMax = 3
		hc.RetryWaitMin = 500 * time.Millisecond
		hc.HTTPClient.Timeout = 30 * time.Second
		hc.Logger = nil
	}
	body, _ := json.Marshal(map[string]string{"token": strings.TrimSpace(token)})
	endpoint := strings.TrimRight(centralURL, "/") + Path
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return st, fmt.Errorf("enrol: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("enrol at %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, fmt.Errorf("enrol at %s: %w", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("enrol at %s: %s: %s", endpoint, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("enrol at %s: bad answer: %w", endpoint, err)
	}
	if st.CentralURL == "" {
		st.CentralURL = strings.TrimRight(centralURL, "/")
	}
	st.EnrolledAt = time.Now().UTC()
	return st, st.Validate()
}

// Save writes st to dataDir/FileName atomically with mode 0600.
func Save(dataDir string, st State) error {
	if err := st.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dataDir, FileName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	return nil
}

// Load reads the enrolment in dataDir. It returns an error wrapping
// os.ErrNotExist when the edge is not enrolled.
func Load(dataDir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dataDir, FileName))
	if err != nil {
		return st, fmt.Errorf("enrolment: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("enrolment %s: %w", filepath.Join(dataDir, FileName), err)
	}
	return st, st.Validate()
}

// Merge fills the sync settings the configuration leaves empty from the
// enrolment and turns sync on (an enrolled edge talks to central).
// Configuration values win.
func (st State) Merge(c *config.Config) {
	s := &c.Sync
	s.Enabled = true
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&s.EdgeID, st.EdgeID)
	set(&s.CentralURL, st.CentralURL)
	set(&s.MQTTURL, st.MQTTURL)
	set(&s.Username, st.Username)
	set(&s.Password, st.Password)
	set(&s.PublicKey, st.PublicKey)
	if (s.TopicPrefix == "" || s.TopicPrefix == topic.DefaultPrefix) && st.TopicPrefix != "" {
		s.TopicPrefix = st.TopicPrefix
	}
	if len(c.SMTP.AffiliatedDomains) == 0 {
		c.SMTP.AffiliatedDomains = append([]string(nil), st.Config.AffiliatedDomains...)
	}
	if d, err := time.ParseDuration(st.Config.HeartbeatInterval); err == nil && d >= time.Second && s.HeartbeatInterval == config.Default(false).Sync.HeartbeatInterval {
		s.HeartbeatInterval = d
	}
}
