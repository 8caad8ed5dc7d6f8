package mailer_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/central/mailer"
)

// sink is a real go-smtp server on loopback that keeps what it receives.
type sink struct {
	mu   sync.Mutex
	msgs []msg
	deny string // refuse this recipient
}

type msg struct {
	from, to string
	data     string
}

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }

type session struct {
	s        *sink
	from, to string
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error { x.from = from; return nil }
func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == x.s.deny {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	x.to = to
	return nil
}
func (x *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, msg{x.from, x.to, string(b)})
	x.s.mu.Unlock()
	return nil
}
func (x *session) Reset()        {}
func (x *session) Logout() error { return nil }

func startSink(t *testing.T) (*sink, string) {
	s := &sink{deny: "nobody@example.edu"}
	srv := smtp.NewServer(s)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s, ln.Addr().String()
}

func TestSend(t *testing.T) {
	s, addr := startSink(t)
	m := &mailer.Mailer{Addr: addr, From: "postern@example.edu", Clock: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }}
	if err := m.Send(context.Background(), "scanner@dept.example.edu", "Confirm scanner@dept.example.edu — Postern", "Open\nhttps://x/confirm?t=abc\n"); err != nil {
		t.Fatal(err)
	}
	if len(s.msgs) != 1 {
		t.Fatalf("got %d messages", len(s.msgs))
	}
	got := s.msgs[0]
	for _, want := range []string{"From: postern@example.edu\r\n", "To: scanner@dept.example.edu\r\n", "Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n",
		"Subject: =?utf-8?q?", "Auto-Submitted: auto-generated\r\n", "\r\n\r\nOpen\r\nhttps://x/confirm?t=abc\r\n"} {
		if !strings.Contains(got.data, want) {
			t.Errorf("message lacks %q:\n%s", want, got.data)
		}
	}
	if got.from != "postern@example.edu" || got.to != "scanner@dept.example.edu" {
		t.Errorf("envelope %s -> %s", got.from, got.to)
	}
}

func TestSendErrors(t *testing.T) {
	_, addr := startSink(t)
	m := &mailer.Mailer{Addr: addr, From: "postern@example.edu"}
	if err := m.Send(context.Background(), "nobody@example.edu", "s", "b"); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("refused recipient: %v", err)
	}
	if err := m.Send(context.Background(), "a@b\r\nBcc: x@y", "s", "b"); err == nil {
		t.Error("header injection accepted")
	}
	auth := &mailer.Mailer{Addr: addr, From: "postern@example.edu", Username: "u", Password: "p"}
	if err := auth.Send(context.Background(), "x@example.edu", "s", "b"); err == nil || !strings.Contains(err.Error(), "in the clear") {
		t.Errorf("password over plain text: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	if err := (&mailer.Mailer{Addr: dead, From: "a@b.c"}).Send(context.Background(), "x@example.edu", "s", "b"); err == nil {
		t.Error("send to closed port succeeded")
	}
}

// TestNoInjection: control characters in the subject or body never reach
// the relay (no extra headers, no bare CR, no smuggled SMTP lines).
func TestNoInjection(t *testing.T) {
	s, addr := startSink(t)
	m := &mailer.Mailer{Addr: addr, From: "postern@example.edu"}
	cases := []struct{ subject, body string }{
		{"Confirm\r\nBcc: victim@example.org", "b"},
		{"Confirm\nX-Evil: 1", "b"},
		{"Confirm\x00", "b"},
		{"s", "line\rQUIT\r"},
		{"s", "line\r\n.\r\nMAIL FROM:<x@y>\r\n"[:6] + "\x1b"},
		{"s", "line\u2028two"},
	}
	for _, c := range cases {
		if err := m.Send(context.Background(), "scanner@dept.example.edu", c.subject, c.body); err == nil {
			t.Errorf("Send(%q, %q) accepted", c.subject, c.body)
		}
	}
	if err := m.Send(context.Background(), "scanner@dept.example.edu", "s", "one\r\ntwo\n\tthree\n"); err != nil {
		t.Errorf("plain multi-line body refused: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) != 1 {
		t.Errorf("%d messages reached the relay, want 1", len(s.msgs))
	}
}
