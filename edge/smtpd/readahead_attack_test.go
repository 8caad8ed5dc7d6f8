package smtpd

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
)

// padTo returns hdr followed by CRLF-clean filler lines so that the
// result is exactly n bytes long (n must leave room for one short line).
func padTo(hdr string, n int) string {
	var b strings.Builder
	b.WriteString(hdr)
	line := strings.Repeat("p", 70) + "\r\n"
	for b.Len()+len(line) <= n-8 {
		b.WriteString(line)
	}
	if rest := n - b.Len(); rest > 0 {
		b.WriteString(strings.Repeat("q", rest-2) + "\r\n")
	}
	return b.String()
}

// TestSmugglingAtReadBoundaries: the ambiguous end-of-data sequences,
// each followed by a complete second transaction, placed so that they
// straddle the boundaries where the intake's reads split the stream:
// go-smtp's 4 KiB bufio, the 32 KiB read-ahead and the first 16 KiB
// message buffer. Whatever the split, only a CRLF.CRLF ends the message,
// a message with a bare line end is refused, nothing of the smuggled
// transaction is stored, and the session stays in sync.
func TestSmugglingAtReadBoundaries(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	hdr := "From: a@example.edu\r\nSubject: s\r\n\r\n"
	seqs := map[string]string{
		"CRLF . LF":      "\r\n.\n",
		"LF . LF":        "\n.\n",
		"LF . CRLF":      "\n.\r\n",
		"CRLF . CR":      "\r\n.\r",
		"CR . CRLF":      "\r.\r\n",
		"CRLF . CR CRLF": "\r\n.\r\r\n",
	}
	boundaries := []int{4 << 10, 16 << 10, readAheadSize, readAheadSize + 4<<10}
	stored := 0
	for name, seq := range seqs {
		for _, b := range boundaries {
			for shift := -len(seq); shift <= 1; shift++ {
				t.Run(fmt.Sprintf("%s at %d%+d", name, b, shift), func(t *testing.T) {
					before := e.count()
					c := e.dial(20)
					c.hello()
					c.expect("MAIL FROM:<a@example.edu>", "250")
					c.expect("RCPT TO:<x@example.edu>", "250")
					c.expect("DATA", "354")
					p := padTo(hdr, b+shift) + seq + smuggled + "\r\n.\r\nNOOP\r\n"
					c.send(p)
					r := c.reply()
					switch {
					case strings.HasPrefix(r, "250"):
						_, data := e.spooled(queued(t, r))
						checkNoBare(t, data)
						stored++
					case strings.HasPrefix(r, "5"):
					default:
						t.Fatalf("reply %q", r)
					}
					// The pipelined NOOP gets its own answer: nothing of the
					// message was taken as a command, nothing was lost.
					if r := c.reply(); !strings.HasPrefix(r, "250") {
						t.Fatalf("pipelined NOOP: %q", r)
					}
					c.expect("NOOP", "250")
					c.conn.Close()
					if e.count() > before+1 {
						t.Fatalf("payload produced %d messages", e.count()-before)
					}
				})
			}
		}
	}
	checkSmuggling(t, e, stored)
}

// TestReadAheadSTARTTLSInjection: a message larger than go-smtp's 4 KiB
// buffer, so that the read-ahead holds what follows it, with STARTTLS and
// an injected transaction pipelined behind its final dot in the same
// write (a man in the middle adding plaintext after STARTTLS,
// CVE-2011-0411). Wherever the buffer boundaries fall, nothing of the
// injected plaintext is executed inside TLS: either the handshake fails
// on it, or the first reply inside TLS answers the client's EHLO and no
// transaction is open; and no injected message is stored.
func TestReadAheadSTARTTLSInjection(t *testing.T) {
	e := startEdge(t, edgeOpts{cfg: relaxed})
	inject := "MAIL FROM:<evil@example.edu>\r\nRCPT TO:<victim@example.edu>\r\nDATA\r\n" +
		"From: evil@example.edu\r\n\r\ninjected\r\n.\r\n"
	hdr := "From: a@example.edu\r\nSubject: s\r\n\r\n"
	tail := ".\r\nSTARTTLS\r\n"
	handshakes := 0
	for _, end := range []int{8 << 10, readAheadSize} {
		// The STARTTLS line ends before, at and after a boundary, so the
		// injected bytes lie in go-smtp's buffer, in the read-ahead, or
		// across both.
		for _, shift := range []int{-len(inject) - 1, -len(inject) / 2, -4, 0, 1, 40} {
			t.Run(fmt.Sprintf("%d%+d", end, shift), func(t *testing.T) {
				before := e.count()
				c := e.dial(20)
				c.hello()
				c.expect("MAIL FROM:<a@example.edu>", "250")
				c.expect("RCPT TO:<x@example.edu>", "250")
				c.expect("DATA", "354")
				c.send(padTo(hdr, end+shift-len(tail)) + tail + inject)
				queued(t, c.reply())
				if r := c.reply(); !strings.HasPrefix(r, "220") {
					t.Fatalf("STARTTLS: %q", r)
				}
				tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
				if err := tc.Handshake(); err == nil {
					handshakes++
					c.conn = tc
					c.r.Reset(tc)
					if r := c.cmd("EHLO device.example.edu"); !strings.HasPrefix(r, "250-") || !strings.Contains(r, "PIPELINING") {
						t.Fatalf("first TLS reply is not the EHLO reply: %q", r)
					}
					c.expect("RCPT TO:<x@example.edu>", "502")
				}
				c.conn.Close()
				if got := e.count() - before; got != 1 {
					t.Fatalf("%d messages stored, want the one sent before STARTTLS", got)
				}
			})
		}
	}
	checkSmuggling(t, e, 12)
	t.Logf("%d of 12 handshakes succeeded", handshakes)
}
