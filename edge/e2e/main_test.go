package e2e

import (
	"bufio"
	"fmt"
	"github.com/postern/postern/shared/testkit"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postern-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "postern-edge")
	build := exec.Command("go", "build", "-o", binary, "github.com/postern/postern/edge/cmd/postern-edge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building postern-edge:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// edgeProc is a running edge binary.
type edgeProc struct {
	t       testing.TB
	dir     string
	cfgPath string
	smtp    string
	admin   string
	cmd     *exec.Cmd
	logf    *os.File
	exited  chan struct{}
}

// freeAddr returns a probed port on 127.0.0.250, which nothing else on the
// machine uses, so another test process cannot take the port between the
// probe and the edge binding it.
func freeAddr(tb testing.TB) string { return testkit.FreeAddr(tb, "127.0.0.250") }

// e2eConfig is the edge configuration of the end-to-end tests: data
// folder, SMTP listener, resolver, admin listener, then extra TOML.
const e2eConfig = `hostname = "edge.e2e.example.edu"
data_dir = %q
[log]
format = "json"
level = "info"
[smtp]
listen = [%q]
local_networks = ["127.0.0.0/25"]
affiliated_domains = ["example.edu", ".example.edu"]
max_message_size = 1048576
max_recipients = 10
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
%s
`

// newEdge writes e2eConfig into a fresh folder. extra is appended TOML
// (for [[devices]]).
func newEdge(tb testing.TB, dnsAddr string, extra string) *edgeProc {
	return newEdgeConfig(tb, e2eConfig, dnsAddr, extra)
}

// newEdgeConfig writes the configuration tmpl (with %q verbs for the data
// folder, SMTP listener, resolver and admin listener, and %s for extra)
// into a fresh folder, on fresh loopback ports.
func newEdgeConfig(tb testing.TB, tmpl, dnsAddr, extra string) *edgeProc {
	tb.Helper()
	dir := tb.TempDir()
	e := &edgeProc{t: tb, dir: dir, smtp: freeAddr(tb), admin: freeAddr(tb)}
	// The probe listener is closed before the next probe, so the kernel
	// may hand out the same port twice; the edge would then fail to bind.
	for e.admin == e.smtp {
		e.admin = freeAddr(tb)
	}
	cfg := fmt.Sprintf(tmpl, filepath.Join(dir, "data"), e.smtp, dnsAddr, e.admin, extra)
	e.cfgPath = filepath.Join(dir, "edge.toml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.kill() })
	return e
}

// start runs the binary and waits until it accepts SMTP connections.
func (e *edgeProc) start() {
	e.t.Helper()
	f, err := os.OpenFile(filepath.Join(e.dir, "edge.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	e.logf = f
	e.cmd = exec.Command(binary, "run", "-config", e.cfgPath)
	e.cmd.Stdout, e.cmd.Stderr = f, f
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.exited = make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.smtp, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-e.exited:
			e.t.Fatalf("edge exited during start-up:\n%s", e.logText())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("edge not listening after 15s:\n%s", e.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (e *edgeProc) kill() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	e.cmd = nil
	e.logf.Close()
}

// stop sends SIGTERM and waits for a clean exit.
func (e *edgeProc) stop() {
	e.t.Helper()
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.t.Fatalf("edge did not stop on SIGTERM:\n%s", e.logText())
	}
	if !e.cmd.ProcessState.Success() {
		e.t.Fatalf("edge exit status %v:\n%s", e.cmd.ProcessState, e.logText())
	}
	e.cmd = nil
	e.logf.Close()
}

func (e *edgeProc) logText() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "edge.log"))
	return string(b)
}

// client is a minimal raw SMTP client bound to a 127.0.0.x source address.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string, src int) (*client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}, nil
}

func (c *client) reply() (string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

func (c *client) cmd(line string) (string, error) {
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return "", err
	}
	return c.reply()
}

// transaction sends one message and returns the final reply or the first
// refusal.
func (c *client) transaction(from string, rcpts []string, body string) (string, error) {
	r, err := c.cmd("MAIL FROM:<" + from + ">")
	if err != nil || !strings.HasPrefix(r, "250") {
		return r, err
	}
	for _, rc := range rcpts {
		if r, err = c.cmd("RCPT TO:<" + rc + ">"); err != nil || !strings.HasPrefix(r, "250") {
			c.cmd("RSET")
			return r, err
		}
	}
	if r, err = c.cmd("DATA"); err != nil || !strings.HasPrefix(r, "354") {
		return r, err
	}
	if _, err := c.conn.Write([]byte(body + ".\r\n")); err != nil {
		return "", err
	}
	return c.reply()
}

func (c *client) hello() error {
	if r, err := c.reply(); err != nil || !strings.HasPrefix(r, "220") {
		return fmt.Errorf("banner %q: %v", r, err)
	}
	if r, err := c.cmd("EHLO device.example.edu"); err != nil || !strings.HasPrefix(r, "250") {
		return fmt.Errorf("EHLO %q: %v", r, err)
	}
	return nil
}
