package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/postern/postern/central/store"
)

const deviceCols = `name, ips, owner, department, contact_email, purpose, behind_firewall, firewall_accepted,
	messages_per_hour, recipients_per_hour, status, status_reason, owner_key_hash, fcrdns, fcrdns_ok,
	expires_at, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanDevice(r scanner) (store.Device, error) {
	var d store.Device
	var ips, status string
	var exp, created, updated int64
	err := r.Scan(&d.Name, &ips, &d.Owner, &d.Department, &d.ContactEmail, &d.Purpose, &d.BehindFirewall, &d.FirewallAccepted,
		&d.MessagesPerHour, &d.RecipientsPerHour, &status, &d.StatusReason, &d.OwnerKeyHash, &d.FCrDNS, &d.FCrDNSOK,
		&exp, &created, &updated)
	if err != nil {
		return d, err
	}
	if ips != "" {
		d.IPs = strings.Split(ips, ",")
	}
	d.Status = store.Status(status)
	d.ExpiresAt, d.CreatedAt, d.UpdatedAt = fromMS(exp), fromMS(created), fromMS(updated)
	return d, nil
}

// CreateDevice implements store.Store.
func (s *Store) CreateDevice(ctx context.Context, d store.Device, actor string) error {
	if d.Name == "" {
		return errors.New("store: device without a name")
	}
	if d.Status == "" {
		d.Status = store.Pending
	}
	now := s.now()
	return s.tx(ctx, func(tx *sql.Tx) error {
		replaced, err := s.archiveRevoked(ctx, tx, d.Name)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`, sort_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
			d.Name, strings.Join(d.IPs, ","), d.Owner, d.Department, d.ContactEmail, d.Purpose, d.BehindFirewall, d.FirewallAccepted,
			d.MessagesPerHour, d.RecipientsPerHour, string(d.Status), d.StatusReason, d.OwnerKeyHash, d.FCrDNS, d.FCrDNSOK,
			ms(d.ExpiresAt), ms(now), ms(now), naturalKey(d.Name))
		if err != nil {
			if isUnique(err) {
				return fmt.Errorf("device %s: %w", d.Name, store.ErrExists)
			}
			return fmt.Errorf("create device %s: %w", d.Name, err)
		}
		for _, sn := range d.Senders {
			_, err := tx.ExecContext(ctx, `INSERT INTO senders (device, address, personal, confirm_token_hash, confirm_sent_at, confirmed_at)
				VALUES ($1, $2, $3, $4, $5, $6)`, d.Name, sn.Address, sn.Personal, sn.ConfirmTokenHash, ms(sn.ConfirmSentAt), ms(sn.ConfirmedAt))
			if err != nil {
				return fmt.Errorf("create device %s: sender %s: %w", d.Name, sn.Address, err)
			}
		}
		var ver int64
		if d.Status.Enforced() {
			var err error
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		a := store.AuditEntry{Actor: actor, Action: "register", Device: d.Name, ToStatus: d.Status, Reason: d.Purpose, AllowlistVersion: ver}
		if replaced {
			a.FromStatus = store.Revoked
			a.Reason = "new request for a revoked name (the revoked registration is archived): " + d.Purpose
		}
		return s.audit(ctx, tx, a)
	})
}

func isUnique(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "unique") || strings.Contains(m, "duplicate key")
}

func (s *Store) senders(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, name string) ([]store.Sender, error) {
	rows, err := q.QueryContext(ctx, `SELECT address, personal, confirm_token_hash, confirm_sent_at, confirmed_at FROM senders WHERE device = $1 ORDER BY address`, name)
	if err != nil {
		return nil, fmt.Errorf("senders of %s: %w", name, err)
	}
	defer rows.Close()
	var out []store.Sender
	for rows.Next() {
		var sn store.Sender
		var sent, conf int64
		if err := rows.Scan(&sn.Address, &sn.Personal, &sn.ConfirmTokenHash, &sent, &conf); err != nil {
			return nil, fmt.Errorf("senders of %s: %w", name, err)
		}
		sn.ConfirmSentAt, sn.ConfirmedAt = fromMS(sent), fromMS(conf)
		out = append(out, sn)
	}
	return out, rows.Err()
}

// Device implements store.Store.
func (s *Store) Device(ctx context.Context, name string) (store.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("device %s: %w", name, err)
	}
	d.Senders, err = s.senders(ctx, s.db, name)
	return d, err
}

// ListDevices implements store.Store. Pending devices come first, then by
// name.
func (s *Store) ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if len(f.Status) > 0 {
		var ph []string
		for _, st := range f.Status {
			ph = append(ph, arg(string(st)))
		}
		where = append(where, "status IN ("+strings.Join(ph, ", ")+")")
	}
	if f.OwnerKeyHash != "" {
		where = append(where, "owner_key_hash = "+arg(f.OwnerKeyHash))
	}
	if q := strings.TrimSpace(strings.ToLower(f.Query)); q != "" {
		p := arg("%" + escapeLike(q) + "%")
		where = append(where, fmt.Sprintf(`(LOWER(name) LIKE %[1]s ESCAPE '\' OR LOWER(owner) LIKE %[1]s ESCAPE '\' OR LOWER(department) LIKE %[1]s ESCAPE '\'
			OR LOWER(contact_email) LIKE %[1]s ESCAPE '\' OR LOWER(ips) LIKE %[1]s ESCAPE '\'
			OR name IN (SELECT device FROM senders WHERE LOWER(address) LIKE %[1]s ESCAPE '\'))`, p))
	}
	query := `SELECT ` + deviceCols + ` FROM devices`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 500
	}
	query += ` ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, name LIMIT ` + arg(limit) + ` OFFSET ` + arg(max(f.Offset, 0))
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	for i := range out {
		if out[i].Senders, err = s.senders(ctx, s.db, out[i].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// CountDevices implements store.Store.
func (s *Store) CountDevices(ctx context.Context) (map[store.Status]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, COUNT(*) FROM devices GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	defer rows.Close()
	out := map[store.Status]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count devices: %w", err)
		}
		out[store.Status(st)] = n
	}
	return out, rows.Err()
}

// SetFCrDNS implements store.Store.
func (s *Store) SetFCrDNS(ctx context.Context, name, result string, ok bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET fcrdns = $1, fcrdns_ok = $2 WHERE name = $3`, result, ok, name)
	return affected(res, err, "device "+name)
}

func affected(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("update %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}
