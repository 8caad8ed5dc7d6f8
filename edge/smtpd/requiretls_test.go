package smtpd

import (
	"crypto/tls"
	"strings"
	"testing"
)

// REQUIRETLS (RFC 8689) is advertised only inside TLS, refused with
// 530 5.7.10 on a plaintext connection, and stored with the message
// when given over TLS.
func TestREQUIRETLSAtIntake(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(10)
	if ehlo := c.hello(); strings.Contains(ehlo, "REQUIRETLS") {
		t.Errorf("REQUIRETLS advertised without TLS:\n%s", ehlo)
	}
	if r := c.cmd("MAIL FROM:<scanner@example.edu> REQUIRETLS"); !strings.HasPrefix(r, "530 5.7.10") {
		t.Errorf("REQUIRETLS without TLS: %q, want 530 5.7.10", r)
	}
	id := queued(t, c.sendMail("scanner@example.edu", []string{"x@gmail.com"}, message("plain")))
	if env, _ := e.spooled(id); env.RequireTLS {
		t.Error("a message without REQUIRETLS is marked")
	}

	c.expect("STARTTLS", "220")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	if ehlo := c.expect("EHLO device.example.edu", "250"); !strings.Contains(ehlo, "REQUIRETLS") {
		t.Errorf("REQUIRETLS not advertised inside TLS:\n%s", ehlo)
	}
	if r := c.cmd("MAIL FROM:<scanner@example.edu> REQUIRETLS"); !strings.HasPrefix(r, "250") {
		t.Fatalf("MAIL REQUIRETLS over TLS: %q", r)
	}
	c.expect("RCPT TO:<x@gmail.com>", "250")
	c.expect("DATA", "354")
	c.send(message("requiretls") + ".\r\n")
	id = queued(t, c.reply())
	if env, _ := e.spooled(id); !env.RequireTLS {
		t.Error("REQUIRETLS not stored with the message")
	}
}
