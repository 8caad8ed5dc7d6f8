package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/shared/dnstest"
)

// TestAdversarialBouncesThroughBinary runs the two bounce attacks against
// the edge binary with real SMTP on both sides:
//
//  1. Relay by bounce: an unregistered client (no PTR) sends
//     MAIL FROM:<victim@example.com> RET=FULL to an affiliated mailbox
//     that does not exist. Intake may refuse the MAIL; if it accepts,
//     the organisation's MX refuses the recipient and the edge must
//     not mail the payload to the victim inside an NDR.
//  2. Suspension by anyone: the registered device, whose sender list is
//     [scanner@example.edu], sends as nobody@example.edu to a mailbox that
//     does not exist. Its NDR to nobody@ is refused for the address, but
//     the device must stay active: the sender was not its own.
func TestAdversarialBouncesThroughBinary(t *testing.T) {
	d := dnstest.Start(t)
	d.AddA("scanner.example.edu", "127.0.0.10")
	d.AddPTR("127.0.0.10", "scanner.example.edu")
	// The attacker, 127.0.0.20, has no PTR record (NXDOMAIN).
	d.AddMX("example.com", 10, "mx.example.com")
	d.AddA("mx.example.com", "127.0.0.2")
	d.AddMX("example.edu", 10, "mx.example.edu")
	d.AddA("mx.example.edu", "127.0.0.3")
	port := deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3")
	victim := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", port), Name: "mx.example.com"})
	org := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.3:%d", port), Name: "mx.example.edu",
		Behaviour: deliverytest.Behaviour{Rcpt: func(a string) *smtp.SMTPError {
			if strings.HasPrefix(a, "nosuch@") || strings.HasPrefix(a, "nobody@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		}}})
	e := newEdge(t, d.Addr, fmt.Sprintf(`
[[devices]]
name = "scanner.example.edu"
senders = ["scanner@example.edu"]

[delivery]
mx_port = %d
connect_timeout = "1s"
command_timeout = "5s"
retry_min = "1h"
`, port))
	e.start()

	payload := "From: victim@example.com\r\nTo: nosuch@example.edu\r\nSubject: buy now\r\n\r\nSPAM PAYLOAD\r\n"
	c, err := dial(t, e.smtp, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	r, _ := c.cmd("MAIL FROM:<victim@example.com> RET=FULL")
	accepted := strings.HasPrefix(r, "250")
	if accepted {
		if r, _ = c.cmd("RCPT TO:<nosuch@example.edu>"); strings.HasPrefix(r, "250") {
			c.cmd("DATA")
			c.conn.Write([]byte(payload + ".\r\n"))
			r, _ = c.reply()
		}
		accepted = strings.HasPrefix(r, "250")
	}
	c.cmd("QUIT")
	c.conn.Close()
	t.Logf("attack 1: intake answered %q", r)
	if !accepted && !strings.HasPrefix(r, "5") {
		t.Fatalf("relay-by-bounce attempt answered %q, want a 250 or a 5xx", r)
	}

	// Attack 2, from the registered device.
	c, err = dial(t, e.smtp, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	r, err = c.transaction("nobody@example.edu", []string{"nosuch@example.edu"}, "From: nobody@example.edu\r\nSubject: x\r\n\r\nx\r\n")
	c.cmd("QUIT")
	c.conn.Close()
	if err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("device with an affiliated sender outside its list to an affiliated mailbox: %q %v", r, err)
	}
	// Its NDR to nobody@ is tried and refused.
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(e.logText(), "NDR undeliverable; no device suspended") {
		if time.Now().After(deadline) {
			t.Fatalf("the NDR to nobody@ was never refused; log:\n%s", e.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := victim.Sessions(); n != 0 {
		t.Fatalf("the victim's MX saw %d sessions: relay by bounce", n)
	}
	if accepted && !strings.Contains(e.logText(), "report not sent") {
		t.Errorf("attack 1 accepted but no dropped report logged")
	}
	if strings.Contains(e.logText(), "NDR undeliverable: device suspended") {
		t.Fatalf("the device was suspended by a sender outside its list; log:\n%s", e.logText())
	}
	// The device still relays outside with its own sender.
	c, err = dial(t, e.smtp, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	r, err = c.transaction("scanner@example.edu", []string{"a@example.com"}, "From: scanner@example.edu\r\nSubject: y\r\n\r\ny\r\n")
	c.cmd("QUIT")
	c.conn.Close()
	if err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("device refused after the attack: %q %v", r, err)
	}
	victim.Wait(t, 1, 10*time.Second)
	t.Logf("org MX sessions %d; the device's own mail reached example.com", org.Sessions())
}

// TestReinstatementThroughBinaries: an edge's local suspension (its NDR
// to the device's registered sender was refused for the address) holds
// across later snapshots and is lifted when staff reinstate the device in
// central, through the reinstatement epoch the snapshot carries.
func TestReinstatementThroughBinaries(t *testing.T) {
	var refuseSender atomic.Bool
	w := newDeliveryWorld(t, &refuseSender)
	c := startCentral(t, w.dns.Addr)
	e := enrolledEdge(t, c, "e1", w.dns.Addr, fmt.Sprintf(`
[delivery]
mx_port = %d
connect_timeout = "1s"
command_timeout = "5s"
retry_min = "1h"
[sync]
heartbeat_interval = "1s"
`, w.port))
	c.cli("device", "register", "-name", "scanner.example.edu", "-ip", "127.0.0.10", "-owner", "Ada Lovelace",
		"-department", "Physics", "-contact", "ada@example.edu", "-sender", "scanner@example.edu", "-purpose", "scan to mail")
	c.cli("device", "approve", "scanner.example.edu", "-force", "-reason", "e2e")
	relays := func() string {
		if r := probe(t, e.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "250") {
			return r
		}
		return ""
	}
	eventually(t, 10*time.Second, "edge relays for the approved device", relays)

	refuseSender.Store(true)
	send(t, e.smtp, []string{"nobody@example.com"}, "From: scanner@example.edu\r\nSubject: bounce\r\n\r\nx\r\n")
	eventually(t, 15*time.Second, "edge suspends the device", func() string {
		if r := probe(t, e.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "550 5.7.1") {
			return r
		}
		return ""
	})
	refuseSender.Store(false)
	// A change that produces a new snapshot without reinstating (another
	// device approved) leaves the suspension in force.
	c.cli("device", "register", "-name", "other.example.edu", "-owner", "Grace Hopper",
		"-contact", "grace@example.edu", "-sender", "other@example.edu", "-purpose", "e2e")
	c.cli("device", "approve", "other.example.edu", "-force", "-reason", "e2e")
	time.Sleep(2 * time.Second)
	if r := probe(t, e.smtp, 10, "scanner@example.edu", "a@example.com"); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("suspension lifted without a reinstatement: %q", r)
	}
	out := c.cli("device", "show", "scanner.example.edu")
	t.Logf("central after the edge's report: %s", firstLine(out, "status"))
	if strings.Contains(out, "suspended") {
		c.cli("device", "reinstate", "scanner.example.edu", "-reason", "sender mailbox fixed")
	} else {
		// Central kept it active (a suspension request): suspending and
		// reinstating is how staff lift an edge's local suspension.
		c.cli("device", "suspend", "scanner.example.edu", "-reason", "lift local suspension")
		c.cli("device", "reinstate", "scanner.example.edu", "-reason", "sender mailbox fixed")
	}
	d := eventually(t, 10*time.Second, "edge relays again after the reinstatement", relays)
	t.Logf("reinstate -> relaying again on the edge: %v", d)
}

func firstLine(s, containing string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), containing) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
