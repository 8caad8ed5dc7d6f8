package registration

import (
	"context"
	"strings"

	"github.com/postern/postern/central/store"
)

// Edit applies a staff edit of a registration: r is validated like a new
// request (the name and firewall answer stay as registered), the FCrDNS
// check is run again for the new IPs, new senders get confirmation links
// and enter the allowlist once confirmed. FieldErrors non-empty means
// nothing changed.
func (s *Service) Edit(ctx context.Context, name, actor string, r Request) (store.StaffEditResult, FieldErrors, error) {
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		return store.StaffEditResult{}, nil, err
	}
	r.Name, r.BehindFirewall, r.FirewallAccepted = d.Name, d.BehindFirewall, d.FirewallAccepted
	c, errs := s.Validate(ctx, r)
	if len(errs) > 0 {
		return store.StaffEditResult{}, errs, nil
	}
	e := store.StaffEdit{Owner: strings.TrimSpace(r.Owner), Department: strings.TrimSpace(r.Department),
		ContactEmail: strings.TrimSpace(r.ContactEmail), Purpose: strings.TrimSpace(r.Purpose), FCrDNS: c.FCrDNS.Summary(), FCrDNSOK: c.FCrDNS.OK}
	if s.DNS == nil {
		e.FCrDNS, e.FCrDNSOK = d.FCrDNS, d.FCrDNSOK
	}
	for _, a := range c.IPs {
		e.IPs = append(e.IPs, a.String())
	}
	for _, sn := range c.Senders {
		e.Senders = append(e.Senders, store.Sender{Address: sn.Address, Personal: sn.Personal})
	}
	res, err := s.Store.StaffEditDevice(ctx, name, actor, e)
	if err != nil {
		return res, nil, err
	}
	if len(res.Changes) > 0 {
		s.log().Info("device edited", "device", name, "actor", actor, "changes", strings.Join(res.Changes, "; "))
	}
	if len(res.Added) > 0 {
		if err := s.sendConfirmations(ctx, name, true); err != nil {
			s.log().Warn("sender confirmation not sent", "device", name, "err", err)
		}
	}
	if res.AllowlistVersion != 0 {
		s.changed()
	}
	return res, nil, nil
}
