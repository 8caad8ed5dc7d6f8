// Package policy is the edge's relay policy as pure decisions: given who the
// client is (IP, FCrDNS result), what the device table says about it, the
// envelope and the rate-limit state, it answers "accept" (nil) or a *Reply
// with an RFC 5321 code and an RFC 3463 enhanced code. It performs no I/O:
// DNS answers come in as values (Identity, DomainStatus) so every rule is
// table-tested.
//
// The rules:
//   - only clients in the local networks (554 5.7.1);
//   - affiliated recipients from any local client;
//   - other recipients only for registered, active devices identified by
//     FCrDNS (550 5.7.1 with the registration URL; 451 4.4.3 when DNS
//     failed, never a 5xx);
//   - nothing from an unregistered client leaves the organisation: a
//     client that is not a registered, active device sending with one of
//     its own senders must use a sender in the affiliated domains (550
//     5.7.1 at MAIL), so that no NDR or delay notice about its mail can
//     go outside (relaying by bounce);
//   - a registered device with a sender list that uses a sender outside
//     it is, for that transaction, an unregistered client: affiliated
//     sender and affiliated recipients only, and the transaction is not
//     attributed to the device (Txn.Own is false; the envelope names no
//     device, so its NDRs can never suspend the device). A device
//     registered without a sender list (static devices only) may use any
//     sender;
//   - the null sender <> is refused from every client: devices never send
//     bounces, and a message without a return path could not be traced;
//   - a valid sender; the domain of a sender outside the affiliated
//     domains must be able to receive mail (affiliated domains need no
//     DNS lookup, so a resolver outage does not stop internal mail);
//   - an '@' inside a local part (two '@', or a quoted '@') is refused in
//     MAIL FROM and RCPT TO alike (550 5.7.1); domains must be valid
//     IDNA2008 as sent (shared/address: nothing is mapped or rewritten);
//   - when unsure, temporary: a confirmed name the edge cannot decide on
//     because central's allowlist has not been applied yet (fresh
//     enrolment, or a stored snapshot that no longer verifies) or has
//     expired gets 451 4.7.0 wherever the allowlist would be needed, never
//     a 5xx;
//   - hourly message and recipient limits per device, or per client IP
//     for unregistered clients, an IPv6 client counting per prefix
//     (smtp.ipv6_prefix_length) so that a host cannot dodge its limit by
//     changing address (450 4.7.1); a per-message recipient limit (452
//     4.5.3);
//   - suspended devices are refused (550 5.7.1 with the contact);
//   - recipients with routing in the local part (%, !, @) and address
//     literals are never relayed.
//
// Every decision is made at MAIL or RCPT, except those that need the message
// (From header, line endings, size), which are made at the end of DATA and
// before the message is stored, so the edge never accepts mail it would
// refuse to relay.
package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/shared/address"
)

// Config is what the policy needs from the edge configuration.
type Config struct {
	LocalNetworks     []netip.Prefix
	Affiliated        address.DomainList
	RegisterURL       string
	BulkURL           string
	Contact           string
	MessagesPerHour   int
	RecipientsPerHour int
	MaxRecipients     int
	// Central is set when the edge takes devices from central's allowlist
	// (sync.enabled): until a snapshot is applied, a client the static
	// devices do not know may be registered centrally.
	Central bool
	// IPv6Prefix is the prefix length IPv6 clients are counted by for the
	// rate limits of unregistered clients.
	IPv6Prefix int
}

// NewConfig extracts the policy configuration from the edge's.
func NewConfig(c config.Config) (Config, error) {
	pc := Config{
		RegisterURL:       c.Policy.RegisterURL,
		BulkURL:           c.Policy.BulkURL,
		Contact:           c.Policy.Contact,
		MessagesPerHour:   c.Policy.MessagesPerHour,
		RecipientsPerHour: c.Policy.RecipientsPerHour,
		MaxRecipients:     c.SMTP.MaxRecipients,
		Central:           c.Sync.Enabled,
		IPv6Prefix:        c.SMTP.IPv6PrefixLength,
	}
	for _, n := range c.SMTP.LocalNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return pc, fmt.Errorf("policy: smtp.local_networks: %w", err)
		}
		pc.LocalNetworks = append(pc.LocalNetworks, p.Masked())
	}
	dl, err := address.NewDomainList(c.SMTP.AffiliatedDomains)
	if err != nil {
		return pc, fmt.Errorf("policy: smtp.affiliated_domains: %w", err)
	}
	pc.Affiliated = dl
	return pc, nil
}

// Registry is the view of registered devices the policy needs
// (*devices.Table).
type Registry interface {
	Lookup(name string) (devices.Device, bool)
	Stale() bool
	// Version is the central allowlist version applied, 0 if none.
	Version() int64
}

// Limiter reserves and refunds hourly tokens (*ratelimit.Limiter).
type Limiter interface {
	Take(key string, n, perHour int) bool
	Refund(key string, n, perHour int)
}

// Policy applies the rules. It is safe for concurrent use; per-transaction
// state lives in Txn.
type Policy struct {
	cfg   Config
	reg   Registry
	msgs  Limiter
	rcpts Limiter
}

// New returns a policy. msgs and rcpts are the message and recipient
// limiters.
func New(cfg Config, reg Registry, msgs, rcpts Limiter) *Policy {
	return &Policy{cfg: cfg, reg: reg, msgs: msgs, rcpts: rcpts}
}

// Identity is what forward-confirmed reverse DNS said about the client.
type Identity struct {
	// Name is the confirmed name (PTR -> name -> A/AAAA contains the IP),
	// or "" when none was confirmed.
	Name string
	// Names are all confirmed names in PTR order (Names[0] == Name); a
	// client with several PTR records is registered if any of them is
	// (PTR order rotates). Empty means just Name.
	Names []string
	// Explain says what was found when no name was confirmed, for the
	// refusal text and events ("no PTR record", "PTR=x, A=y").
	Explain string
	// TempFail is set when the lookup failed temporarily (timeout,
	// SERVFAIL): external recipients then get a 4xx.
	TempFail bool
}

// DomainStatus is the result of asking whether a domain can receive mail.
type DomainStatus int

// Domain check results.
const (
	DomainOK DomainStatus = iota
	DomainNoMail
	DomainTempFail
)

// DomainChecker answers whether a sender domain can receive mail (MX, or
// A/AAAA as implicit MX). The SMTP layer adapts the resolver to it.
type DomainChecker func(domain string) DomainStatus

// Txn is one client's state across a session's transactions. Create it
// with NewTxn when the client connects; it is not safe for concurrent use.
type Txn struct {
	IP       netip.Addr
	Identity Identity

	// Device is the registered device (when Registered) as looked up at
	// MAIL.
	Device     devices.Device
	Registered bool
	// Own is set when the open transaction is the registered device's
	// own: it is active and the sender is one of its registered senders
	// (or it has no sender list). Only then is the message attributed to
	// the device (rate limits aside): its envelope names the device, and
	// the device may send outside the affiliated domains.
	Own bool
	// Sender is the canonical reverse-path of the open transaction.
	Sender     string
	Recipients []string

	open      bool
	rateKey   string
	who       string
	msgLimit  int
	rcptLimit int
	tookMsg   int
	tookRcpts int
	senderLP  string // sender local part, lower case
	senderDom string
}

// NewTxn starts the per-client state.
func NewTxn(ip netip.Addr, id Identity) *Txn {
	return &Txn{IP: ip.Unmap(), Identity: id}
}

// Local reports whether ip is in the local networks.
func (p *Policy) Local(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range p.cfg.LocalNetworks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Connect decides whether a client may talk to the edge at all.
func (p *Policy) Connect(ip netip.Addr) *Reply {
	if !p.Local(ip) {
		return NotLocal(ip.Unmap().String())
	}
	return nil
}

// Mail decides MAIL FROM. sender is the reverse-path as the SMTP layer
// parsed it ("" for <>). check is consulted only for a syntactically valid
// sender of a client that passed every earlier rule. On acceptance one
// message token is reserved; Abort returns it.
func (p *Policy) Mail(t *Txn, sender string, check DomainChecker) *Reply {
	p.Abort(t) // a second MAIL replaces the open transaction
	if r := p.Connect(t.IP); r != nil {
		return r
	}
	t.Device, t.Registered = p.lookupDevice(t.Identity)
	if t.Registered && !t.Device.Active() {
		return Suspended(t.Device.Name, t.Device.Reason, p.cfg.Contact)
	}
	if sender == "" {
		return NullSender()
	}
	a, err := address.ParsePath(requote(sender))
	if err != nil || a.IsLiteral || a.Domain == "" {
		return SenderSyntax(sender)
	}
	// The same rule as for recipients: go-smtp hands over a quoted
	// "user@host"@domain and an unquoted user@host@domain alike, and
	// neither is a mailbox a device has any business using.
	if strings.IndexByte(a.Local, '@') >= 0 {
		return SenderRouting(sender)
	}
	t.senderLP, t.senderDom = strings.ToLower(a.Local), a.Domain
	t.Own = t.Registered && (len(t.Device.Senders) == 0 || p.senderListed(t))
	if !p.cfg.Affiliated.Contains(a.Domain) {
		if !t.Own {
			if r := p.unsure(t); r != nil {
				return r
			}
			if t.Registered {
				return SenderNotRegistered(a.String(), t.Device.Name, p.cfg.RegisterURL)
			}
			return SenderNotAffiliated(a.String(), t.IP.String(), p.cfg.RegisterURL)
		}
		// NDRs go to the sender's domain: it must be able to receive
		// them. Affiliated domains are the organisation's own and need
		// no lookup.
		switch check(a.Domain) {
		case DomainNoMail:
			return SenderDomain(a.Domain)
		case DomainTempFail:
			return DNSTemporary("sender domain " + a.Domain)
		}
	}

	t.rateKey, t.who = p.clientKey(t.IP), "Client "+t.IP.String()
	t.msgLimit, t.rcptLimit = p.cfg.MessagesPerHour, p.cfg.RecipientsPerHour
	if t.Registered {
		t.rateKey, t.who = "dev:"+t.Device.Name, "Device "+t.Device.Name
		if t.Device.MessagesPerHour > 0 {
			t.msgLimit = t.Device.MessagesPerHour
		}
		if t.Device.RecipientsPerHour > 0 {
			t.rcptLimit = t.Device.RecipientsPerHour
		}
	}
	if !p.msgs.Take(t.rateKey, 1, t.msgLimit) {
		return MessageRate(t.who, t.msgLimit, p.cfg.BulkURL)
	}
	t.tookMsg = 1
	t.open = true
	t.Sender = a.String()
	return nil
}

// clientKey is the rate-limit key of an unregistered client: its IPv4
// address, or its IPv6 prefix, since one IPv6 host can use any address of
// its /64.
func (p *Policy) clientKey(ip netip.Addr) string {
	if ip.Is6() && p.cfg.IPv6Prefix > 0 && p.cfg.IPv6Prefix < 128 {
		if pfx, err := ip.Prefix(p.cfg.IPv6Prefix); err == nil {
			return "net:" + pfx.String()
		}
	}
	return "ip:" + ip.String()
}

// unsure returns the temporary refusal owed to a client whose standing
// the edge cannot decide now: its DNS name could not be looked up, or it
// has a confirmed name that only central's allowlist could know and that
// allowlist is missing (not yet applied) or expired. nil means the
// answer "not allowed" is certain.
func (p *Policy) unsure(t *Txn) *Reply {
	id := t.Identity
	if id.Name == "" {
		if id.TempFail {
			return DNSTemporary("the client's DNS name (" + t.IP.String() + ")")
		}
		return nil // no name: no allowlist can ever list the client
	}
	if t.Registered && t.Device.Source == devices.SourceConfig {
		return nil
	}
	if p.reg.Stale() {
		return AllowlistStale()
	}
	if p.cfg.Central && p.reg.Version() == 0 {
		return AllowlistMissing()
	}
	return nil
}

// Rcpt decides one RCPT TO. On acceptance it returns the canonical
// recipient to store (domain in canonical A-label form) and reserves one
// recipient token. dup reports a recipient already accepted in this
// transaction (accepted again, stored once).
func (p *Policy) Rcpt(t *Txn, rcpt string) (canon string, dup bool, r *Reply) {
	if !t.open {
		// The SMTP layer never calls Rcpt without an accepted MAIL; be
		// safe anyway.
		return "", false, NullSender()
	}
	a, err := address.ParsePath(requote(rcpt))
	if err != nil || a.Local == "" {
		return "", false, RecipientSyntax(rcpt)
	}
	if a.IsLiteral {
		return "", false, RecipientLiteral(rcpt)
	}
	if a.Domain == "" {
		return "", false, RecipientSyntax(rcpt)
	}
	// The address package treats % and ! as plain characters (delivered to
	// the domain after the last @). The edge is stricter: a device has no
	// business with percent hacks, bang paths or quoted "@", and refusing
	// them means no downstream system can be tricked into routing them.
	if strings.ContainsAny(a.Local, "%!@") {
		return "", false, RecipientRouting(rcpt)
	}
	canon = a.String()
	for _, have := range t.Recipients {
		if strings.EqualFold(have, canon) {
			return have, true, nil
		}
	}
	if !p.cfg.Affiliated.Contains(a.Domain) {
		if r := p.external(t); r != nil {
			return "", false, r
		}
	}
	if p.cfg.MaxRecipients > 0 && len(t.Recipients) >= p.cfg.MaxRecipients {
		return "", false, TooManyRecipients(p.cfg.MaxRecipients)
	}
	if !p.rcpts.Take(t.rateKey, 1, t.rcptLimit) {
		return "", false, RecipientRate(t.who, t.rcptLimit, p.cfg.BulkURL)
	}
	t.tookRcpts++
	t.Recipients = append(t.Recipients, canon)
	return canon, false, nil
}

// lookupDevice finds the registered device among the confirmed names:
// the first registered one in PTR order, but a suspended registration
// wins over an active one, so that a second name cannot lift a
// suspension.
func (p *Policy) lookupDevice(id Identity) (devices.Device, bool) {
	names := id.Names
	if len(names) == 0 && id.Name != "" {
		names = []string{id.Name}
	}
	var found devices.Device
	ok := false
	for _, n := range names {
		d, reg := p.reg.Lookup(n)
		if !reg {
			continue
		}
		if !ok || (found.Active() && !d.Active()) {
			found, ok = d, true
		}
	}
	return found, ok
}

// external applies the rules for a recipient outside the affiliated
// domains.
func (p *Policy) external(t *Txn) *Reply {
	id := t.Identity
	if !t.Registered || t.Device.Source == devices.SourceCentral {
		if r := p.unsure(t); r != nil {
			return r
		}
	}
	if id.Name == "" {
		why := id.Explain
		if why == "" {
			why = "no forward-confirmed DNS name"
		}
		return NotRegistered(t.IP.String(), why, p.cfg.RegisterURL)
	}
	if !t.Registered {
		return NotRegistered(t.IP.String(), "name "+id.Name+" is not registered", p.cfg.RegisterURL)
	}
	if !t.Own {
		return SenderNotRegistered(t.Sender, t.Device.Name, p.cfg.RegisterURL)
	}
	return nil
}

// senderListed compares case-insensitively: local parts are in theory
// case-sensitive, but no mail system that matters treats them so, and a
// device configured with "Scanner@" must not be refused for it.
func (p *Policy) senderListed(t *Txn) bool {
	for _, s := range t.Device.Senders {
		a, err := address.ParsePath(s)
		if err != nil {
			continue
		}
		if strings.ToLower(a.Local) == t.senderLP && a.Domain == t.senderDom {
			return true
		}
	}
	return false
}

// Abort ends the open transaction without a stored message: reserved
// tokens are returned. Safe to call when no transaction is open.
func (p *Policy) Abort(t *Txn) {
	if t.tookMsg > 0 {
		p.msgs.Refund(t.rateKey, t.tookMsg, t.msgLimit)
	}
	if t.tookRcpts > 0 {
		p.rcpts.Refund(t.rateKey, t.tookRcpts, t.rcptLimit)
	}
	t.reset()
}

// Commit ends the open transaction with a stored message: the reserved
// tokens stay spent.
func (p *Policy) Commit(t *Txn) { t.reset() }

func (t *Txn) reset() {
	t.open = false
	t.tookMsg, t.tookRcpts = 0, 0
	t.Sender = ""
	t.Own = false
	t.Recipients = nil
	t.senderLP, t.senderDom = "", ""
}

// requote restores the quoting go-smtp removed: its parser returns the
// contents of a quoted local part ("john smith"@example.edu arrives as
// john smith@example.edu). A local part that is not a dot-atom is quoted
// again, so that the address package sees what the client sent and the
// last "@" is the one that separates the domain. Mail and Rcpt therefore
// take paths in go-smtp's unquoted form.
func requote(path string) string {
	at := strings.LastIndexByte(path, '@')
	if at <= 0 || isDotAtom(path[:at]) {
		return path
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < at; i++ {
		if c := path[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(path[i])
	}
	b.WriteByte('"')
	b.WriteString(path[at:])
	return b.String()
}

// isDotAtom reports whether s is an RFC 5321 dot-string (UTF-8 allowed,
// RFC 6531).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}
