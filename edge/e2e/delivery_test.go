package e2e

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

// deliveryWorld is a loopback DNS zone and two MX sinks on one port:
//
//	example.com -> mx.example.com 127.0.0.2   recipients' server
//	example.edu -> mx.example.edu 127.0.0.3   the device's domain (NDRs)
//	scanner.example.edu <-> 127.0.0.10        registered device
type deliveryWorld struct {
	dns    *dnstest.Server
	port   int
	rcptMX *deliverytest.Sink
	ndrMX  *deliverytest.Sink
}

// refusals: "nobody@" is unknown at the recipients' server; "later@" is
// deferred; at the device's domain "scanner@" does not exist once
// refuseSender is set.
func newDeliveryWorld(t testing.TB, refuseSender *atomic.Bool) *deliveryWorld {
	w := &deliveryWorld{dns: dnstest.Start(t)}
	w.dns.AddA("scanner.example.edu", "127.0.0.10")
	w.dns.AddPTR("127.0.0.10", "scanner.example.edu")
	w.dns.AddMX("example.com", 10, "mx.example.com")
	w.dns.AddA("mx.example.com", "127.0.0.2")
	w.dns.AddMX("example.edu", 10, "mx.example.edu")
	w.dns.AddA("mx.example.edu", "127.0.0.3")
	w.port = deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3")
	w.rcptMX = deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", w.port), Name: "mx.example.com",
		Behaviour: deliverytest.Behaviour{Rcpt: func(a string) *smtp.SMTPError {
			switch {
			case strings.HasPrefix(a, "nobody@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			case strings.HasPrefix(a, "later@"):
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Try later"}
			}
			return nil
		}}})
	w.ndrMX = deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.3:%d", w.port), Name: "mx.example.edu",
		Behaviour: deliverytest.Behaviour{Rcpt: func(a string) *smtp.SMTPError {
			if refuseSender != nil && refuseSender.Load() && strings.HasPrefix(a, "scanner@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such mailbox"}
			}
			return nil
		}}})
	return w
}

func (w *deliveryWorld) config(extraDevice string) string {
	return fmt.Sprintf(`
[[devices]]
name = "scanner.example.edu"
senders = ["scanner@example.edu"]
messages_per_hour = 1000000
recipients_per_hour = 1000000
%s
[delivery]
mx_port = %d
connect_timeout = "1s"
command_timeout = "5s"
retry_min = "1h"
retry_max = "2h"
`, extraDevice, w.port)
}

// send delivers one message from the registered device and returns the
// queue id.
func send(t testing.TB, addr string, rcpts []string, body string) string {
	t.Helper()
	c, err := dial(t, addr, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	r, err := c.transaction("scanner@example.edu", rcpts, body)
	id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as ")
	if err != nil || !ok {
		t.Fatalf("send: %q %v", r, err)
	}
	c.cmd("QUIT")
	return id
}

func (e *edgeProc) queueCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"queue", "-config", e.cfgPath}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("postern-edge queue %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestDeliveryThroughBinary: a device sends through the edge binary and
// the loopback MX receives the message byte for byte behind one added
// Received header; a refused recipient comes back as an RFC 3464 NDR to
// the device's sender; the queue tools and /metrics work against the
// running daemon; an undeliverable NDR suspends the device.
func TestDeliveryThroughBinary(t *testing.T) {
	var refuseSender atomic.Bool
	w := newDeliveryWorld(t, &refuseSender)
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()

	// 1. Delivered, byte for byte.
	body := "From: Scanner <scanner@example.edu>\r\nTo: a@example.com\r\nSubject: scan 1\r\n" +
		"Message-ID: <scan1@example.edu>\r\n\r\nPage 1\r\n.a line starting with a dot\r\n\r\nend\r\n"
	// The raw client does not dot-stuff: stuff here what SMTP requires.
	id := send(t, e.smtp, []string{"a@example.com"}, strings.ReplaceAll(body, "\r\n.", "\r\n.."))
	got := w.rcptMX.Wait(t, 1, 10*time.Second)[0]
	if got.From != "scanner@example.edu" || len(got.To) != 1 || got.To[0] != "a@example.com" {
		t.Fatalf("envelope %q -> %v", got.From, got.To)
	}
	data := string(got.Data)
	if !strings.HasSuffix(data, body) || !strings.HasPrefix(data, "Received: ") {
		t.Fatalf("not byte for byte plus Received:\n%q", data)
	}
	added := strings.TrimSuffix(data, body)
	for _, l := range strings.Split(strings.TrimSuffix(added, "\r\n"), "\r\n") {
		if !strings.HasPrefix(l, "Received: ") && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			t.Errorf("edge added more than a Received header: %q", l)
		}
	}
	if !strings.Contains(added, id) {
		t.Errorf("Received header %q lacks the queue id %s", added, id)
	}

	// 2. A refused recipient: an NDR from <> reaches the sender's MX.
	send(t, e.smtp, []string{"nobody@example.com"}, "From: scanner@example.edu\r\nSubject: scan 2\r\n\r\nx\r\n")
	ndr := w.ndrMX.Wait(t, 1, 10*time.Second)[0]
	if ndr.From != "" || ndr.To[0] != "scanner@example.edu" {
		t.Fatalf("NDR envelope %q -> %v", ndr.From, ndr.To)
	}
	m, err := mail.ReadMessage(bytes.NewReader(ndr.Data))
	if err != nil {
		t.Fatal(err)
	}
	_, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	mr := multipart.NewReader(m.Body, params["boundary"])
	mr.NextPart()
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(p2)
	for _, want := range []string{"Reporting-MTA: dns; edge.e2e.example.edu", "Final-Recipient: rfc822; nobody@example.com",
		"Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.example.com", "Diagnostic-Code: smtp; 550 5.1.1 User unknown"} {
		if !bytes.Contains(status, []byte(want)) {
			t.Errorf("NDR delivery-status lacks %q:\n%s", want, status)
		}
	}

	// 3. Queue tools against the running daemon.
	later := send(t, e.smtp, []string{"later@example.com"}, "From: scanner@example.edu\r\nSubject: scan 3\r\n\r\nx\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.queueCmd(t, "list"), "451 4.2.0 Try later") {
		if time.Now().After(deadline) {
			t.Fatalf("deferred message not listed:\n%s", e.queueCmd(t, "list"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := e.queueCmd(t, "show", later); !strings.Contains(out, "Subject: scan 3") || !strings.Contains(out, "History:") {
		t.Errorf("queue show:\n%s", out)
	}
	sessions := w.rcptMX.Sessions()
	e.queueCmd(t, "retry", later)
	for w.rcptMX.Sessions() == sessions {
		if time.Now().After(deadline) {
			t.Fatal("queue retry did not cause an attempt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var out string
	for time.Now().Before(deadline) {
		cmd := exec.Command(binary, "queue", "-config", e.cfgPath, "delete", later)
		b, err := cmd.CombinedOutput()
		if out = string(b); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // 409 while an attempt runs
	}
	if !strings.Contains(out, "deleted") {
		t.Fatalf("queue delete: %s", out)
	}
	if l := e.queueCmd(t, "list"); strings.Contains(l, later) {
		t.Errorf("deleted message still listed:\n%s", l)
	}

	// 4. Metrics.
	resp, err := http.Get("http://" + e.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"postern_edge_recipients_delivered_total", "postern_edge_recipients_bounced_total",
		"postern_edge_queue_messages", "postern_edge_dns_cache_hit_ratio", "postern_edge_delivery_latency_seconds_bucket"} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// 5. The device's sender cannot receive NDRs: the next NDR fails, the
	// device is suspended and refused (the intake answers 550 5.7.1 at MAIL
	// or RCPT).
	refuseSender.Store(true)
	send(t, e.smtp, []string{"nobody@example.com"}, "From: scanner@example.edu\r\nSubject: scan 4\r\n\r\nx\r\n")
	deadline = time.Now().Add(15 * time.Second)
	for {
		c, err := dial(t, e.smtp, 10)
		if err != nil {
			t.Fatal(err)
		}
		c.hello()
		r, _ := c.cmd("MAIL FROM:<scanner@example.edu>")
		if strings.HasPrefix(r, "250") {
			r, _ = c.cmd("RCPT TO:<a@example.com>")
		}
		c.conn.Close()
		if strings.HasPrefix(r, "550 5.7.1") && strings.Contains(r, "suspended") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device not suspended after an undeliverable NDR; last RCPT reply %q\n%s", r, e.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Suspension survives a restart.
	e.stop()
	e.start()
	c, _ := dial(t, e.smtp, 10)
	c.hello()
	r, _ := c.cmd("MAIL FROM:<scanner@example.edu>")
	if strings.HasPrefix(r, "250") {
		r, _ = c.cmd("RCPT TO:<a@example.com>")
	}
	if !strings.HasPrefix(r, "550 5.7.1") {
		t.Errorf("suspension lost over restart: %q", r)
	}
	c.conn.Close()
}

// TestKillDuringDelivery kills the edge with SIGKILL while the MX is in
// the middle of receiving a message; after a restart the message is
// delivered (no loss; a duplicate would be acceptable).
func TestKillDuringDelivery(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	w.rcptMX.SetBehaviour(deliverytest.Behaviour{Delay: 3 * time.Second})
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()
	body := "From: scanner@example.edu\r\nSubject: interrupted\r\n\r\nbody\r\n"
	send(t, e.smtp, []string{"a@example.com"}, body)
	deadline := time.Now().Add(10 * time.Second)
	for w.rcptMX.Sessions() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("delivery never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.kill()
	w.rcptMX.SetBehaviour(deliverytest.Behaviour{})
	e.start()
	got := w.rcptMX.Wait(t, 1, 15*time.Second)
	if !strings.HasSuffix(string(got[0].Data), body) {
		t.Fatalf("delivered %q", got[0].Data)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(e.queueCmd(t, "list"), "queue is empty") {
		if time.Now().After(deadline) {
			t.Fatalf("queue not empty:\n%s", e.queueCmd(t, "list"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkDeliveryThroughput measures one edge binary taking b.N 10 KB
// messages from 8 concurrent device connections and delivering them to a
// loopback MX. It reports the accept rate (accept-msgs/s: until the last
// durable 250), the end-to-end rate (msgs/s: from the first send to the
// last message received by the MX; intake, fsync, queue and delivery all
// included), and the edge's peak RSS (VmHWM) over the run.
func BenchmarkDeliveryThroughput(b *testing.B) {
	w := newDeliveryWorld(b, nil)
	smtpAddr, pid := startEdgeTB(b, w.dns.Addr, w.config(""))
	line := strings.Repeat("0123456789", 7) + "\r\n" // 72 bytes
	body := "From: scanner@example.edu\r\nTo: a@example.com\r\nSubject: bench\r\n\r\n" + strings.Repeat(line, 10240/len(line))
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuTime(pid)
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial(b, smtpAddr, 10)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.conn.Close()
			if err := c.hello(); err != nil {
				b.Error(err)
				return
			}
			for next.Add(1) <= int64(b.N) {
				if r, err := c.transaction("scanner@example.edu", []string{"a@example.com"}, body); err != nil || !strings.HasPrefix(r, "250") {
					b.Errorf("send: %q %v", r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	w.rcptMX.Wait(b, b.N, 5*time.Minute)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accept-msgs/s")
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	// CPU per message is steadier than rates on a shared machine.
	b.ReportMetric(float64(cpuTime(pid)-cpu0)/float64(time.Millisecond)/float64(b.N), "edge-cpu-ms/msg")
	b.ReportMetric(float64(peakRSS(pid))/(1<<20), "peak-RSS-MiB")
}

// benchConfig is the edge configuration of the benchmarks (see
// newEdgeConfig for its verbs): warnings only, default policy limits.
const benchConfig = `hostname = "edge.bench.example.edu"
data_dir = %q
[log]
level = "warn"
[smtp]
listen = [%q]
local_networks = ["127.0.0.0/25"]
affiliated_domains = ["example.edu"]
max_message_size = 1048576
[dns]
resolvers = [%q]
[admin]
listen = %q
%s`

// startEdgeTB runs the binary with benchConfig and returns its SMTP
// address and pid; it is killed when tb ends.
func startEdgeTB(tb testing.TB, dnsAddr, extra string) (string, int) {
	e := newEdgeConfig(tb, benchConfig, dnsAddr, extra)
	e.start()
	return e.smtp, e.cmd.Process.Pid
}

// cpuTime is the user+system CPU time pid has used (0 if unknown).
func cpuTime(pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which is in parentheses): utime and
	// stime are the 12th and 13th of them, in clock ticks (100 per second).
	i := strings.LastIndexByte(string(st), ')')
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// peakRSS is the peak resident set (VmHWM) of pid in bytes (0 if unknown).
func peakRSS(pid int) int64 { return max(testkit.ProcStatusKiB(pid, "VmHWM"), 0) << 10 }
