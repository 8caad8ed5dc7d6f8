package registration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/central/notify"
	"github.com/postern/postern/central/store"
)

// OwnerNotifier mails owners about their registrations (central/notify).
type OwnerNotifier interface {
	Send(ctx context.Context, n notify.Notice) (sent bool, err error)
	Remind(ctx context.Context) error
}

// Errors of owner actions.
var (
	// ErrRenewTooEarly: owners renew in the last RenewWindow of a period.
	ErrRenewTooEarly = errors.New("a registration can be renewed in the last 30 days before it expires")
	// ErrNotOwnerAction: staff take this action, owners cannot.
	ErrNotOwnerAction = errors.New("owners cannot take this action")
)

// RenewWindow is how long before its expiry an owner may renew.
const RenewWindow = 30 * 24 * time.Hour

// noticeChange mails the owner about the device's latest status change
// (its newest audit entry names it and keys the notice). Failures are
// logged: the change itself stands.
func (s *Service) noticeChange(ctx context.Context, name string) {
	if s.Owners == nil {
		return
	}
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		s.log().Warn("owner notice: device not read", "device", name, "err", err)
		return
	}
	hist, err := s.Store.ListAudit(ctx, store.AuditFilter{Device: name, Limit: 1})
	if err != nil || len(hist) == 0 {
		s.log().Warn("owner notice: history not read", "device", name, "err", err)
		return
	}
	h := hist[0]
	if h.ToStatus != d.Status {
		return
	}
	k := notify.ForStatus(h.FromStatus, h.ToStatus)
	if k == "" {
		return
	}
	if _, err := s.Owners.Send(ctx, notify.Notice{Kind: k, Device: d, Key: strconv.FormatInt(h.ID, 10)}); err != nil {
		s.log().Warn("owner notice not sent", "device", name, "notice", string(k), "err", err)
	}
}

// OwnerEdit applies an owner's change of a registration (the name stays):
// every field is validated as on the form; a change of what edges enforce
// (senders, the firewall declaration) of an active or suspended device
// sends it back to review; rerequest also asks for review again after a
// denial or an expiry. New senders get confirmation links.
func (s *Service) OwnerEdit(ctx context.Context, name string, r Request, rerequest bool, actor string) (from, to store.Status, errs FieldErrors, err error) {
	r.Name = name
	c, errs := s.Validate(ctx, r)
	if len(errs) > 0 {
		return "", "", errs, nil
	}
	e := store.DeviceEdit{
		Name: c.Name, Owner: strings.TrimSpace(r.Owner), Department: strings.TrimSpace(r.Department),
		ContactEmail: strings.TrimSpace(r.ContactEmail), Purpose: strings.TrimSpace(r.Purpose),
		BehindFirewall: r.BehindFirewall, FirewallAccepted: r.BehindFirewall && r.FirewallAccepted,
		FCrDNS: c.FCrDNS.Summary(), FCrDNSOK: c.FCrDNS.OK, Rerequest: rerequest,
	}
	for _, a := range c.IPs {
		e.IPs = append(e.IPs, a.String())
	}
	for _, sn := range c.Senders {
		e.Senders = append(e.Senders, store.Sender{Address: sn.Address, Personal: sn.Personal})
	}
	from, to, err = s.Store.OwnerEditDevice(ctx, e, actor)
	if err != nil {
		return from, to, nil, err
	}
	s.log().Info("registration changed by its owner", "device", name, "actor", actor, "from", string(from), "to", string(to))
	if from != to && (from.Enforced() || to.Enforced()) {
		s.changed()
	}
	if err := s.sendConfirmationsNew(ctx, name, actor != "owner"); err != nil {
		s.log().Warn("sender confirmation not sent", "device", name, "err", err)
	}
	return from, to, nil, nil
}

// OwnerAct applies an owner's action: withdraw (the registration ends),
// rerequest (review again after a denial or expiry) or renew (an active
// registration in its last RenewWindow).
func (s *Service) OwnerAct(ctx context.Context, name string, a Action, actor string) error {
	switch a {
	case store.ActWithdraw, store.ActRerequest:
		d, err := s.Store.Device(ctx, name)
		if err != nil {
			return err
		}
		reason := "withdrawn by the owner"
		if a == store.ActRerequest {
			reason = "owner asked for review again"
		}
		if err := s.Store.Transition(ctx, name, a, actor, reason, time.Time{}); err != nil {
			return err
		}
		s.log().Info("device "+string(a), "device", name, "actor", actor)
		if d.Status.Enforced() {
			s.changed()
		}
		return nil
	case store.ActRenew:
		d, err := s.Store.Device(ctx, name)
		if err != nil {
			return err
		}
		if d.Status != store.Active {
			return &store.TransitionError{Action: a, Device: name, From: d.Status}
		}
		if d.ExpiresAt.Sub(s.now()) > RenewWindow {
			return fmt.Errorf("renew %s: %w", name, ErrRenewTooEarly)
		}
		// The new period starts at the old expiry: renewing early loses
		// nothing.
		if err := s.Store.RenewDevice(ctx, name, actor, "renewed by the owner", d.ExpiresAt.Add(s.Period)); err != nil {
			return err
		}
		s.log().Info("device renewed by its owner", "device", name, "actor", actor)
		s.changed()
		return nil
	}
	return fmt.Errorf("%s %s: %w", a, name, ErrNotOwnerAction)
}
