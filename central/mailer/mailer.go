// Package mailer sends central's own mail (sender confirmation links, owner
// notices) through the configured relay, mail.smarthost, with go-smtp's
// client. It uses STARTTLS whenever the relay offers it and authenticates
// (PLAIN) only over TLS. A message is sent when Send returns nil: the relay
// has accepted it with 250 after DATA.
package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mailer sends through one relay.
type Mailer struct {
	// Addr is the relay's host:port (mail.smarthost).
	Addr     string
	From     string
	Username string
	Password string
	// Hello is the EHLO name (default "localhost").
	Hello   string
	Timeout time.Duration // whole conversation; default 30s
	// TLS overrides the STARTTLS configuration (tests).
	TLS *tls.Config
	// Clock gives the Date header; nil = time.Now.
	Clock func() time.Time
}

// Send mails a text/plain message to one recipient.
func (m *Mailer) Send(ctx context.Context, to, subject, body string) error {
	if strings.ContainsAny(to, "\r\n<>") || strings.ContainsAny(m.From, "\r\n<>") || hasControl(to, false) || hasControl(m.From, false) {
		return fmt.Errorf("mailer: bad address %q", to)
	}
	// No header injection through the subject, no bare CR or other
	// control characters in the body (they would make extra lines or
	// headers, or smuggle SMTP commands past the relay).
	if hasControl(subject, false) {
		return errors.New("mailer: control character in the subject")
	}
	if hasControl(strings.ReplaceAll(body, "\r\n", "\n"), true) {
		return errors.New("mailer: control character or bare CR in the body")
	}
	timeout := m.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := func() (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", m.Addr)
		if err != nil {
			return nil, fmt.Errorf("mailer: connect to %s: %w", m.Addr, err)
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		return conn, nil
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	c := smtp.NewClient(conn)
	defer func() { c.Close() }()
	hello := m.Hello
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return fmt.Errorf("mailer: EHLO to %s: %w", m.Addr, err)
	}
	tlsOn := false
	if ok, _ := c.Extension("STARTTLS"); ok {
		// go-smtp starts TLS only on a fresh client: reconnect with it.
		_ = c.Quit()
		c.Close()
		cfg := m.TLS
		if cfg == nil {
			host, _, _ := net.SplitHostPort(m.Addr)
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		conn, err := dial()
		if err != nil {
			return err
		}
		if c, err = smtp.NewClientStartTLS(conn, cfg); err != nil {
			conn.Close()
			c = smtp.NewClient(conn)
			return fmt.Errorf("mailer: STARTTLS with %s: %w", m.Addr, err)
		}
		tlsOn = true
	}
	if m.Username != "" {
		if !tlsOn {
			return errors.New("mailer: relay offers no STARTTLS; refusing to send the password in the clear")
		}
		if err := c.Auth(sasl.NewPlainClient("", m.Username, m.Password)); err != nil {
			return fmt.Errorf("mailer: AUTH at %s: %w", m.Addr, err)
		}
	}
	if err := c.Mail(m.From, nil); err != nil {
		return fmt.Errorf("mailer: MAIL FROM at %s: %w", m.Addr, err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return fmt.Errorf("mailer: RCPT TO %s at %s: %w", to, m.Addr, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mailer: DATA at %s: %w", m.Addr, err)
	}
	if _, err := w.Write(m.compose(to, subject, body)); err != nil {
		return fmt.Errorf("mailer: writing message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mailer: message refused by %s: %w", m.Addr, err)
	}
	_ = c.Quit()
	return nil
}

// hasControl reports control characters; body allows LF and tab.
func hasControl(s string, body bool) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		if body && (r == '\n' || r == '\t') {
			return false
		}
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
	})
}

func (m *Mailer) compose(to, subject, body string) []byte {
	now := time.Now
	if m.Clock != nil {
		now = m.Clock
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	domain := "localhost"
	if i := strings.LastIndexByte(m.From, '@'); i >= 0 {
		domain = m.From[i+1:]
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", m.From)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", subject))
	fmt.Fprintf(&b, "Date: %s\r\n", now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(id), domain)
	b.WriteString("Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	for _, line := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
