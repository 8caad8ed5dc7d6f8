package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// naturalKey is a device name's sort key: every run of digits becomes its
// length (two digits) followed by the digits without leading zeros, so
// that bytewise order of keys is natural order of names (dev2 < dev10). A
// DNS label has at most 63 characters, so a run's length fits.
func naturalKey(name string) string {
	var b strings.Builder
	b.Grow(len(name) + 8)
	for i := 0; i < len(name); {
		c := name[i]
		if c < '0' || c > '9' {
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(name) && name[j] >= '0' && name[j] <= '9' {
			j++
		}
		run := strings.TrimLeft(name[i:j], "0")
		fmt.Fprintf(&b, "%02d%s", min(len(run), 99), run)
		i = j
	}
	return b.String()
}

// fillSortKeys sets the sort key of devices stored before it existed.
func (s *Store) fillSortKeys(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM devices WHERE sort_key = ''`)
	if err != nil {
		return fmt.Errorf("store: sort keys: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("store: sort keys: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(names) == 0 {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, n := range names {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET sort_key = $1 WHERE name = $2`, naturalKey(n), n); err != nil {
				return fmt.Errorf("store: sort key of %s: %w", n, err)
			}
		}
		return nil
	})
}

// where collects the conditions and arguments of a query.
type where struct {
	conds []string
	args  []any
}

func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return fmt.Sprintf("$%d", len(w.args))
}

func (w *where) eq(col, v string) {
	if v != "" {
		w.conds = append(w.conds, col+" = "+w.arg(v))
	}
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

func pageLimit(n int) int {
	if n <= 0 {
		return 50
	}
	return min(n, store.MaxPage)
}

func deviceWhere(q store.DeviceQuery) *where {
	w := &where{}
	if len(q.Status) > 0 {
		var ph []string
		for _, st := range q.Status {
			ph = append(ph, w.arg(string(st)))
		}
		w.conds = append(w.conds, "status IN ("+strings.Join(ph, ", ")+")")
	}
	if len(q.Names) > 0 {
		var ph []string
		for _, n := range q.Names {
			ph = append(ph, w.arg(n))
		}
		w.conds = append(w.conds, "name IN ("+strings.Join(ph, ", ")+")")
	}
	w.eq("department", q.Department)
	if q.Edge != "" {
		w.conds = append(w.conds, "name IN (SELECT device FROM events WHERE edge = "+w.arg(q.Edge)+")")
	}
	switch q.DNS {
	case store.DNSMatch:
		w.conds = append(w.conds, "fcrdns_ok = "+w.arg(true))
	case store.DNSMismatch:
		w.conds = append(w.conds, "fcrdns_ok = "+w.arg(false))
	}
	if !q.ExpiringBefore.IsZero() {
		w.conds = append(w.conds, "status = 'active' AND expires_at > 0 AND expires_at <= "+w.arg(ms(q.ExpiringBefore)))
	}
	switch q.Senders {
	case store.SendersConfirmed:
		w.conds = append(w.conds, "NOT EXISTS (SELECT 1 FROM senders WHERE senders.device = devices.name AND senders.confirmed_at = 0)")
	case store.SendersUnconfirmed:
		w.conds = append(w.conds, "EXISTS (SELECT 1 FROM senders WHERE senders.device = devices.name AND senders.confirmed_at = 0)")
	}
	if t := strings.TrimSpace(strings.ToLower(q.Query)); t != "" {
		p := w.arg("%" + escapeLike(t) + "%")
		w.conds = append(w.conds, fmt.Sprintf(`(LOWER(name) LIKE %[1]s ESCAPE '\' OR LOWER(owner) LIKE %[1]s ESCAPE '\' OR LOWER(department) LIKE %[1]s ESCAPE '\'
			OR LOWER(contact_email) LIKE %[1]s ESCAPE '\' OR LOWER(ips) LIKE %[1]s ESCAPE '\'
			OR name IN (SELECT device FROM senders WHERE LOWER(address) LIKE %[1]s ESCAPE '\'))`, p))
	}
	return w
}

// deviceOrder is the ORDER BY of a sort; each has an index.
func deviceOrder(s store.DeviceSort, desc bool) string {
	var cols []string
	switch s {
	case store.SortStatus:
		cols = []string{"status", "sort_key", "name"}
	case store.SortRequested:
		cols = []string{"created_at", "name"}
	case store.SortExpires:
		cols = []string{"expires_at", "name"}
	case store.SortDepartment:
		cols = []string{"department", "sort_key", "name"}
	case store.SortOwner:
		cols = []string{"owner", "sort_key", "name"}
	default:
		cols = []string{"sort_key", "name"}
	}
	if desc {
		for i := range cols {
			cols[i] += " DESC"
		}
	}
	return " ORDER BY " + strings.Join(cols, ", ")
}

// DevicePageSQL is the query of one page of devices (for query plan
// tests).
func DevicePageSQL(q store.DeviceQuery) (string, []any) {
	w := deviceWhere(q)
	query := `SELECT ` + deviceCols + ` FROM devices` + w.sql() + deviceOrder(q.Sort, q.Desc) +
		` LIMIT ` + w.arg(pageLimit(q.Limit)) + ` OFFSET ` + w.arg(max(q.Offset, 0))
	return query, w.args
}

// ListDevicePage implements store.Store.
func (s *Store) ListDevicePage(ctx context.Context, q store.DeviceQuery) (store.DevicePage, error) {
	var p store.DevicePage
	w := deviceWhere(q)
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices`+w.sql(), w.args...).Scan(&p.Total); err != nil {
		return p, fmt.Errorf("list devices: count: %w", err)
	}
	query, args := DevicePageSQL(q)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return p, fmt.Errorf("list devices: %w", err)
	}
	idx := map[string]int{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return p, fmt.Errorf("list devices: %w", err)
		}
		idx[d.Name] = len(p.Devices)
		p.Devices = append(p.Devices, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("list devices: %w", err)
	}
	if len(p.Devices) == 0 {
		return p, nil
	}
	// The senders of the whole page in one query.
	sw := &where{}
	var ph []string
	for _, d := range p.Devices {
		ph = append(ph, sw.arg(d.Name))
	}
	srows, err := s.db.QueryContext(ctx, `SELECT device, address, personal, confirm_token_hash, confirm_sent_at, confirmed_at FROM senders
		WHERE device IN (`+strings.Join(ph, ", ")+`) ORDER BY device, address`, sw.args...)
	if err != nil {
		return p, fmt.Errorf("list devices: senders: %w", err)
	}
	defer srows.Close()
	for srows.Next() {
		var dev string
		var sn store.Sender
		var sent, conf int64
		if err := srows.Scan(&dev, &sn.Address, &sn.Personal, &sn.ConfirmTokenHash, &sent, &conf); err != nil {
			return p, fmt.Errorf("list devices: senders: %w", err)
		}
		sn.ConfirmSentAt, sn.ConfirmedAt = fromMS(sent), fromMS(conf)
		if i, ok := idx[dev]; ok {
			p.Devices[i].Senders = append(p.Devices[i].Senders, sn)
		}
	}
	return p, srows.Err()
}

// Departments implements store.Store.
func (s *Store) Departments(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT department FROM devices WHERE department <> '' ORDER BY department LIMIT 1000`)
	if err != nil {
		return nil, fmt.Errorf("departments: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("departments: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// cappedCount counts the rows of from+where up to store.CountCap.
func (s *Store) cappedCount(ctx context.Context, from string, w *where) (int, bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM `+from+w.sql()+fmt.Sprintf(` LIMIT %d) c`, store.CountCap+1), w.args...).Scan(&n)
	if err != nil {
		return 0, false, err
	}
	if n > store.CountCap {
		return store.CountCap, true, nil
	}
	return n, false, nil
}

// ListAuditPage implements store.Store.
func (s *Store) ListAuditPage(ctx context.Context, q store.AuditQuery) (store.AuditPage, error) {
	var p store.AuditPage
	w := &where{}
	w.eq("device", q.Device)
	w.eq("edge", q.Edge)
	w.eq("actor", q.Actor)
	w.eq("action", q.Action)
	if !q.Since.IsZero() {
		w.conds = append(w.conds, "at >= "+w.arg(ms(q.Since)))
	}
	if !q.Until.IsZero() {
		w.conds = append(w.conds, "at < "+w.arg(ms(q.Until)))
	}
	var err error
	if p.Total, p.More, err = s.cappedCount(ctx, "audit", w); err != nil {
		return p, fmt.Errorf("list audit: count: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, at, actor, action, device, edge, from_status, to_status, reason, allowlist_version FROM audit`+
		w.sql()+` ORDER BY id DESC LIMIT `+w.arg(pageLimit(q.Limit))+` OFFSET `+w.arg(max(q.Offset, 0)), w.args...)
	if err != nil {
		return p, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a store.AuditEntry
		var at int64
		var from, to string
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Device, &a.Edge, &from, &to, &a.Reason, &a.AllowlistVersion); err != nil {
			return p, fmt.Errorf("list audit: %w", err)
		}
		a.Time, a.FromStatus, a.ToStatus = fromMS(at), store.Status(from), store.Status(to)
		p.Entries = append(p.Entries, a)
	}
	return p, rows.Err()
}

// ListEventPage implements store.Store.
func (s *Store) ListEventPage(ctx context.Context, q store.EventQuery) (store.EventPage, error) {
	var p store.EventPage
	w := eventWhere(q)
	var err error
	if p.Total, p.More, err = s.cappedCount(ctx, "events", w); err != nil {
		return p, fmt.Errorf("list events: count: %w", err)
	}
	query, args := EventPageSQL(q)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return p, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e event.Event
		var at int64
		var kind, detail string
		if err := rows.Scan(&e.ID, &e.Edge, &at, &kind, &e.Device, &e.ClientIP, &e.Sender, &e.Recipient, &e.QueueID, &e.Reason, &e.Count, &detail); err != nil {
			return p, fmt.Errorf("list events: %w", err)
		}
		e.Time, e.Kind = fromMS(at), event.Kind(kind)
		if detail != "" {
			if err := json.Unmarshal([]byte(detail), &e.Detail); err != nil {
				return p, fmt.Errorf("list events: detail of %s: %w", e.ID, err)
			}
		}
		p.Events = append(p.Events, e)
	}
	return p, rows.Err()
}

// EventPageSQL is the query of one page of events (for query plan tests).
func EventPageSQL(q store.EventQuery) (string, []any) {
	w := eventWhere(q)
	return `SELECT id, edge, at, kind, device, client_ip, sender, recipient, queue_id, reason, count, detail FROM events` +
		w.sql() + ` ORDER BY at DESC, seq DESC LIMIT ` + w.arg(pageLimit(q.Limit)) + ` OFFSET ` + w.arg(max(q.Offset, 0)), w.args
}

func eventWhere(q store.EventQuery) *where {
	w := &where{}
	w.eq("device", strings.ToLower(q.Device))
	w.eq("edge", q.Edge)
	w.eq("client_ip", q.ClientIP)
	w.eq("kind", string(q.Kind))
	if q.Sender != "" {
		w.conds = append(w.conds, "lower(sender) = "+w.arg(strings.ToLower(q.Sender)))
	}
	if q.Recipient != "" {
		w.conds = append(w.conds, "lower(recipient) = "+w.arg(strings.ToLower(q.Recipient)))
	}
	if !q.Since.IsZero() {
		w.conds = append(w.conds, "at >= "+w.arg(ms(q.Since)))
	}
	if !q.Until.IsZero() {
		w.conds = append(w.conds, "at < "+w.arg(ms(q.Until)))
	}
	return w
}

// archiveRevoked moves a revoked registration of name into device_archive
// and deletes it (with its senders and request record), inside tx. It
// reports whether there was one; ErrExists if name is registered and not
// revoked.
func (s *Store) archiveRevoked(ctx context.Context, tx *sql.Tx, name string) (bool, error) {
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = $1`+s.d.ForUpdate, name))
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("device %s: %w", name, err)
	}
	if d.Status != store.Revoked {
		return false, fmt.Errorf("device %s: %w", name, store.ErrExists)
	}
	senders, err := s.senders(ctx, tx, name)
	if err != nil {
		return false, err
	}
	var addrs []string
	for _, sn := range senders {
		addrs = append(addrs, sn.Address)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_archive (name, archived_at, ips, owner, department, contact_email, purpose, senders, status, status_reason, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		d.Name, ms(s.now()), strings.Join(d.IPs, ","), d.Owner, d.Department, d.ContactEmail, d.Purpose, strings.Join(addrs, ","),
		string(d.Status), d.StatusReason, ms(d.CreatedAt)); err != nil {
		return false, fmt.Errorf("archive %s: %w", name, err)
	}
	for _, q := range []string{`DELETE FROM senders WHERE device = $1`, `DELETE FROM device_requests WHERE device = $1`, `DELETE FROM devices WHERE name = $1`} {
		if _, err := tx.ExecContext(ctx, q, name); err != nil {
			return false, fmt.Errorf("archive %s: %w", name, err)
		}
	}
	// Suspension requests about the old registration are moot.
	if _, err := tx.ExecContext(ctx, `UPDATE suspension_requests SET state = $1, decided_by = 'system', decided_at = $2, decision = 'registration revoked'
		WHERE device = $3 AND state = $4`, string(store.RequestDismissed), ms(s.now()), name, string(store.RequestOpen)); err != nil {
		return false, fmt.Errorf("archive %s: %w", name, err)
	}
	return true, nil
}

// ArchivedDevices implements store.Store.
func (s *Store) ArchivedDevices(ctx context.Context, name string) ([]store.ArchivedDevice, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, archived_at, ips, owner, department, contact_email, purpose, senders, status, status_reason, created_at
		FROM device_archive WHERE name = $1 ORDER BY id DESC`, name)
	if err != nil {
		return nil, fmt.Errorf("archived devices %s: %w", name, err)
	}
	defer rows.Close()
	var out []store.ArchivedDevice
	for rows.Next() {
		var a store.ArchivedDevice
		var archived, created int64
		var ips, senders, status string
		if err := rows.Scan(&a.Name, &archived, &ips, &a.Owner, &a.Department, &a.ContactEmail, &a.Purpose, &senders, &status, &a.StatusReason, &created); err != nil {
			return nil, fmt.Errorf("archived devices %s: %w", name, err)
		}
		if ips != "" {
			a.IPs = strings.Split(ips, ",")
		}
		if senders != "" {
			a.Senders = strings.Split(senders, ",")
		}
		a.Status, a.ArchivedAt, a.CreatedAt = store.Status(status), fromMS(archived), fromMS(created)
		out = append(out, a)
	}
	return out, rows.Err()
}
