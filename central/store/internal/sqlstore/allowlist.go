package sqlstore

import (
	"context"
	"fmt"

	"github.com/postern/postern/central/store"
)

// AllowlistVersion implements store.Store.
func (s *Store) AllowlistVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("allowlist version: %w", err)
	}
	return v, nil
}

// AllowlistSnapshot implements store.Store.
func (s *Store) AllowlistSnapshot(ctx context.Context) (int64, []store.AllowlistDevice, error) {
	tx, err := s.db.BeginTx(ctx, s.d.SnapshotTx)
	if err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var ver int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&ver); err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: version: %w", err)
	}
	// Senders added by an edit count once confirmed (added_later). The
	// reinstatement epoch is the allowlist version recorded with the
	// device's latest reinstate in the audit trail (audit_reinstate).
	rows, err := tx.QueryContext(ctx, `SELECT d.name, d.status, d.status_reason, d.messages_per_hour, d.recipients_per_hour, COALESCE(s.address, ''),
			COALESCE((SELECT MAX(a.allowlist_version) FROM audit a WHERE a.action = 'reinstate' AND a.device = d.name), 0)
		FROM devices d LEFT JOIN senders s ON s.device = d.name AND (s.confirmed_at <> 0 OR s.added_later = $1)
		WHERE d.status IN ('active', 'suspended') ORDER BY d.name, s.address`, false)
	if err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: devices: %w", err)
	}
	defer rows.Close()
	devs := []store.AllowlistDevice{}
	for rows.Next() {
		var d store.AllowlistDevice
		var st, addr string
		if err := rows.Scan(&d.Name, &st, &d.Reason, &d.MessagesPerHour, &d.RecipientsPerHour, &addr, &d.Reinstated); err != nil {
			return 0, nil, fmt.Errorf("allowlist snapshot: %w", err)
		}
		d.Status = store.Status(st)
		if d.Status == store.Active {
			d.Reason = ""
		}
		if n := len(devs); n > 0 && devs[n-1].Name == d.Name {
			if addr != "" {
				devs[n-1].Senders = append(devs[n-1].Senders, addr)
			}
			continue
		}
		if addr != "" {
			d.Senders = []string{addr}
		}
		devs = append(devs, d)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: %w", err)
	}
	return ver, devs, nil
}
