package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/postern/postern/central/store"
)

const tokenCols = `id, hash, username, label, scope, created_at, expires_at`

func scanToken(r scanner) (store.APIToken, error) {
	var t store.APIToken
	var scope string
	var created, exp int64
	if err := r.Scan(&t.ID, &t.Hash, &t.User, &t.Label, &scope, &created, &exp); err != nil {
		return t, err
	}
	t.Scope = store.Scope(scope)
	t.CreatedAt, t.ExpiresAt = fromMS(created), fromMS(exp)
	return t, nil
}

// CreateAPIToken implements store.Store.
func (s *Store) CreateAPIToken(ctx context.Context, t store.APIToken) error {
	if t.Hash == "" {
		return errors.New("store: API token without a hash")
	}
	if t.ID == "" {
		t.ID = t.Hash[:min(16, len(t.Hash))]
	}
	if t.Scope == "" {
		t.Scope = store.ReadWrite
	}
	if !t.Scope.Valid() {
		return fmt.Errorf("store: API token scope %q", t.Scope)
	}
	created := t.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, t.Hash, t.User, t.Label, string(t.Scope), ms(created), ms(t.ExpiresAt))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("API token %s: %w", t.ID, store.ErrExists)
		}
		return fmt.Errorf("create API token for %s: %w", t.User, err)
	}
	return nil
}

// APIToken implements store.Store.
func (s *Store) APIToken(ctx context.Context, hash string) (store.APIToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("API token: %w", store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("API token: %w", err)
	}
	return t, nil
}

// ListAPITokens implements store.Store.
func (s *Store) ListAPITokens(ctx context.Context, user string) ([]store.APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE $1 = '' OR username = $1 ORDER BY created_at DESC, id`, user)
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	defer rows.Close()
	var out []store.APIToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list API tokens: %w", err)
		}
		t.Hash = ""
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAPIToken implements store.Store.
func (s *Store) RevokeAPIToken(ctx context.Context, id, actor string) (store.APIToken, error) {
	var t store.APIToken
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE id = $1`+s.d.ForUpdate, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("API token %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("API token %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = $1`, id); err != nil {
			return fmt.Errorf("revoke API token %s: %w", id, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "revoke-api-token",
			Reason: fmt.Sprintf("token %s of %s (%s)", t.ID, t.User, t.Label)})
	})
	t.Hash = ""
	return t, err
}
