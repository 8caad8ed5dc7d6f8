package policy

import (
	"fmt"
	"strings"

	"github.com/postern/postern/shared/smtpstatus"
)

// Reply is an SMTP reply the edge writes, with an RFC 3463 enhanced
// status code: a refusal, or Queued's acceptance. A nil *Reply from a
// check means "accept". Reason is a short, stable description for
// logs and for the refusal events central aggregates (for example
// "not registered" or "FCrDNS mismatch: PTR=a.example, A=192.0.2.9").
type Reply struct {
	Code     int
	Enhanced smtpstatus.Code
	Text     string
	Reason   string
}

func (r *Reply) Error() string {
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code/100 == 4 }

const maxText = 480

func reply(code int, enh smtpstatus.Code, reason, format string, args ...any) *Reply {
	return &Reply{Code: code, Enhanced: enh, Text: sanitize(fmt.Sprintf(format, args...)), Reason: reason}
}

// sanitize keeps a reply on one line of printable ASCII: client-supplied
// strings end up in replies and must not be able to inject a second line.
//
// RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets: texts are cut at
// maxText (the code and enhanced code take the rest).
func sanitize(s string) string {
	if len(s) > maxText {
		s = s[:maxText-3] + "..."
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Every reply text the edge writes itself lives below, so that they stay
// consistent. Codes follow RFC 5321 and RFC 3463 (shared/smtpstatus).

// MailFirst: RCPT before MAIL.
func MailFirst() *Reply {
	return reply(503, smtpstatus.InvalidCommand, "bad sequence", "MAIL first")
}

// RcptFirst: DATA or BDAT before any accepted RCPT.
func RcptFirst() *Reply {
	return reply(503, smtpstatus.InvalidCommand, "bad sequence", "RCPT first")
}

// Queued is the one accepting reply: the message is on disk under id.
func Queued(id string) *Reply {
	return reply(250, smtpstatus.OK, "queued", "Ok: queued as %s", id)
}

// NotLocal: the client is outside smtp.local_networks.
func NotLocal(ip string) *Reply {
	return reply(554, smtpstatus.PermNotAuthorized, "not a local network",
		"Access denied: %s is not on a network this relay serves", ip)
}

// Suspended: the device is suspended (locally or centrally).
func Suspended(device, why, contact string) *Reply {
	if why == "" {
		why = "suspended by the relay administrators"
	}
	return reply(550, smtpstatus.PermNotAuthorized, "device suspended",
		"Device %s is suspended (%s); contact %s to have it reinstated", device, why, contact)
}

// NullSender: "<>" from any client (devices do not send bounces).
func NullSender() *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "null sender",
		"The null sender <> is not accepted from devices; use the device's sender address")
}

// SenderNotAffiliated: a client that is not a registered device used a
// sender outside the affiliated domains. Its bounces would carry its mail
// out of the organisation, so the sender is refused at MAIL.
func SenderNotAffiliated(sender, ip, registerURL string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "sender not affiliated",
		"Sender <%s> is outside the organisation's domains and %s is not a registered device; unregistered clients must use a sender address in the organisation's domains. To send with this sender, register the device: %s", sender, ip, registerURL)
}

// SenderRouting: an '@' in the sender's local part (two '@', or a quoted
// '@'), refused as in RCPT TO.
func SenderRouting(addr string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "routing in sender local part",
		"Sender <%s> contains '@' in its local part; this relay does not accept such addresses", addr)
}

// SenderSyntax: MAIL FROM is not a valid address.
func SenderSyntax(addr string) *Reply {
	return reply(553, smtpstatus.BadSenderMailboxSyntax, "bad sender syntax",
		"Sender address <%s> is not a valid mailbox", addr)
}

// SenderDomain: the sender's domain has no MX or address record, so
// non-delivery reports could not be returned.
func SenderDomain(domain string) *Reply {
	return reply(550, smtpstatus.BadSenderSystem, "sender domain cannot receive mail",
		"Sender domain %s cannot receive mail (no MX or A/AAAA record), so bounces could not be returned", domain)
}

// DNSTemporary: a DNS lookup failed temporarily; never a 5xx.
func DNSTemporary(what string) *Reply {
	return reply(451, smtpstatus.DirectoryFailure, "DNS failure",
		"Temporary DNS failure looking up %s; try again later", what)
}

// MessageRate: over the hourly message limit.
func MessageRate(who string, perHour int, bulkURL string) *Reply {
	return reply(450, smtpstatus.TempNotAuthorized, "message rate limit",
		"%s has reached its limit of %d messages per hour; for bulk mail use %s", who, perHour, bulkURL)
}

// RecipientRate: over the hourly recipient limit.
func RecipientRate(who string, perHour int, bulkURL string) *Reply {
	return reply(450, smtpstatus.TempNotAuthorized, "recipient rate limit",
		"%s has reached its limit of %d recipients per hour; for bulk mail use %s", who, perHour, bulkURL)
}

// TooManyRecipients: over smtp.max_recipients in one message.
func TooManyRecipients(max int) *Reply {
	return reply(452, smtpstatus.TooManyRecipients, "too many recipients",
		"Too many recipients (at most %d per message); send the rest in another message", max)
}

// RecipientSyntax: RCPT TO is not a valid address.
func RecipientSyntax(addr string) *Reply {
	return reply(553, smtpstatus.BadDestinationMailboxSyntax, "bad recipient syntax",
		"Recipient address <%s> is not a valid mailbox", addr)
}

// RecipientRouting: %, ! or @ in a local part (percent hack, bang path,
// quoted routing) — never relayed.
func RecipientRouting(addr string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "routing in local part",
		"Recipient <%s> contains routing characters (%%, ! or @) in its local part; this relay does not route such addresses", addr)
}

// RecipientLiteral: user@[IP] recipients are never relayed.
func RecipientLiteral(addr string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "address literal",
		"Recipient <%s> is an address literal; this relay delivers only to domain names", addr)
}

// NotRegistered: an external recipient from a client that is not a
// registered device. why explains what FCrDNS found.
func NotRegistered(ip, why, registerURL string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "not registered: "+why,
		"Relaying denied: %s is not a registered device (%s). Mail outside the organisation needs a registration: %s", ip, why, registerURL)
}

// SenderNotRegistered: a registered device used a sender address that is
// not in its registration, for an external recipient.
func SenderNotRegistered(sender, device, registerURL string) *Reply {
	return reply(550, smtpstatus.PermNotAuthorized, "sender not registered",
		"Sender <%s> is not registered for device %s; use a registered sender address or update the registration at %s", sender, device, registerURL)
}

// AllowlistStale: central's allowlist expired and could not be renewed.
func AllowlistStale() *Reply {
	return reply(451, smtpstatus.TempSecurity, "allowlist stale",
		"The relay's device allowlist is out of date; try again later")
}

// AllowlistMissing: the edge takes its devices from central but has not
// applied an allowlist yet (fresh enrolment, or the stored one no longer
// verifies), so it cannot tell whether the client is registered.
func AllowlistMissing() *Reply {
	return reply(451, smtpstatus.TempSecurity, "allowlist missing",
		"The relay has not received its device allowlist yet; try again later")
}

// FromMissing: no From header.
func FromMissing() *Reply {
	return reply(550, smtpstatus.MediaError, "From header missing",
		"The message has no From: header (RFC 5322 requires one)")
}

// FromMultiple: more than one From header.
func FromMultiple() *Reply {
	return reply(550, smtpstatus.MediaError, "From header repeated",
		"The message has more than one From: header (RFC 5322 allows one)")
}

// FromInvalid: the From header does not parse.
func FromInvalid() *Reply {
	return reply(550, smtpstatus.MediaError, "From header invalid",
		"The message's From: header is not a valid address list (RFC 5322)")
}

// HeaderInvalid: the header section does not parse at all.
func HeaderInvalid() *Reply {
	return reply(550, smtpstatus.MediaError, "header invalid",
		"The message header is not valid (RFC 5322)")
}

// DSNParamTooLong: an ENVID or ORCPT parameter beyond the length RFC 3461
// allows (100 and 500 characters). Both are echoed into NDRs, whose header
// lines must stay within what a downstream server accepts.
func DSNParamTooLong(param string, max int) *Reply {
	return reply(501, smtpstatus.InvalidArguments, "DSN parameter too long",
		"%s parameter too long (at most %d characters, RFC 3461)", param, max)
}

// BareNewline: a bare LF or bare CR in DATA (SMTP smuggling defence).
func BareNewline() *Reply {
	return reply(550, smtpstatus.SyntaxError, "bare newline",
		"Message refused: bare <LF> or <CR> line ending received; lines must end with <CR><LF>")
}

// LineTooLong: a line beyond smtp.max_line_length.
func LineTooLong(max int) *Reply {
	return reply(500, smtpstatus.SyntaxError, "line too long",
		"Line too long (at most %d octets including CRLF)", max)
}

// MessageTooBig: over smtp.max_message_size.
func MessageTooBig(max int64) *Reply {
	return reply(552, smtpstatus.MessageTooBig, "message too big",
		"Message exceeds the size limit of %d bytes", max)
}

// SpoolFull: the spool's disk is full; never 250.
func SpoolFull() *Reply {
	return reply(452, smtpstatus.MailSystemFull, "spool full",
		"Insufficient system storage; try again later")
}

// SpoolError: the message could not be stored durably.
func SpoolError() *Reply {
	return reply(451, smtpstatus.TempMailSystem, "spool error",
		"Local error storing the message; try again later")
}

// InflightFull: accepting the message would take the message bytes held
// in memory at intake over smtp.max_inflight_bytes.
func InflightFull() *Reply {
	return reply(452, smtpstatus.MailSystemFull, "intake memory budget",
		"Insufficient system resources: too much mail in transfer right now; try again later")
}

// SessionTooLong: the connection is older than smtp.max_session_duration.
func SessionTooLong() *Reply {
	return reply(421, smtpstatus.BadConnection, "session too long",
		"Session time limit reached; closing connection, reconnect to continue")
}

// TooManyTransactions: over smtp.max_transactions_per_session.
func TooManyTransactions(max int) *Reply {
	return reply(421, smtpstatus.TempSecurity, "too many transactions",
		"Too many messages in one session (at most %d); closing connection, reconnect to send more", max)
}

// ChunkingAbandoned: a transaction that may have a chunked (BDAT) message
// open was reset; the connection ends so that no later transaction on it
// can be answered with that message's result.
func ChunkingAbandoned() *Reply {
	return reply(421, smtpstatus.TempProtocol, "transaction abandoned",
		"Transaction abandoned during message transfer; closing connection")
}

// DataTimeout: the client took longer than smtp.data_timeout for DATA.
func DataTimeout() *Reply {
	return reply(421, smtpstatus.BadConnection, "data timeout",
		"Timeout receiving the message; closing connection")
}

// TooManyConnections: over smtp.max_connections or
// smtp.max_connections_per_ip.
func TooManyConnections(scope string) *Reply {
	return reply(421, smtpstatus.TempSecurity, "too many connections",
		"Too many connections %s; try again later", scope)
}

// TooManyErrors: over smtp.max_errors in one session.
func TooManyErrors() *Reply {
	return reply(421, smtpstatus.TempSecurity, "too many errors",
		"Too many errors in this session; closing connection")
}

// ShuttingDown: the edge is stopping.
func ShuttingDown() *Reply {
	return reply(421, smtpstatus.NotAccepting, "shutting down",
		"Service shutting down; try again later")
}
