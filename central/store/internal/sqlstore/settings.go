package sqlstore

import (
	"context"
	"fmt"
)

// PinSetting stores value under name unless a value is stored already, and
// returns the stored value (value itself when this call stored it). Two
// instances pinning at once store one of their values; both get it back.
func (s *Store) PinSetting(ctx context.Context, name, value string) (string, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO central_settings (name, value, set_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
		name, value, ms(s.now())); err != nil {
		return "", fmt.Errorf("store: pin setting %s: %w", name, err)
	}
	var v string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM central_settings WHERE name = $1`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("store: read setting %s: %w", name, err)
	}
	return v, nil
}
