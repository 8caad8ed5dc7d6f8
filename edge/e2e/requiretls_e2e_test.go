package e2e

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

// TestREQUIRETLSThroughBinary: a device that asks for REQUIRETLS over
// STARTTLS has its message accepted and kept queued (451 4.7.30, shown
// by queue show) while the recipients' MX neither authenticates nor
// offers REQUIRETLS; nothing reaches that MX. REQUIRETLS in plaintext is
// refused.
func TestREQUIRETLSThroughBinary(t *testing.T) {
	w := newDeliveryWorld(t, nil)
	e := newEdge(t, w.dns.Addr, w.config(""))
	e.start()

	c, err := dial(t, e.smtp, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.hello(); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.cmd("MAIL FROM:<scanner@example.edu> REQUIRETLS"); !strings.HasPrefix(r, "530 5.7.10") {
		t.Fatalf("REQUIRETLS in plaintext: %q", r)
	}
	if r, _ := c.cmd("STARTTLS"); !strings.HasPrefix(r, "220") {
		t.Fatalf("STARTTLS: %q", r)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	if r, _ := c.cmd("EHLO device.example.edu"); !strings.Contains(r, "REQUIRETLS") {
		t.Fatalf("EHLO inside TLS lacks REQUIRETLS: %q", r)
	}
	if r, _ := c.cmd("MAIL FROM:<scanner@example.edu> REQUIRETLS"); !strings.HasPrefix(r, "250") {
		t.Fatalf("MAIL REQUIRETLS: %q", r)
	}
	if r, _ := c.cmd("RCPT TO:<a@example.com>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("RCPT: %q", r)
	}
	if r, _ := c.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %q", r)
	}
	if _, err := c.conn.Write([]byte("From: scanner@example.edu\r\nSubject: confidential\r\n\r\nx\r\n.\r\n")); err != nil {
		t.Fatal(err)
	}
	r, _ := c.reply()
	id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as ")
	if !ok {
		t.Fatalf("not queued: %q", r)
	}
	c.cmd("QUIT")

	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out = e.queueCmd(t, "show", id)
		if strings.Contains(out, "4.7.30") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 4.7.30 deferral in queue show:\n%s", out)
		}
	}
	if !strings.Contains(out, "REQUIRETLS:") || !strings.Contains(out, "REQUIRETLS: mx.example.com is not authenticated") {
		t.Errorf("queue show lacks the REQUIRETLS state or reason:\n%s", out)
	}
	if n := len(w.rcptMX.Messages()); n != 0 {
		t.Errorf("the MX received %d message(s) of a REQUIRETLS message", n)
	}
}
