package delivery

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// hostileMX is a raw TCP server that speaks just enough SMTP to reach the
// command named flood, and answers it with lines continuation lines of
// the given reply code (a megabyte by default) before a final line.
type hostileMX struct {
	written atomic.Int64 // bytes of the flood the server managed to write
	done    chan struct{}
}

func startHostile(t *testing.T, addr, flood, code string, lines int, line string) *hostileMX {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileMX{done: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); <-h.done })
	go func() {
		defer close(h.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		w := bufio.NewWriter(c)
		r := bufio.NewReader(c)
		say := func(s string) bool {
			w.WriteString(s + "\r\n")
			return w.Flush() == nil
		}
		floodNow := func() {
			chunk := code + "-" + line + "\r\n"
			for range lines {
				n, err := c.Write([]byte(chunk))
				h.written.Add(int64(n))
				if err != nil {
					return
				}
			}
			c.Write([]byte(code + " end\r\n"))
		}
		if flood == "greeting" {
			floodNow()
			return
		}
		if !say("220 hostile.example.com ESMTP") {
			return
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.Fields(l + " x")[0])
			if cmd == flood {
				floodNow()
				continue
			}
			switch cmd {
			case "EHLO", "HELO":
				say("250 hostile.example.com")
			case "MAIL", "RSET":
				say("250 2.1.0 ok")
			case "RCPT":
				say("250 2.1.5 ok")
			case "DATA":
				say("354 go on")
				for {
					d, err := r.ReadString('\n')
					if err != nil || d == ".\r\n" {
						break
					}
				}
				say("250 2.0.0 queued")
			case "QUIT":
				say("221 bye")
				return
			default:
				say("502 5.5.2 no")
			}
		}
	}()
	return h
}

// TestHostileReplyBounded: a server answering with a megabyte of
// continuation lines (at the greeting, EHLO, RCPT or after DATA) makes
// the client stop reading after MaxReplyBytes / MaxReplyLines; the
// attempt is a temporary failure whose stored text stays small.
func TestHostileReplyBounded(t *testing.T) {
	for _, tc := range []struct {
		flood, code string
	}{
		{"greeting", "220"},
		{"EHLO", "250"},
		{"RCPT", "550"},
		{"DATA", "354"},
	} {
		t.Run(tc.flood, func(t *testing.T) {
			w := newWorld(t)
			w.dns.AddMX("example.com", 10, "mx.example.com")
			w.dns.AddA("mx.example.com", "127.0.0.5")
			line := strings.Repeat("x", 60)
			h := startHostile(t, fmt.Sprintf("127.0.0.5:%d", w.port), tc.flood, tc.code, (1<<20)/len(line), line)
			out := deliver(t, w.client(nil), job("a@example.com"))
			r := out.Results[0]
			if r.Status != Temporary {
				t.Fatalf("status %v (%d %s %q), want temporary", r.Status, r.Code, r.Enhanced, r.Text)
			}
			if !strings.Contains(r.Text, "exceeds 16 KiB") {
				t.Errorf("text %q does not say the reply was too long", r.Text)
			}
			if len(r.Text) > MaxReplyText || len(out.Summary) > MaxReplyText {
				t.Errorf("kept %d / %d bytes of text", len(r.Text), len(out.Summary))
			}
			<-h.done
			t.Logf("server wrote %d of %d flood bytes before the client hung up: %q", h.written.Load(), 1<<20, r.Text)
		})
	}
}

// TestLongReplyTextCut: a reply within the connection bound but with a
// long text keeps its meaning (permanent 5.1.1) and is cut to
// MaxReplyText.
func TestLongReplyTextCut(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx.example.com")
	w.dns.AddA("mx.example.com", "127.0.0.5")
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.5:%d", w.port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Six lines of 900 bytes (450 two-byte characters): go-smtp refuses
	// single lines above 2000 bytes itself.
	long := strings.Repeat("550-5.1.1 "+strings.Repeat("é", 450)+"\r\n", 6)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		fmt.Fprintf(c, "220 mx\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.ToUpper(l[:4]) {
			case "EHLO":
				fmt.Fprintf(c, "250 mx\r\n")
			case "MAIL":
				fmt.Fprintf(c, "250 ok\r\n")
			case "RCPT":
				fmt.Fprintf(c, "%s550 5.1.1 no such user\r\n", long)
			default:
				fmt.Fprintf(c, "221 bye\r\n")
				return
			}
		}
	}()
	out := deliver(t, w.client(func(o *Options) { o.ConnIdle = -1 }), job("a@example.com"))
	r := out.Results[0]
	if r.Status != Permanent || r.Enhanced != "5.1.1" {
		t.Fatalf("result %+v", r)
	}
	if len(r.Text) > MaxReplyText || !utf8.ValidString(r.Text) || !strings.HasSuffix(r.Text, "...") {
		t.Errorf("text of %d bytes (valid UTF-8: %v) %q", len(r.Text), utf8.ValidString(r.Text), r.Text[len(r.Text)-10:])
	}
}
