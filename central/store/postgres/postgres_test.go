package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/postgres"
	"github.com/postern/postern/central/store/storetest"
)

// freshSchema creates an empty schema for one test and returns a URL whose
// connections use it; the schema is dropped when the test ends.
func freshSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("POSTERN_TEST_POSTGRES")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("POSTERN_TEST_POSTGRES must be set in CI (see .ci/run)")
		}
		t.Skip("PostgreSQL tests skipped: set POSTERN_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "postern_test_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() store.Store {
		u := freshSchema(t)
		return func() store.Store {
			s, err := postgres.Open(context.Background(), u, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// TestConcurrentOpen starts two instances on an empty schema at once:
// migrations must run once and both must work.
func TestConcurrentOpen(t *testing.T) {
	u := freshSchema(t)
	ctx := context.Background()
	errs := make(chan error, 2)
	stores := make(chan store.Store, 2)
	for range 2 {
		go func() {
			s, err := postgres.Open(ctx, u, nil)
			errs <- err
			stores <- s
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		s := <-stores
		defer s.Close()
		if _, err := s.AllowlistVersion(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// After a burst that uses the whole pool, every connection stays open and
// idle for the next burst instead of being closed and dialled again.
func TestPoolKeepsIdleConnections(t *testing.T) {
	u := freshSchema(t)
	s, err := postgres.Open(t.Context(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.DB()
	burst := func() {
		t.Helper()
		errs := make(chan error, postgres.PoolSize)
		for range postgres.PoolSize {
			go func() {
				_, err := db.ExecContext(t.Context(), "SELECT pg_sleep(0.2)")
				errs <- err
			}()
		}
		for range postgres.PoolSize {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	burst()
	st := db.Stats()
	if st.MaxOpenConnections != postgres.PoolSize || st.Idle != postgres.PoolSize {
		t.Fatalf("after a burst of %d: max open %d, idle %d (want both %d)", postgres.PoolSize, st.MaxOpenConnections, st.Idle, postgres.PoolSize)
	}
	burst()
	if st := db.Stats(); st.MaxIdleClosed != 0 || st.OpenConnections != postgres.PoolSize {
		t.Errorf("second burst: %d connections closed for lack of idle slots, %d open (want 0, %d)", st.MaxIdleClosed, st.OpenConnections, postgres.PoolSize)
	}
}
