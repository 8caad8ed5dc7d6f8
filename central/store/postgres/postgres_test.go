package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
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

// TestConcurrentOpen starts several instances on an empty schema at once:
// the advisory lock serialises their migrations, so each migration is
// applied exactly once and every instance works.
func TestConcurrentOpen(t *testing.T) {
	const n = 8
	u := freshSchema(t)
	ctx := context.Background()
	type res struct {
		s   *postgres.Store
		err error
	}
	out := make(chan res, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			s, err := postgres.Open(ctx, u, nil)
			out <- res{s, err}
		}()
	}
	close(start)
	var stores []*postgres.Store
	for range n {
		r := <-out
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		stores = append(stores, r.s)
	}
	for _, s := range stores {
		defer s.Close()
	}
	if t.Failed() {
		return
	}
	var applied, distinct int
	if err := stores[0].DB().QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT name) FROM schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied != distinct || applied == 0 {
		t.Errorf("schema_migrations: %d rows, %d distinct", applied, distinct)
	}
	for i, s := range stores {
		if err := s.CreateUser(ctx, store.User{Name: fmt.Sprintf("u%d", i)}); err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
}

// A database migrated by a newer release is refused with an error naming
// both versions.
func TestRefusesNewerSchema(t *testing.T) {
	u := freshSchema(t)
	ctx := context.Background()
	s, err := postgres.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES ('9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = postgres.Open(ctx, u, nil)
	if !errors.Is(err, store.ErrSchemaNewer) {
		t.Fatalf("open newer schema: %v, want ErrSchemaNewer", err)
	}
	for _, want := range []string{"9999_future.sql", "knows up to 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
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
