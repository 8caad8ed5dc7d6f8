package tlspolicy

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TLSA parameters (RFC 6698 §2.1, RFC 7218 names).
const (
	usageDANETA = 2
	usageDANEEE = 3

	selectorCert = 0
	selectorSPKI = 1

	matchFull   = 0
	matchSHA256 = 1
	matchSHA512 = 2
)

// Usable returns the records DANE for SMTP can use (RFC 7672 §3.1):
// usage DANE-TA(2) or DANE-EE(3), a known selector and matching type,
// and a digest of the right length. PKIX-TA(0) and PKIX-EE(1) are not
// usable for SMTP.
func Usable(recs []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, r := range recs {
		if r.Usage != usageDANETA && r.Usage != usageDANEEE {
			continue
		}
		if r.Selector != selectorCert && r.Selector != selectorSPKI {
			continue
		}
		data, err := hex.DecodeString(r.Certificate)
		if err != nil || len(data) == 0 {
			continue
		}
		switch r.MatchingType {
		case matchFull:
		case matchSHA256:
			if len(data) != sha256.Size {
				continue
			}
		case matchSHA512:
			if len(data) != sha512.Size {
				continue
			}
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// matches reports whether cert matches r's selector and matching type.
func matches(r *dns.TLSA, cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case selectorCert:
		data = cert.Raw
	case selectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case matchSHA256:
		s := sha256.Sum256(data)
		data = s[:]
	case matchSHA512:
		s := sha512.Sum512(data)
		data = s[:]
	case matchFull:
	default:
		return false
	}
	return strings.EqualFold(hex.EncodeToString(data), r.Certificate)
}

// VerifyDANE returns the certificate check for a connection to host
// authenticated by the usable TLSA records recs (RFC 7672 §3.1):
//   - DANE-EE(3): the leaf certificate (or its key) matches; its names
//     and validity dates are not checked (§3.1.1);
//   - DANE-TA(2): a certificate the server sent matches and is taken as
//     the trust anchor; the leaf must chain to it, be within its validity
//     period and be valid for host (§3.1.2, §3.2.3).
func VerifyDANE(recs []*dns.TLSA, host string, now func() time.Time) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		chain := cs.PeerCertificates
		if len(chain) == 0 {
			return errors.New("DANE: the server sent no certificate")
		}
		for _, r := range recs {
			if r.Usage == usageDANEEE && matches(r, chain[0]) {
				return nil
			}
		}
		var taErr error
		for _, r := range recs {
			if r.Usage != usageDANETA {
				continue
			}
			for i, c := range chain {
				if !matches(r, c) {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(c)
				inter := x509.NewCertPool()
				for _, ic := range chain[1:i] {
					inter.AddCert(ic)
				}
				_, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now()})
				if err == nil {
					return nil
				}
				taErr = err
			}
		}
		if taErr != nil {
			return fmt.Errorf("DANE: certificate of %s does not verify against its DANE-TA record: %w", host, taErr)
		}
		return fmt.Errorf("DANE: certificate of %s matches none of its %d usable TLSA records", host, len(recs))
	}
}

// verifyPKIX checks the WebPKI validity of the server's certificate for
// host at now (MTA-STS testing mode checks without failing).
func verifyPKIX(cs tls.ConnectionState, host string, roots *x509.CertPool, now time.Time) error {
	chain := cs.PeerCertificates
	if len(chain) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now})
	return err
}

// tlsaID identifies a record set for connection reuse.
func tlsaID(recs []*dns.TLSA) string {
	var parts []string
	for _, r := range recs {
		parts = append(parts, fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, strings.ToLower(r.Certificate)))
	}
	sort.Strings(parts)
	s := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return "dane " + hex.EncodeToString(s[:8])
}

// tlsaString is a TLSA record as a TLSRPT policy-string entry
// ("3 1 1 <hex>").
func tlsaString(r *dns.TLSA) string {
	return fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, strings.ToLower(r.Certificate))
}
