package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

// sendFrom submits one message over SMTP from the local address src.
func sendFrom(t *testing.T, src, addr, from, to string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		t.Fatalf("RCPT %s: %v", to, err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: scan\r\n\r\npage\r\n", from, to)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Quit()
}

// An edge with a real host name counts the TLS results of a registered
// device's mail, not those of an unregistered client's (mail to an
// affiliated domain, which it does relay), and sends a report as its own
// mail through its queue, from its affiliated postmaster.
func TestTLSRPTWiring(t *testing.T) {
	zone := dnstest.Start(t)
	zone.AddA("scanner.example.edu", "127.0.0.10")
	zone.AddPTR("127.0.0.10", "scanner.example.edu")
	zone.AddMX("example.com", 10, "mx.example.com")
	zone.AddA("mx.example.com", "127.0.0.2")
	zone.AddMX("example.edu", 10, "mx.example.edu")
	zone.AddA("mx.example.edu", "127.0.0.3")
	port := deliverytest.SharedPort(t, "127.0.0.2", "127.0.0.3")
	ext := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", port), Name: "mx.example.com"})
	inside := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.3:%d", port), Name: "mx.example.edu"})

	cfg := config.Default(false)
	cfg.Hostname = "edge1.example.edu"
	cfg.DataDir = t.TempDir()
	smtpAddr := testkit.FreeAddr(t, "127.0.0.1")
	cfg.SMTP.Listen = []string{smtpAddr}
	cfg.SMTP.LocalNetworks = []string{"127.0.0.0/8"}
	cfg.SMTP.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	cfg.Admin.Listen = ""
	cfg.DNS.Resolvers = []string{zone.Addr}
	cfg.Delivery.MXPort = port
	cfg.Delivery.MTASTS = false
	cfg.Devices = []config.Device{{Name: "scanner.example.edu", Senders: []string{"scanner@example.edu"}, Status: "active"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := Build(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if e.TLSRPT == nil {
		t.Fatal("TLS reports off for an edge with a real host name")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sendFrom(t, "127.0.0.10", smtpAddr, "scanner@example.edu", "someone@example.com")
	ext.Wait(t, 1, 10*time.Second)
	testkit.WaitFor(t, 5*time.Second, "device mail counted", func() bool {
		_, f := e.TLSRPT.Totals(time.Now(), "example.com")
		return f == 1 // the sink offers no STARTTLS: starttls-not-supported
	})
	sendFrom(t, "127.0.0.20", smtpAddr, "someone@example.edu", "colleague@example.edu") // unregistered, affiliated
	inside.Wait(t, 1, 10*time.Second)
	time.Sleep(100 * time.Millisecond)
	if s, f := e.TLSRPT.Totals(time.Now(), "example.edu"); s+f != 0 {
		t.Errorf("an unregistered client's mail was counted: %d/%d", s, f)
	}

	if err := e.queueReport(ctx, "postmaster@edge1.example.edu", "tlsrpt@example.com", []byte("Subject: report\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	msgs := ext.Wait(t, 2, 10*time.Second)
	if m := msgs[1]; m.From != "postmaster@edge1.example.edu" || strings.Join(m.To, ",") != "tlsrpt@example.com" {
		t.Errorf("report delivered %s -> %v", m.From, m.To)
	}
	if _, f := e.TLSRPT.Totals(time.Now(), "example.com"); f != 1 {
		t.Errorf("the report's own delivery was counted (%d failures)", f)
	}
}
