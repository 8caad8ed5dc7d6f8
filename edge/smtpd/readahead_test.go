package smtpd

import (
	"strings"
	"testing"
)

// TestReadAheadKeepsPipelinedInput: a message larger than the read-ahead
// buffer, with the next transaction pipelined behind its final dot in the
// same write, is stored exactly, and the pipelined commands are answered
// in order: what the read-ahead fetched past the message is handed on to
// go-smtp as if it still waited in the socket.
func TestReadAheadKeepsPipelinedInput(t *testing.T) {
	e := startEdge(t, edgeOpts{})
	c := e.dial(21)
	c.hello()
	c.expect("MAIL FROM:<scanner@example.edu>", "250")
	c.expect("RCPT TO:<x@example.edu>", "250")
	c.expect("DATA", "354")
	var b strings.Builder
	b.WriteString("From: Device <scanner@example.edu>\r\nTo: x@example.edu\r\nSubject: big\r\nMessage-ID: <big@example.edu>\r\n\r\n")
	for i := 0; b.Len() < readAheadSize+8<<10; i++ {
		if i%7 == 0 {
			b.WriteString("..a line that starts with a dot\r\n")
		}
		b.WriteString("0123456789012345678901234567890123456789012345678901234567890123456789\r\n")
	}
	big := b.String()
	c.send(big + ".\r\nMAIL FROM:<scanner@example.edu>\r\nRCPT TO:<x@example.edu>\r\nDATA\r\n")
	id1 := queued(t, c.reply())
	for _, want := range []string{"250", "250", "354"} {
		if r := c.reply(); !strings.HasPrefix(r, want) {
			t.Fatalf("pipelined command: got %q, want %s", r, want)
		}
	}
	small := message("after")
	c.send(small + ".\r\n")
	id2 := queued(t, c.reply())
	unstuff := func(s string) string { return strings.ReplaceAll(s, "\r\n..", "\r\n.") }
	for _, m := range []struct{ id, sent string }{{id1, big}, {id2, small}} {
		_, data := e.spooled(m.id)
		if !strings.HasSuffix(data, unstuff(m.sent)) || len(data)-len(unstuff(m.sent)) > 1<<10 {
			t.Errorf("%s: stored %d bytes, want the %d sent after a Received header", m.id, len(data), len(unstuff(m.sent)))
		}
	}
	c.expect("QUIT", "221")
}
