package smtpd

import (
	"crypto/tls"
	"github.com/postern/postern/shared/tlsinfo"
	"net/netip"
	"strings"
	"time"
)

type receivedInfo struct {
	Helo     string
	Name     string // FCrDNS-confirmed name, if any
	IP       netip.Addr
	By       string
	TLS      *tls.ConnectionState
	UTF8     bool
	ID       string
	For      string // only when the message has exactly one recipient
	Date     time.Time
	Protocol string // "ESMTP"
}

// receivedHeader builds the trace header of RFC 5321 §4.4:
//
//	Received: from HELO (NAME [IP])
//		by HOSTNAME (Postern) with ESMTPS (TLS1.3 TLS_AES_128_GCM_SHA256)
//		id QUEUEID
//		for <rcpt>; DATE
//
// The "with" keyword follows RFC 3848 (ESMTPS when TLS was used) and RFC
// 6531 (UTF8SMTP/UTF8SMTPS). Client-supplied text (HELO) is reduced to
// characters that cannot break the header.
func receivedHeader(ri receivedInfo) []byte {
	var b strings.Builder
	b.WriteString("Received: from ")
	helo := cleanToken(ri.Helo)
	if helo == "" {
		helo = "unknown"
	}
	b.WriteString(helo)
	b.WriteString(" (")
	if ri.Name != "" {
		b.WriteString(cleanToken(ri.Name))
		b.WriteString(" ")
	}
	b.WriteString("[")
	if ri.IP.Is6() && !ri.IP.Is4In6() {
		b.WriteString("IPv6:")
	}
	b.WriteString(ri.IP.Unmap().String())
	b.WriteString("])\r\n\tby ")
	b.WriteString(cleanToken(ri.By))
	b.WriteString(" (Postern) with ")
	proto := ri.Protocol
	if proto == "" {
		proto = "ESMTP"
	}
	if ri.UTF8 {
		proto = "UTF8SMTP"
	}
	if ri.TLS != nil {
		proto += "S"
	}
	b.WriteString(proto)
	if ri.TLS != nil {
		b.WriteString(" (")
		b.WriteString(tlsinfo.Describe(ri.TLS))
		b.WriteString(")")
	}
	b.WriteString("\r\n\tid ")
	b.WriteString(ri.ID)
	if ri.For != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(cleanToken(ri.For))
		b.WriteString(">")
	}
	b.WriteString("; ")
	b.WriteString(ri.Date.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return []byte(b.String())
}

// cleanToken keeps printable characters other than the comment and
// address delimiters; everything else becomes '?'.
func cleanToken(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x21 || r == 0x7f, r == '(', r == ')', r == '<', r == '>', r == ';', r == '[' || r == ']', r == '\\':
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
