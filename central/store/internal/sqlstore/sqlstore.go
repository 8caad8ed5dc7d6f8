// Package sqlstore implements central/store.Store over database/sql for both
// SQL dialects central supports (SQLite and PostgreSQL). The dialect packages
// (central/store/sqlite, central/store/postgres) open the database and pass
// a Dialect; all queries are shared and use $n placeholders, which both
// drivers accept.
//
// Concurrency: every write runs in one transaction. On PostgreSQL a device
// row is locked (SELECT … FOR UPDATE) before its status is read, and the
// allowlist version is bumped with UPDATE … RETURNING on a single row, so
// concurrent writers (also in several processes) serialise on that row and
// get distinct increasing versions. On SQLite every transaction takes the
// write lock at BEGIN (_txlock=immediate), which serialises writers.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

//go:embed migrations
var migrations embed.FS

// Dialect holds what differs between the SQL dialects.
type Dialect struct {
	// Name is "sqlite" or "postgres" (also the migrations folder).
	Name string
	// ForUpdate is appended to a SELECT that reads a row about to be
	// changed (" FOR UPDATE" on PostgreSQL, "" on SQLite).
	ForUpdate string
	// SnapshotTx are the options of the consistent allowlist read.
	SnapshotTx *sql.TxOptions
	// MigrationLock is run first in the migration transaction to keep two
	// starting instances from migrating at once ("" for none).
	MigrationLock string
}

// Store is the shared implementation.
type Store struct {
	db  *sql.DB
	d   Dialect
	now func() time.Time
}

// New migrates db and returns a Store. clock may be nil (time.Now).
func New(ctx context.Context, db *sql.DB, d Dialect, clock func() time.Time) (*Store, error) {
	if clock == nil {
		clock = time.Now
	}
	s := &Store{db: db, d: d, now: clock}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// DB returns the underlying database (for tests).
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate(ctx context.Context) error {
	dir := "migrations/" + s.d.Name
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return fmt.Errorf("store: migrations for %s: %w", s.d.Name, err)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if s.d.MigrationLock != "" {
			if _, err := tx.ExecContext(ctx, s.d.MigrationLock); err != nil {
				return fmt.Errorf("migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		for _, e := range entries {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE name = $1`, e.Name()).Scan(&n); err != nil {
				return fmt.Errorf("migration %s: %w", e.Name(), err)
			}
			if n > 0 {
				continue
			}
			body, err := migrations.ReadFile(dir + "/" + e.Name())
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("migration %s: %w", e.Name(), err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)`, e.Name(), ms(s.now())); err != nil {
				return fmt.Errorf("migration %s: %w", e.Name(), err)
			}
		}
		return nil
	})
}

// tx runs f in a transaction, committing if it returns nil.
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// bump increments the allowlist version inside tx and returns the new one.
func (s *Store) bump(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `UPDATE counters SET value = value + 1 WHERE name = 'allowlist_version' RETURNING value`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("bump allowlist version: %w", err)
	}
	return v, nil
}

func (s *Store) audit(ctx context.Context, tx *sql.Tx, a store.AuditEntry) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit (at, actor, action, device, edge, from_status, to_status, reason, allowlist_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		ms(s.now()), a.Actor, a.Action, a.Device, a.Edge, string(a.FromStatus), string(a.ToStatus), a.Reason, a.AllowlistVersion)
	if err != nil {
		return fmt.Errorf("write audit entry: %w", err)
	}
	return nil
}

// ---- devices ----

const deviceCols = `name, ips, owner, department, contact_email, purpose, behind_firewall, firewall_accepted,
	messages_per_hour, recipients_per_hour, status, status_reason, owner_key_hash, fcrdns, fcrdns_ok,
	expires_at, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanDevice(r scanner) (store.Device, error) {
	var d store.Device
	var ips, status string
	var exp, created, updated int64
	err := r.Scan(&d.Name, &ips, &d.Owner, &d.Department, &d.ContactEmail, &d.Purpose, &d.BehindFirewall, &d.FirewallAccepted,
		&d.MessagesPerHour, &d.RecipientsPerHour, &status, &d.StatusReason, &d.OwnerKeyHash, &d.FCrDNS, &d.FCrDNSOK,
		&exp, &created, &updated)
	if err != nil {
		return d, err
	}
	if ips != "" {
		d.IPs = strings.Split(ips, ",")
	}
	d.Status = store.Status(status)
	d.ExpiresAt, d.CreatedAt, d.UpdatedAt = fromMS(exp), fromMS(created), fromMS(updated)
	return d, nil
}

// CreateDevice implements store.Store.
func (s *Store) CreateDevice(ctx context.Context, d store.Device, actor string) error {
	if d.Name == "" {
		return errors.New("store: device without a name")
	}
	if d.Status == "" {
		d.Status = store.Pending
	}
	now := s.now()
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			d.Name, strings.Join(d.IPs, ","), d.Owner, d.Department, d.ContactEmail, d.Purpose, d.BehindFirewall, d.FirewallAccepted,
			d.MessagesPerHour, d.RecipientsPerHour, string(d.Status), d.StatusReason, d.OwnerKeyHash, d.FCrDNS, d.FCrDNSOK,
			ms(d.ExpiresAt), ms(now), ms(now))
		if err != nil {
			if isUnique(err) {
				return fmt.Errorf("device %s: %w", d.Name, store.ErrExists)
			}
			return fmt.Errorf("create device %s: %w", d.Name, err)
		}
		for _, sn := range d.Senders {
			_, err := tx.ExecContext(ctx, `INSERT INTO senders (device, address, personal, confirm_token_hash, confirm_sent_at, confirmed_at)
				VALUES ($1, $2, $3, $4, $5, $6)`, d.Name, sn.Address, sn.Personal, sn.ConfirmTokenHash, ms(sn.ConfirmSentAt), ms(sn.ConfirmedAt))
			if err != nil {
				return fmt.Errorf("create device %s: sender %s: %w", d.Name, sn.Address, err)
			}
		}
		var ver int64
		if d.Status.Enforced() {
			var err error
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "register", Device: d.Name, ToStatus: d.Status, Reason: d.Purpose, AllowlistVersion: ver})
	})
}

func isUnique(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "unique") || strings.Contains(m, "duplicate key")
}

func (s *Store) senders(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, name string) ([]store.Sender, error) {
	rows, err := q.QueryContext(ctx, `SELECT address, personal, confirm_token_hash, confirm_sent_at, confirmed_at FROM senders WHERE device = $1 ORDER BY address`, name)
	if err != nil {
		return nil, fmt.Errorf("senders of %s: %w", name, err)
	}
	defer rows.Close()
	var out []store.Sender
	for rows.Next() {
		var sn store.Sender
		var sent, conf int64
		if err := rows.Scan(&sn.Address, &sn.Personal, &sn.ConfirmTokenHash, &sent, &conf); err != nil {
			return nil, fmt.Errorf("senders of %s: %w", name, err)
		}
		sn.ConfirmSentAt, sn.ConfirmedAt = fromMS(sent), fromMS(conf)
		out = append(out, sn)
	}
	return out, rows.Err()
}

// Device implements store.Store.
func (s *Store) Device(ctx context.Context, name string) (store.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("device %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("device %s: %w", name, err)
	}
	d.Senders, err = s.senders(ctx, s.db, name)
	return d, err
}

// ListDevices implements store.Store. Pending devices come first, then by
// name.
func (s *Store) ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if len(f.Status) > 0 {
		var ph []string
		for _, st := range f.Status {
			ph = append(ph, arg(string(st)))
		}
		where = append(where, "status IN ("+strings.Join(ph, ", ")+")")
	}
	if f.OwnerKeyHash != "" {
		where = append(where, "owner_key_hash = "+arg(f.OwnerKeyHash))
	}
	if q := strings.TrimSpace(strings.ToLower(f.Query)); q != "" {
		p := arg("%" + escapeLike(q) + "%")
		where = append(where, fmt.Sprintf(`(LOWER(name) LIKE %[1]s ESCAPE '\' OR LOWER(owner) LIKE %[1]s ESCAPE '\' OR LOWER(department) LIKE %[1]s ESCAPE '\'
			OR LOWER(contact_email) LIKE %[1]s ESCAPE '\' OR LOWER(ips) LIKE %[1]s ESCAPE '\'
			OR name IN (SELECT device FROM senders WHERE LOWER(address) LIKE %[1]s ESCAPE '\'))`, p))
	}
	query := `SELECT ` + deviceCols + ` FROM devices`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 500
	}
	query += ` ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, name LIMIT ` + arg(limit) + ` OFFSET ` + arg(max(f.Offset, 0))
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	for i := range out {
		if out[i].Senders, err = s.senders(ctx, s.db, out[i].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// CountDevices implements store.Store.
func (s *Store) CountDevices(ctx context.Context) (map[store.Status]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, COUNT(*) FROM devices GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	defer rows.Close()
	out := map[store.Status]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count devices: %w", err)
		}
		out[store.Status(st)] = n
	}
	return out, rows.Err()
}

// SetFCrDNS implements store.Store.
func (s *Store) SetFCrDNS(ctx context.Context, name, result string, ok bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET fcrdns = $1, fcrdns_ok = $2 WHERE name = $3`, result, ok, name)
	return affected(res, err, "device "+name)
}

func affected(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("update %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// rule is one status-changing action: which states it applies to and the
// state it leads to from each.
type rule struct {
	action string
	to     map[store.Status]store.Status
	// noop is a state in which the action does nothing and succeeds.
	noop store.Status
	// setExpiry writes the given expiry.
	setExpiry bool
}

var (
	ruleApprove   = rule{action: "approve", to: map[store.Status]store.Status{store.Pending: store.Active, store.Denied: store.Active}, setExpiry: true}
	ruleDeny      = rule{action: "deny", to: map[store.Status]store.Status{store.Pending: store.Denied}}
	ruleSuspend   = rule{action: "suspend", to: map[store.Status]store.Status{store.Active: store.Suspended}, noop: store.Suspended}
	ruleReinstate = rule{action: "reinstate", to: map[store.Status]store.Status{store.Suspended: store.Active}}
	ruleRevoke    = rule{action: "revoke", to: map[store.Status]store.Status{
		store.Pending: store.Revoked, store.Active: store.Revoked, store.Suspended: store.Revoked, store.Expired: store.Revoked, store.Denied: store.Revoked}}
	ruleRenew = rule{action: "renew", to: map[store.Status]store.Status{
		store.Active: store.Active, store.Expired: store.Active, store.Suspended: store.Suspended}, setExpiry: true}
)

func (s *Store) transition(ctx context.Context, name, actor, reason string, r rule, expires time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT status FROM devices WHERE name = $1`+s.d.ForUpdate, name).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s %s: %w", r.action, name, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.action, name, err)
		}
		from := store.Status(cur)
		if r.noop != "" && from == r.noop {
			return nil
		}
		to, ok := r.to[from]
		if !ok {
			return fmt.Errorf("%s %s: %w (it is %s)", r.action, name, store.ErrTransition, from)
		}
		var ver int64
		if from != to && (from.Enforced() || to.Enforced()) {
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		q := `UPDATE devices SET status = $1, status_reason = $2, updated_at = $3 WHERE name = $4`
		args := []any{string(to), reason, ms(s.now()), name}
		if r.setExpiry {
			q = `UPDATE devices SET status = $1, status_reason = $2, updated_at = $3, expires_at = $5 WHERE name = $4`
			args = append(args, ms(expires))
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%s %s: %w", r.action, name, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: r.action, Device: name, FromStatus: from, ToStatus: to, Reason: reason, AllowlistVersion: ver})
	})
}

// ApproveDevice implements store.Store.
func (s *Store) ApproveDevice(ctx context.Context, name, actor, reason string, expires time.Time) error {
	return s.transition(ctx, name, actor, reason, ruleApprove, expires)
}

// DenyDevice implements store.Store.
func (s *Store) DenyDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleDeny, time.Time{})
}

// SuspendDevice implements store.Store.
func (s *Store) SuspendDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleSuspend, time.Time{})
}

// ReinstateDevice implements store.Store.
func (s *Store) ReinstateDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleReinstate, time.Time{})
}

// RevokeDevice implements store.Store.
func (s *Store) RevokeDevice(ctx context.Context, name, actor, reason string) error {
	return s.transition(ctx, name, actor, reason, ruleRevoke, time.Time{})
}

// RenewDevice implements store.Store.
func (s *Store) RenewDevice(ctx context.Context, name, actor, reason string, expires time.Time) error {
	return s.transition(ctx, name, actor, reason, ruleRenew, expires)
}

// ExpireDue implements store.Store. One version bump covers all devices
// expired at once.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, actor string) ([]string, error) {
	var names []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name FROM devices WHERE status = 'active' AND expires_at > 0 AND expires_at <= $1 ORDER BY name`+s.d.ForUpdate, ms(now))
		if err != nil {
			return fmt.Errorf("expire: %w", err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("expire: %w", err)
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(names) == 0 {
			return err
		}
		ver, err := s.bump(ctx, tx)
		if err != nil {
			return err
		}
		for _, n := range names {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET status = 'expired', status_reason = $1, updated_at = $2 WHERE name = $3`,
				"registration expired; renew it", ms(s.now()), n); err != nil {
				return fmt.Errorf("expire %s: %w", n, err)
			}
			if err := s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "expire", Device: n, FromStatus: store.Active, ToStatus: store.Expired,
				Reason: "registration period ended", AllowlistVersion: ver}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// SetLimits implements store.Store.
func (s *Store) SetLimits(ctx context.Context, name, actor string, mph, rph int) error {
	if mph < 0 || rph < 0 {
		return fmt.Errorf("set limits of %s: negative limit", name)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		var oldM, oldR int
		err := tx.QueryRowContext(ctx, `SELECT status, messages_per_hour, recipients_per_hour FROM devices WHERE name = $1`+s.d.ForUpdate, name).Scan(&cur, &oldM, &oldR)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("set limits of %s: %w", name, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("set limits of %s: %w", name, err)
		}
		if oldM == mph && oldR == rph {
			return nil
		}
		var ver int64
		if store.Status(cur).Enforced() {
			if ver, err = s.bump(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET messages_per_hour = $1, recipients_per_hour = $2, updated_at = $3 WHERE name = $4`,
			mph, rph, ms(s.now()), name); err != nil {
			return fmt.Errorf("set limits of %s: %w", name, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: actor, Action: "limits", Device: name, FromStatus: store.Status(cur), ToStatus: store.Status(cur),
			Reason: fmt.Sprintf("messages/hour %d -> %d, recipients/hour %d -> %d", oldM, mph, oldR, rph), AllowlistVersion: ver})
	})
}

// SetSenderConfirmation implements store.Store.
func (s *Store) SetSenderConfirmation(ctx context.Context, device, address, tokenHash string, sent time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE senders SET confirm_token_hash = $1, confirm_sent_at = $2 WHERE device = $3 AND address = $4`,
		tokenHash, ms(sent), device, address)
	return affected(res, err, "sender "+address+" of "+device)
}

// ConfirmSender implements store.Store. Confirming twice is harmless.
func (s *Store) ConfirmSender(ctx context.Context, tokenHash string, at time.Time) (device, address string, err error) {
	if tokenHash == "" {
		return "", "", fmt.Errorf("confirm sender: %w", store.ErrNotFound)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var conf int64
		err := tx.QueryRowContext(ctx, `SELECT device, address, confirmed_at FROM senders WHERE confirm_token_hash = $1`+s.d.ForUpdate, tokenHash).Scan(&device, &address, &conf)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("confirm sender: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("confirm sender: %w", err)
		}
		if conf != 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE senders SET confirmed_at = $1 WHERE device = $2 AND address = $3`, ms(at), device, address); err != nil {
			return fmt.Errorf("confirm sender %s: %w", address, err)
		}
		return s.audit(ctx, tx, store.AuditEntry{Actor: "sender:" + address, Action: "confirm-sender", Device: device, Reason: address + " confirmed by mail link"})
	})
	return device, address, err
}

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

// ---- allowlist ----

// AllowlistVersion implements store.Store.
func (s *Store) AllowlistVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("allowlist version: %w", err)
	}
	return v, nil
}

// AllowlistSnapshot implements store.Store.
func (s *Store) AllowlistSnapshot(ctx context.Context) (int64, []store.AllowlistDevice, error) {
	tx, err := s.db.BeginTx(ctx, s.d.SnapshotTx)
	if err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var ver int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&ver); err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: version: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT d.name, d.status, d.status_reason, d.messages_per_hour, d.recipients_per_hour, COALESCE(s.address, '')
		FROM devices d LEFT JOIN senders s ON s.device = d.name
		WHERE d.status IN ('active', 'suspended') ORDER BY d.name, s.address`)
	if err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: devices: %w", err)
	}
	defer rows.Close()
	devs := []store.AllowlistDevice{}
	for rows.Next() {
		var d store.AllowlistDevice
		var st, addr string
		if err := rows.Scan(&d.Name, &st, &d.Reason, &d.MessagesPerHour, &d.RecipientsPerHour, &addr); err != nil {
			return 0, nil, fmt.Errorf("allowlist snapshot: %w", err)
		}
		d.Status = store.Status(st)
		if d.Status == store.Active {
			d.Reason = ""
		}
		if n := len(devs); n > 0 && devs[n-1].Name == d.Name {
			if addr != "" {
				devs[n-1].Senders = append(devs[n-1].Senders, addr)
			}
			continue
		}
		if addr != "" {
			d.Senders = []string{addr}
		}
		devs = append(devs, d)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("allowlist snapshot: %w", err)
	}
	return ver, devs, nil
}

// ---- events ----

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

// ---- edges ----

const edgeCols = `id, name, site, enrol_expires, enrolled, mqtt_username, password_hash, online, last_seen, allowlist_version, queue_depth, outbox, software, counters, created_at`

func scanEdge(r scanner) (store.Edge, error) {
	var e store.Edge
	var exp, seen, created int64
	var counters string
	err := r.Scan(&e.ID, &e.Name, &e.Site, &exp, &e.Enrolled, &e.MQTTUsername, &e.PasswordHash, &e.Status.Online, &seen,
		&e.Status.AllowlistVersion, &e.Status.QueueDepth, &e.Status.Outbox, &e.Status.Software, &counters, &created)
	if err != nil {
		return e, err
	}
	e.EnrolExpires, e.Status.LastSeen, e.CreatedAt = fromMS(exp), fromMS(seen), fromMS(created)
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
	rows, err := s.db.QueryContext(ctx, `SELECT `+edgeCols+` FROM edges ORDER BY id`)
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
	res, err := s.db.ExecContext(ctx, `UPDATE edges SET enrol_token_hash = $1, enrol_expires = $2 WHERE id = $3`, tokenHash, ms(expires), id)
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
		WHERE enrol_token_hash = $1 AND enrol_expires > $2 RETURNING id`, tokenHash, ms(s.now())).Scan(&id)
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
	e, err := scanEdge(s.db.QueryRowContext(ctx, `SELECT `+edgeCols+` FROM edges WHERE mqtt_username = $1 AND enrolled = $2`, username, true))
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
	return affected(res, err, "edge "+id)
}

// ---- users, sessions, tokens ----

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

// CreateAPIToken implements store.Store.
func (s *Store) CreateAPIToken(ctx context.Context, t store.APIToken) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_tokens (hash, username, label, created_at) VALUES ($1, $2, $3, $4)`, t.Hash, t.User, t.Label, ms(s.now()))
	if err != nil {
		return fmt.Errorf("create API token for %s: %w", t.User, err)
	}
	return nil
}

// APIToken implements store.Store.
func (s *Store) APIToken(ctx context.Context, hash string) (store.APIToken, error) {
	var t store.APIToken
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT hash, username, label, created_at FROM api_tokens WHERE hash = $1`, hash).Scan(&t.Hash, &t.User, &t.Label, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("API token: %w", store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("API token: %w", err)
	}
	t.CreatedAt = fromMS(created)
	return t, nil
}

var _ store.Store = (*Store)(nil)
