package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/shared/dnstest"
)

// bounceWorld: the organisation's MX (example.edu, 127.0.0.3) knows only
// a@ and scanner@ and refuses every other mailbox; the victim's MX
// (example.com, 127.0.0.2) must never receive anything.
type bounceWorld struct {
	dns      *dnstest.Server
	port     int
	victimMX *deliverytest.Sink
	orgMX    *deliverytest.Sink

	mu      sync.Mutex
	orgRcpt []string // every RCPT the organisation's MX was offered
}

func newBounceWorld(t *testing.T) *bounceWorld {
	w := &bounceWorld{dns: dnstest.Start(t)}
	w.dns.AddA("scanner.example.edu", "127.0.0.10")
	w.dns.AddPTR("127.0.0.10", "scanner.example.edu")
	w.dns.AddMX("example.com", 10, "mx.example.com")
	w.dns.AddA("mx.example.com", "127.0.0.2")
	w.dns.AddMX("example.edu", 10, "mx.example.edu")
	w.dns.AddA("mx.example.edu", "127.0.0.3")
	w.port = deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3")
	w.victimMX = deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", w.port), Name: "mx.example.com"})
	w.orgMX = deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.3:%d", w.port), Name: "mx.example.edu",
		Behaviour: deliverytest.Behaviour{Rcpt: func(a string) *smtp.SMTPError {
			w.mu.Lock()
			w.orgRcpt = append(w.orgRcpt, a)
			w.mu.Unlock()
			if strings.HasPrefix(a, "a@") || strings.HasPrefix(a, "scanner@") {
				return nil
			}
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such mailbox"}
		}}})
	return w
}

func (w *bounceWorld) offered(addr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.orgRcpt {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// TestRelayByBounceThroughBinary: the relay-by-bounce attack against the
// real binary with delivery running. An unregistered client without PTR
// asks for MAIL FROM:<victim@example.com> RET=FULL to a mailbox the
// organisation's MX refuses: the edge refuses at MAIL (550 5.7.1) and no
// message, and no NDR, ever reaches the victim's MX. The same client with
// an affiliated sender gets its mail accepted and its NDR delivered
// inside the organisation (the path the attack needed works, and stays
// inside). A registered device using a sender outside its list may send
// inside, its NDR goes to that (affiliated) sender, and the failed NDR
// does not suspend the device.
func TestRelayByBounceThroughBinary(t *testing.T) {
	w := newBounceWorld(t)
	e := newEdge(t, w.dns.Addr, fmt.Sprintf(`
[[devices]]
name = "scanner.example.edu"
senders = ["scanner@example.edu"]
[delivery]
mx_port = %d
connect_timeout = "1s"
command_timeout = "5s"
retry_min = "1h"
retry_max = "2h"
`, w.port))
	e.start()
	payload := "From: Boss <victim@example.com>\r\nTo: victim@example.com\r\nSubject: you won\r\n\r\nspam spam spam\r\n"

	c, err := dial(t, e.smtp, 20) // unregistered, no PTR
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{
		"<victim@example.com> RET=FULL", "<victim@EXAMPLE.COM> RET=HDRS", "<victim@example.com@example.edu>",
		`<"victim@example.com"@example.edu>`, "<victim@ｅｘａｍｐｌｅ.com>",
	} {
		r, err := c.cmd("MAIL FROM:" + from)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r, "550 5.7.1") && !strings.HasPrefix(r, "553 5.1.7") {
			t.Errorf("MAIL FROM:%s = %q, want a 5xx at MAIL", from, r)
		}
		if strings.HasPrefix(from, "<victim@example.com> RET=FULL") && !strings.Contains(r, "https://postern.example.edu/register") {
			t.Errorf("refusal does not say how to register: %q", r)
		}
		if r, _ := c.cmd("RCPT TO:<nosuch@example.edu>"); strings.HasPrefix(r, "250") {
			t.Errorf("RCPT accepted after the refused MAIL FROM:%s", from)
		}
		c.cmd("RSET")
	}
	// Control: the same client with an affiliated sender.
	if r, err := c.cmd("MAIL FROM:<a@example.edu> RET=FULL"); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("affiliated sender: %q %v", r, err)
	}
	if r, err := c.cmd("RCPT TO:<nosuch@example.edu>"); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("affiliated recipient: %q %v", r, err)
	}
	if r, err := c.cmd("DATA"); err != nil || !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %q %v", r, err)
	}
	c.conn.Write([]byte(payload + ".\r\n"))
	if r, err := c.reply(); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("affiliated message: %q %v", r, err)
	}
	c.cmd("QUIT")

	// A registered device with a sender outside its list.
	d, err := dial(t, e.smtp, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer d.conn.Close()
	if err := d.hello(); err != nil {
		t.Fatal(err)
	}
	if r, _ := d.cmd("MAIL FROM:<victim@example.com> RET=FULL"); !strings.HasPrefix(r, "550 5.7.1") {
		t.Errorf("device with an outside unlisted sender: %q", r)
	}
	d.cmd("RSET")
	if r, err := d.transaction("nobody@example.edu", []string{"nosuch@example.edu"}, "From: nobody@example.edu\r\nSubject: x\r\n\r\nx\r\n"); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("device, unlisted affiliated sender: %q %v", r, err)
	}

	// Both NDRs are generated and offered inside the organisation; the
	// one to nobody@ is refused, which must not suspend the device.
	w.orgMX.Wait(t, 1, 20*time.Second) // the NDR to a@example.edu
	deadline := time.Now().Add(20 * time.Second)
	for !w.offered("nobody@example.edu") {
		if time.Now().After(deadline) {
			t.Fatal("the NDR to nobody@example.edu was never attempted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ndrs := w.orgMX.Messages()
	if len(ndrs) != 1 || ndrs[0].From != "" || len(ndrs[0].To) != 1 || ndrs[0].To[0] != "a@example.edu" {
		t.Fatalf("organisation's MX received %+v, want one NDR to a@example.edu", ndrs)
	}
	time.Sleep(time.Second) // a failed NDR would suspend now
	if r, err := d.transaction("scanner@example.edu", []string{"x@example.com"}, "From: scanner@example.edu\r\nSubject: y\r\n\r\ny\r\n"); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("device suspended (or refused) after a bounce for a sender outside its list: %q %v", r, err)
	}
	w.victimMX.Wait(t, 1, 20*time.Second) // the device's own message
	time.Sleep(time.Second)
	for _, m := range w.victimMX.Messages() {
		if m.From != "scanner@example.edu" {
			t.Errorf("RELAY BY BOUNCE: the victim's MX received %q -> %v", m.From, m.To)
		}
		for _, to := range m.To {
			if strings.HasPrefix(to, "victim@") {
				t.Errorf("RELAY BY BOUNCE: mail for %s reached the victim's MX", to)
			}
		}
	}
	if n := len(w.victimMX.Messages()); n != 1 {
		t.Errorf("victim's MX received %d messages, want only the device's own one", n)
	}
}
