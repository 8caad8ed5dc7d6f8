package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/postern/postern/central/store"
)

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if u.Name == "" {
		return errors.New("store: user without a name")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)`, u.Name, u.PasswordHash, ms(s.now()))
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("user %s: %w", u.Name, store.ErrExists)
		}
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	return nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	var u store.User
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT name, password_hash, created_at FROM users WHERE name = $1`, name).Scan(&u.Name, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("user %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("user %s: %w", name, err)
	}
	u.CreatedAt = fromMS(created)
	return u, nil
}

// ListUsers implements store.Store.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, created_at FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		var u store.User
		var created int64
		if err := rows.Scan(&u.Name, &created); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.CreatedAt = fromMS(created)
		out = append(out, u)
	}
	return out, rows.Err()
}

// SetUserPassword implements store.Store.
func (s *Store) SetUserPassword(ctx context.Context, name, hash string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE users SET password_hash = $1 WHERE name = $2`, hash, name)
	return affected(res, err, "user "+name)
}

// CreateSession implements store.Store.
func (s *Store) CreateSession(ctx context.Context, se store.Session) error {
	created := se.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (id_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
		se.IDHash, se.User, ms(created), ms(se.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create session for %s: %w", se.User, err)
	}
	return nil
}

// Session implements store.Store.
func (s *Store) Session(ctx context.Context, idHash string, now time.Time) (store.Session, error) {
	var se store.Session
	var created, exp int64
	err := s.db.QueryRowContext(ctx, `SELECT id_hash, username, created_at, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2`,
		idHash, ms(now)).Scan(&se.IDHash, &se.User, &created, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return se, fmt.Errorf("session: %w", store.ErrNotFound)
	}
	if err != nil {
		return se, fmt.Errorf("session: %w", err)
	}
	se.CreatedAt, se.ExpiresAt = fromMS(created), fromMS(exp)
	return se, nil
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, idHash string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions implements store.Store.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= $1`, ms(now)); err != nil {
		return fmt.Errorf("delete expired sessions: %w", err)
	}
	return nil
}

var _ store.Store = (*Store)(nil)
