// Package postgres is central's PostgreSQL store (pgx v5 through its
// database/sql adapter), for deployments that run several central
// instances against one database. Concurrent writers serialise on the
// device row (SELECT … FOR UPDATE) and on the single allowlist-version row
// (UPDATE … RETURNING), so versions stay distinct and increasing across
// instances; the allowlist is read in one REPEATABLE READ transaction.
// Migrations take a transaction-scoped advisory lock, so instances starting
// together migrate once; a database migrated by a newer release is refused
// (store.ErrSchemaNewer) rather than run against.
package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/store/internal/sqlstore"
)

// PoolSize is the number of connections one central instance opens at most
// and keeps open while idle (up to ConnMaxIdleTime). Idle equals open: with
// fewer idle slots every burst above them would close its extra
// connections on return and dial new ones for the next burst (a backend
// start each time).
const PoolSize = 20

// maxIdleTime closes connections unused for this long, so a quiet
// instance gives its backends back.
const maxIdleTime = 5 * time.Minute

// Store is the PostgreSQL store; it implements central/store.Store.
type Store struct {
	*sqlstore.Store
}

// Open connects to url (postgres://…) and applies the embedded migrations.
// clock may be nil.
func Open(ctx context.Context, url string, clock func() time.Time) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: bad database.url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(PoolSize)
	db.SetMaxIdleConns(PoolSize)
	db.SetConnMaxIdleTime(maxIdleTime)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: connect %s@%s/%s: %w", cfg.User, cfg.Host, cfg.Database, err)
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Dialect{
		Name:          "postgres",
		ForUpdate:     " FOR UPDATE",
		SnapshotTx:    &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		MigrationLock: "SELECT pg_advisory_xact_lock(7363757370)",
	}, clock)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &Store{s}, nil
}
