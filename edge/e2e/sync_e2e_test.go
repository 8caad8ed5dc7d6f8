package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The sync end-to-end test runs both real binaries: postern-central
// (SQLite, its embedded MQTT broker) and two postern-edge processes
// enrolled with it, against the loopback DNS zone and the two loopback MX
// sinks of deliveryWorld (delivery_test.go).

var (
	centralOnce   sync.Once
	centralBinary string
	centralErr    error
)

// buildCentral builds postern-central next to the edge binary, once.
func buildCentral(t *testing.T) string {
	t.Helper()
	centralOnce.Do(func() {
		centralBinary = filepath.Join(filepath.Dir(binary), "postern-central")
		out, err := exec.Command("go", "build", "-o", centralBinary, "github.com/postern/postern/central/cmd/postern-central").CombinedOutput()
		if err != nil {
			centralErr = fmt.Errorf("building postern-central: %v\n%s", err, out)
		}
	})
	if centralErr != nil {
		t.Fatal(centralErr)
	}
	return centralBinary
}

// centralProc is a running postern-central serve.
type centralProc struct {
	t       *testing.T
	bin     string
	dir     string
	cfgPath string
	url     string
	cmd     *exec.Cmd
	logf    *os.File
	exited  chan struct{}
}

func startCentral(t *testing.T, dnsAddr string) *centralProc {
	t.Helper()
	c := &centralProc{t: t, bin: buildCentral(t), dir: t.TempDir()}
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	c.url = "http://" + httpAddr
	cfg := fmt.Sprintf(`data_dir = %q
[log]
format = "json"
[http]
listen = %q
base_url = %q
[mqtt]
listen = %q
[dns]
resolvers = [%q]
timeout = "1s"
[policy]
affiliated_domains = ["example.edu", ".example.edu"]
`, filepath.Join(c.dir, "data"), httpAddr, c.url, mqttAddr, dnsAddr)
	c.cfgPath = filepath.Join(c.dir, "central.toml")
	if err := os.WriteFile(c.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(c.dir, "central.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.logf = f
	c.cmd = exec.Command(c.bin, "serve", "-config", c.cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Signal(syscall.SIGKILL)
			<-c.exited
		}
		c.logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(c.url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("central exited during start-up:\n%s", c.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("central not serving after 20s:\n%s", c.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *centralProc) logText() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "central.log"))
	return string(b)
}

// cli runs a postern-central subcommand against the running instance's
// store and returns its standard output.
func (c *centralProc) cli(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, append(args, "-config", c.cfgPath)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("postern-central %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// stop sends SIGTERM and expects a clean exit.
func (c *centralProc) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("central did not stop on SIGTERM:\n%s", c.logText())
	}
	if !c.cmd.ProcessState.Success() {
		c.t.Errorf("central exit status %v:\n%s", c.cmd.ProcessState, c.logText())
	}
}

var tokenRE = regexp.MustCompile(`-token (\S+)`)

// enrolledEdge creates edge id in central, enrols a fresh edge binary with
// the one-time token and starts it.
func enrolledEdge(t *testing.T, c *centralProc, id, dnsAddr, extra string) *edgeProc {
	t.Helper()
	m := tokenRE.FindStringSubmatch(c.cli("edge", "add", id, "-name", "e2e "+id))
	if m == nil {
		t.Fatalf("edge add %s printed no token", id)
	}
	e := newEdge(t, dnsAddr, extra)
	out, err := exec.Command(binary, "enroll", "-config", e.cfgPath, "-central", c.url, "-token", m[1], "-allow-http").CombinedOutput()
	if err != nil {
		t.Fatalf("postern-edge enroll (%s): %v\n%s", id, err, out)
	}
	e.start()
	return e
}

// probe opens a session from 127.0.0.<src> and returns the reply to the
// RCPT (or the MAIL refusal) without sending a message.
func probe(t *testing.T, addr string, src int, from, rcpt string) string {
	t.Helper()
	c, err := dial(t, addr, src)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	r, _ := c.cmd("MAIL FROM:<" + from + ">")
	if strings.HasPrefix(r, "250") {
		r, _ = c.cmd("RCPT TO:<" + rcpt + ">")
	}
	c.cmd("QUIT")
	return r
}

// eventually retries f every 50 ms until it returns "" (success) or the
// time is up; it fails with f's last complaint.
func eventually(t *testing.T, within time.Duration, what string, f func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		msg := f()
		if msg == "" {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %s", what, within, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSyncSuspensionThroughBinaries is the suspension path end to end with
// the real binaries: central + two enrolled edges + loopback DNS + loopback MX
// sinks. A device registered and approved with central's CLI gets its
// external mail delivered through edge 1; then an NDR to its sender cannot
// be delivered (the sender's MX refuses it with 550): edge 1 suspends the
// device at once and reports it, central records the suspension ("suspended
// by edge e1: …") and pushes it, and edge 2 refuses the device too.
func TestSyncSuspensionThroughBinaries(t *testing.T) {
	var refuseSender atomic.Bool
	w := newDeliveryWorld(t, &refuseSender) // scanner.example.edu <-> 127.0.0.10
	c := startCentral(t, w.dns.Addr)
	extra := fmt.Sprintf(`
[delivery]
mx_port = %d
connect_timeout = "1s"
command_timeout = "5s"
retry_min = "1h"
retry_max = "2h"
[sync]
heartbeat_interval = "1s"
`, w.port)
	e1 := enrolledEdge(t, c, "e1", w.dns.Addr, extra)
	e2 := enrolledEdge(t, c, "e2", w.dns.Addr, extra)

	// Not registered yet: external mail is refused on both edges, with a
	// 451 4.7.0 until an edge has applied its first snapshot, then 550.
	for _, e := range []*edgeProc{e1, e2} {
		eventually(t, 10*time.Second, "unregistered device refused", func() string {
			r := probe(t, e.smtp, 10, "scanner@example.edu", "a@example.com")
			switch {
			case strings.HasPrefix(r, "550 5.7.1"):
				return ""
			case strings.HasPrefix(r, "451 4.7.0"):
				return "no snapshot applied yet: " + r
			}
			t.Fatalf("unregistered device: %q, want 550 5.7.1 (451 4.7.0 before the first snapshot)", r)
			return ""
		})
	}

	// Register and approve through central's CLI (the FCrDNS check runs
	// against the loopback zone).
	out := c.cli("device", "register", "-name", "scanner.example.edu", "-ip", "127.0.0.10", "-owner", "Ada Lovelace",
		"-department", "Physics", "-contact", "ada@example.edu", "-sender", "scanner@example.edu", "-purpose", "scan to mail")
	if !strings.Contains(out, "pending") || !strings.Contains(out, "forward lookup matches") {
		t.Fatalf("device register:\n%s", out)
	}
	approved := time.Now()
	c.cli("device", "approve", "scanner.example.edu", "-force", "-reason", "e2e")
	for i, e := range []*edgeProc{e1, e2} {
		d := eventually(t, 10*time.Second, fmt.Sprintf("edge %d relays for the approved device", i+1), func() string {
			if r := probe(t, e.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "250") {
				return r
			}
			return ""
		})
		t.Logf("approve -> enforced on edge %d: %v after the probe began (%v after approve)", i+1, d, time.Since(approved).Round(time.Millisecond))
	}

	// The device's external mail through edge 1 is delivered.
	send(t, e1.smtp, []string{"a@example.com"}, "From: Scanner <scanner@example.edu>\r\nSubject: e2e sync\r\n\r\nscan\r\n")
	got := w.rcptMX.Wait(t, 1, 10*time.Second)[0]
	if got.From != "scanner@example.edu" || got.To[0] != "a@example.com" || !strings.Contains(string(got.Data), "Subject: e2e sync") {
		t.Fatalf("delivered %q -> %v:\n%s", got.From, got.To, got.Data)
	}

	// An NDR that cannot be delivered: nobody@example.com is refused, and
	// the NDR to scanner@example.edu is refused by example.edu's MX.
	refuseSender.Store(true)
	sent := time.Now()
	send(t, e1.smtp, []string{"nobody@example.com"}, "From: scanner@example.edu\r\nSubject: e2e bounce\r\n\r\nx\r\n")
	eventually(t, 15*time.Second, "edge 1 suspends the device", func() string {
		if r := probe(t, e1.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "550 5.7.1") || !strings.Contains(r, "suspended") {
			return r
		}
		return ""
	})
	t.Logf("send -> suspended on edge 1: %v", time.Since(sent).Round(time.Millisecond))

	// device show -json prints the store's records (Go field names).
	var show struct {
		Device struct {
			Status       string
			StatusReason string
		}
		History []struct {
			Actor, Action, Reason string
		}
	}
	eventually(t, 15*time.Second, "central records the suspension", func() string {
		if err := json.Unmarshal([]byte(c.cli("device", "show", "scanner.example.edu", "-json")), &show); err != nil {
			return err.Error()
		}
		if show.Device.Status != "suspended" {
			return "status " + show.Device.Status
		}
		return ""
	})
	t.Logf("send -> suspended in central: %v (reason %q)", time.Since(sent).Round(time.Millisecond), show.Device.StatusReason)
	const wantReason = "suspended by edge e1: NDR to scanner@example.edu undeliverable"
	if !strings.Contains(show.Device.StatusReason, wantReason) {
		t.Errorf("status reason %q, want %q", show.Device.StatusReason, wantReason)
	}
	found := false
	for _, h := range show.History {
		if h.Action == "suspend" && h.Actor == "edge:e1" && strings.Contains(h.Reason, wantReason) {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit entry %q in the history: %v", wantReason, show.History)
	}
	// The text form shows the same, for staff at a terminal.
	if out := c.cli("device", "show", "scanner.example.edu"); !strings.Contains(out, "suspended by edge e1") {
		t.Errorf("device show:\n%s", out)
	}

	d := eventually(t, 5*time.Second, "edge 2 refuses the suspended device", func() string {
		// Edge 2 never saw the NDR: only central's snapshot can tell it.
		if r := probe(t, e2.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "550 5.7.1") || !strings.Contains(r, "suspended") {
			return r
		}
		return ""
	})
	t.Logf("central suspended -> enforced on edge 2: %v; send -> edge 2: %v", d, time.Since(sent).Round(time.Millisecond))

	// Both edges show up as online in central with the current allowlist.
	eventually(t, 5*time.Second, "edge list shows both edges online", func() string {
		out := c.cli("edge", "list")
		for _, id := range []string{"e1", "e2"} {
			if !regexp.MustCompile(`(?m)^` + id + `\s+online`).MatchString(out) {
				return out
			}
		}
		return ""
	})

	e1.stop()
	e2.stop()
	c.stop()
}
