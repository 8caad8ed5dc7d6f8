package deploytest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker/dynsec"
	"github.com/postern/postern/shared/testkit"
)

// mosquitto is a private Mosquitto process running the shipped
// deploy/mosquitto/postern.conf with both of its listeners (TLS for edges,
// plain for central) moved to free loopback ports.
type mosquitto struct {
	tlsAddr, plainAddr string
	caPool             *x509.CertPool
}

// startMosquitto rewrites only what must differ on a test machine: ports,
// file locations and the user; a key the test expects but cannot find in
// the shipped file fails the test (the shipped file changed shape).
func startMosquitto(t *testing.T, users map[string]string) *mosquitto {
	t.Helper()
	bin := lookBin(t, "mosquitto")
	ctrl := lookBin(t, "mosquitto_ctrl")
	dir := t.TempDir()
	m := &mosquitto{}
	certFile, keyFile, pool := makeCert(t, dir)
	m.caPool = pool
	// The documented bootstrap: the plugin's file with an administrator,
	// then dynsec-bootstrap.sh for central's accounts once it runs.
	const adminPW = "admin-secret-1"
	dynsecFile := filepath.Join(dir, "dynamic-security.json")
	if out, err := exec.Command(ctrl, "dynsec", "init", dynsecFile, "admin", adminPW).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_ctrl dynsec init: %v: %s", err, out)
	}
	set := map[string]string{
		"plugin_opt_config_file": dynsecFile,
		"persistence_location":   dir + "/",
		"certfile":               certFile,
		"keyfile":                keyFile,
	}
	seen := map[string]bool{}
	f, err := os.Open(filepath.Join(mosquittoDir(), "postern.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	tlsNext := false
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			b.WriteString(line + "\n")
			continue
		}
		key := fields[0]
		seen[key] = true
		if v, ok := set[key]; ok {
			fmt.Fprintf(&b, "%s %s\n", key, v)
			continue
		}
		if key == "listener" {
			addr := "127.0.0.1:" + fmt.Sprint(testkit.FreePort(t))
			switch fields[1] {
			case "8883":
				m.tlsAddr = addr
				tlsNext = true
			case "1883":
				m.plainAddr = addr
			default:
				t.Fatalf("postern.conf: unexpected listener %q", line)
			}
			_, port, _ := net.SplitHostPort(addr)
			fmt.Fprintf(&b, "listener %s 127.0.0.1\n", port)
			continue
		}
		b.WriteString(line + "\n")
	}
	for _, k := range []string{"plugin", "plugin_opt_config_file", "certfile", "keyfile", "allow_anonymous", "persistence"} {
		if !seen[k] {
			t.Fatalf("postern.conf has no %s line", k)
		}
	}
	if !tlsNext || m.plainAddr == "" {
		t.Fatalf("postern.conf: want a TLS listener 8883 and a loopback listener 1883")
	}
	if os.Geteuid() == 0 {
		b.WriteString("user root\n")
	}
	b.WriteString("log_dest stderr\nlog_type all\n")
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("mosquitto log:\n%s", out)
		}
	})
	for _, addr := range []string{m.tlsAddr, m.plainAddr} {
		waitPort(t, addr)
	}
	m.accounts(t, users, adminPW)
	return m
}

// accounts makes central's accounts with the shipped dynsec-bootstrap.sh
// and every other user as an edge the way central does at enrolment.
func (m *mosquitto) accounts(t *testing.T, users map[string]string, adminPW string) {
	t.Helper()
	const central = "postern-central"
	_, port, _ := net.SplitHostPort(m.plainAddr)
	dynsecPW := "dynsec-secret-1"
	cmd := exec.Command("sh", filepath.Join(mosquittoDir(), "dynsec-bootstrap.sh"), central)
	cmd.Env = append(os.Environ(), "MQTT_HOST=127.0.0.1", "MQTT_PORT="+port, "ADMIN_PASSWORD="+adminPW,
		"CENTRAL_PASSWORD="+users[central], "DYNSEC_PASSWORD="+dynsecPW)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dynsec-bootstrap.sh: %v: %s", err, out)
	}
	p, err := dynsec.Start(dynsec.Options{BrokerURL: "tcp://" + m.plainAddr, Username: central + "-dynsec", Password: dynsecPW})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for u, pw := range users {
		if u == central {
			continue
		}
		if err := p.CreateEdge(ctx, u, pw); err != nil {
			t.Fatalf("edge account %s: %v", u, err)
		}
	}
}

func lookBin(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin/", "/usr/bin/"} {
			if _, serr := os.Stat(d + name); serr == nil {
				return d + name
			}
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (apt-get install mosquitto)", name)
		}
		t.Skipf("%s not installed (apt-get install mosquitto); set CI to make this fatal", name)
	}
	return p
}

// mosquittoDir is the repository's deploy/mosquitto (tests run in their
// package folder, deploy/deploytest).
func mosquittoDir() string { return filepath.Join("..", "mosquitto") }

func waitPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// makeCert writes a self-signed server certificate for 127.0.0.1 and
// returns the pool that trusts it.
func makeCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "broker.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// inbox collects the messages a client receives.
type inbox struct {
	mu   sync.Mutex
	msgs map[string][]string // topic -> payloads
}

func (in *inbox) handler(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs[m.Topic()] = append(in.msgs[m.Topic()], string(m.Payload()))
}

func (in *inbox) has(topic, payload string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, p := range in.msgs[topic] {
		if p == payload {
			return true
		}
	}
	return false
}

// waitFor reports whether payload arrives on topic within d.
func (in *inbox) waitFor(topic, payload string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if in.has(topic, payload) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return in.has(topic, payload)
}

func (m *mosquitto) connect(t *testing.T, useTLS bool, user, pw, clientID string, in *inbox) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().SetClientID(clientID).SetUsername(user).SetPassword(pw).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetCleanSession(true).SetConnectRetry(false)
	if useTLS {
		o.AddBroker("tls://" + m.tlsAddr).SetTLSConfig(&tls.Config{RootCAs: m.caPool, MinVersion: tls.VersionTLS12})
	} else {
		o.AddBroker("tcp://" + m.plainAddr)
	}
	if in != nil {
		o.SetDefaultPublishHandler(in.handler)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", user)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func must(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s: timeout", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestMosquittoShippedConfig starts Mosquitto with deploy/mosquitto as
// shipped (TLS listener for edges, loopback listener for central) and
// checks what the sync contract needs from it: no anonymous or
// wrong-password clients, TLS works with the operator's certificate, edges
// read only the allowlist and write only their own events and status, only
// central writes the allowlist, and an edge cannot take over central's
// session by choosing its client id.
func TestMosquittoShippedConfig(t *testing.T) {
	users := map[string]string{"postern-central": "central-secret-1", "edge-a": "edge-a-secret-1", "edge-b": "edge-b-secret-1"}
	m := startMosquitto(t, users)
	const prefix = "postern/v1/"

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name     string
			tls      bool
			user, pw string
		}{
			{"anonymous plain", false, "", ""},
			{"anonymous tls", true, "", ""},
			{"wrong password", true, "edge-a", "nope"},
			{"unknown user", true, "edge-z", "edge-a-secret-1"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := m.connect(t, tc.tls, tc.user, tc.pw, "x-"+tc.user, nil); err == nil {
					t.Fatalf("connected; want refusal")
				}
			})
		}
	})

	central := &inbox{msgs: map[string][]string{}}
	cc, err := m.connect(t, false, "postern-central", users["postern-central"], "postern-central", central)
	if err != nil {
		t.Fatalf("central: %v", err)
	}
	must(t, cc.Subscribe(prefix+"#", 1, nil), "central subscribe")

	edgeA := &inbox{msgs: map[string][]string{}}
	ac, err := m.connect(t, true, "edge-a", users["edge-a"], "edge-a", edgeA)
	if err != nil {
		t.Fatalf("edge-a over TLS: %v", err)
	}
	must(t, ac.Subscribe(prefix+"allowlist", 1, nil), "edge-a subscribe allowlist")
	// The plugin refuses the subscription (SUBACK 0x80); nothing may arrive.
	must(t, ac.Subscribe(prefix+"edges/edge-b/events", 1, nil), "edge-a subscribe edge-b events")

	bc, err := m.connect(t, true, "edge-b", users["edge-b"], "edge-b", nil)
	if err != nil {
		t.Fatalf("edge-b over TLS: %v", err)
	}

	// Allowed: central publishes the allowlist, edges their own events and status.
	must(t, cc.Publish(prefix+"allowlist", 1, true, "snapshot-1"), "central publish allowlist")
	must(t, ac.Publish(prefix+"edges/edge-a/events", 1, false, "a-event-1"), "edge-a publish own events")
	must(t, ac.Publish(prefix+"edges/edge-a/status", 1, true, "a-online"), "edge-a publish own status")
	if !edgeA.waitFor(prefix+"allowlist", "snapshot-1", 5*time.Second) {
		t.Errorf("edge-a did not receive central's allowlist")
	}
	if !central.waitFor(prefix+"edges/edge-a/events", "a-event-1", 5*time.Second) {
		t.Errorf("central did not receive edge-a's event")
	}
	if !central.waitFor(prefix+"edges/edge-a/status", "a-online", 5*time.Second) {
		t.Errorf("central did not receive edge-a's status")
	}

	// Denied: Mosquitto acknowledges (MQTT 3.1.1) and drops.
	must(t, ac.Publish(prefix+"allowlist", 1, true, "forged-by-a"), "edge-a publish allowlist")
	must(t, ac.Publish(prefix+"edges/edge-b/events", 1, false, "a-as-b"), "edge-a publish edge-b events")
	must(t, bc.Publish(prefix+"edges/edge-b/events", 1, false, "b-event-1"), "edge-b publish own events")
	// edge-b's own event is the barrier: once central has it, the denied
	// messages (published earlier) would have arrived too.
	if !central.waitFor(prefix+"edges/edge-b/events", "b-event-1", 5*time.Second) {
		t.Fatalf("central did not receive edge-b's event")
	}
	time.Sleep(300 * time.Millisecond)
	if central.has(prefix+"allowlist", "forged-by-a") || edgeA.has(prefix+"allowlist", "forged-by-a") {
		t.Errorf("an edge could publish the allowlist")
	}
	if central.has(prefix+"edges/edge-b/events", "a-as-b") {
		t.Errorf("edge-a could publish as edge-b")
	}
	if edgeA.has(prefix+"edges/edge-b/events", "b-event-1") {
		t.Errorf("edge-a could read edge-b's events")
	}

	// use_username_as_clientid: edge-a claiming central's client id gets
	// its own session; central stays connected and keeps receiving.
	if _, err := m.connect(t, true, "edge-a", users["edge-a"], "postern-central", nil); err != nil {
		t.Fatalf("edge-a with central's client id: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if !cc.IsConnectionOpen() {
		t.Fatalf("central was disconnected by an edge using its client id")
	}
	must(t, bc.Publish(prefix+"edges/edge-b/events", 1, false, "b-event-2"), "edge-b publish")
	if !central.waitFor(prefix+"edges/edge-b/events", "b-event-2", 5*time.Second) {
		t.Errorf("central stopped receiving after an edge used its client id")
	}
}
