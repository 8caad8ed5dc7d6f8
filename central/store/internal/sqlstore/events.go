package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e event.Event) (bool, error) {
	if err := e.Validate(); err != nil {
		return false, fmt.Errorf("add event: %w", err)
	}
	var detail string
	if len(e.Detail) > 0 {
		b, err := json.Marshal(e.Detail)
		if err != nil {
			return false, fmt.Errorf("add event %s: %w", e.ID, err)
		}
		detail = string(b)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO events (id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail, received)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING`,
		e.ID, e.Edge, ms(e.Time), string(e.Kind), strings.ToLower(e.Device), e.ClientIP, e.Sender, e.Recipient, e.QueueID, e.Reason, e.Count, detail, ms(s.now()))
	if err != nil {
		return false, fmt.Errorf("add event %s: %w", e.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("add event %s: %w", e.ID, err)
	}
	return n == 1, nil
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]event.Event, error) {
	q := `SELECT id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail FROM events`
	var args []any
	var where []string
	add := func(col, v string) {
		if v != "" {
			args = append(args, v)
			where = append(where, fmt.Sprintf("%s = $%d", col, len(args)))
		}
	}
	add("device", strings.ToLower(f.Device))
	add("edge", f.Edge)
	add("kind", string(f.Kind))
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY at DESC, seq DESC LIMIT $%d", len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []event.Event
	for rows.Next() {
		var e event.Event
		var at int64
		var kind, detail string
		if err := rows.Scan(&e.ID, &e.Edge, &at, &kind, &e.Device, &e.ClientIP, &e.Sender, &e.Recipient, &e.QueueID, &e.Reason, &e.Count, &detail); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time, e.Kind = fromMS(at), event.Kind(kind)
		if detail != "" {
			if err := json.Unmarshal([]byte(detail), &e.Detail); err != nil {
				return nil, fmt.Errorf("list events: detail of %s: %w", e.ID, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
