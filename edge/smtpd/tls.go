package smtpd

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/postern/postern/shared/atomicfile"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// TLSConfig returns the server TLS configuration for the intake. With
// certFile and keyFile empty it uses a self-signed certificate for
// hostname, generated on first use and kept in dataDir/tls so that devices
// that pin it keep working across restarts. minVersion is "1.0" … "1.3":
// old multifunction printers may need TLS 1.0 on the LAN. Below 1.2 the
// cipher list is widened to every suite Go implements (including RSA key
// exchange with CBC), because that is what such printers speak. Outbound
// TLS is configured elsewhere and stays strict.
func TLSConfig(certFile, keyFile, minVersion, dataDir, hostname string) (*tls.Config, error) {
	if certFile == "" {
		dir := filepath.Join(dataDir, "tls")
		certFile, keyFile = filepath.Join(dir, "intake-cert.pem"), filepath.Join(dir, "intake-key.pem")
		if err := ensureSelfSigned(certFile, keyFile, hostname); err != nil {
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("smtpd: load TLS certificate %s: %w", certFile, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}}
	switch minVersion {
	case "1.0":
		c.MinVersion = tls.VersionTLS10
	case "1.1":
		c.MinVersion = tls.VersionTLS11
	case "", "1.2":
		c.MinVersion = tls.VersionTLS12
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("smtpd: smtp.tls_min_version %q", minVersion)
	}
	if c.MinVersion < tls.VersionTLS12 {
		for _, cs := range tls.CipherSuites() {
			c.CipherSuites = append(c.CipherSuites, cs.ID)
		}
		for _, cs := range tls.InsecureCipherSuites() {
			// 3DES for the oldest printers; never RC4 (broken).
			if cs.ID == tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA || cs.ID == tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA {
				c.CipherSuites = append(c.CipherSuites, cs.ID)
			}
		}
	}
	return c, nil
}

// ensureSelfSigned creates an RSA-2048 self-signed certificate (RSA for
// the widest device compatibility) unless both files exist.
func ensureSelfSigned(certFile, keyFile, hostname string) error {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errC == nil && errK == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("smtpd: create TLS folder: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("smtpd: generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("smtpd: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname},
		DNSNames:              []string{hostname},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("smtpd: create certificate: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("smtpd: write %s: %w", keyFile, err)
	}
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("smtpd: write %s: %w", certFile, err)
	}
	return nil
}
