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
	// name (the MX name, or the smarthost name).
	Verify
)

func (m TLSMode) String() string {
	switch m {
	case Opportunistic:
		return "opportunistic"
	case Required:
		return "required"
	case Verify:
		return "verify"
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
}

// TLSPolicy decides, per destination domain and host, how a connection
// must be protected. The static policy from delivery.tls is the only one
// today; DANE (TLSA records for host) and MTA-STS (a policy fetched for
// domain) are TLSPolicy implementations that can wrap it later, which is
// why the decision takes both names and a context.
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
func clientConfig(req TLSRequirement, host string) *tls.Config {
	name := req.ServerName
	if name == "" {
		name = host
	}
	return &tls.Config{
		ServerName:         strings.TrimSuffix(name, "."),
		MinVersion:         tls.VersionTLS12,
		RootCAs:            req.RootCAs,
		InsecureSkipVerify: req.Mode != Verify, //nolint:gosec // opportunistic TLS by design; Verify checks
	}
}
