package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHAProxyConfig checks the load balancer example with HAProxy's own
// parser (haproxy -c), with a generated certificate in place of the
// operator's.
func TestHAProxyConfig(t *testing.T) {
	bin := lookBin(t, "haproxy")
	dir := t.TempDir()
	certFile, keyFile, _ := makeCert(t, dir)
	cert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem := filepath.Join(dir, "postern.pem")
	if err := os.WriteFile(pem, append(cert, key...), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "central", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	const shipped = "/etc/haproxy/certs/postern.pem"
	if !strings.Contains(string(b), shipped) {
		t.Fatalf("haproxy.cfg no longer uses %s", shipped)
	}
	for _, want := range []string{"server central-1", "server central-2", "option httpchk GET /readyz"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(b), shipped, pem)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	if strings.Contains(strings.ToLower(string(out)), "warning") {
		t.Errorf("haproxy -c warns:\n%s", out)
	}
}
