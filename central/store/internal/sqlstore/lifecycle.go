package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/postern/postern/central/store"
)

// The rules themselves are store.Lifecycle; these name the ones the
// store applies.
var (
	ruleApprove   = store.Lifecycle[store.ActApprove]
	ruleDeny      = store.Lifecycle[store.ActDeny]
	ruleSuspend   = store.Lifecycle[store.ActSuspend]
	ruleReinstate = store.Lifecycle[store.ActReinstate]
	ruleRevoke    = store.Lifecycle[store.ActRevoke]
	ruleRenew     = store.Lifecycle[store.ActRenew]
)

func (s *Store) transition(ctx context.Context, name, actor, reason string, r store.Rule, expires time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, _, err := s.transitionTx(ctx, tx, name, actor, reason, r, expires, "")
		return err
	})
}

// transitionTx applies r to device name inside tx. It returns the status
// the device had and the allowlist version the change produced (0: none).
// edge, when set, is recorded in the audit entry.
func (s *Store) transitionTx(ctx context.Context, tx *sql.Tx, name, actor, reason string, r store.Rule, expires time.Time, edge string) (store.Status, int64, error) {
	var cur string
	err := tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE name = $1`+s.d.ForUpdate, name).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, fmt.Errorf("%s %s: %w", r.Action, name, store.ErrNotFound)
	}
	if err != nil {
		return "", 0, fmt.Errorf("%s %s: %w", r.Action, name, err)
	}
	from := store.Status(cur)
	to, noop, err := store.Next(r.Action, name, from)
	if err != nil || noop {
		return from, 0, err
	}
	var ver int64
	if from != to && (from.Enforced() || to.Enforced()) {
		if ver, err = s.bump(ctx, tx); err != nil {
			return from, 0, err
		}
	}
	q := `UPDATE devices SET status = $1, status_reason = $2, updated_at = $3 WHERE name = $4`
	args := []any{string(to), reason, ms(s.now()), name}
	if r.SetsExpiry {
		q = `UPDATE devices SET status = $1, status_reason = $2, updated_at = $3, expires_at = $5 WHERE name = $4`
		args = append(args, ms(expires))
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return from, 0, fmt.Errorf("%s %s: %w", r.Action, name, err)
	}
	return from, ver, s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: string(r.Action), Device: name, Edge: edge, FromStatus: from, ToStatus: to, Reason: reason, AllowlistVersion: ver})
}

// ApproveDevice implements store.Store.
func (s *Store) ApproveDevice(ctx context.Context, name, actor, reason string, expires time.Time) error {
	return s.transition(ctx, name, actor, reason, ruleApprove, expires)
}

// DenyDevice implements store.Store.
func (s *Store) DenyDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleDeny, time.Time{})
}

// SuspendDevice implements store.Store.
func (s *Store) SuspendDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleSuspend, time.Time{})
}

// ReinstateDevice implements store.Store.
func (s *Store) ReinstateDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleReinstate, time.Time{})
}

// RevokeDevice implements store.Store.
func (s *Store) RevokeDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleRevoke, time.Time{})
}

// RenewDevice implements store.Store.
func (s *Store) RenewDevice(ctx context.Context, name, actor, reason string, expires time.Time) error {
	return s.transition(ctx, name, actor, reason, ruleRenew, expires)
}

// ExpireDue implements store.Store. One version bump covers all devices
// expired at once.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, actor string) ([]string, error) {
	var names []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name FROM devices WHERE status = 'active' AND expires_at > 0 AND expires_at <= $1 ORDER BY name`+s.d.ForUpdate, ms(now))
		if err != nil {
			return fmt.Errorf("expire: %w", err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("expire: %w", err)
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(names) == 0 {
			return err
		}
		ver, err := s.bump(ctx, tx)
		if err != nil {
			return err
		}
		for _, n := range names {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET status = 'expired', status_reason = $1, updated_at = $2 WHERE name = $3`,
				"registration expired; renew it", ms(s.now()), n); err != nil {
				return fmt.Errorf("expire %s: %w", n, err)
			}
			if err := s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "expire", Device: n, FromStatus: store.Active, ToStatus: store.Expired,
				Reason: "registration period ended", AllowlistVersion: ver}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// SetLimits implements store.Store.
func (s *Store) SetLimits(ctx context.Context, name, actor string, mph, rph int) error {
	if mph < 0 || rph < 0 {
		return fmt.Errorf("set limits of %s: negative limit", name)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		var oldM, oldR int
		err := tx.QueryRowContext(ctx, `SELECT status, messages_per_hour, recipients_per_hour FROM devices WHERE name = $1`+s.d.ForUpdate, name).Scan(&cur, &oldM, &oldR)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("set limits of %s: %w", name, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("set limits of %s: %w", name, err)
		}
		if oldM == mph && oldR == rph {
			return nil
		}
		var ver int64
		if store.Status(cur).Enforced() {
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET messages_per_hour = $1, recipients_per_hour = $2, updated_at = $3 WHERE name = $4`,
			mph, rph, ms(s.now()), name); err != nil {
			return fmt.Errorf("set limits of %s: %w", name, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "limits", Device: name, FromStatus: store.Status(cur), ToStatus: store.Status(cur),
			Reason: fmt.Sprintf("messages/hour %d -> %d, recipients/hour %d -> %d", oldM, mph, oldR, rph), AllowlistVersion: ver})
	})
}

// SetSenderConfirmation implements store.Store.
