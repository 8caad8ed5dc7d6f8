package e2e

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// documentedMetrics returns every postern_edge_* metric named in the
// README files.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile("`(postern_edge_[a-z_]+)`")
	seen := map[string]bool{}
	var names []string
	for _, p := range []string{"../../README.md", "../../deploy/README.md"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				names = append(names, m[1])
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("only %d metrics documented: %v", len(names), names)
	}
	return names
}

// scrapeMetrics sums each metric's samples over its labels; a histogram is
// summed as its _count.
func scrapeMetrics(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		if h, ok := strings.CutSuffix(name, "_count"); ok {
			out[h] += v
		}
		out[name] += v
	}
	return out
}

// TestMetricsMoveThroughBinary sends real SMTP traffic through the edge
// binary — delivered, bounced (with an NDR), deferred and refused mail, a
// client whose reverse DNS fails, and a destination whose resolver fails
// after its MX answer expired (served stale) — and checks on the real admin
// /metrics endpoint that every metric the README names is there and has
// moved.
func TestMetricsMoveThroughBinary(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	w.dns.AddRR("short.example.org. 1 IN MX 10 mx.example.com.")
	w.dns.SetRcode(dnstestReverse12, 0, dns.RcodeServerFailure)
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()

	before := scrapeMetrics(t, e.admin)
	if before["postern_edge_messages_received_total"] != 0 {
		t.Fatalf("received before any mail: %v", before["postern_edge_messages_received_total"])
	}

	send(t, e.smtp, []string{"a@example.com"}, "From: scanner@example.edu\r\nSubject: m1\r\n\r\nx\r\n")
	send(t, e.smtp, []string{"nobody@example.com"}, "From: scanner@example.edu\r\nSubject: m2\r\n\r\nx\r\n")
	send(t, e.smtp, []string{"later@example.com"}, "From: scanner@example.edu\r\nSubject: m3\r\n\r\nx\r\n")
	w.rcptMX.Wait(t, 1, 10*time.Second)
	w.ndrMX.Wait(t, 1, 10*time.Second)

	other := func(src int, from string, rcpt []string, want string) {
		t.Helper()
		c, err := dial(t, e.smtp, src)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if err := c.hello(); err != nil {
			t.Fatal(err)
		}
		r, err := c.transaction(from, rcpt, "From: "+from+"\r\nSubject: o\r\n\r\nx\r\n")
		if err != nil || !strings.HasPrefix(r, want) {
			t.Fatalf("from 127.0.0.%d %s -> %v: %q %v, want %s", src, from, rcpt, r, err, want)
		}
	}
	// Unregistered client, outside recipient: refused.
	other(20, "someone@example.edu", []string{"x@gmail.com"}, "550 5.7.1")
	// Reverse DNS SERVFAIL: a DNS error; affiliated mail is still taken.
	other(12, "someone@example.edu", []string{"x@example.edu"}, "250")
	// A destination whose MX was looked up once, then its resolver fails
	// after the 1 s TTL: the stale MX answer keeps delivery going.
	send(t, e.smtp, []string{"a@short.example.org"}, "From: scanner@example.edu\r\nSubject: s1\r\n\r\nx\r\n")
	w.rcptMX.Wait(t, 2, 10*time.Second)
	w.dns.SetRcode("short.example.org", 0, dns.RcodeServerFailure)
	time.Sleep(1500 * time.Millisecond)
	send(t, e.smtp, []string{"b@short.example.org"}, "From: scanner@example.edu\r\nSubject: s2\r\n\r\nx\r\n")
	w.rcptMX.Wait(t, 3, 10*time.Second)

	// Wait for the deferral of later@ to be counted.
	var after map[string]float64
	deadline := time.Now().Add(15 * time.Second)
	for {
		after = scrapeMetrics(t, e.admin)
		if after["postern_edge_recipients_deferred_total"] > 0 && after["postern_edge_recipients_bounced_total"] > 0 &&
			after["postern_edge_recipients_delivered_total"] >= 4 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, name := range documentedMetrics(t) {
		v, ok := after[name]
		// Counters and histograms must have grown, gauges be above 0.
		counter := strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_age_seconds")
		switch {
		case !ok:
			t.Errorf("%s is documented but not exported", name)
		case counter && v <= before[name]:
			t.Errorf("counter %s did not move (before %v, after %v)", name, before[name], v)
		case !counter && v <= 0:
			t.Errorf("gauge %s is %v after traffic", name, v)
		}
	}
	if got := after["postern_edge_messages_received_total"]; got != 6 {
		t.Errorf("messages_received_total %v, want 6 (5 from the device, 1 affiliated)", got)
	}
}

// dnstestReverse12 is the reverse name of 127.0.0.12.
const dnstestReverse12 = "12.0.0.127.in-addr.arpa"
