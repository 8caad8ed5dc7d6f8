// Package brokertest starts real MQTT brokers for tests: central's embedded
// broker in-process, or a private Mosquitto process running the shipped
// deploy/mosquitto configuration (dynamic security plugin, accounts made by
// the shipped dynsec-bootstrap.sh and, for edges, by central/broker/dynsec)
// on a free loopback port. Both can be stopped and restarted on the same
// address to test outages.
package brokertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker"
	"github.com/postern/postern/central/broker/dynsec"
	"github.com/postern/postern/shared/topic"
)

// CentralID is the client id (and Mosquitto username) of central.
const CentralID = "postern-central"

// Env is a running broker.
type Env struct {
	// URL is where edges connect (tcp://127.0.0.1:port).
	URL    string
	Topics topic.Topics
	// ForcesClientID: the broker replaces the client id with the username
	// (Mosquitto) instead of refusing a mismatch (embedded).
	ForcesClientID bool
	Name           string

	t    testing.TB
	mu   sync.Mutex
	pw   map[string]string
	emb  *broker.Broker
	addr string
	mosq *exec.Cmd
	dir  string
	conf string
	auth broker.EdgeAuth
	prov *dynsec.Provisioner // as provAccount's -dynsec account
}

// provAccount is the central account whose -dynsec account the env uses
// to make edge accounts, so that central instances under test can use
// CentralID's and others' without taking over the env's connection.
const provAccount = CentralID + "-test"

// AdminPassword is the password of the Mosquitto env's dynsec
// administrator (user "admin", made by mosquitto_ctrl dynsec init).
const AdminPassword = "admin-secret-0123456789"

// UseAuth makes the embedded broker check edge credentials with a
// instead of the env's own accounts (for example central's store).
func (e *Env) UseAuth(a broker.EdgeAuth) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.auth = a
}

// Password returns the password of account id (created on first use). On
// Mosquitto an id starting with CentralID is a central instance, made by
// deploy/mosquitto/dynsec-bootstrap.sh together with its provisioning
// account id+"-dynsec" (see DynsecPassword); any other id is an edge,
// made by central/broker/dynsec.
func (e *Env) Password(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if pw, ok := e.pw[id]; ok {
		return pw
	}
	pw := accountPassword(id)
	e.pw[id] = pw
	if e.mosq != nil {
		if strings.HasPrefix(id, CentralID) {
			e.bootstrap(id, pw)
		} else {
			e.addEdge(id, pw)
		}
	}
	return pw
}

// DynsecPassword is the password of central instance id's provisioning
// account, id+"-dynsec" (Mosquitto only; call Password(id) first).
func (e *Env) DynsecPassword(id string) string { return "dynsec-" + id + "-0123456789abcdef" }

// EdgePasswordHash implements broker.EdgeAuth for the embedded broker.
func (e *Env) EdgePasswordHash(ctx context.Context, user string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.auth != nil {
		return e.auth.EdgePasswordHash(ctx, user)
	}
	pw, ok := e.pw[user]
	if !ok || user == CentralID {
		return "", errors.New("no such edge")
	}
	return broker.HashPassword(pw), nil
}

// CentralOptions returns paho options for central's client on this broker
// (in-process for the embedded broker, username/password for Mosquitto).
func (e *Env) CentralOptions() *paho.ClientOptions {
	o := paho.NewClientOptions().SetClientID(CentralID)
	if e.mosq != nil {
		return o.AddBroker(e.URL).SetUsername(CentralID).SetPassword(e.Password(CentralID))
	}
	return o.AddBroker("tcp://inproc").SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		return e.Dial()
	})
}

// Kick drops an edge's session on the embedded broker (what central does
// when staff revoke an edge); false on Mosquitto or without a session.
func (e *Env) Kick(id string) bool {
	e.mu.Lock()
	b := e.emb
	e.mu.Unlock()
	return b != nil && b.Kick(id)
}

// Dial connects in-process to the embedded broker (central's path).
func (e *Env) Dial() (net.Conn, error) {
	e.mu.Lock()
	b := e.emb
	e.mu.Unlock()
	if b == nil {
		return nil, errors.New("broker is down")
	}
	return b.Dial()
}

// Embedded starts central's embedded broker on a free loopback port.
func Embedded(t testing.TB) *Env {
	t.Helper()
	e := &Env{t: t, Topics: topic.New(""), pw: map[string]string{}, addr: "127.0.0.1:0", Name: "embedded"}
	e.Start()
	e.URL = "tcp://" + e.addr
	t.Cleanup(e.Stop)
	return e
}

// Each runs f twice, as the subtests "embedded" (central's embedded
// broker) and "mosquitto" (a private Mosquitto), so that a test proves its
// behaviour on both brokers central supports.
func Each(t *testing.T, f func(t *testing.T, env *Env)) {
	t.Run("embedded", func(t *testing.T) { f(t, Embedded(t)) })
	t.Run("mosquitto", func(t *testing.T) { f(t, Mosquitto(t)) })
}

// Mosquitto starts a private Mosquitto with the shipped configuration. It
// skips the test when Mosquitto is not installed, unless CI is set.
func Mosquitto(t testing.TB) *Env {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	ctrl, err2 := exec.LookPath("mosquitto_ctrl")
	if _, err := os.Stat(bin); err != nil || err2 != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto not installed: %v %v", err, err2)
		}
		t.Skip("mosquitto or mosquitto_ctrl not installed (apt install mosquitto); set CI to make this fatal")
	}
	dir := t.TempDir()
	e := &Env{t: t, Topics: topic.New(""), pw: map[string]string{}, dir: dir, ForcesClientID: true, Name: "mosquitto"}
	dynsecFile := filepath.Join(dir, "dynamic-security.json")
	seed := bootstrapped.get()
	if seed != nil {
		// The plugin's file as the first env of this process left it
		// after the bootstrap: the same accounts, without running the
		// script (3-4 s) again for every broker.
		if err := os.WriteFile(dynsecFile, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{CentralID, provAccount} {
			e.pw[id] = accountPassword(id)
		}
	} else if out, err := exec.Command(ctrl, "dynsec", "init", dynsecFile, "admin", AdminPassword).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_ctrl dynsec init: %v: %s", err, out)
	}
	conf, port := MosquittoConfig(t, filepath.Join(DeployDir(), "postern.conf"), map[string]string{
		"plugin_opt_config_file": dynsecFile,
		"persistence_location":   dir + "/",
	})
	e.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(e.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e.addr = fmt.Sprintf("127.0.0.1:%d", port)
	e.URL = "tcp://" + e.addr
	e.mosq = &exec.Cmd{Path: bin} // marks the env as Mosquitto before Start
	e.Start()
	e.Password(CentralID)
	e.Password(provAccount)
	prov, err := dynsec.Start(dynsec.Options{BrokerURL: e.URL, Username: provAccount + "-dynsec", Password: e.DynsecPassword(provAccount), Topics: e.Topics})
	if err != nil {
		t.Fatal(err)
	}
	e.prov = prov
	if seed == nil {
		// One round trip after the bootstrap: the plugin has saved it.
		if _, err := prov.Edges(context.Background()); err != nil {
			t.Fatalf("dynsec: %v", err)
		}
		if b, err := os.ReadFile(dynsecFile); err == nil && strings.Contains(string(b), provAccount+"-dynsec") {
			bootstrapped.set(b)
		}
	}
	t.Cleanup(func() {
		prov.Close()
		e.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("mosquitto log:\n%s", b)
		}
	})
	return e
}

// accountPassword is the password the env gives account id.
func accountPassword(id string) string { return "pw-" + id + "-0123456789abcdef" }

// bootstrapped holds the plugin's file after the first env's bootstrap.
var bootstrapped seedFile

type seedFile struct {
	mu sync.Mutex
	b  []byte
}

func (s *seedFile) get() []byte  { s.mu.Lock(); defer s.mu.Unlock(); return s.b }
func (s *seedFile) set(b []byte) { s.mu.Lock(); defer s.mu.Unlock(); s.b = b }

// DeployDir is the repository's deploy/mosquitto folder.
func DeployDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "mosquitto")
}

// bootstrap runs the shipped dynsec-bootstrap.sh for central instance id.
func (e *Env) bootstrap(id, pw string) {
	_, port, _ := net.SplitHostPort(e.addr)
	cmd := exec.Command("sh", filepath.Join(DeployDir(), "dynsec-bootstrap.sh"), id)
	cmd.Env = append(os.Environ(), "MQTT_HOST=127.0.0.1", "MQTT_PORT="+port, "ADMIN_PASSWORD="+AdminPassword,
		"CENTRAL_PASSWORD="+pw, "DYNSEC_PASSWORD="+e.DynsecPassword(id), "TOPIC_PREFIX="+e.Topics.Prefix())
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("dynsec-bootstrap.sh %s: %v: %s", id, err, out)
	}
}

// addEdge makes edge id's account the way central does at enrolment.
func (e *Env) addEdge(id, pw string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.prov.CreateEdge(ctx, id, pw); err != nil {
		e.t.Fatalf("dynsec: create edge %s: %v", id, err)
	}
}

// Provisioner is the env's edge account provisioner (Mosquitto only),
// connected with an account of its own (no central instance under test
// uses it: the broker forces client id = username, so a second connection
// with one account would take over the first).
func (e *Env) Provisioner() *dynsec.Provisioner { return e.prov }

// DeleteEdge removes edge id's account from Mosquitto the way central does
// on revocation (and forgets its password).
func (e *Env) DeleteEdge(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pw, id)
	if e.prov == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return e.prov.DeleteEdge(ctx, id)
}

// Start (re)starts the broker on its address.
func (e *Env) Start() {
	e.t.Helper()
	if e.mosq == nil {
		b, err := broker.Start(broker.Options{Listen: e.addr, Topics: e.Topics, CentralClientID: CentralID, Edges: e})
		if err != nil {
			e.t.Fatalf("start embedded broker: %v", err)
		}
		e.mu.Lock()
		e.emb = b
		e.addr = b.Addr().String()
		e.mu.Unlock()
		return
	}
	cmd := exec.Command(e.mosq.Path, "-c", e.conf)
	logf, err := os.OpenFile(filepath.Join(e.dir, "log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.mosq = cmd
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", e.addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("mosquitto did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the Mosquitto process id (0 for the embedded broker).
func (e *Env) PID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mosq == nil || e.mosq.Process == nil {
		return 0
	}
	return e.mosq.Process.Pid
}

// Kill stops the broker without saving anything: the embedded broker keeps
// nothing anyway; Mosquitto gets SIGKILL (what it acknowledged since its
// last autosave is gone).
func (e *Env) Kill() {
	if e.mosq != nil && e.mosq.Process != nil && e.mosq.ProcessState == nil {
		_ = e.mosq.Process.Kill()
		_ = e.mosq.Wait()
		return
	}
	e.Stop()
}

// Stop stops the broker (Mosquitto saves its persistence file).
func (e *Env) Stop() {
	e.mu.Lock()
	b := e.emb
	e.emb = nil
	e.mu.Unlock()
	if b != nil {
		b.Close()
		return
	}
	if e.mosq != nil && e.mosq.Process != nil && e.mosq.ProcessState == nil {
		_ = e.mosq.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = e.mosq.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = e.mosq.Process.Kill()
			<-done
		}
	}
}

// MosquittoConfig returns the shipped configuration at path with the keys
// in set replaced, every listener moved to a free loopback port without
// TLS, and (as root) running as root. port is the first listener's.
func MosquittoConfig(t testing.TB, path string, set map[string]string) (conf string, port int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		key, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if v, ok := set[key]; ok {
			fmt.Fprintf(&b, "%s %s\n", key, v)
			continue
		}
		switch key {
		case "listener":
			p := FreePort(t)
			if port == 0 {
				port = p
			}
			fmt.Fprintf(&b, "listener %d 127.0.0.1\n", p)
			continue
		case "certfile", "keyfile", "cafile", "tls_version":
			continue
		}
		b.WriteString(line + "\n")
	}
	if os.Geteuid() == 0 {
		b.WriteString("user root\n")
	}
	if os.Getenv("POSTERN_TEST_MOSQUITTO_DEBUG") != "" {
		b.WriteString("log_type all\n")
	}
	return b.String(), port
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
