package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/postern/postern/central/store"
)

// ChangeUserPassword implements store.Store.
func (s *Store) ChangeUserPassword(ctx context.Context, name, hash, keepSession, actor string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1 WHERE name = $2`, hash, name)
		if err := affected(res, err, "user "+name); err != nil {
			return err
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM sessions WHERE username = $1 AND id_hash <> $2`, name, keepSession)
		if err != nil {
			return fmt.Errorf("end sessions of %s: %w", name, err)
		}
		n, _ := res.RowsAffected()
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "change-password",
			Reason: fmt.Sprintf("password of %s changed; %d other session(s) ended", name, n)})
	})
}

// SenderByToken implements store.Store.
func (s *Store) SenderByToken(ctx context.Context, tokenHash string) (string, store.Sender, error) {
	var device string
	var sn store.Sender
	var sent, conf int64
	if tokenHash == "" {
		return "", sn, fmt.Errorf("sender by token: %w", store.ErrNotFound)
	}
	err := s.db.QueryRowContext(ctx, `SELECT device, address, personal, confirm_token_hash, confirm_sent_at, confirmed_at FROM senders WHERE confirm_token_hash = $1`,
		tokenHash).Scan(&device, &sn.Address, &sn.Personal, &sn.ConfirmTokenHash, &sent, &conf)
	if errors.Is(err, sql.ErrNoRows) {
		return "", sn, fmt.Errorf("sender by token: %w", store.ErrNotFound)
	}
	if err != nil {
		return "", sn, fmt.Errorf("sender by token: %w", err)
	}
	sn.ConfirmSentAt, sn.ConfirmedAt = fromMS(sent), fromMS(conf)
	return device, sn, nil
}

// RecordRequester implements store.Store.
func (s *Store) RecordRequester(ctx context.Context, device, clientIP string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO device_requests (device, client_ip, created_at) VALUES ($1, $2, $3)`, device, clientIP, ms(s.now()))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("requester of %s: %w", device, store.ErrExists)
		}
		return fmt.Errorf("record requester of %s: %w", device, err)
	}
	return nil
}

// CountPending implements store.Store.
func (s *Store) CountPending(ctx context.Context, contact, clientIP string) (store.PendingCounts, error) {
	var c store.PendingCounts
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE status = $1 AND LOWER(contact_email) = $2`,
		string(store.Pending), strings.ToLower(strings.TrimSpace(contact))).Scan(&c.ByContact)
	if err != nil {
		return c, fmt.Errorf("count pending by contact: %w", err)
	}
	if clientIP == "" {
		return c, nil
	}
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM device_requests r JOIN devices d ON d.name = r.device WHERE d.status = $1 AND r.client_ip = $2`,
		string(store.Pending), clientIP).Scan(&c.ByClientIP)
	if err != nil {
		return c, fmt.Errorf("count pending by client address: %w", err)
	}
	return c, nil
}
