package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// smuggledTxn is a second transaction an attacker hopes a downstream
// server would read as a message of its own, sent from the edge's address.
const smuggledTxn = "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
	"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nwire the money\r\n"

// TestAdversarialSmugglingThroughBinary runs the smuggling payloads that
// the intake does not refuse (they carry no bare line end by the time they
// are stored) all the way through the real binary to a loopback MX: over
// DATA, the ".\r" that go-smtp's dot-unstuffing swallows; over BDAT, an
// embedded CRLF.CRLF followed by a whole second transaction. The MX must
// receive exactly one message per acknowledged submission, from the
// device's sender, CRLF-clean, and never the smuggled one.
func TestAdversarialSmugglingThroughBinary(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()
	hdr := "From: scanner@example.edu\r\nTo: a@example.com\r\nSubject: s\r\n\r\nhello"

	c, err := dial(t, e.smtp, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	acked := 0
	// 1. DATA: "\r\n.\r\r\n.\r\n" — a lenient reader might end the
	// message at ".\r\r\n" or at the CRLF.CRLF inside; the edge reads on.
	r, err := c.transaction("scanner@example.edu", []string{"a@example.com"}, hdr+"\r\n.\r\r\n.\r\n"+smuggledTxn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(r, "250") {
		acked++
	} else if !strings.HasPrefix(r, "5") {
		t.Fatalf("DATA payload: %q", r)
	}
	// 2. BDAT: an embedded end-of-data and a second transaction.
	chunk := hdr + "\r\n.\r\n" + smuggledTxn + ".\r\n"
	for _, l := range []string{"MAIL FROM:<scanner@example.edu>", "RCPT TO:<a@example.com>"} {
		if r, err := c.cmd(l); err != nil || !strings.HasPrefix(r, "250") {
			t.Fatalf("%s: %q %v", l, r, err)
		}
	}
	if _, err := c.conn.Write([]byte(fmt.Sprintf("BDAT %d LAST\r\n", len(chunk)))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := c.conn.Write([]byte(chunk)); err != nil {
		t.Fatal(err)
	}
	if r, err := c.reply(); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("BDAT: %q %v", r, err)
	}
	acked++
	// 3. The connection is still in step: this is a command, answered.
	if r, err := c.cmd("NOOP"); err != nil || !strings.HasPrefix(r, "250") {
		t.Fatalf("NOOP after payloads: %q %v", r, err)
	}

	w.rcptMX.Wait(t, acked, 15*time.Second)
	time.Sleep(time.Second) // a smuggled extra message would arrive now
	got := w.rcptMX.Messages()
	if len(got) != acked {
		t.Fatalf("MX received %d messages for %d acknowledged submissions", len(got), acked)
	}
	for _, m := range got {
		if m.From != "scanner@example.edu" || len(m.To) != 1 || m.To[0] != "a@example.com" {
			t.Errorf("SMUGGLED envelope at the MX: %q -> %v", m.From, m.To)
		}
		d := string(m.Data)
		if strings.Count(d, "\n") != strings.Count(d, "\r\n") || strings.Count(d, "\r") != strings.Count(d, "\r\n") {
			t.Errorf("MX received bare CR/LF: %q", d)
		}
		if !strings.Contains(d, "MAIL FROM:<ceo@example.com>") {
			t.Errorf("the would-be second message is not inside the first: %q", d)
		}
	}
	for _, m := range w.ndrMX.Messages() {
		t.Errorf("unexpected message at the sender's MX: %q -> %v", m.From, m.To)
	}
}

// TestAdversarialOpenRelayThroughBinary: relay tricks from an unregistered
// client and from a client whose PTR names the registered device without
// a matching A record, against the real binary with delivery running:
// nothing may reach the outside MX.
func TestAdversarialOpenRelayThroughBinary(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	w.dns.AddPTR("127.0.0.21", "scanner.example.edu") // forward mismatch
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()
	tricks := []string{
		"<u%example.com@example.edu>", "<example.com!u@example.edu>", `<"u@example.com"@example.edu>`,
		"<u@example.com@example.edu>", "<@example.edu:u@example.com>", "<u@[127.0.0.2]>",
		"<u@[IPv6:::ffff:127.0.0.2]>", "<u@example.com.>", "<u@EXAMPLE.COM>", "<u@example.edu.example.com>",
		"<u@exаmple.edu>", "<u@xn--exmple-cua.edu>", "<u@example.com\x00.example.edu>", "u@example.com",
		"<u@example.com> NOTIFY=NEVER", `<"u\"@example.com"@example.edu>`,
	}
	for _, src := range []int{20, 21} {
		for _, tr := range tricks {
			// One connection per trick: refusals count towards
			// smtp.max_errors, which would end a shared one.
			c, err := dial(t, e.smtp, src)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.hello(); err != nil {
				t.Fatal(err)
			}
			if r, err := c.cmd("MAIL FROM:<scanner@example.edu>"); err != nil || !strings.HasPrefix(r, "250") {
				t.Fatalf("MAIL: %q %v", r, err)
			}
			r, err := c.cmd("RCPT TO:" + tr)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(r, "250") {
				// Accepted: it must be for the affiliated domain; send it
				// and let the MX check below tell.
				c.cmd("DATA")
				c.conn.Write([]byte("From: scanner@example.edu\r\n\r\nx\r\n.\r\n"))
				c.reply()
			}
			c.conn.Close()
		}
	}
	time.Sleep(2 * time.Second)
	if got := w.rcptMX.Messages(); len(got) != 0 {
		for _, m := range got {
			t.Errorf("OPEN RELAY: outside MX received %q -> %v", m.From, m.To)
		}
	}
}
