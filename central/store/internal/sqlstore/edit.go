package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/postern/postern/central/store"
)

// StaffEditDevice implements store.Store.
func (s *Store) StaffEditDevice(ctx context.Context, name, actor string, e store.StaffEdit) (store.StaffEditResult, error) {
	var res store.StaffEditResult
	err := s.tx(ctx, func(tx *sql.Tx) error {
		d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = $1`+s.d.ForUpdate, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("edit %s: %w", name, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("edit %s: %w", name, err)
		}
		old, err := s.senders(ctx, tx, name)
		if err != nil {
			return err
		}
		field := func(label, from, to string) {
			if from != to {
				res.Changes = append(res.Changes, fmt.Sprintf("%s: %q -> %q", label, from, to))
			}
		}
		field("IPs", strings.Join(d.IPs, ", "), strings.Join(e.IPs, ", "))
		field("owner", d.Owner, e.Owner)
		field("department", d.Department, e.Department)
		field("contact", d.ContactEmail, e.ContactEmail)
		if d.Purpose != e.Purpose {
			res.Changes = append(res.Changes, "purpose changed")
		}
		var keep, removed []string
		for _, sn := range old {
			if slices.ContainsFunc(e.Senders, func(n store.Sender) bool { return n.Address == sn.Address }) {
				keep = append(keep, sn.Address)
			} else {
				removed = append(removed, sn.Address)
			}
		}
		for _, sn := range e.Senders {
			if !slices.Contains(keep, sn.Address) {
				res.Added = append(res.Added, sn.Address)
				if _, err := tx.ExecContext(ctx, `INSERT INTO senders (device, address, personal, added_later) VALUES ($1, $2, $3, $4)`,
					name, sn.Address, sn.Personal, true); err != nil {
					return fmt.Errorf("edit %s: add sender %s: %w", name, sn.Address, err)
				}
			}
		}
		for _, a := range removed {
			if _, err := tx.ExecContext(ctx, `DELETE FROM senders WHERE device = $1 AND address = $2`, name, a); err != nil {
				return fmt.Errorf("edit %s: remove sender %s: %w", name, a, err)
			}
		}
		if len(res.Added) > 0 {
			res.Changes = append(res.Changes, "senders added (to be confirmed): "+strings.Join(res.Added, ", "))
		}
		if len(removed) > 0 {
			res.Changes = append(res.Changes, "senders removed: "+strings.Join(removed, ", "))
		}
		if len(res.Changes) == 0 {
			return nil
		}
		if len(removed) > 0 && d.Status.Enforced() {
			if res.AllowlistVersion, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET ips = $1, owner = $2, department = $3, contact_email = $4, purpose = $5,
			fcrdns = $6, fcrdns_ok = $7, updated_at = $8 WHERE name = $9`,
			strings.Join(e.IPs, ","), e.Owner, e.Department, e.ContactEmail, e.Purpose, e.FCrDNS, e.FCrDNSOK, ms(s.now()), name); err != nil {
			return fmt.Errorf("edit %s: %w", name, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "edit", Device: name, FromStatus: d.Status, ToStatus: d.Status,
			Reason: strings.Join(res.Changes, "; "), AllowlistVersion: res.AllowlistVersion})
	})
	if err != nil {
		return store.StaffEditResult{}, err
	}
	return res, nil
}
