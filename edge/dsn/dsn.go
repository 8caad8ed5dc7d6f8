// Package dsn builds delivery status notifications (RFC 3464): the
// non-delivery reports (NDRs) and delay warnings the edge returns to a
// message's sender.
//
// A report is a multipart/report; report-type=delivery-status message with
// three parts: a human-readable text/plain explanation (what failed, why,
// and the remote server's reply), a machine-readable
// message/delivery-status part (Reporting-MTA, Arrival-Date, and per
// recipient Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code),
// and the returned content: the original header section as
// text/rfc822-headers, or the whole message as message/rfc822 when the
// sender asked for RET=FULL and the message is small enough.
//
// Build is deterministic: the same Report gives the same bytes (the MIME
// boundary and Message-ID derive from the report's fields), so the output
// can be compared with golden files. The package does no I/O; the queue
// runner decides when a report is due and spools it from the null sender.
package dsn

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/postern/postern/shared/oneline"
	"github.com/postern/postern/shared/smtpstatus"
	"sort"
	"strings"
	"time"
)

// Action is the per-recipient Action field (RFC 3464 §2.3.3).
type Action string

// Actions the edge reports.
const (
	Failed  Action = "failed"
	Delayed Action = "delayed"
	// Relayed: delivered to a next hop that does not pass notifications
	// on (RFC 3461 §5.2.2); sent to recipients that asked NOTIFY=SUCCESS.
	Relayed Action = "relayed"
)

// MaxFullReturn is the largest original message returned whole for
// RET=FULL; a larger one is returned as headers only (as Postfix's
// bounce_size_limit does), so an NDR never approaches size limits.
const MaxFullReturn = 256 << 10

// MaxReturnedHeaders bounds the header section returned when the whole
// message is not: it is cut after the last complete line within the
// bound (and the text part says so), so a message with a huge header
// section, or none at all, never makes a huge report.
const MaxReturnedHeaders = 32 << 10

// Recipient is one recipient the report is about.
type Recipient struct {
	// Addr is the envelope recipient we tried (Final-Recipient).
	Addr string
	// ORCPT is the original recipient as given at RCPT ("rfc822;addr"),
	// reported as Original-Recipient when set.
	ORCPT string
	// Action is Failed or Delayed.
	Action Action
	// Status is the RFC 3463 code, e.g. "5.1.1".
	Status smtpstatus.Code
	// RemoteMTA is the host name of the server that answered; empty when
	// the failure happened before any server answered (DNS, connection).
	RemoteMTA string
	// Code and Reply are the remote server's reply, when there was one;
	// Reply is also the local explanation when there was none.
	Code  int
	Reply string
	// LastAttempt is when delivery to the recipient was last tried.
	LastAttempt time.Time
	// WillRetryUntil is when the edge gives up (delay warnings only).
	WillRetryUntil time.Time
	// Expired marks a recipient given up on because the queue lifetime
	// ran out (the reply is then the last temporary error).
	Expired bool
}

// Report is everything a DSN needs.
type Report struct {
	// ReportingMTA is the edge's host name (Reporting-MTA, the From domain
	// and the Message-ID domain).
	ReportingMTA string
	// QueueID is the original message's queue id (named in the text and
	// in X-Postern-Queue-ID, to help operators find it in the logs).
	QueueID string
	// To is the original envelope sender, who gets the report.
	To string
	// EnvelopeID is the ENVID the sender gave at MAIL (RFC 3461), echoed
	// as Original-Envelope-Id.
	EnvelopeID string
	// Return is the RET parameter: "FULL" returns the whole message (up to
	// MaxFullReturn), anything else the header section only.
	Return string
	// ArrivalDate is when the edge accepted the original message.
	ArrivalDate time.Time
	// Date is when the report is made.
	Date time.Time
	// ReceivedFrom names the client that handed the message to the edge
	// (Received-From-MTA), e.g. "scanner1.example.edu" or an IP; optional.
	ReceivedFrom string
	// NextAttempt is when delivery is tried next (delay warnings only;
	// stated in the text part, as RFC 3464 has no field for it).
	NextAttempt time.Time
	// Recipients the report is about; all must have the same Action.
	Recipients []Recipient
	// Original is the original message (header section and body).
	Original []byte
}

// Build returns the report as a complete RFC 5322 message with CRLF line
// ends. It fails when the report has no recipients or mixes actions.
func Build(r *Report) ([]byte, error) {
	if len(r.Recipients) == 0 {
		return nil, fmt.Errorf("dsn: report for %s has no recipients", r.QueueID)
	}
	action := r.Recipients[0].Action
	for _, rc := range r.Recipients {
		if rc.Action != action {
			return nil, fmt.Errorf("dsn: report for %s mixes actions %q and %q", r.QueueID, action, rc.Action)
		}
	}
	if action != Failed && action != Delayed && action != Relayed {
		return nil, fmt.Errorf("dsn: unsupported action %q", action)
	}
	host := r.ReportingMTA
	if host == "" {
		host = "localhost"
	}
	boundary, msgID := r.tokens()
	full := strings.EqualFold(r.Return, "FULL") && len(r.Original) <= MaxFullReturn
	var hdrs []byte
	cut := false
	if !full {
		hdrs, cut = returnedHeaders(r.Original)
	}

	var b bytes.Buffer
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", fmt.Sprintf("Mail Delivery System <MAILER-DAEMON@%s>", host))
	h("To", "<"+r.To+">")
	switch action {
	case Failed:
		h("Subject", "Undelivered Mail Returned to Sender")
	case Delayed:
		h("Subject", "Delayed Mail (still being retried)")
	default:
		h("Subject", "Delivery Status Notification (relayed)")
	}
	h("Date", r.Date.Format(time.RFC1123Z))
	h("Message-ID", "<"+msgID+"@"+host+">")
	h("Auto-Submitted", "auto-replied") // RFC 3834: no auto-replies to this
	if r.QueueID != "" {
		h("X-Postern-Queue-ID", r.QueueID)
	}
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/report; report-type=delivery-status;`+"\r\n\t"+`boundary="`+boundary+`"`)
	b.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n")

	// Part 1: for people.
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	r.writeText(&b, action, host)
	if cut {
		fmt.Fprintf(&b, "\r\nThe returned header section was cut to its first %d KiB.\r\n", MaxReturnedHeaders>>10)
	}

	// Part 2: for programs.
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n")
	r.writeStatus(&b, host)

	// Part 3: the returned content.
	b.WriteString("\r\n--" + boundary + "\r\n")
	if full {
		b.WriteString("Content-Description: Undelivered message\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
		b.Write(crlf(r.Original))
	} else {
		b.WriteString("Content-Description: Undelivered message headers\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
		b.Write(crlf(hdrs))
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// tokens derives the MIME boundary and the Message-ID local part from the
// report, so Build is deterministic and two reports differ.
func (r *Report) tokens() (boundary, msgID string) {
	s := sha256.New()
	fmt.Fprintf(s, "%s\x00%s\x00%s\x00%d\x00", r.QueueID, r.To, r.ReportingMTA, r.Date.UnixNano())
	for _, rc := range r.Recipients {
		fmt.Fprintf(s, "%s\x00%s\x00", rc.Addr, rc.Action)
	}
	sum := hex.EncodeToString(s.Sum(nil))
	return "=_postern_" + sum[:24], r.Date.UTC().Format("20060102150405") + "." + sum[24:40] + ".dsn"
}

func (r *Report) writeText(b *bytes.Buffer, action Action, host string) {
	fmt.Fprintf(b, "This is the mail system at host %s.\r\n\r\n", host)
	switch action {
	case Relayed:
		b.WriteString("Your message was relayed to the recipients below. The next mail\r\n" +
			"system does not support delivery notifications, so this is the last\r\n" +
			"one you will receive for them.\r\n")
	case Failed:
		b.WriteString("I'm sorry to have to inform you that your message could not\r\n" +
			"be delivered to one or more recipients. The details are below.\r\n\r\n" +
			"Nothing more will be attempted for these recipients. If the problem\r\n" +
			"is a wrong address, correct it and send the message again.\r\n")
	default:
		until := ""
		if len(r.Recipients) > 0 && !r.Recipients[0].WillRetryUntil.IsZero() {
			until = " until " + r.Recipients[0].WillRetryUntil.Format(time.RFC1123Z)
		}
		b.WriteString("This is a warning only; you do not need to send the message again.\r\n\r\n" +
			"Your message could not be delivered yet to the recipients below.\r\n" +
			"Delivery will be retried" + until + ".\r\n")
		if !r.NextAttempt.IsZero() {
			b.WriteString("The next attempt is at " + r.NextAttempt.Format(time.RFC1123Z) + ".\r\n")
		}
	}
	if r.QueueID != "" {
		fmt.Fprintf(b, "\r\nQueue ID: %s\r\n", r.QueueID)
	}
	b.WriteString("\r\n")
	for _, rc := range r.Recipients {
		fmt.Fprintf(b, "<%s>: ", rc.Addr)
		if rc.Expired {
			b.WriteString("delivery time expired; last error: ")
		}
		switch {
		case rc.RemoteMTA != "" && rc.Code != 0:
			fmt.Fprintf(b, "host %s said: %d %s", rc.RemoteMTA, rc.Code, oneline.Fold(rc.Reply))
		case rc.Reply != "":
			b.WriteString(oneline.Fold(rc.Reply))
		default:
			fmt.Fprintf(b, "status %s", rc.Status)
		}
		b.WriteString("\r\n")
	}
}

func (r *Report) writeStatus(b *bytes.Buffer, host string) {
	// Per-message fields (RFC 3464 §2.2).
	if r.EnvelopeID != "" {
		fmt.Fprintf(b, "Original-Envelope-Id: %s\r\n", fieldValue(r.EnvelopeID))
	}
	fmt.Fprintf(b, "Reporting-MTA: dns; %s\r\n", host)
	if r.QueueID != "" {
		fmt.Fprintf(b, "X-Postern-Queue-ID: %s\r\n", r.QueueID)
	}
	if r.ReceivedFrom != "" {
		fmt.Fprintf(b, "Received-From-MTA: dns; %s\r\n", fieldValue(r.ReceivedFrom))
	}
	if !r.ArrivalDate.IsZero() {
		fmt.Fprintf(b, "Arrival-Date: %s\r\n", r.ArrivalDate.Format(time.RFC1123Z))
	}
	// Per-recipient blocks, each preceded by a blank line (§2.1).
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.ORCPT != "" {
			typ, addr, ok := strings.Cut(rc.ORCPT, ";")
			if !ok {
				typ, addr = "rfc822", rc.ORCPT
			}
			fmt.Fprintf(b, "Original-Recipient: %s;%s\r\n", typ, fieldValue(addr))
		}
		fmt.Fprintf(b, "Final-Recipient: %s; %s\r\n", addrType(rc.Addr), rc.Addr)
		fmt.Fprintf(b, "Action: %s\r\n", rc.Action)
		fmt.Fprintf(b, "Status: %s\r\n", rc.Status)
		if rc.RemoteMTA != "" {
			fmt.Fprintf(b, "Remote-MTA: dns; %s\r\n", rc.RemoteMTA)
		}
		switch {
		case rc.Code != 0:
			fmt.Fprintf(b, "Diagnostic-Code: smtp; %d %s\r\n", rc.Code, diagText(rc))
		case rc.Reply != "":
			fmt.Fprintf(b, "Diagnostic-Code: X-Postern; %s\r\n", fieldValue(rc.Reply))
		}
		if !rc.LastAttempt.IsZero() {
			fmt.Fprintf(b, "Last-Attempt-Date: %s\r\n", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(b, "Will-Retry-Until: %s\r\n", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
}

// diagText is the reply text of a Diagnostic-Code: the enhanced status
// code (when the server gave one) and the text on one line.
func diagText(rc Recipient) string {
	t := oneline.Fold(rc.Reply)
	if _, ok := smtpstatus.Parse(string(rc.Status)); ok && !strings.HasPrefix(t, string(rc.Status)) {
		t = string(rc.Status) + " " + t
	}
	return fieldValue(t)
}

// addrType is "utf-8" for an address with non-ASCII characters (RFC
// 6533), else "rfc822".
func addrType(a string) string {
	for i := 0; i < len(a); i++ {
		if a[i] >= 0x80 {
			return "utf-8"
		}
	}
	return "rfc822"
}

// fieldValue keeps a header value on one line and within 7-bit printable
// characters where the field requires it: control characters go.
func fieldValue(s string) string {
	s = oneline.Fold(s)
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// Headers returns the header section of msg (up to and including the
// blank line that ends it, or all of msg when there is no body).
func Headers(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// returnedHeaders is the header section of msg, bounded by
// MaxReturnedHeaders at a line end; cut reports that it was bounded.
func returnedHeaders(msg []byte) (h []byte, cut bool) {
	h = Headers(msg)
	if len(h) <= MaxReturnedHeaders {
		return h, false
	}
	h = h[:MaxReturnedHeaders]
	if i := bytes.LastIndexByte(h, '\n'); i >= 0 {
		return h[:i+1], true
	}
	return nil, true
}

// crlf returns b with every line ending in CRLF (the spool holds CRLF
// already; this only guards against a bare LF slipping in).
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) || bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+64)
	for i := 0; i < len(b); i++ {
		if b[i] == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b[i])
	}
	return out
}

// SortRecipients orders recipients by address, so reports list them in a
// stable order.
func SortRecipients(rs []Recipient) {
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Addr < rs[j].Addr })
}
