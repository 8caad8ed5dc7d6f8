package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	central "github.com/postern/postern/central/config"
	edge "github.com/postern/postern/edge/config"
)

// TestDevDefaultsStayOnLoopback: a dev run must not send a packet beyond
// loopback, so both programs' -dev defaults resolve at devlab and send
// mail to its sink.
func TestDevDefaultsStayOnLoopback(t *testing.T) {
	e, c := edge.Default(true), central.Default(true)
	checks := []struct{ key, got, want string }{
		{"edge dns.resolvers", strings.Join(e.DNS.Resolvers, ","), defaultDNS},
		{"edge delivery.smarthost", e.Delivery.Smarthost, defaultSMTP},
		{"central dns.resolvers", strings.Join(c.DNS.Resolvers, ","), defaultDNS},
		{"central mail.smarthost", c.Mail.Smarthost, defaultSMTP},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %q under -dev, want devlab's %q", ck.key, ck.got, ck.want)
		}
	}
}

// TestZone asks the running DNS server (UDP and TCP) every kind of name
// the dev run depends on, and checks that nothing outside the dev zone
// resolves.
func TestZone(t *testing.T) {
	d, err := startDNS("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  string // the answer's data, "" for none
	}{
		{"example.edu", dns.TypeMX, dns.RcodeSuccess, "mx.example.edu."},
		{"mx.example.edu", dns.TypeA, dns.RcodeSuccess, "127.0.0.1"},
		{"SCANNER.example.edu.", dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
		{"2.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, "scanner.example.edu."},
		{"copier.example.edu", dns.TypeA, dns.RcodeSuccess, "127.0.0.3"},
		{"3.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, "copier.example.edu."},
		{"scanner.example.edu", dns.TypeAAAA, dns.RcodeSuccess, ""}, // NODATA
		{"example.com", dns.TypeMX, dns.RcodeSuccess, "mx.example.com."},
		{"mx.example.com", dns.TypeA, dns.RcodeSuccess, "127.0.0.1"},
		{"deep.sub.example.org", dns.TypeMX, dns.RcodeSuccess, "mx.example.org."},
		{"notexample.com", dns.TypeMX, dns.RcodeNameError, ""},
		{"gmail.com", dns.TypeMX, dns.RcodeNameError, ""},
		{"www.google.com", dns.TypeA, dns.RcodeNameError, ""},
		{"unknown.example.edu", dns.TypeA, dns.RcodeNameError, ""},
		{"1.0.0.127.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, ""},
	}
	for _, net := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: net}
		for _, tc := range tests {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(tc.name), tc.qtype)
			r, _, err := c.Exchange(m, d.Addr())
			if err != nil {
				t.Fatalf("%s %s: %v", net, tc.name, err)
			}
			if r.Rcode != tc.rcode {
				t.Errorf("%s %s %s: rcode %s, want %s", net, tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			got := ""
			if len(r.Answer) > 0 {
				f := strings.Fields(r.Answer[0].String())
				got = f[len(f)-1]
			}
			if got != tc.want {
				t.Errorf("%s %s %s: answer %q, want %q", net, tc.name, dns.TypeToString[tc.qtype], got, tc.want)
			}
			if got == "" && len(r.Ns) == 0 {
				t.Errorf("%s %s: negative answer without SOA", net, tc.name)
			}
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestSink sends over real SMTP: accepted messages are saved numbered on
// from what is already there, with the envelope in front; bounce*
// recipients get 550 5.1.1.
func TestSink(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "7.eml"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	s, err := startSink("127.0.0.1:0", dir, &out, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())

	msg := "From: scanner@example.edu\r\nSubject: hi\r\n\r\nbody\r\n"
	if err := send(t, s.Addr(), "", []string{"scanner@example.edu"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "8.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Return-Path: <>\r\nDelivered-To: scanner@example.edu\r\n" + msg; string(got) != want {
		t.Errorf("saved %q, want %q", got, want)
	}
	if l := out.String(); !strings.Contains(l, "sink: got message from <> to scanner@example.edu, saved "+filepath.Join(dir, "8.eml")) {
		t.Errorf("log line: %q", l)
	}

	err = send(t, s.Addr(), "scanner@example.edu", []string{"bounce-me@example.com"}, strings.NewReader(msg))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("bounce recipient: %v, want 550 5.1.1", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "9.eml")); err == nil {
		t.Error("refused message was saved")
	}
}

// send is one plain-text SMTP transaction (go-smtp's SendMail insists on
// STARTTLS, which the sink does not offer).
func send(t *testing.T, addr, from string, to []string, r io.Reader) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.SendMail(from, to, r)
}
