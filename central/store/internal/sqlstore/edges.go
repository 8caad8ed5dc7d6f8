package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
)

const edgeCols = `id, name, site, enrol_expires, enrolled, mqtt_username, password_hash, online, last_seen, allowlist_version, queue_depth, outbox, software, counters, created_at,
	revoked_at, over_limit, over_limit_at, over_limit_reason`

func scanEdge(r scanner) (store.Edge, error) {
	var e store.Edge
	var exp, seen, created, revoked, overAt int64
	var counters string
	err := r.Scan(&e.ID, &e.Name, &e.Site, &exp, &e.Enrolled, &e.MQTTUsername, &e.PasswordHash, &e.Status.Online, &seen,
		&e.Status.AllowlistVersion, &e.Status.QueueDepth, &e.Status.Outbox, &e.Status.Software, &counters, &created,
		&revoked, &e.OverLimit, &overAt, &e.OverLimitReason)
	if err != nil {
		return e, err
	}
	e.EnrolExpires, e.Status.LastSeen, e.CreatedAt = fromMS(exp), fromMS(seen), fromMS(created)
	e.RevokedAt, e.OverLimitAt = fromMS(revoked), fromMS(overAt)
	if counters != "" {
		if err := json.Unmarshal([]byte(counters), &e.Status.Counters); err != nil {
			return e, fmt.Errorf("counters of edge %s: %w", e.ID, err)
		}
	}
	return e, nil
}

// CreateEdge implements store.Store.
func (s *Store) CreateEdge(ctx context.Context, e store.Edge) error {
	if e.ID == "" {
		return errors.New("store: edge without an id")
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO edges (id, name, site, created_at) VALUES ($1, $2, $3, $4)`, e.ID, e.Name, e.Site, ms(s.now()))
		if err != nil {
			if isUnique(err) {
				return fmt.Errorf("edge %s: %w", e.ID, store.ErrExists)
			}
			return fmt.Errorf("create edge %s: %w", e.ID, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: "system", Action: "create-edge", Edge: e.ID, Reason: strings.TrimSpace(e.Name + " " + e.Site)})
	})
}

// Edge implements store.Store.
func (s *Store) Edge(ctx context.Context, id string) (store.Edge, error) {
	e, err := scanEdge(s.db.QueryRowContext(ctx, `SELECT `+edgeCols+` FROM edges WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("edge %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("edge %s: %w", id, err)
	}
	return e, nil
}

// ListEdges implements store.Store.
func (s *Store) ListEdges(ctx context.Context) ([]store.Edge, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+edgeCols+` FROM edges WHERE revoked_at = 0 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list edges: %w", err)
	}
	defer rows.Close()
	var out []store.Edge
	for rows.Next() {
		e, err := scanEdge(rows)
		if err != nil {
			return nil, fmt.Errorf("list edges: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// SetEdgeEnrolment implements store.Store.
func (s *Store) SetEdgeEnrolment(ctx context.Context, id, tokenHash string, expires time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE edges SET enrol_token_hash = $1, enrol_expires = $2 WHERE id = $3 AND revoked_at = 0`, tokenHash, ms(expires), id)
	return affected(res, err, "edge "+id)
}

// RedeemEnrolment implements store.Store: a single conditional UPDATE, so
// two concurrent redemptions of one token cannot both succeed.
func (s *Store) RedeemEnrolment(ctx context.Context, tokenHash string) (store.Edge, error) {
	if tokenHash == "" {
		return store.Edge{}, fmt.Errorf("enrolment: %w", store.ErrNotFound)
	}
	var id string
	err := s.db.QueryRowContext(ctx, `UPDATE edges SET enrol_token_hash = '', enrol_expires = 0
		WHERE enrol_token_hash = $1 AND enrol_expires > $2 AND revoked_at = 0 RETURNING id`, tokenHash, ms(s.now())).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Edge{}, fmt.Errorf("enrolment token: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Edge{}, fmt.Errorf("redeem enrolment: %w", err)
	}
	return s.Edge(ctx, id)
}

// SetEdgeCredentials implements store.Store.
func (s *Store) SetEdgeCredentials(ctx context.Context, id, username, passwordHash string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE edges SET mqtt_username = $1, password_hash = $2, enrolled = $3 WHERE id = $4`, username, passwordHash, true, id)
		if err := affected(res, err, "edge "+id); err != nil {
			return err
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: "edge:" + id, Action: "enrol", Edge: id, Reason: "credentials issued"})
	})
}

// EdgeByUsername implements store.Store.
func (s *Store) EdgeByUsername(ctx context.Context, username string) (store.Edge, error) {
	if username == "" {
		return store.Edge{}, fmt.Errorf("edge user: %w", store.ErrNotFound)
	}
	e, err := scanEdge(s.db.QueryRowContext(ctx, `SELECT `+edgeCols+` FROM edges WHERE mqtt_username = $1 AND enrolled = $2 AND revoked_at = 0`, username, true))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("edge user %s: %w", username, store.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("edge user %s: %w", username, err)
	}
	return e, nil
}

// UpdateEdgeStatus implements store.Store. A status without LastSeen (an
// MQTT last will) changes only the online flag, keeping the last report.
func (s *Store) UpdateEdgeStatus(ctx context.Context, id string, st store.EdgeStatus) error {
	if st.LastSeen.IsZero() {
		res, err := s.db.ExecContext(ctx, `UPDATE edges SET online = $1 WHERE id = $2`, st.Online, id)
		return affected(res, err, "edge "+id)
	}
	var counters string
	if len(st.Counters) > 0 {
		b, err := json.Marshal(st.Counters)
		if err != nil {
			return fmt.Errorf("edge %s counters: %w", id, err)
		}
		counters = string(b)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE edges SET online = $1, last_seen = $2, allowlist_version = $3, queue_depth = $4, outbox = $5,
		software = $6, counters = $7 WHERE id = $8`,
		st.Online, ms(st.LastSeen), st.AllowlistVersion, st.QueueDepth, st.Outbox, st.Software, counters, id)
	if err := affected(res, err, "edge "+id); err != nil {
		return err
	}
	return sampleEdge(ctx, s.db, id, st)
}

// RevokeEdge implements store.Store.
func (s *Store) RevokeEdge(ctx context.Context, id, actor, reason string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE edges SET revoked_at = $1, password_hash = '', enrol_token_hash = '', enrol_expires = 0, online = $2
			WHERE id = $3 AND revoked_at = 0`, ms(s.now()), false, id)
		if err := affected(res, err, "edge "+id); err != nil {
			return err
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "revoke-edge", Edge: id, Reason: reason})
	})
}

// NoteEdgeOverLimit implements store.Store.
func (s *Store) NoteEdgeOverLimit(ctx context.Context, id string, n int64, reason string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE edges SET over_limit = over_limit + $1, over_limit_at = $2, over_limit_reason = $3 WHERE id = $4`,
		n, ms(s.now()), reason, id)
	return affected(res, err, "edge "+id)
}
