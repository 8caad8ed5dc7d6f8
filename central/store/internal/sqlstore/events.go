package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

const insertEvent = `INSERT INTO events (id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail, received)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING`

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e event.Event) (bool, error) {
	return s.addEvent(ctx, e)
}

// AddEvents implements store.Store: one multi-row INSERT per chunk of
// eventChunk events, in one transaction, so the whole batch costs a few
// round trips and one commit.
func (s *Store) AddEvents(ctx context.Context, es []event.Event) ([]bool, error) {
	inserted := make([]bool, len(es))
	first := make(map[string]int, len(es)) // id -> index of its first occurrence
	rows := make([]int, 0, len(es))
	for i := range es {
		if err := es[i].Validate(); err != nil {
			return nil, fmt.Errorf("add events: %w", err)
		}
		if _, dup := first[es[i].ID]; !dup {
			first[es[i].ID] = i
			rows = append(rows, i)
		}
	}
	now := ms(s.now())
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for len(rows) > 0 {
			chunk := rows[:min(len(rows), eventChunk)]
			rows = rows[len(chunk):]
			var q strings.Builder
			q.WriteString(`INSERT INTO events (id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail, received) VALUES `)
			args := make([]any, 0, len(chunk)*13)
			for k, i := range chunk {
				e := &es[i]
				detail, err := eventDetail(e)
				if err != nil {
					return err
				}
				if k > 0 {
					q.WriteString(", ")
				}
				q.WriteByte('(')
				for c := range 13 {
					if c > 0 {
						q.WriteString(", ")
					}
					fmt.Fprintf(&q, "$%d", len(args)+c+1)
				}
				q.WriteByte(')')
				args = append(args, e.ID, e.Edge, ms(e.Time), string(e.Kind), strings.ToLower(e.Device), e.ClientIP, e.Sender,
					e.Recipient, e.QueueID, e.Reason, e.Count, detail, now)
			}
			q.WriteString(` ON CONFLICT (id) DO NOTHING RETURNING id`)
			res, err := tx.QueryContext(ctx, q.String(), args...)
			if err != nil {
				return fmt.Errorf("add %d events: %w", len(chunk), err)
			}
			for res.Next() {
				var id string
				if err := res.Scan(&id); err != nil {
					res.Close()
					return fmt.Errorf("add events: %w", err)
				}
				if i, ok := first[id]; ok {
					inserted[i] = true
				}
			}
			if err := res.Close(); err != nil {
				return fmt.Errorf("add events: %w", err)
			}
			if err := res.Err(); err != nil {
				return fmt.Errorf("add events: %w", err)
			}
		}
		var stored []event.Event
		for i, ok := range inserted {
			if ok {
				stored = append(stored, es[i])
			}
		}
		return countDays(ctx, tx, stored)
	})
	if err != nil {
		return nil, err
	}
	return inserted, nil
}

// eventChunk is the number of events per INSERT statement (13
// parameters each, well below both databases' limits).
const eventChunk = 256

func eventDetail(e *event.Event) (string, error) {
	if len(e.Detail) == 0 {
		return "", nil
	}
	b, err := json.Marshal(e.Detail)
	if err != nil {
		return "", fmt.Errorf("add event %s: %w", e.ID, err)
	}
	return string(b), nil
}

func (s *Store) addEvent(ctx context.Context, e event.Event) (bool, error) {
	if err := e.Validate(); err != nil {
		return false, fmt.Errorf("add event: %w", err)
	}
	detail, err := eventDetail(&e)
	if err != nil {
		return false, err
	}
	inserted := false
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, insertEvent,
			e.ID, e.Edge, ms(e.Time), string(e.Kind), strings.ToLower(e.Device), e.ClientIP, e.Sender, e.Recipient, e.QueueID, e.Reason, e.Count, detail, ms(s.now()))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n != 1 {
			return err
		}
		inserted = true
		return countDays(ctx, tx, []event.Event{e})
	})
	if err != nil {
		return false, fmt.Errorf("add event %s: %w", e.ID, err)
	}
	return inserted, nil
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

// weight is what one event adds to a device counter.
const weight = `CASE WHEN count > 0 THEN count ELSE 1 END`

// PruneEvents implements store.Store. The events_pruned counter row is
// locked first, so two instances pruning at once take turns.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE counters SET value = value WHERE name = 'events_pruned'`); err != nil {
			return fmt.Errorf("prune events: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_counters (device, kind, count, last_at)
			SELECT device, kind, CAST(SUM(`+weight+`) AS BIGINT), MAX(at) FROM events WHERE received < $1 AND device <> '' GROUP BY device, kind
			ON CONFLICT (device, kind) DO UPDATE SET count = device_counters.count + excluded.count,
				last_at = CASE WHEN excluded.last_at > device_counters.last_at THEN excluded.last_at ELSE device_counters.last_at END`,
			ms(before)); err != nil {
			return fmt.Errorf("prune events: counters: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE received < $1`, ms(before))
		if err != nil {
			return fmt.Errorf("prune events: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return fmt.Errorf("prune events: %w", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE counters SET value = value + $1 WHERE name = 'events_pruned'`, n)
		return err
	})
	return n, err
}

// DeviceEventCounts implements store.Store.
func (s *Store) DeviceEventCounts(ctx context.Context, device string) (map[event.Kind]int64, error) {
	out := map[event.Kind]int64{}
	rows, err := s.db.QueryContext(ctx, `SELECT kind, count FROM device_counters WHERE device = $1
		UNION ALL SELECT kind, CAST(SUM(`+weight+`) AS BIGINT) FROM events WHERE device = $1 GROUP BY kind`, strings.ToLower(device))
	if err != nil {
		return nil, fmt.Errorf("device event counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var c int64
		if err := rows.Scan(&k, &c); err != nil {
			return nil, fmt.Errorf("device event counts: %w", err)
		}
		out[event.Kind(k)] += c
	}
	return out, rows.Err()
}
