package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/postern/postern/central/store"
)

// ListAudit implements store.Store.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	q := `SELECT id, at, actor, action, device, edge, from_status, to_status, reason, allowlist_version FROM audit`
	var args []any
	var where []string
	if f.Device != "" {
		args = append(args, f.Device)
		where = append(where, fmt.Sprintf("device = $%d", len(args)))
	}
	if f.Edge != "" {
		args = append(args, f.Edge)
		where = append(where, fmt.Sprintf("edge = $%d", len(args)))
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 200
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var a store.AuditEntry
		var at int64
		var from, to string
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Device, &a.Edge, &from, &to, &a.Reason, &a.AllowlistVersion); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		a.Time, a.FromStatus, a.ToStatus = fromMS(at), store.Status(from), store.Status(to)
		out = append(out, a)
	}
	return out, rows.Err()
}
