// Package notifytest is a real SMTP server (go-smtp) on loopback that keeps
// the messages it receives, for tests of central's mail.
package notifytest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one received message.
type Message struct {
	From, To string
	Data     string
}

// Subject is the message's Subject header (as sent).
func (m Message) Subject() string {
	for _, l := range strings.Split(m.Data, "\r\n") {
		if v, ok := strings.CutPrefix(l, "Subject: "); ok {
			return v
		}
		if l == "" {
			break
		}
	}
	return ""
}

// Body is the message body with CRLF turned into LF.
func (m Message) Body() string {
	_, b, _ := strings.Cut(m.Data, "\r\n\r\n")
	return strings.ReplaceAll(b, "\r\n", "\n")
}

// Sink is the server.
type Sink struct {
	// Addr is its host:port.
	Addr string
	mu   sync.Mutex
	msgs []Message
	fail bool
}

// Start starts a sink closed with the test.
func Start(t testing.TB) *Sink {
	t.Helper()
	s := &Sink{}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// Fail makes the sink refuse every message (451) until called with false.
func (s *Sink) Fail(on bool) { s.mu.Lock(); s.fail = on; s.mu.Unlock() }

// Messages returns what was received so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// To returns the messages received for one recipient.
func (s *Sink) To(addr string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if strings.EqualFold(m.To, addr) {
			out = append(out, m)
		}
	}
	return out
}

// Wait waits up to d for at least n messages and returns them.
func (s *Sink) Wait(t testing.TB, n int, d time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := s.Messages()
		if len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type backend struct{ s *Sink }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: b.s}, nil }

type session struct {
	s        *Sink
	from, to string
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error { x.from = from; return nil }
func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error   { x.to = to; return nil }
func (x *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if x.s.fail {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	x.s.msgs = append(x.s.msgs, Message{x.from, x.to, string(b)})
	return nil
}
func (x *session) Reset()        {}
func (x *session) Logout() error { return nil }
