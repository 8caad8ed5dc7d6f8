// Package sqlite is central's default store: SQLite through the pure-Go
// modernc.org/sqlite driver (no cgo, so cross-compiled binaries stay
// static). The database is one file; WAL mode lets the web console read
// while a write is in progress, and every transaction takes the write lock
// at BEGIN so concurrent writers (also a CLI command while serve runs)
// queue on SQLite's busy timeout instead of failing.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/postern/postern/central/store/internal/sqlstore"
)

// FileName is the database file inside data_dir.
const FileName = "central.db"

// Store is the SQLite store; it implements central/store.Store.
type Store struct {
	*sqlstore.Store
}

// Open opens (creating if needed) the database at path and applies the
// embedded migrations. clock may be nil.
func Open(ctx context.Context, path string, clock func() time.Time) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Dialect{Name: "sqlite"}, clock)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	return &Store{s}, nil
}
