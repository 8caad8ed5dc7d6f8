package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
)

// Transition implements store.Store.
func (s *Store) Transition(ctx context.Context, name string, a store.Action, actor, reason string, expires time.Time) error {
	r, ok := store.Lifecycle[a]
	if !ok {
		return fmt.Errorf("%q: %w", a, store.ErrUnknownAction)
	}
	return s.transition(ctx, name, actor, reason, r, expires)
}

// OwnerEditDevice implements store.Store.
func (s *Store) OwnerEditDevice(ctx context.Context, e store.DeviceEdit, actor string) (from, to store.Status, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = $1`+s.d.ForUpdate, e.Name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("edit %s: %w", e.Name, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("edit %s: %w", e.Name, err)
		}
		from, to = d.Status, d.Status
		if from == store.Revoked {
			return &store.TransitionError{Action: "edit", Device: e.Name, From: from}
		}
		old, err := s.senders(ctx, tx, e.Name)
		if err != nil {
			return err
		}
		var oldAddrs, newAddrs []string
		for _, sn := range old {
			oldAddrs = append(oldAddrs, sn.Address)
		}
		for _, sn := range e.Senders {
			newAddrs = append(newAddrs, sn.Address)
		}
		slices.Sort(oldAddrs)
		slices.Sort(newAddrs)
		newAddrs = slices.Compact(newAddrs)
		enforcedChange := !slices.Equal(oldAddrs, newAddrs) || d.BehindFirewall != e.BehindFirewall
		var changes []string
		diff := func(field, a, b string) {
			if a != b {
				changes = append(changes, field)
			}
		}
		diff("IP addresses", strings.Join(d.IPs, ","), strings.Join(e.IPs, ","))
		diff("owner", d.Owner, e.Owner)
		diff("department", d.Department, e.Department)
		diff("contact", d.ContactEmail, e.ContactEmail)
		diff("purpose", d.Purpose, e.Purpose)
		diff("senders", strings.Join(oldAddrs, ","), strings.Join(newAddrs, ","))
		if d.BehindFirewall != e.BehindFirewall {
			changes = append(changes, "firewall declaration")
		}
		reason := ""
		switch {
		case e.Rerequest && (from == store.Denied || from == store.Expired):
			to = store.Pending
			reason = "owner asked for review again"
		case enforcedChange && from.Enforced():
			to = store.Pending
			reason = "changed what edges enforce: back to review"
		}
		if len(changes) == 0 && to == from {
			return nil
		}
		var ver int64
		if from != to && (from.Enforced() || to.Enforced()) {
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		q := `UPDATE devices SET ips = $1, owner = $2, department = $3, contact_email = $4, purpose = $5, behind_firewall = $6,
			firewall_accepted = $7, fcrdns = $8, fcrdns_ok = $9, status = $10, updated_at = $11`
		args := []any{strings.Join(e.IPs, ","), e.Owner, e.Department, e.ContactEmail, e.Purpose, e.BehindFirewall,
			e.BehindFirewall && e.FirewallAccepted, e.FCrDNS, e.FCrDNSOK, string(to), ms(s.now())}
		if to != from {
			q += `, status_reason = $13`
			args = append(args, e.Name, reason)
		} else {
			args = append(args, e.Name)
		}
		if _, err := tx.ExecContext(ctx, q+` WHERE name = $12`, args...); err != nil {
			return fmt.Errorf("edit %s: %w", e.Name, err)
		}
		for _, a := range oldAddrs {
			if !slices.Contains(newAddrs, a) {
				if _, err := tx.ExecContext(ctx, `DELETE FROM senders WHERE device = $1 AND address = $2`, e.Name, a); err != nil {
					return fmt.Errorf("edit %s: sender %s: %w", e.Name, a, err)
				}
			}
		}
		seen := map[string]bool{}
		for _, sn := range e.Senders {
			if slices.Contains(oldAddrs, sn.Address) || seen[sn.Address] {
				continue
			}
			seen[sn.Address] = true
			if _, err := tx.ExecContext(ctx, `INSERT INTO senders (device, address, personal) VALUES ($1, $2, $3)`, e.Name, sn.Address, sn.Personal); err != nil {
				return fmt.Errorf("edit %s: sender %s: %w", e.Name, sn.Address, err)
			}
		}
		note := "changed " + strings.Join(changes, ", ")
		if reason != "" {
			note = strings.TrimPrefix(note+"; "+reason, "changed ; ")
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "edit", Device: e.Name, FromStatus: from, ToStatus: to,
			Reason: note, AllowlistVersion: ver})
	})
	return from, to, err
}
