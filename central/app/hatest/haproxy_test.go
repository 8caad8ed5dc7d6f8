package hatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

// haproxy runs the shipped deploy/central/haproxy.cfg in front of the
// instances: only the certificate, the listening ports and the server
// addresses differ. It returns a pseudo-instance whose base is the proxy's
// HTTPS address; web requests through it trust the test certificate.
func haproxy(t *testing.T, servers ...*instance) *instance {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		bin = "/usr/sbin/haproxy"
		if _, serr := os.Stat(bin); serr != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("haproxy not installed (apt-get install haproxy)")
			}
			t.Skip("haproxy not installed (apt-get install haproxy); set CI to make this fatal")
		}
	}
	_, file, _, _ := runtime.Caller(0)
	shipped, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "central", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "postern.pem")
	pool := selfSigned(t, pemFile)
	httpsAddr, httpAddr := testkit.FreeAddr(t, ""), testkit.FreeAddr(t, "")
	var out []string
	n := 0
	for _, line := range strings.Split(string(shipped), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "log" && f[1] == "/dev/log":
			continue // no syslog in the test
		case len(f) >= 2 && f[0] == "bind" && f[1] == ":443":
			line = strings.Replace(strings.Replace(line, ":443", httpsAddr, 1), "/etc/haproxy/certs/postern.pem", pemFile, 1)
		case len(f) >= 2 && f[0] == "bind" && f[1] == ":80":
			line = "\tbind " + httpAddr
		case len(f) >= 3 && f[0] == "server":
			if n >= len(servers) {
				t.Fatalf("haproxy.cfg has more servers than the test runs: %q", line)
			}
			u, _ := url.Parse(servers[n].base)
			line = strings.Replace(line, f[2], u.Host, 1)
			n++
		}
		out = append(out, line)
	}
	if n != len(servers) {
		t.Fatalf("haproxy.cfg has %d servers, the test runs %d", n, len(servers))
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &syncBuf{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", log)
		}
	})
	trust.Store(pool)
	return &instance{t: t, name: "haproxy", base: "https://" + httpsAddr, log: log}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to pemFile
// (HAProxy's crt format) and returns a pool trusting it.
func selfSigned(t *testing.T, pemFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "postern.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})...)
	if err := os.WriteFile(pemFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// through checks the staff console through the proxy n times; it returns
// how many requests failed.
func through(b *browser, lb *instance, n int) (failed int) {
	for range n {
		resp, body := b.do(lb, http.MethodGet, "/staff", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Log out admin") {
			failed++
		}
	}
	return failed
}

// trust is the pool of the running proxy's test certificate.
var trust atomic.Pointer[x509.CertPool]

// client is the browser's HTTP client: no redirects followed, the proxy's
// test certificate trusted.
func client() *http.Client {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 20 * time.Second}
	if p := trust.Load(); p != nil {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p}}
	}
	return c
}
