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

const day = 24 * time.Hour

// dayOf is the start (00:00 UTC) of t's day in Unix milliseconds.
func dayOf(t time.Time) int64 { return t.UnixMilli() / day.Milliseconds() * day.Milliseconds() }

// countDays adds stored events to the per-day counts of their devices and
// of the fleet, inside the events' transaction: one upsert per device, day
// and kind, not one per event.
func countDays(ctx context.Context, tx *sql.Tx, es []event.Event) error {
	type key struct {
		dev  string
		day  int64
		kind string
	}
	sums := map[key]int64{}
	var order []key
	for _, e := range es {
		n := int64(e.Count)
		if n <= 0 {
			n = 1
		}
		for _, dev := range []string{strings.ToLower(e.Device), store.DeviceAll} {
			k := key{dev, dayOf(e.Time), string(e.Kind)}
			if _, ok := sums[k]; !ok {
				order = append(order, k)
			}
			sums[k] += n
		}
	}
	for _, k := range order {
		if _, err := tx.ExecContext(ctx, `INSERT INTO event_days (device, day, kind, n) VALUES ($1, $2, $3, $4)
			ON CONFLICT (device, day, kind) DO UPDATE SET n = event_days.n + excluded.n`, k.dev, k.day, k.kind, sums[k]); err != nil {
			return fmt.Errorf("daily counts of %d events: %w", len(es), err)
		}
	}
	return nil
}

// sampleEdge records an edge's queue in its five-minute slot (the last
// report in a slot wins).
func sampleEdge(ctx context.Context, db *sql.DB, id string, st store.EdgeStatus) error {
	slot := st.LastSeen.UnixMilli() / store.EdgeSampleSlot.Milliseconds() * store.EdgeSampleSlot.Milliseconds()
	_, err := db.ExecContext(ctx, `INSERT INTO edge_samples (edge, slot, queue_depth, outbox, online) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (edge, slot) DO UPDATE SET queue_depth = excluded.queue_depth, outbox = excluded.outbox, online = excluded.online`,
		id, slot, st.QueueDepth, st.Outbox, st.Online)
	if err != nil {
		return fmt.Errorf("edge %s: queue sample: %w", id, err)
	}
	return nil
}

// ClaimNotice implements store.Store.
func (s *Store) ClaimNotice(ctx context.Context, device, kind, key string, at time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO owner_notices (device, kind, nkey, sent_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (device, kind, nkey) DO NOTHING`, device, kind, key, ms(at))
	if err != nil {
		return false, fmt.Errorf("claim notice %s of %s: %w", kind, device, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim notice %s of %s: %w", kind, device, err)
	}
	return n == 1, nil
}

// ReleaseNotice implements store.Store.
func (s *Store) ReleaseNotice(ctx context.Context, device, kind, key string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM owner_notices WHERE device = $1 AND kind = $2 AND nkey = $3`, device, kind, key); err != nil {
		return fmt.Errorf("release notice %s of %s: %w", kind, device, err)
	}
	return nil
}

// ExpiringDevices implements store.Store (index devices_status_expires,
// and the owner_notices key per device).
func (s *Store) ExpiringDevices(ctx context.Context, from, before time.Time, unnoticed string, limit int) ([]store.Device, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, expiringSQL, ms(from), ms(before), unnoticed, limit)
	if err != nil {
		return nil, fmt.Errorf("expiring devices: %w", err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("expiring devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// reportKinds are the events an owner is shown.
var reportKinds = []event.Kind{event.Refusal, event.RateLimit, event.ReportDropped, event.NDR, event.NDRUndeliverable, event.NDRWarning}

const eventCols = `id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail`

func scanEvents(rows *sql.Rows) ([]event.Event, error) {
	defer rows.Close()
	var out []event.Event
	for rows.Next() {
		var e event.Event
		var at int64
		var kind, detail string
		if err := rows.Scan(&e.ID, &e.Edge, &at, &kind, &e.Device, &e.ClientIP, &e.Sender, &e.Recipient, &e.QueueID, &e.Reason, &e.Count, &detail); err != nil {
			return nil, err
		}
		e.Time, e.Kind = fromMS(at), event.Kind(kind)
		if detail != "" {
			if err := json.Unmarshal([]byte(detail), &e.Detail); err != nil {
				return nil, fmt.Errorf("detail of %s: %w", e.ID, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeviceReports implements store.Store. Each branch of the union reads
// one index range: the device's (events_device) and the addresses'
// (events_client; "device || ”" keeps the planner off the device
// index, whose ” range holds every unregistered client's events).
func (s *Store) DeviceReports(ctx context.Context, device string, ips []string, since time.Time, limit int) ([]event.Event, error) {
	q, args := deviceReportsSQL(device, ips, since, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("device reports of %s: %w", device, err)
	}
	out, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("device reports of %s: %w", device, err)
	}
	return out, nil
}

func deviceReportsSQL(device string, ips []string, since time.Time, limit int) (string, []any) {
	if limit <= 0 {
		limit = 50
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	kinds := make([]string, len(reportKinds))
	for i, k := range reportKinds {
		kinds[i] = arg(string(k))
	}
	in := strings.Join(kinds, ", ")
	branches := []string{fmt.Sprintf(`SELECT seq, %s FROM events WHERE device = %s AND kind IN (%s)`, eventCols, arg(strings.ToLower(device)), in)}
	if len(ips) > 0 {
		var ph []string
		for _, ip := range ips {
			ph = append(ph, arg(ip))
		}
		branches = append(branches, fmt.Sprintf(`SELECT seq, %s FROM events WHERE client_ip IN (%s) AND at >= %s AND device || '' = '' AND kind IN (%s)`,
			eventCols, strings.Join(ph, ", "), arg(ms(since)), in))
	}
	lim := arg(limit)
	for i, b := range branches {
		branches[i] = "SELECT * FROM (" + b + " ORDER BY at DESC, seq DESC LIMIT " + lim + ") b" + fmt.Sprint(i)
	}
	return `SELECT ` + eventCols + ` FROM (` + strings.Join(branches, " UNION ALL ") + `) u ORDER BY at DESC, seq DESC LIMIT ` + lim, args
}

const (
	dailyCountsSQL = `SELECT day, kind, n FROM event_days WHERE device = $1 AND day >= $2 ORDER BY day, kind`
	latestEventSQL = `SELECT ` + eventCols + ` FROM events WHERE device = $1`
	latestKindSQL  = ` AND kind = $2`
	latestOrderSQL = ` ORDER BY at DESC, seq DESC LIMIT 1`
	edgeSamplesSQL = `SELECT slot, queue_depth, outbox, online FROM edge_samples WHERE edge = $1 AND slot >= $2 ORDER BY slot`
	expiringSQL    = `SELECT ` + deviceCols + ` FROM devices WHERE status = 'active' AND expires_at > $1 AND expires_at <= $2
		AND NOT EXISTS (SELECT 1 FROM owner_notices n WHERE n.device = devices.name AND n.kind = $3 AND n.nkey = CAST(devices.expires_at AS TEXT))
		ORDER BY expires_at, name LIMIT $4`
)

// PlanQuery is one query of the owner pages, the charts and the
// reminders with example arguments, for tests that check with EXPLAIN
// that it reads indexes rather than whole tables.
type PlanQuery struct {
	Name string
	SQL  string
	Args []any
}

// PlanQueries returns those queries.
func PlanQueries() []PlanQuery {
	now := time.Now()
	rq, rargs := deviceReportsSQL("scanner.example.edu", []string{"10.1.2.3", "10.1.2.4"}, now, 30)
	dq, dargs := deviceReportsSQL("scanner.example.edu", nil, now, 30)
	return []PlanQuery{
		{"device reports with addresses", rq, rargs},
		{"device reports", dq, dargs},
		{"daily counts", dailyCountsSQL, []any{"*", ms(now)}},
		{"latest event", latestEventSQL + latestOrderSQL, []any{"scanner.example.edu"}},
		{"latest event of a kind", latestEventSQL + latestKindSQL + latestOrderSQL, []any{"scanner.example.edu", "tls"}},
		{"edge samples", edgeSamplesSQL, []any{"e1", ms(now)}},
		{"expiring devices", expiringSQL, []any{ms(now), ms(now.Add(30 * day)), "expiring-30", 1000}},
	}
}

// DailyCounts implements store.Store (primary key range of event_days).
func (s *Store) DailyCounts(ctx context.Context, device string, from time.Time) ([]store.DayCount, error) {
	rows, err := s.db.QueryContext(ctx, dailyCountsSQL, strings.ToLower(device), dayOf(from))
	if err != nil {
		return nil, fmt.Errorf("daily counts of %q: %w", device, err)
	}
	defer rows.Close()
	var out []store.DayCount
	for rows.Next() {
		var c store.DayCount
		var d int64
		var k string
		if err := rows.Scan(&d, &k, &c.N); err != nil {
			return nil, fmt.Errorf("daily counts of %q: %w", device, err)
		}
		c.Day, c.Kind = fromMS(d), event.Kind(k)
		out = append(out, c)
	}
	return out, rows.Err()
}

// LatestEvent implements store.Store.
func (s *Store) LatestEvent(ctx context.Context, device string, kind event.Kind) (event.Event, error) {
	q := latestEventSQL
	args := []any{strings.ToLower(device)}
	if kind != "" {
		q += latestKindSQL
		args = append(args, string(kind))
	}
	rows, err := s.db.QueryContext(ctx, q+latestOrderSQL, args...)
	if err != nil {
		return event.Event{}, fmt.Errorf("latest %s event of %s: %w", kind, device, err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return event.Event{}, fmt.Errorf("latest %s event of %s: %w", kind, device, err)
	}
	if len(evs) == 0 {
		return event.Event{}, fmt.Errorf("latest %s event of %s: %w", kind, device, store.ErrNotFound)
	}
	return evs[0], nil
}

// EdgeSamples implements store.Store.
func (s *Store) EdgeSamples(ctx context.Context, edge string, from time.Time) ([]store.EdgeSample, error) {
	rows, err := s.db.QueryContext(ctx, edgeSamplesSQL, edge, ms(from))
	if err != nil {
		return nil, fmt.Errorf("queue samples of %s: %w", edge, err)
	}
	defer rows.Close()
	var out []store.EdgeSample
	for rows.Next() {
		var e store.EdgeSample
		var slot int64
		if err := rows.Scan(&slot, &e.QueueDepth, &e.Outbox, &e.Online); err != nil {
			return nil, fmt.Errorf("queue samples of %s: %w", edge, err)
		}
		e.Time = fromMS(slot)
		out = append(out, e)
	}
	return out, rows.Err()
}
