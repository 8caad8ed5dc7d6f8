// Package smtpstatus names the RFC 3463 enhanced status codes Postern
// sends, records and reports. Every code the edge writes into a reply, a
// queue entry, a DSN or an event is one of the constants below (or one a
// remote server sent), in one representation: Code, the dotted text form
// ("5.1.1") that the spool, DSNs, events and logs carry.
package smtpstatus

import (
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Code is an enhanced status code, class.subject.detail, e.g. "5.1.1".
type Code string

// Codes by RFC 3463 §3 title. The class (2 success, 4 temporary, 5
// permanent) is part of the name where both classes are used.
const (
	OK Code = "2.0.0" // X.0.0 other or undefined status: success

	TempUndefined Code = "4.0.0" // X.0.0 other or undefined status
	PermUndefined Code = "5.0.0"

	BadDestinationMailbox       Code = "5.1.1"  // X.1.1 bad destination mailbox address
	BadDestinationSystem        Code = "5.1.2"  // X.1.2 bad destination system address
	BadDestinationMailboxSyntax Code = "5.1.3"  // X.1.3 bad destination mailbox address syntax
	BadSenderMailboxSyntax      Code = "5.1.7"  // X.1.7 bad sender's mailbox address syntax
	BadSenderSystem             Code = "5.1.8"  // X.1.8 bad sender's system address
	MailboxMoved                Code = "5.1.6"  // X.1.6 destination mailbox has moved, no forwarding address
	NullMX                      Code = "5.1.10" // X.1.10 recipient address has null MX (RFC 7505)
	MailboxDisabled             Code = "5.2.1"  // X.2.1 mailbox disabled, not accepting messages

	TempMailSystem Code = "4.3.0" // X.3.0 other or undefined mail system status
	MailSystemFull Code = "4.3.1" // X.3.1 mail system full
	NotAccepting   Code = "4.3.2" // X.3.2 system not accepting network messages
	MessageTooBig  Code = "5.3.4" // X.3.4 message too big for system

	TempNetwork       Code = "4.4.0" // X.4.0 other or undefined network or routing status
	NoAnswer          Code = "4.4.1" // X.4.1 no answer from host
	BadConnection     Code = "4.4.2" // X.4.2 bad connection
	DirectoryFailure  Code = "4.4.3" // X.4.3 directory server failure
	DeliveryTimeUp    Code = "4.4.7" // X.4.7 delivery time expired
	TempProtocol      Code = "4.5.0" // X.5.0 other or undefined protocol status
	InvalidCommand    Code = "5.5.1" // X.5.1 invalid command
	SyntaxError       Code = "5.5.2" // X.5.2 syntax error
	TooManyRecipients Code = "4.5.3" // X.5.3 too many recipients
	InvalidArguments  Code = "5.5.4" // X.5.4 invalid command arguments

	MediaError        Code = "5.6.0" // X.6.0 other or undefined media error
	NonASCIIAddress   Code = "5.6.7" // X.6.7 non-ASCII addresses not permitted (RFC 6531)
	TempSecurity      Code = "4.7.0" // X.7.0 other or undefined security status
	TempNotAuthorized Code = "4.7.1" // X.7.1 delivery not authorized, message refused
	PermNotAuthorized Code = "5.7.1"
	CryptoFailure     Code = "4.7.5" // X.7.5 cryptographic failure
	// TLSRequired is X.7.10 encryption needed (RFC 5248): REQUIRETLS
	// over a connection without TLS.
	TLSRequired Code = "5.7.10"
	// TempRequireTLS and RequireTLS are X.7.30 REQUIRETLS support
	// required (RFC 8689): no next hop met the requirement, for now and
	// for good.
	TempRequireTLS Code = "4.7.30"
	RequireTLS     Code = "5.7.30"
)

// Parse returns s as a Code when it is a well-formed enhanced status code:
// class 2, 4 or 5, then two numbers, dot-separated.
func Parse(s string) (Code, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return "", false
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 || p != strconv.Itoa(n) {
			return "", false
		}
	}
	return Code(s), true
}

// FromSMTP converts go-smtp's form; ok is false when e has no valid class
// (go-smtp uses {0, 0, 0} for "no enhanced code").
func FromSMTP(e smtp.EnhancedCode) (c Code, ok bool) {
	if e[0] != 2 && e[0] != 4 && e[0] != 5 {
		return "", false
	}
	return Code(strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2])), true
}

// SMTP converts c to go-smtp's form for a reply. A malformed Code gives
// smtp.EnhancedCodeNotSet, for which go-smtp sends X.0.0.
func (c Code) SMTP() smtp.EnhancedCode {
	var e smtp.EnhancedCode
	parts := strings.Split(string(c), ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return smtp.EnhancedCode{}
		}
		e[i] = n
	}
	return e
}

// Class is 2, 4 or 5 (0 for a malformed Code).
func (c Code) Class() int {
	if len(c) > 0 && (c[0] == '2' || c[0] == '4' || c[0] == '5') {
		return int(c[0] - '0')
	}
	return 0
}
