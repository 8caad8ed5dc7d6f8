// Package registration is central's registration logic, shared by the web
// pages, the JSON API and the CLI: it validates a request field by field,
// runs the live FCrDNS check, checks that each sender's domain accepts
// mail, flags personal-looking mailboxes, sends the sender confirmation
// links, and applies staff actions (approve, deny, suspend, reinstate,
// revoke, renew) with their rules.
//
// Guarantees:
//   - Every successful change that can affect what edges enforce calls
//     Changed (the fleet publisher's hook); registering a pending device,
//     confirming a sender of a device edges do not see, or enrolling an
//     edge does not.
//   - A device is approved only when every sender address is confirmed,
//     unless the staff member forces it (recorded in the audit reason).
//   - Deny, suspend and revoke need a reason (owners see it).
package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/resolver"
	"github.com/postern/postern/shared/topic"
)

// DNS is the resolver the registry needs (shared/resolver.Resolver).
type DNS interface {
	fcrdns.Resolver
	MailDomainExists(ctx context.Context, domain string) (bool, error)
}

// Mailer sends one text message (central/mailer.Mailer).
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// Errors of staff actions.
var (
	ErrUnconfirmed    = errors.New("not every sender address is confirmed yet")
	ErrReasonRequired = errors.New("a reason is required")
	ErrUnknownAction  = store.ErrUnknownAction
	ErrLimitRange     = errors.New("must be between 0 and 1000000")
	ErrReasonTooLong  = errors.New("reason longer than 1000 characters")
)

// Service is the registry. Fields are set once before use.
type Service struct {
	Store store.Store
	DNS   DNS
	// Mail sends confirmation links; nil when mail.smarthost is not set
	// (links are then kept in memory and shown to staff only).
	Mail Mailer
	// BaseURL is central's external URL (links in mail).
	BaseURL string
	// Period is the registration period (policy.registration_period).
	Period time.Duration
	// Default limits for new registrations.
	DefaultMessagesPerHour   int
	DefaultRecipientsPerHour int
	// AffiliatedDomains are shown to requesters; mail that a public
	// request makes central send goes only to addresses in them.
	AffiliatedDomains []string
	// ConfirmTTL is how long a sender confirmation link works
	// (register.confirmation_lifetime; 0: 7 days).
	ConfirmTTL time.Duration
	// EdgeSuspensionsPerHour caps the automatic suspensions one edge may
	// cause per hour (edges.auto_suspensions_per_hour); RelayWindow is how
	// recent the edge's traffic for a device must be
	// (edges.relay_evidence_window). See SuspendByEdge.
	EdgeSuspensionsPerHour int
	RelayWindow            time.Duration
	// StaffNotify get a mail for every new suspension request.
	StaffNotify []string
	// ReservedEdgeIDs are refused as edge ids (central's MQTT client id
	// and username).
	ReservedEdgeIDs []string
	// EdgeRevoked is called after an edge was revoked (the embedded
	// broker drops its session); may be nil.
	EdgeRevoked func(id string)
	// Owners mails owners about their registrations; nil: no owner
	// notices (mail.notify_owners off or no mail.smarthost).
	Owners OwnerNotifier
	// Changed is called after every successful change (may be nil).
	Changed func()
	Clock   func() time.Time
	Log     *slog.Logger

	mu    sync.Mutex
	links map[string]map[string]string // device -> address -> link (no mail)
}

func (s *Service) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) changed() {
	if s.Changed != nil {
		s.Changed()
	}
}

// Request is a registration request as typed by the owner.
type Request struct {
	Name             string
	IPs              string // comma or space separated
	Owner            string
	Department       string
	ContactEmail     string
	Senders          string // comma, space or newline separated
	Purpose          string
	BehindFirewall   bool
	FirewallAccepted bool
}

// FieldErrors maps a form field name to what is wrong with it.
type FieldErrors map[string]string

// Checked is a validated request.
type Checked struct {
	Name    string
	IPs     []netip.Addr
	Senders []SenderCheck
	FCrDNS  fcrdns.Result
}

// SenderCheck is one validated sender address.
type SenderCheck struct {
	Address  string
	Personal bool
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// Validate checks every field, runs the FCrDNS check (when the name and
// IPs are well-formed) and the senders' domains, and returns the problems
// by field.
func (s *Service) Validate(ctx context.Context, r Request) (Checked, FieldErrors) {
	errs := FieldErrors{}
	var c Checked
	c.Name = NormalizeName(r.Name)
	if err := ValidName(c.Name); err != nil {
		errs["name"] = err.Error()
	}
	ipList := splitList(r.IPs)
	if len(ipList) > 16 {
		errs["ips"] = "at most 16 IP addresses"
	}
	for _, p := range ipList {
		a, err := netip.ParseAddr(p)
		if err != nil || a.Zone() != "" {
			errs["ips"] = fmt.Sprintf("%q is not an IP address", p)
			break
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() {
			errs["ips"] = fmt.Sprintf("%s cannot be a device's address", a)
			break
		}
		c.IPs = append(c.IPs, a)
	}
	text := func(field, v string, required bool, max int, multiline bool) {
		v = strings.TrimSpace(v)
		switch {
		case hasControl(v, multiline):
			errs[field] = MsgControl
		case required && v == "":
			errs[field] = "required"
		case len(v) > max:
			errs[field] = fmt.Sprintf("at most %d characters", max)
		}
	}
	// Owner and department end up in mail (confirmation links); the
	// purpose is shown on pages only and may have several lines.
	text("owner", r.Owner, true, 200, false)
	text("department", r.Department, false, 200, false)
	text("purpose", r.Purpose, true, 2000, true)
	if hasControl(r.ContactEmail, false) {
		errs["contact_email"] = MsgControl
	} else if _, err := ParseAddress(strings.TrimSpace(r.ContactEmail)); err != nil {
		errs["contact_email"] = err.Error()
	}
	if hasControl(r.Name, false) {
		errs["name"] = MsgControl
	}
	if hasControl(r.IPs, false) {
		errs["ips"] = MsgControl
	}
	if hasControl(r.Senders, true) {
		errs["senders"] = MsgControl
	}
	senders := splitList(r.Senders)
	switch {
	case errs["senders"] != "":
	case len(senders) == 0:
		errs["senders"] = "give at least one functional sender address the device uses"
	case len(senders) > 10:
		errs["senders"] = "at most 10 sender addresses"
	}
	seen := map[string]bool{}
	for _, raw := range senders {
		if _, ok := errs["senders"]; ok {
			break
		}
		a, err := ParseAddress(raw)
		if err != nil {
			errs["senders"] = fmt.Sprintf("%s: %v", raw, err)
			break
		}
		if seen[a.String()] {
			continue
		}
		seen[a.String()] = true
		if s.DNS != nil {
			ok, err := s.DNS.MailDomainExists(ctx, a.Domain)
			switch {
			case err != nil && resolver.IsTemporary(err):
				errs["senders"] = fmt.Sprintf("%s: the DNS lookup of %s failed temporarily; try again in a minute", a, a.Domain)
			case err != nil || !ok:
				errs["senders"] = fmt.Sprintf("%s: the domain %s cannot receive mail (no MX or address record), so bounce messages to it would be lost", a, a.Domain)
			}
		}
		c.Senders = append(c.Senders, SenderCheck{Address: a.String(), Personal: LooksPersonal(a.Local)})
	}
	if r.BehindFirewall && !r.FirewallAccepted {
		errs["firewall_accepted"] = "a device behind a firewall or NAT is registered by the firewall's name: tick the box to take responsibility for every system behind it"
	}
	if _, bad := errs["name"]; !bad && s.DNS != nil {
		if _, bad := errs["ips"]; !bad {
			c.FCrDNS = fcrdns.Check(ctx, s.DNS, c.Name, c.IPs)
		}
	}
	return c, errs
}

// CheckDNS runs the FCrDNS check for a stored device and records the
// result.
func (s *Service) CheckDNS(ctx context.Context, name string) (fcrdns.Result, error) {
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		return fcrdns.Result{}, err
	}
	var ips []netip.Addr
	for _, p := range d.IPs {
		if a, err := netip.ParseAddr(p); err == nil {
			ips = append(ips, a)
		}
	}
	res := fcrdns.Check(ctx, s.DNS, d.Name, ips)
	if err := s.Store.SetFCrDNS(ctx, d.Name, res.Summary(), res.OK); err != nil {
		return res, err
	}
	return res, nil
}

// Register validates r and stores it as a pending device owned by
// ownerKeyHash, then sends the sender confirmations. FieldErrors non-empty
// means nothing was stored.
func (s *Service) Register(ctx context.Context, r Request, ownerKeyHash, actor string) (store.Device, FieldErrors, error) {
	c, errs := s.Validate(ctx, r)
	if len(errs) > 0 {
		return store.Device{}, errs, nil
	}
	d := store.Device{
		Name: c.Name, Owner: strings.TrimSpace(r.Owner), Department: strings.TrimSpace(r.Department),
		ContactEmail: strings.TrimSpace(r.ContactEmail), Purpose: strings.TrimSpace(r.Purpose),
		BehindFirewall: r.BehindFirewall, FirewallAccepted: r.BehindFirewall && r.FirewallAccepted,
		MessagesPerHour: s.DefaultMessagesPerHour, RecipientsPerHour: s.DefaultRecipientsPerHour,
		Status: store.Pending, OwnerKeyHash: ownerKeyHash, FCrDNS: c.FCrDNS.Summary(), FCrDNSOK: c.FCrDNS.OK,
	}
	for _, a := range c.IPs {
		d.IPs = append(d.IPs, a.String())
	}
	for _, sn := range c.Senders {
		d.Senders = append(d.Senders, store.Sender{Address: sn.Address, Personal: sn.Personal})
	}
	if err := s.Store.CreateDevice(ctx, d, actor); err != nil {
		if errors.Is(err, store.ErrExists) {
			return store.Device{}, FieldErrors{"name": "this name is already registered (or requested); ask staff if it is yours"}, nil
		}
		return store.Device{}, nil, err
	}
	// A pending device is not in the allowlist: nothing to publish.
	s.log().Info("device registration requested", "device", d.Name, "actor", actor, "fcrdns_ok", d.FCrDNSOK)
	// Mail prompted by an anonymous request goes only to affiliated
	// addresses; staff (API, CLI) may send anywhere.
	if err := s.sendConfirmations(ctx, d.Name, actor != "owner"); err != nil {
		s.log().Warn("sender confirmation not sent", "device", d.Name, "err", err)
	}
	stored, err := s.Store.Device(ctx, d.Name)
	return stored, nil, err
}

// SendConfirmations (re)sends a confirmation link to every unconfirmed
// sender of a device, on staff's behalf (any address). Without a mailer
// the links are kept in memory for staff (PendingLinks).
func (s *Service) SendConfirmations(ctx context.Context, name string) error {
	return s.sendConfirmations(ctx, name, true)
}

func (s *Service) sendConfirmations(ctx context.Context, name string, byStaff bool) error {
	return s.sendConfirmationsIf(ctx, name, byStaff, false)
}

// sendConfirmationsNew sends links only to senders that never got one
// (senders added by an edit), leaving earlier links working.
func (s *Service) sendConfirmationsNew(ctx context.Context, name string, byStaff bool) error {
	return s.sendConfirmationsIf(ctx, name, byStaff, true)
}

func (s *Service) sendConfirmationsIf(ctx context.Context, name string, byStaff, onlyNew bool) error {
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		return err
	}
	var errs []error
	for _, sn := range d.Senders {
		if sn.Confirmed() || onlyNew && !sn.ConfirmSentAt.IsZero() {
			continue
		}
		if !byStaff && s.Mail != nil && !s.Affiliated(sn.Address) {
			s.log().Warn("sender outside the affiliated domains: its confirmation link is sent only when staff send it",
				"device", d.Name, "sender", sn.Address)
			continue
		}
		tok, hash := auth.NewToken()
		if err := s.Store.SetSenderConfirmation(ctx, d.Name, sn.Address, hash, s.now()); err != nil {
			errs = append(errs, err)
			continue
		}
		link := strings.TrimRight(s.BaseURL, "/") + "/confirm?token=" + url.QueryEscape(tok)
		if s.Mail == nil {
			s.mu.Lock()
			if s.links == nil {
				s.links = map[string]map[string]string{}
			}
			if s.links[d.Name] == nil {
				s.links[d.Name] = map[string]string{}
			}
			s.links[d.Name][sn.Address] = link
			s.mu.Unlock()
			s.log().Warn("mail.smarthost is not set: the sender confirmation link is shown to staff on the device page instead of being mailed",
				"device", d.Name, "sender", sn.Address)
			continue
		}
		body := fmt.Sprintf(`Hello,

%s (%s) asked to register the device %s with Postern, the
organisation's mail relay for devices, and named this address as a
sender the device uses. Bounce messages (NDRs) for the device's mail will
come to this address, so we check it can receive mail.

If this is right, open this link and press "Confirm" (it works for %s):

  %s

If you know nothing about it, ignore this message; the registration will
not be approved for this address.
`, d.Owner, d.ContactEmail, d.Name, fmtTTL(s.confirmTTL()), link)
		if err := s.Mail.Send(ctx, sn.Address, "Confirm "+sn.Address+" as a sender of "+d.Name, body); err != nil {
			errs = append(errs, fmt.Errorf("confirmation to %s: %w", sn.Address, err))
			continue
		}
		s.log().Info("sender confirmation sent", "device", d.Name, "sender", sn.Address)
	}
	return errors.Join(errs...)
}

// PendingLinks returns the confirmation links kept because no mailer is
// configured (staff only).
func (s *Service) PendingLinks(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for a, l := range s.links[name] {
		out[a] = l
	}
	return out
}

// Confirm marks the sender whose token this is as confirmed.
// A link older than ConfirmTTL is refused with ErrLinkExpired.
func (s *Service) Confirm(ctx context.Context, token string) (device, address string, err error) {
	if err := s.confirmable(ctx, token); err != nil {
		return "", "", err
	}
	device, address, err = s.Store.ConfirmSender(ctx, auth.HashToken(token), s.now())
	if err != nil {
		return "", "", err
	}
	s.mu.Lock()
	delete(s.links[device], address)
	s.mu.Unlock()
	s.log().Info("sender confirmed", "device", device, "sender", address)
	// A sender added to an active or suspended registration by an edit
	// enters the allowlist with its confirmation.
	if d, err := s.Store.Device(ctx, device); err == nil && d.Status.Enforced() {
		s.changed()
	}
	return device, address, nil
}

// Action is a staff action on a device (the lifecycle table is
// store.Lifecycle).
type Action = store.Action

// Staff actions.
const (
	Approve   = store.ActApprove
	Deny      = store.ActDeny
	Suspend   = store.ActSuspend
	Reinstate = store.ActReinstate
	Revoke    = store.ActRevoke
	Renew     = store.ActRenew
)

// Actions lists the staff actions.
var Actions = store.StaffActions

// Act applies a staff action, checking what store.Lifecycle says it needs
// (a reason, confirmed senders). force approves although a sender is not
// confirmed (noted in the audit reason). Errors: ErrUnknownAction,
// ErrReasonRequired, ErrReasonTooLong, ErrUnconfirmed, store.ErrNotFound,
// store.ErrTransition (a *store.TransitionError); see HTTPStatus.
func (s *Service) Act(ctx context.Context, name string, a Action, actor, reason string, force bool) error {
	rule, ok := store.Lifecycle[a]
	if !ok || a == store.ActExpire {
		return fmt.Errorf("%q: %w", a, ErrUnknownAction)
	}
	reason = strings.TrimSpace(reason)
	if len(reason) > 1000 {
		return fmt.Errorf("%s %s: %w", a, name, ErrReasonTooLong)
	}
	if rule.NeedsReason && reason == "" {
		return fmt.Errorf("%s %s: %w", a, name, ErrReasonRequired)
	}
	if rule.NeedsConfirmedSenders {
		d, err := s.Store.Device(ctx, name)
		if err != nil {
			return err
		}
		for _, sn := range d.Senders {
			if !sn.Confirmed() {
				if !force {
					return fmt.Errorf("%s %s: %w (%s)", a, name, ErrUnconfirmed, sn.Address)
				}
				reason = strings.TrimSpace(reason + " [approved with unconfirmed sender " + sn.Address + "]")
			}
		}
	}
	expires := s.now().Add(s.Period)
	var err error
	switch a {
	case Approve:
		err = s.Store.ApproveDevice(ctx, name, actor, reason, expires)
	case Deny:
		err = s.Store.DenyDevice(ctx, name, actor, reason)
	case Suspend:
		err = s.Store.SuspendDevice(ctx, name, actor, reason)
	case Revoke:
		err = s.Store.RevokeDevice(ctx, name, actor, reason)
	case Reinstate:
		err = s.Store.ReinstateDevice(ctx, name, actor, reason)
	case Renew:
		err = s.Store.RenewDevice(ctx, name, actor, reason, expires)
	}
	if err != nil {
		return err
	}
	s.log().Info("device "+string(a), "device", name, "actor", actor, "reason", reason)
	s.changed()
	s.noticeChange(ctx, name)
	return nil
}

// SetLimits changes a device's hourly limits.
func (s *Service) SetLimits(ctx context.Context, name, actor string, mph, rph int) error {
	if mph < 0 || rph < 0 || mph > 1_000_000 || rph > 1_000_000 {
		return fmt.Errorf("limits of %s: %w", name, ErrLimitRange)
	}
	if err := s.Store.SetLimits(ctx, name, actor, mph, rph); err != nil {
		return err
	}
	s.changed()
	return nil
}

// ExpireDue expires registrations past their expiry.
func (s *Service) ExpireDue(ctx context.Context) ([]string, error) {
	names, err := s.Store.ExpireDue(ctx, s.now(), "system")
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		s.log().Info("registrations expired", "devices", strings.Join(names, ","))
		s.changed()
	}
	for _, n := range names {
		s.noticeChange(ctx, n)
	}
	if s.Owners != nil {
		if err := s.Owners.Remind(ctx); err != nil {
			s.log().Warn("expiry reminders", "err", err)
		}
	}
	return names, nil
}

// EnrolmentTTL is how long an edge enrolment token stays valid.
const EnrolmentTTL = 24 * time.Hour

// ErrReservedEdgeID: the id is one of central's own MQTT client ids or
// usernames, which an edge must never be able to log in as.
var ErrReservedEdgeID = errors.New("is central's own MQTT client id")

// CreateEdge creates an edge and returns its one-time enrolment token.
func (s *Service) CreateEdge(ctx context.Context, id, name, site string) (token string, err error) {
	if err := topic.ValidEdgeID(id); err != nil {
		return "", err
	}
	for _, r := range s.ReservedEdgeIDs {
		if strings.EqualFold(id, r) {
			return "", fmt.Errorf("edge id %q: %w", id, ErrReservedEdgeID)
		}
	}
	if len(name) > 200 || len(site) > 200 {
		return "", errors.New("edge name and site: at most 200 characters")
	}
	if err := s.Store.CreateEdge(ctx, store.Edge{ID: id, Name: strings.TrimSpace(name), Site: strings.TrimSpace(site)}); err != nil {
		return "", err
	}
	return s.NewEnrolment(ctx, id)
}

// NewEnrolment issues a fresh one-time enrolment token for an edge.
func (s *Service) NewEnrolment(ctx context.Context, id string) (string, error) {
	tok, hash := auth.NewToken()
	if err := s.Store.SetEdgeEnrolment(ctx, id, hash, s.now().Add(EnrolmentTTL)); err != nil {
		return "", err
	}
	return tok, nil
}

// RevokeEdge revokes an edge for good: its MQTT password stops working,
// its session is dropped (EdgeRevoked), its events are refused and it
// leaves the fleet view; the audit log keeps it.
func (s *Service) RevokeEdge(ctx context.Context, id, actor, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return fmt.Errorf("revoke edge %s: %w", id, ErrReasonRequired)
	}
	if len(reason) > 1000 {
		return fmt.Errorf("revoke edge %s: %w", id, ErrReasonTooLong)
	}
	if err := s.Store.RevokeEdge(ctx, id, actor, reason); err != nil {
		return err
	}
	s.log().Warn("edge revoked", "edge", id, "actor", actor, "reason", reason)
	if s.EdgeRevoked != nil {
		s.EdgeRevoked(id)
	}
	return nil
}
