package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/postern/postern/central/store"
)

func (s *Store) SetSenderConfirmation(ctx context.Context, device, address, tokenHash string, sent time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE senders SET confirm_token_hash = $1, confirm_sent_at = $2 WHERE device = $3 AND address = $4`,
		tokenHash, ms(sent), device, address)
	return affected(res, err, "sender "+address+" of "+device)
}

// ConfirmSender implements store.Store. Confirming twice is harmless. A
// sender added by an edit of an active or suspended device enters the
// allowlist with its confirmation (a version bump).
func (s *Store) ConfirmSender(ctx context.Context, tokenHash string, at time.Time) (device, address string, err error) {
	if tokenHash == "" {
		return "", "", fmt.Errorf("confirm sender: %w", store.ErrNotFound)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var conf int64
		var later bool
		err := tx.QueryRowContext(ctx, `SELECT device, address, confirmed_at, added_later FROM senders WHERE confirm_token_hash = $1`+s.d.ForUpdate, tokenHash).Scan(&device, &address, &conf, &later)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("confirm sender: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("confirm sender: %w", err)
		}
		if conf != 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE senders SET confirmed_at = $1 WHERE device = $2 AND address = $3`, ms(at), device, address); err != nil {
			return fmt.Errorf("confirm sender %s: %w", address, err)
		}
		// A sender added by an edit enters the allowlist now.
		var ver int64
		if later {
			var st string
			if err := tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE name = $1`+s.d.ForUpdate, device).Scan(&st); err != nil {
				return fmt.Errorf("confirm sender %s: %w", address, err)
			}
			if store.Status(st).Enforced() {
				if ver, err = s.bump(ctx, tx); err != nil {
					return err
				}
			}
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: "sender:" + address, Action: "confirm-sender", Device: device, Reason: address + " confirmed by mail link", AllowlistVersion: ver})
	})
	return device, address, err
}
