// Package hatest runs two postern-central processes on one PostgreSQL
// schema and one Mosquitto, as deploy/README.md's "Central at scale"
// describes, and checks who publishes the allowlist.
package hatest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

func freshSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("POSTERN_TEST_POSTGRES")
	if base == "" || os.Getenv("POSTERN_TEST_MOSQUITTO") == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("POSTERN_TEST_POSTGRES and POSTERN_TEST_MOSQUITTO must be set in CI")
		}
		t.Skip("set POSTERN_TEST_POSTGRES and POSTERN_TEST_MOSQUITTO to run two central instances")
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "postern_ha_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); admin.Close() })
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type instance struct {
	name, cfg string
	base      string // http://host:port
	cmd       *exec.Cmd
	log       *syncBuf
}

func (i *instance) leading() bool {
	return strings.Count(i.log.String(), "now the allowlist publisher") > 0
}

// Two `postern-central serve` processes: exactly one publishes; an
// approval is retained on the broker; after kill -9 of the publisher the
// other takes over within a few leader intervals and publishes the next
// approval; the retained snapshot never goes back to an older version.
func TestTwoInstances(t *testing.T) {
	dbURL := freshSchema(t)
	env := brokertest.Mosquitto(t)
	d := dnstest.Start(t)
	for i, n := range []string{"one", "two"} {
		ip := fmt.Sprintf("10.1.2.%d", i+3)
		d.AddA(n+".dept.example.edu", ip)
		d.AddPTR(ip, n+".dept.example.edu")
	}
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "10.9.9.9")

	dir := t.TempDir()
	bin := filepath.Join(dir, "postern-central")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/postern/postern/central/cmd/postern-central").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	keyFile := filepath.Join(dir, "allowlist.key")
	key, err := allowlist.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name, account string) *instance {
		data := filepath.Join(dir, name)
		if err := os.MkdirAll(data, 0o750); err != nil {
			t.Fatal(err)
		}
		// The same signing key on both, as deploy/README.md says.
		if err := os.WriteFile(filepath.Join(data, "allowlist.key"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := testkit.FreeAddr(t, "")
		cfg := filepath.Join(dir, name+".toml")
		body := fmt.Sprintf(`data_dir = %q
[http]
listen = %q
base_url = "http://%s"
[database]
url = %q
leader_interval = "200ms"
[mqtt]
listen = ""
url = %q
username = %q
password = %q
client_id = %q
[dns]
resolvers = [%q]
timeout = "1s"
`, data, addr, addr, dbURL, env.URL, account, env.Password(account), account, d.Addr)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return &instance{name: name, cfg: cfg, base: "http://" + addr, log: &syncBuf{}}
	}
	start := func(i *instance) {
		i.cmd = exec.Command(bin, "serve", "-config", i.cfg)
		i.cmd.Stdout, i.cmd.Stderr = i.log, i.log
		if err := i.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if i.cmd.ProcessState == nil {
				i.cmd.Process.Signal(syscall.SIGTERM)
				i.cmd.Wait()
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", i.name, i.log)
			}
		})
	}
	cli := func(i *instance, args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "-config", i.cfg)...).Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var token string
	// approve approves a device through instance i's HTTP API.
	approve := func(i *instance, name string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, i.base+"/api/v1/devices/"+name+"/approve", strings.NewReader(`{"force": true}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("approve %s on %s: %d %s", name, i.name, resp.StatusCode, b)
		}
	}
	ready := func(i *instance) bool {
		resp, err := http.Get(i.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	a, b := mk("central-1", brokertest.CentralID), mk("central-2", "postern-central-2")
	start(a)
	start(b)

	var mu sync.Mutex
	var retained, regressions int64
	w := paho.NewClient(paho.NewClientOptions().AddBroker(env.URL).SetClientID("watcher").
		SetUsername("watcher").SetPassword(env.Password("watcher")).SetCleanSession(true))
	if tok := w.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: %v", tok.Error())
	}
	defer w.Disconnect(100)
	w.Subscribe(env.Topics.Allowlist(), 1, func(_ paho.Client, m paho.Message) {
		s, err := allowlist.Decode(m.Payload(), key.Public().(ed25519.PublicKey))
		if err != nil {
			t.Errorf("snapshot on the broker: %v", err)
			return
		}
		mu.Lock()
		if s.Version < retained {
			regressions++
		}
		retained = s.Version
		mu.Unlock()
	}).Wait()
	ver := func() int64 { mu.Lock(); defer mu.Unlock(); return retained }

	testkit.WaitFor(t, 20*time.Second, "both ready", func() bool { return ready(a) && ready(b) })
	cli(a, "user", "add", "admin")
	token = strings.TrimSpace(cli(a, "user", "token", "admin", "-scope", "read-write"))
	testkit.WaitFor(t, 20*time.Second, "one leader", func() bool { return a.leading() || b.leading() })
	time.Sleep(time.Second)
	if a.leading() && b.leading() {
		t.Fatal("both instances became leader")
	}
	leader, follower := a, b
	if b.leading() {
		leader, follower = b, a
	}
	testkit.WaitFor(t, 10*time.Second, "first snapshot retained", func() bool { return ver() >= 1 })

	// Approve through the leader's API.
	cli(leader, "device", "register", "-name", "one.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "scanner@dept.example.edu")
	before := ver()
	approve(leader, "one.dept.example.edu")
	testkit.WaitFor(t, 10*time.Second, "approval retained", func() bool { return ver() > before })
	if strings.Contains(follower.log.String(), `msg="allowlist published"`) {
		t.Fatalf("follower %s published", follower.name)
	}

	// kill -9 the leader.
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	leader.cmd.Wait()
	killed := time.Now()
	testkit.WaitFor(t, 10*time.Second, "follower takes over", follower.leading)
	t.Logf("hand-over after kill -9: %v (leader_interval 200ms)", time.Since(killed).Round(10*time.Millisecond))
	testkit.WaitFor(t, 10*time.Second, "new leader publishes", func() bool {
		return strings.Contains(follower.log.String(), `msg="allowlist published"`)
	})

	cli(follower, "device", "register", "-name", "two.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "copier@dept.example.edu")
	before = ver()
	if !ready(follower) {
		t.Fatalf("%s not ready after the other instance died", follower.name)
	}
	approve(follower, "two.dept.example.edu")
	testkit.WaitFor(t, 10*time.Second, "approval after hand-over retained", func() bool { return ver() > before })
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var storeVer int64
	if err := db.QueryRow(`SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&storeVer); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "retained version equals the store's", func() bool { return ver() == storeVer })
	mu.Lock()
	defer mu.Unlock()
	if regressions != 0 {
		t.Fatalf("retained snapshot went back %d times", regressions)
	}

}
