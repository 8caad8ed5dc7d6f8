package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

// zone serves the test names:
//
//	127.0.0.10 <-> scanner.example.edu   registered, FCrDNS ok
//	127.0.0.11  -> scanner.example.edu   PTR present, forward mismatch
//	127.0.0.12     PTR query dropped     DNS timeout
//	127.0.0.13 <-> copier.example.edu    registered, suspended
//	127.0.0.20     no PTR                unregistered
func zone(t *testing.T) *dnstest.Server {
	d := dnstest.Start(t)
	d.AddA("scanner.example.edu", "127.0.0.10")
	d.AddPTR("127.0.0.10", "scanner.example.edu")
	d.AddPTR("127.0.0.11", "scanner.example.edu")
	d.Drop("12.0.0.127.in-addr.arpa")
	d.AddA("copier.example.edu", "127.0.0.13")
	d.AddPTR("127.0.0.13", "copier.example.edu")
	d.AddMX("example.edu", 10, "mx.example.edu")
	d.AddA("mx.example.edu", "127.0.0.99")
	d.AddA("plain.example.org", "127.0.0.98") // implicit MX
	return d
}

const devices = `
[[devices]]
name = "scanner.example.edu"
senders = ["scanner@example.edu"]

[[devices]]
name = "copier.example.edu"
status = "suspended"
`

func msg(subject string) string {
	return "From: Device <scanner@example.edu>\r\nSubject: " + subject + "\r\n\r\nHello from " + subject + ".\r\n"
}

// TestPolicyThroughBinary runs the relay policy's case table against the real
// binary, its real resolver and a real DNS server.
func TestPolicyThroughBinary(t *testing.T) {
	d := zone(t)
	e := newEdge(t, d.Addr, devices)
	e.start()
	tests := []struct {
		name  string
		src   int
		from  string
		rcpts []string
		body  string
		want  string
	}{
		{"affiliated rcpt from unregistered", 20, "someone@example.edu", []string{"x@example.edu"}, msg("a"), "250 2.0.0"},
		{"external rcpt from unregistered", 20, "someone@example.edu", []string{"x@gmail.com"}, msg("b"), "550 5.7.1"},
		{"registered, FCrDNS match", 10, "scanner@example.edu", []string{"x@gmail.com"}, msg("c"), "250 2.0.0"},
		{"PTR present, forward mismatch", 11, "scanner@example.edu", []string{"x@gmail.com"}, msg("d"), "550 5.7.1"},
		{"no PTR", 20, "scanner@example.edu", []string{"x@gmail.com"}, msg("e"), "550 5.7.1"},
		{"DNS timeout", 12, "scanner@example.edu", []string{"x@gmail.com"}, msg("f"), "451 4.4.3"},
		{"suspended", 13, "scanner@example.edu", []string{"x@example.edu"}, msg("g"), "550 5.7.1"},
		// An unregistered client must use an affiliated sender, whatever
		// the outside domain's DNS says (no relaying by bounce).
		{"unregistered, outside sender with only A", 20, "a@plain.example.org", []string{"x@example.edu"}, msg("h"), "550 5.7.1"},
		{"unregistered, outside sender domain does not exist", 20, "a@nxdomain.example.org", []string{"x@example.edu"}, msg("i"), "550 5.7.1"},
		{"null sender", 20, "", []string{"x@example.edu"}, msg("j"), "550 5.7.1"},
		{"missing From", 20, "a@example.edu", []string{"x@example.edu"}, "Subject: x\r\n\r\nbody\r\n", "550 5.6.0"},
		{"bare LF", 20, "a@example.edu", []string{"x@example.edu"}, "From: a@example.edu\r\n\r\nx\n.\nMAIL FROM:<e@example.edu>\r\n", "550 5.5.2"},
		{"percent hack", 20, "a@example.edu", []string{"u%gmail.com@example.edu"}, msg("k"), "550 5.7.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(t, e.smtp, tc.src)
			if err != nil {
				t.Fatal(err)
			}
			defer c.conn.Close()
			if err := c.hello(); err != nil {
				t.Fatal(err)
			}
			r, err := c.transaction(tc.from, tc.rcpts, tc.body)
			if err != nil || !strings.HasPrefix(r, tc.want) {
				t.Fatalf("got %q (%v), want %s", r, err, tc.want)
			}
		})
	}
	t.Run("non-local client", func(t *testing.T) {
		c, err := dial(t, e.smtp, 200)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if r, _ := c.reply(); !strings.HasPrefix(r, "554 5.7.1") {
			t.Fatalf("got %q", r)
		}
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + e.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", path, resp.Status)
		}
	}
	e.stop()
	// Every log line about a message carries its queue id.
	for _, l := range strings.Split(e.logText(), "\n") {
		if strings.Contains(l, `"msg":"accepted"`) && (!strings.Contains(l, `"queue_id":"`) || !strings.Contains(l, `"client_ip":"`)) {
			t.Errorf("log line without queue_id/client_ip: %s", l)
		}
	}
}

// TestIdleRSS measures the resident memory of the running edge after 10 s
// idle; the target for a small appliance is under 40 MB.
func TestIdleRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s idle")
	}
	d := zone(t)
	e := newEdge(t, d.Addr, devices)
	e.start()
	time.Sleep(10 * time.Second)
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc:", err)
	}
	kb := testkit.ProcStatusKiB(e.cmd.Process.Pid, "VmRSS")
	t.Logf("idle RSS after 10 s: %d kB (%.1f MB)", kb, float64(kb)/1024)
	if kb <= 0 || kb > 60*1024 {
		t.Fatalf("idle RSS %d kB (want < 60 MB, aim < 40 MB)", kb)
	}
	e.stop()
}
