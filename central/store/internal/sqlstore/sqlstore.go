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
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
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
	if err := s.fillSortKeys(ctx); err != nil {
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
		if err := checkNotNewer(ctx, tx, entries); err != nil {
			return err
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

// checkNotNewer refuses a database with applied migrations unknown to this
// build, naming the newest applied and the newest known migration.
func checkNotNewer(ctx context.Context, tx *sql.Tx, known []fs.DirEntry) error {
	names := make(map[string]bool, len(known))
	newestKnown := ""
	for _, e := range known {
		names[e.Name()] = true
		newestKnown = max(newestKnown, e.Name())
	}
	rows, err := tx.QueryContext(ctx, `SELECT name FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	var unknown []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if !names[n] {
			unknown = append(unknown, n)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("store: %w: database has migration %s applied, this build knows up to %s (upgrade postern-central on this host)",
			store.ErrSchemaNewer, strings.Join(unknown, ", "), newestKnown)
	}
	return nil
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
