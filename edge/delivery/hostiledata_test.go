package delivery

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startDataHostile is a raw TCP MX that answers EHLO, MAIL and RCPT
// normally and, after its 354 to DATA, hands the connection to after
// (which returns at the latest when the test ends). It counts sessions.
func startDataHostile(t *testing.T, addr string, after func(c net.Conn, r *bufio.Reader, quit <-chan struct{})) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var sessions atomic.Int64
	done, quit := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(quit); ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sessions.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				say := func(s string) { c.Write([]byte(s + "\r\n")) }
				say("220 hostile.example.com ESMTP")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.Fields(l + " x")[0]) {
					case "EHLO", "HELO":
						say("250-hostile.example.com\r\n250 PIPELINING")
					case "MAIL", "RSET":
						say("250 2.1.0 ok")
					case "RCPT":
						say("250 2.1.5 ok")
					case "DATA":
						say("354 go on")
						after(c, r, quit)
						return
					case "QUIT":
						say("221 bye")
						return
					default:
						say("502 5.5.2 no")
					}
				}
			}()
		}
	}()
	return &sessions
}

// bigJob is a job whose message is far larger than the socket buffers
// of a loopback connection, so that a server that does not read it
// blocks the client's writes.
func bigJob() *Job {
	j := job("a@example.com")
	line := strings.Repeat("y", 76) + "\r\n"
	j.Data = []byte(msg + strings.Repeat(line, (32<<20)/len(line)))
	return j
}

// TestHostileMXDuringBatchedWrite: a remote MX misbehaving while the
// client writes the message in batches. Whatever it does, the attempt
// ends (at the latest with its context), is a temporary failure, and
// the connection is not kept for reuse: the next message opens a session
// of its own.
func TestHostileMXDuringBatchedWrite(t *testing.T) {
	cases := map[string]func(c net.Conn, _ *bufio.Reader, quit <-chan struct{}){
		// Never reads the message and never answers.
		"never reads": func(c net.Conn, _ *bufio.Reader, quit <-chan struct{}) { <-quit },
		// Answers at once with a megabyte of continuation lines, then
		// waits without reading.
		"early huge reply": func(c net.Conn, _ *bufio.Reader, quit <-chan struct{}) {
			chunk := []byte("250-" + strings.Repeat("z", 60) + "\r\n")
			for range (1 << 20) / len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
			c.Write([]byte("250 ok\r\n"))
			<-quit
		},
		// Refuses at once and hangs up while the message is being sent.
		"early refusal and close": func(c net.Conn, _ *bufio.Reader, quit <-chan struct{}) {
			c.Write([]byte("554 5.7.1 go away\r\n"))
		},
	}
	for name, after := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.dns.AddMX("example.com", 10, "mx.example.com")
			w.dns.AddA("mx.example.com", "127.0.0.5")
			sessions := startDataHostile(t, fmt.Sprintf("127.0.0.5:%d", w.port), after)
			c := w.client(func(o *Options) { o.ConnIdle = time.Minute })
			defer c.Close()
			for i := range 2 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				out := c.Deliver(ctx, bigJob())
				cancel()
				r := out.Results[0]
				if r.Status != Temporary {
					t.Fatalf("attempt %d: %v (%d %s %q), want temporary", i, r.Status, r.Code, r.Enhanced, r.Text)
				}
				if len(r.Text) > MaxReplyText {
					t.Errorf("kept %d bytes of text", len(r.Text))
				}
				t.Logf("attempt %d: %d %s %q", i, r.Code, r.Enhanced, r.Text)
			}
			if got := sessions.Load(); got != 2 {
				t.Errorf("%d sessions for two attempts, want 2 (a failed connection is never reused)", got)
			}
		})
	}
}

// startIdleTimeoutMX is a raw TCP MX that accepts messages and, after
// each one, ends the connection the way go-smtp and Postfix end an idle
// one: a 421 4.4.2 reply, then close. The reply is waiting when the
// client next uses the connection. It counts sessions and messages.
func startIdleTimeoutMX(t *testing.T, addr string) (sessions, messages *atomic.Int64) {
	t.Helper()
	messages = new(atomic.Int64)
	sessions = startDataHostile(t, addr, func(c net.Conn, r *bufio.Reader, _ <-chan struct{}) {
		for {
			d, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if d == ".\r\n" {
				break
			}
		}
		messages.Add(1)
		c.Write([]byte("250 2.0.0 queued\r\n"))
		c.Write([]byte("421 4.4.2 hostile.example.com Idle timeout, bye bye\r\n"))
	})
	return sessions, messages
}

// TestReuseAfterServerIdleTimeout: a cached connection that the server
// has meanwhile ended with 421 (its idle timeout) is not a failed
// attempt: the message goes over a new connection and is delivered.
func TestReuseAfterServerIdleTimeout(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx.example.com")
	w.dns.AddA("mx.example.com", "127.0.0.5")
	sessions, messages := startIdleTimeoutMX(t, fmt.Sprintf("127.0.0.5:%d", w.port))
	c := w.client(func(o *Options) { o.ConnIdle = time.Minute })
	defer c.Close()
	for i := range 3 {
		expect(t, deliver(t, c, job(fmt.Sprintf("r%d@example.com", i))), Delivered)
	}
	if s, m := sessions.Load(), messages.Load(); m != 3 || s != 3 {
		t.Errorf("%d sessions and %d messages, want 3 of each", s, m)
	}
}

// TestWriteStallEndsAttempt: a server that accepts DATA and then stops
// reading fills the socket buffers while the message is written. The
// write deadline of the batching wrapper (the command timeout) ends the
// attempt as a temporary failure; it does not wait for the attempt's
// context, which here is far longer.
func TestWriteStallEndsAttempt(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx.example.com")
	w.dns.AddA("mx.example.com", "127.0.0.5")
	startDataHostile(t, fmt.Sprintf("127.0.0.5:%d", w.port), func(c net.Conn, _ *bufio.Reader, quit <-chan struct{}) { <-quit })
	c := w.client(func(o *Options) { o.CommandTimeout = 300 * time.Millisecond })
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := c.Deliver(ctx, bigJob())
	if err := ctx.Err(); err != nil {
		t.Fatalf("the attempt ended only with its context (%v): no write deadline while the message was sent", err)
	}
	if r := out.Results[0]; r.Status != Temporary {
		t.Fatalf("%v (%d %s %q), want temporary", r.Status, r.Code, r.Enhanced, r.Text)
	}
}
