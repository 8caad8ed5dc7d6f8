package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
)

// TLSMode says how much a connection to a next hop must be protected.
type TLSMode int

const (
	// Opportunistic uses STARTTLS when the server offers it, without
	// verifying the certificate, and falls back to plaintext when the
	// server does not offer it or the handshake fails (RFC 3207 practice;
	// an unverified channel still defeats passive listeners).
	Opportunistic TLSMode = iota
	// Required insists on STARTTLS (the attempt is deferred when the
	// server does not offer it or the handshake fails) but does not verify
	// the certificate.
	Required
	// Verify insists on STARTTLS with a certificate valid for the host
	// name (the MX name, or the smarthost name), or accepted by
	// TLSRequirement.Verify when that is set (DANE).
	Verify
	// NoTLS never uses STARTTLS (a per-domain "none" policy for servers
	// whose TLS is broken).
	NoTLS
)

// Verification values: how the connection of an attempt was protected.
// They are recorded per attempt and are the labels of the TLS metric.
const (
	VerifPlain      = "plain"          // no TLS
	VerifUnverified = "tls_unverified" // TLS, certificate not checked
	VerifPKIX       = "tls_pkix"       // TLS, certificate valid for the host name (WebPKI)
	VerifDANE       = "dane"           // TLS, certificate matched DNSSEC-signed TLSA records
	VerifMTASTS     = "mta_sts"        // TLS, PKIX-valid certificate of an MX host the MTA-STS policy lists
	VerifFailed     = "tls_failed"     // the TLS the policy requires could not be had: deferred
)

func (m TLSMode) String() string {
	switch m {
	case Opportunistic:
		return "opportunistic"
	case Required:
		return "required"
	case Verify:
		return "verify"
	case NoTLS:
		return "none"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// ParseTLSMode reads the delivery.tls configuration value.
func ParseTLSMode(s string) (TLSMode, error) {
	switch strings.ToLower(s) {
	case "", "opportunistic":
		return Opportunistic, nil
	case "required":
		return Required, nil
	case "verify":
		return Verify, nil
	}
	return 0, fmt.Errorf("delivery: unknown TLS mode %q", s)
}

// TLSRequirement is what a TLSPolicy decides for one connection.
type TLSRequirement struct {
	Mode TLSMode
	// ServerName is sent as SNI and, with Verify, checked against the
	// certificate. Empty means the host name being connected to.
	ServerName string
	// RootCAs verifies certificates with Verify (nil: the system roots).
	RootCAs *x509.CertPool
	// Verify, when set, replaces crypto/tls's certificate check: it is
	// called with the handshake's state and an error fails the handshake
	// (DANE checks TLSA records, not names and expiry).
	Verify func(tls.ConnectionState) error
	// VerifyID names what Verify checks against (a digest of the TLSA
	// records): a connection made under the same VerifyID may be reused.
	// Empty with Verify set: the connection is not reused.
	VerifyID string
	// ReportOnly makes a Verify error a note instead of a failure: the
	// connection goes on and Outcome.TLSNote says what failed (MTA-STS
	// "testing" mode).
	ReportOnly bool
	// Verified is the Verification recorded when the certificate check
	// passed (default VerifPKIX for Verify mode, VerifUnverified else).
	Verified string
	// Policy names where the requirement came from for logs and history
	// ("delivery.tls", "tls_policy", "dane", "mta-sts").
	Policy string
	// Report is the published policy behind the requirement for TLSRPT
	// (Outcome.TLSResults); nil: connections under it are not reported.
	Report *ReportPolicy
	// ReportFailure, when set, is the TLSRPT result of every connection
	// under the requirement: the published policy could not be had or
	// used (an MTA-STS policy fetch failed, TLSA records none of which is
	// usable), so none could satisfy it. ReportDetail says why.
	ReportFailure, ReportDetail string
}

// TLSPolicy decides, per destination domain and host, how a connection
// must be protected: StaticTLS applies delivery.tls to everything (the
// smarthost), edge/tlspolicy adds per-domain overrides, DANE (TLSA records
// for host) and MTA-STS (a policy fetched for domain), which is why the
// decision takes both names and a context. An error refuses the host: the
// attempt records a temporary failure and the next host is tried.
type TLSPolicy interface {
	Requirement(ctx context.Context, domain, host string) (TLSRequirement, error)
}

// StaticTLS applies one mode to every connection (delivery.tls).
type StaticTLS struct {
	Mode    TLSMode
	RootCAs *x509.CertPool
}

// Requirement implements TLSPolicy.
func (p StaticTLS) Requirement(_ context.Context, _, host string) (TLSRequirement, error) {
	return TLSRequirement{Mode: p.Mode, ServerName: host, RootCAs: p.RootCAs}, nil
}

// clientConfig is the crypto/tls configuration for req. Outbound TLS is
// strict (TLS 1.2 and up) whatever the intake accepts from old devices.
// A note the handshake leaves (a ReportOnly failure) goes to *note.
func clientConfig(req TLSRequirement, host string, note *error) *tls.Config {
	name := req.ServerName
	if name == "" {
		name = host
	}
	cfg := &tls.Config{
		ServerName:         strings.TrimSuffix(name, "."),
		MinVersion:         tls.VersionTLS12,
		RootCAs:            req.RootCAs,
		InsecureSkipVerify: req.Mode != Verify || req.Verify != nil, //nolint:gosec // opportunistic TLS by design; Verify and req.Verify check
	}
	if req.Verify != nil {
		check := req.Verify
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			err := check(cs)
			if err != nil && req.ReportOnly {
				*note = err
				return nil
			}
			return err
		}
	}
	return cfg
}

// verification is the Verification of a TLS connection made under req.
func verification(req TLSRequirement, note string) string {
	switch {
	case note != "":
		return VerifUnverified
	case req.Verified != "":
		return req.Verified
	case req.Mode == Verify:
		return VerifPKIX
	}
	return VerifUnverified
}
