package hatest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
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

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/testkit"
)

// bin holds postern-central and postern-edge, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postern-hatest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	for _, p := range []string{"central/cmd/postern-central", "edge/cmd/postern-edge"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), "github.com/postern/postern/"+p).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", p, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freshSchema is a new PostgreSQL schema for one test (dropped after it).
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

// cluster is what the instances share: one PostgreSQL schema, one
// Mosquitto (dynamic security, as shipped), one signing key file.
type cluster struct {
	t     *testing.T
	db    string
	env   *brokertest.Env
	dns   string
	dir   string
	key   string // signing_key_file of every instance
	extra string // TOML appended to every instance's configuration
	pub   ed25519.PublicKey
}

func newCluster(t *testing.T, dnsAddr, extra string) *cluster {
	c := &cluster{t: t, db: freshSchema(t), env: brokertest.Mosquitto(t), dns: dnsAddr, dir: t.TempDir(), extra: extra}
	c.key = filepath.Join(c.dir, "allowlist.key")
	k, err := allowlist.LoadOrCreateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	c.pub = k.Public().(ed25519.PublicKey)
	return c
}

// instance is one `postern-central serve` process.
type instance struct {
	t         *testing.T
	name, cfg string
	base      string // http://host:port
	cmd       *exec.Cmd
	log       *syncBuf
	exited    chan struct{}
}

// instance writes the configuration of a central instance with MQTT
// account account (and account-dynsec for edge accounts).
func (c *cluster) instance(name, account string) *instance {
	t := c.t
	data := filepath.Join(c.dir, name)
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	addr := testkit.FreeAddr(t, "")
	cfg := filepath.Join(c.dir, name+".toml")
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
dynsec_username = %q
dynsec_password = %q
[allowlist]
signing_key_file = %q
[dns]
resolvers = [%q]
timeout = "1s"
%s`, data, addr, addr, c.db, c.env.URL, account, c.env.Password(account), account,
		account+"-dynsec", c.env.DynsecPassword(account), c.key, c.dns, c.extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &instance{t: t, name: name, cfg: cfg, base: "http://" + addr, log: &syncBuf{}}
}

func (i *instance) start() {
	i.t.Helper()
	i.cmd = exec.Command(filepath.Join(bin, "postern-central"), "serve", "-config", i.cfg)
	i.cmd.Stdout, i.cmd.Stderr = i.log, i.log
	if err := i.cmd.Start(); err != nil {
		i.t.Fatal(err)
	}
	i.exited = make(chan struct{})
	cmd, exited := i.cmd, i.exited
	go func() { cmd.Wait(); close(exited) }()
	i.t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
		if i.t.Failed() {
			i.t.Logf("%s log:\n%s", i.name, i.log)
		}
	})
}

// kill9 kills the process without warning (SIGKILL).
func (i *instance) kill9() {
	i.cmd.Process.Kill()
	<-i.exited
}

func (i *instance) leading() bool {
	return strings.Contains(i.log.String(), "now the allowlist publisher")
}

func (i *instance) published() bool {
	return strings.Contains(i.log.String(), `msg="allowlist published"`)
}

func (i *instance) ready() bool {
	resp, err := http.Get(i.base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cli runs a postern-central command on the instance's configuration.
func (i *instance) cli(stdin string, args ...string) string {
	i.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "postern-central"), append(args, "-config", i.cfg)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		i.t.Fatalf("postern-central %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

// api calls the instance's JSON API with token and wants status want.
func (i *instance) api(token, method, path, body string, want int) []byte {
	i.t.Helper()
	req, _ := http.NewRequest(method, i.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		i.t.Fatalf("%s %s on %s: %d %s", method, path, i.name, resp.StatusCode, b)
	}
	return b
}

// edgeConfig is an edge's configuration: data folder, SMTP listener,
// resolver, admin listener. Devices connect from 127.0.0.0/25.
const edgeConfig = `hostname = "edge.ha.example.edu"
data_dir = %q
[smtp]
listen = [%q]
local_networks = ["127.0.0.0/25"]
affiliated_domains = ["example.edu", ".example.edu"]
[dns]
resolvers = [%q]
timeout = "500ms"
[policy]
register_url = "https://postern.example.edu/register"
bulk_url = "https://lists.example.edu/"
contact = "helpdesk@example.edu"
messages_per_hour = 1000
recipients_per_hour = 5000
[spool]
value_log_file_size = 8388608
[admin]
listen = %q
[sync]
heartbeat_interval = "1s"
`

// edge is one postern-edge process.
type edge struct {
	t        *testing.T
	dir, cfg string
	smtp     string
	cmd      *exec.Cmd
	log      *syncBuf
	exited   chan struct{}
}

func newEdge(t *testing.T, dnsAddr string) *edge {
	e := &edge{t: t, dir: t.TempDir(), smtp: testkit.FreeAddr(t, "127.0.0.250"), log: &syncBuf{}}
	admin := testkit.FreeAddr(t, "127.0.0.250")
	for admin == e.smtp {
		admin = testkit.FreeAddr(t, "127.0.0.250")
	}
	e.cfg = filepath.Join(e.dir, "edge.toml")
	if err := os.WriteFile(e.cfg, []byte(fmt.Sprintf(edgeConfig, filepath.Join(e.dir, "data"), e.smtp, dnsAddr, admin)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.cmd != nil {
			e.cmd.Process.Kill()
			<-e.exited
		}
		if t.Failed() {
			t.Logf("edge log:\n%s", e.log)
		}
	})
	return e
}

func (e *edge) enroll(central, token string) {
	e.t.Helper()
	out, err := exec.Command(filepath.Join(bin, "postern-edge"), "enroll", "-config", e.cfg, "-central", central, "-token", token, "-allow-http").CombinedOutput()
	if err != nil {
		e.t.Fatalf("postern-edge enroll: %v\n%s", err, out)
	}
}

func (e *edge) start() {
	e.t.Helper()
	e.cmd = exec.Command(filepath.Join(bin, "postern-edge"), "run", "-config", e.cfg)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.exited = make(chan struct{})
	cmd, exited := e.cmd, e.exited
	go func() { cmd.Wait(); close(exited) }()
	testkit.WaitFor(e.t, 15*time.Second, "edge listening", func() bool {
		c, err := net.DialTimeout("tcp", e.smtp, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop ends the edge with SIGTERM (it flushes its pending events to its
// outbox) and waits for it.
func (e *edge) stop() {
	e.t.Helper()
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		e.t.Fatal("edge did not stop on SIGTERM")
	}
	e.cmd = nil
}

// rcpt opens an SMTP session from 127.0.0.<src> and returns the reply to
// RCPT TO:<rcpt> (or to the refused MAIL).
func (e *edge) rcpt(src int, from, rcpt string) string {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", e.smtp)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	reply := func() string {
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return last + " (" + err.Error() + ")"
			}
			last = strings.TrimRight(l, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	cmd := func(s string) string {
		if _, err := conn.Write([]byte(s + "\r\n")); err != nil {
			return err.Error()
		}
		return reply()
	}
	if b := reply(); !strings.HasPrefix(b, "220") {
		return b
	}
	cmd("EHLO device.example.edu")
	res := cmd("MAIL FROM:<" + from + ">")
	if strings.HasPrefix(res, "250") {
		res = cmd("RCPT TO:<" + rcpt + ">")
	}
	cmd("QUIT")
	return res
}

// edit replaces old with new in the instance's configuration file.
func (i *instance) edit(old, new string) {
	i.t.Helper()
	b, err := os.ReadFile(i.cfg)
	if err != nil {
		i.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		i.t.Fatalf("%s: %q not in the configuration", i.name, old)
	}
	if err := os.WriteFile(i.cfg, bytes.ReplaceAll(b, []byte(old), []byte(new)), 0o600); err != nil {
		i.t.Fatal(err)
	}
}

// stop ends the instance with SIGTERM and waits for it.
func (i *instance) stop() {
	i.t.Helper()
	i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.exited:
	case <-time.After(15 * time.Second):
		i.t.Fatalf("%s did not stop on SIGTERM", i.name)
	}
}
