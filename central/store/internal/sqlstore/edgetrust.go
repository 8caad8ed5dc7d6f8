package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

var zeroTime time.Time

// SuspendByEdge implements store.Store. The edge's row is locked first, so
// concurrent reports of one edge (also on several central instances)
// count against its cap one after the other.
func (s *Store) SuspendByEdge(ctx context.Context, es store.EdgeSuspension) (store.EdgeSuspensionResult, error) {
	var res store.EdgeSuspensionResult
	name := strings.ToLower(es.Device)
	actor := "edge:" + es.Edge
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res = store.EdgeSuspensionResult{}
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM edges WHERE id = $1`+s.d.ForUpdate, es.Edge).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("suspension by edge %s: %w", es.Edge, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("suspension by edge %s: %w", es.Edge, err)
		}
		// A report seen before is decided again only while it waits as an
		// open request for lack of traffic: the edge's evidence may have
		// been stored after the report (events are handled in parallel).
		var pending *store.SuspensionRequest
		if es.EventID != "" {
			r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestCols+` FROM suspension_requests WHERE edge = $1 AND event_id = $2 LIMIT 1`, es.Edge, es.EventID))
			if err == nil {
				if r.State != store.RequestOpen || r.Why != store.WhyNoTraffic {
					res.Outcome, res.Request = store.EdgeNothing, r
					return nil
				}
				pending = &r
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("suspension by edge %s: %w", es.Edge, err)
			}
		}
		var cur string
		err = tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE name = $1`+s.d.ForUpdate, name).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && store.Status(cur) != store.Active) {
			res.Outcome = store.EdgeNothing
			return nil
		}
		if err != nil {
			return fmt.Errorf("suspension by edge %s of %s: %w", es.Edge, name, err)
		}
		var relayed int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE edge = $1 AND device = $2 AND kind IN ($3, $4) AND received >= $5`,
			es.Edge, name, string(event.Delivery), string(event.NDR), ms(es.RelayedSince)).Scan(&relayed); err != nil {
			return fmt.Errorf("suspension by edge %s: relay evidence: %w", es.Edge, err)
		}
		why := ""
		if relayed == 0 {
			why = store.WhyNoTraffic
		} else {
			var used int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit WHERE actor = $1 AND action = 'suspend' AND at >= $2`,
				actor, ms(es.CapSince)).Scan(&used); err != nil {
				return fmt.Errorf("suspension by edge %s: cap: %w", es.Edge, err)
			}
			if used >= es.Cap {
				why = store.WhyCap
			}
		}
		if why == "" {
			_, ver, err := s.transitionTx(ctx, tx, name, actor, es.Reason, ruleSuspend, zeroTime, es.Edge)
			if err != nil {
				return err
			}
			res.Outcome, res.Version = store.EdgeSuspended, ver
			if pending != nil {
				if _, err := tx.ExecContext(ctx, `UPDATE suspension_requests SET state = 'auto', decided_by = $1, decided_at = $2, decision = $3 WHERE id = $4`,
					actor, ms(s.now()), "the edge's relay evidence arrived after its report", pending.ID); err != nil {
					return fmt.Errorf("record suspension by edge %s: %w", es.Edge, err)
				}
				return nil
			}
			if es.EventID != "" {
				if _, err := tx.ExecContext(ctx, `INSERT INTO suspension_requests (device, edge, event_id, reason, why, state, created_at, decided_by, decided_at)
					VALUES ($1, $2, $3, $4, '', 'auto', $5, $6, $5)`, name, es.Edge, es.EventID, es.Reason, ms(s.now()), actor); err != nil {
					return fmt.Errorf("record suspension by edge %s: %w", es.Edge, err)
				}
			}
			return nil
		}
		res.Outcome = store.EdgeRequested
		if pending != nil {
			res.Request = *pending
			return nil
		}
		r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestCols+` FROM suspension_requests WHERE device = $1 AND edge = $2 AND state = 'open' ORDER BY id LIMIT 1`, name, es.Edge))
		if err == nil {
			res.Request = r
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("suspension request: %w", err)
		}
		now := ms(s.now())
		var rid int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO suspension_requests (device, edge, event_id, reason, why, state, created_at)
			VALUES ($1, $2, $3, $4, $5, 'open', $6) RETURNING id`, name, es.Edge, es.EventID, es.Reason, why, now).Scan(&rid); err != nil {
			return fmt.Errorf("store suspension request: %w", err)
		}
		if err := s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "suspend-request", Device: name, Edge: es.Edge,
			FromStatus: store.Active, ToStatus: store.Active, Reason: fmt.Sprintf("request %d (%s): %s", rid, why, es.Reason)}); err != nil {
			return err
		}
		res.New = true
		res.Request = store.SuspensionRequest{ID: rid, Device: name, Edge: es.Edge, EventID: es.EventID, Reason: es.Reason, Why: why,
			State: store.RequestOpen, CreatedAt: fromMS(now)}
		return nil
	})
	return res, err
}

const requestCols = `id, device, edge, event_id, reason, why, state, created_at, decided_by, decided_at, decision`

func scanRequest(r scanner) (store.SuspensionRequest, error) {
	var q store.SuspensionRequest
	var state string
	var created, decided int64
	err := r.Scan(&q.ID, &q.Device, &q.Edge, &q.EventID, &q.Reason, &q.Why, &state, &created, &q.DecidedBy, &decided, &q.Decision)
	q.State, q.CreatedAt, q.DecidedAt = store.RequestState(state), fromMS(created), fromMS(decided)
	return q, err
}

// ListSuspensionRequests implements store.Store.
func (s *Store) ListSuspensionRequests(ctx context.Context, f store.RequestFilter) ([]store.SuspensionRequest, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 200
	}
	q := `SELECT ` + requestCols + ` FROM suspension_requests`
	var (
		where []string
		args  []any
	)
	for col, v := range map[string]string{"state": string(f.State), "edge": f.Edge, "device": strings.ToLower(f.Device)} {
		if v != "" {
			args = append(args, v)
			where = append(where, fmt.Sprintf("%s = $%d", col, len(args)))
		}
	}
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list suspension requests: %w", err)
	}
	defer rows.Close()
	var out []store.SuspensionRequest
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("list suspension requests: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountOpenSuspensionRequests implements store.Store.
func (s *Store) CountOpenSuspensionRequests(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM suspension_requests WHERE state = 'open'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count suspension requests: %w", err)
	}
	return n, nil
}

// DecideSuspensionRequest implements store.Store.
func (s *Store) DecideSuspensionRequest(ctx context.Context, id int64, confirm bool, actor, note string) (store.SuspensionRequest, error) {
	var out store.SuspensionRequest
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestCols+` FROM suspension_requests WHERE id = $1`+s.d.ForUpdate, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("suspension request %d: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("suspension request %d: %w", id, err)
		}
		if r.State != store.RequestOpen {
			return fmt.Errorf("suspension request %d: %w (it is %s)", id, store.ErrTransition, r.State)
		}
		r.State, r.DecidedBy, r.DecidedAt, r.Decision = store.RequestDismissed, actor, s.now().UTC().Truncate(time.Millisecond), note
		action := "dismiss-suspend-request"
		if confirm {
			r.State, action = store.RequestConfirmed, "confirm-suspend-request"
		}
		if _, err := tx.ExecContext(ctx, `UPDATE suspension_requests SET state = $1, decided_by = $2, decided_at = $3, decision = $4 WHERE id = $5`,
			string(r.State), actor, ms(r.DecidedAt), note, id); err != nil {
			return fmt.Errorf("suspension request %d: %w", id, err)
		}
		if err := s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: action, Device: r.Device, Edge: r.Edge,
			Reason: strings.TrimSpace(fmt.Sprintf("request %d by edge %s: %s", id, r.Edge, note))}); err != nil {
			return err
		}
		if confirm {
			reason := r.Reason + " (confirmed by " + actor + ")"
			if _, _, err := s.transitionTx(ctx, tx, r.Device, actor, reason, ruleSuspend, zeroTime, r.Edge); err != nil &&
				!errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrTransition) {
				return err
			}
		}
		out = r
		return nil
	})
	return out, err
}
