package web_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/postgres"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/web"
)

// Fleet size of BenchmarkPages.
const (
	benchDevices = 100_000
	benchEvents  = 1_000_000
	benchEdges   = 20
)

// seedFleet fills a fresh store with benchDevices devices (one sender
// each, all statuses), benchEdges edges and benchEvents events over the
// last 30 days (a tenth from unregistered clients), straight in SQL: one
// statement per table, the same in both dialects. The per-day counts are
// built as migration 0006 builds them. Device 42's owner key is key42.
func seedFleet(b *testing.B, db *sql.DB, now time.Time, pg bool) {
	b.Helper()
	ctx := context.Background()
	nowMS := now.UnixMilli()
	span := int64(30 * 24 * time.Hour / time.Millisecond)
	stmts := []string{
		fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
		INSERT INTO devices (name, ips, owner, department, contact_email, purpose, status, owner_key_hash, fcrdns, fcrdns_ok, expires_at, created_at, updated_at)
		SELECT 'dev' || x || '.dept.example.edu', '10.' || (x / 65536 %% 256) || '.' || (x / 256 %% 256) || '.' || (x %% 256), 'Owner ' || x, 'Dept ' || (x %% 40),
			'owner' || x || '@dept.example.edu', 'scan to mail',
			CASE x %% 6 WHEN 0 THEN 'pending' WHEN 1 THEN 'suspended' WHEN 2 THEN 'denied' WHEN 3 THEN 'expired' ELSE 'active' END,
			'hash' || x, 'matches', %s, %d + x * 1000, %d - x * 1000, %d - x * 1000 FROM c`,
			benchDevices, "TRUE", nowMS+span, nowMS, nowMS),
		fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
		INSERT INTO senders (device, address, confirmed_at) SELECT 'dev' || x || '.dept.example.edu', 'dev' || x || '@dept.example.edu', %d FROM c`, benchDevices, nowMS),
		fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
		INSERT INTO edges (id, name, enrolled, mqtt_username, online, last_seen, allowlist_version, queue_depth, created_at)
		SELECT 'bldg-' || x, 'Building ' || x, %s, 'bldg-' || x, %s, %d, 1, x * 3, %d FROM c`, benchEdges, "TRUE", "TRUE", nowMS, nowMS),
		fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
		INSERT INTO events (id, edge, at, kind, device, client_ip, sender, recipient, reason, count, received)
		SELECT 'ev' || x, 'bldg-' || (x %% %d + 1), %d - (x * %d / %d),
			CASE x %% 5 WHEN 0 THEN 'refusal' WHEN 1 THEN 'ndr' WHEN 2 THEN 'tls' ELSE 'delivery' END,
			CASE WHEN x %% 10 = 0 THEN '' ELSE 'dev' || (x %% %d + 1) || '.dept.example.edu' END,
			'10.' || (x / 65536 %% 256) || '.' || (x / 256 %% 256) || '.' || (x %% 256),
			'dev' || (x %% %d + 1) || '@dept.example.edu', 'someone' || (x %% 1000) || '@example.org', 'because', x %% 4, %d - (x * %d / %d) FROM c`,
			benchEvents, benchEdges, nowMS, span, benchEvents, benchDevices, benchDevices, nowMS, span, benchEvents),
		`INSERT INTO event_days (device, day, kind, n)
		SELECT device, (at / 86400000) * 86400000, kind, SUM(CASE WHEN count > 0 THEN count ELSE 1 END) FROM events
		GROUP BY device, (at / 86400000) * 86400000, kind`,
		`INSERT INTO event_days (device, day, kind, n)
		SELECT '*', (at / 86400000) * 86400000, kind, SUM(CASE WHEN count > 0 THEN count ELSE 1 END) FROM events
		GROUP BY (at / 86400000) * 86400000, kind`,
		fmt.Sprintf(`UPDATE devices SET owner_key_hash = '%s' WHERE name = 'dev42.dept.example.edu'`, auth.HashToken(benchOwnerKey)),
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatalf("seed: %v\n%s", err, q)
		}
	}
	// Statistics for the planners; on PostgreSQL also the visibility map
	// and hint bits a freshly bulk-loaded table lacks (the first readers
	// would otherwise write every page they touch).
	analyze := `ANALYZE`
	if pg {
		analyze = `VACUUM ANALYZE`
	}
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		b.Fatalf("%s: %v", analyze, err)
	}
}

const benchOwnerKey = "key42-0123456789abcdef0123456789abcdef"

// BenchmarkPages renders the staff device list, the fleet overview, an
// owner's device page (reports, 30-day chart) and an edge page with
// 100,000 devices and 1,000,000 events, on SQLite and (with
// POSTERN_TEST_POSTGRES) PostgreSQL. Seeding takes a minute or more.
func BenchmarkPages(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), sqlite.FileName), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchPages(b, st, st.DB(), false)
	})
	b.Run("postgres", func(b *testing.B) {
		base := os.Getenv("POSTERN_TEST_POSTGRES")
		if base == "" {
			b.Skip("set POSTERN_TEST_POSTGRES")
		}
		admin, err := sql.Open("pgx", base)
		if err != nil {
			b.Fatal(err)
		}
		defer admin.Close()
		rb := make([]byte, 6)
		_, _ = rand.Read(rb)
		schema := "postern_bench_" + hex.EncodeToString(rb)
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			b.Fatal(err)
		}
		defer admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		u, _ := url.Parse(base)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		st, err := postgres.Open(context.Background(), u.String(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchPages(b, st, st.DB(), true)
	})
}

func benchPages(b *testing.B, st store.Store, db *sql.DB, pg bool) {
	now := time.Now()
	start := time.Now()
	seedFleet(b, db, now, pg)
	b.Logf("seeded %d devices and %d events in %v", benchDevices, benchEvents, time.Since(start).Round(time.Second))
	ctx := context.Background()
	reg := &registration.Service{Store: st, Period: 365 * 24 * time.Hour}
	w, err := web.New(web.Options{Registry: reg, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(w)
	defer srv.Close()
	if err := st.CreateUser(ctx, store.User{Name: "alice"}); err != nil {
		b.Fatal(err)
	}
	sid, sidHash := auth.NewToken()
	if err := st.CreateSession(ctx, store.Session{IDHash: sidHash, User: "alice", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	for _, pg := range []struct{ name, path, cookie string }{
		{"device-list", "/staff", web.SessionCookie + "=" + sid},
		{"device-list-pending", "/staff?status=pending", web.SessionCookie + "=" + sid},
		{"device-list-page-1000", "/staff?page=1000", web.SessionCookie + "=" + sid},
		{"review-queue", "/staff/queue", web.SessionCookie + "=" + sid},
		{"events", "/staff/events", web.SessionCookie + "=" + sid},
		{"events-device", "/staff/events?device=dev42.dept.example.edu", web.SessionCookie + "=" + sid},
		{"events-kind-edge", "/staff/events?kind=refusal&edge=bldg-3", web.SessionCookie + "=" + sid},
		{"audit", "/staff/audit", web.SessionCookie + "=" + sid},
		{"overview", "/staff/overview", web.SessionCookie + "=" + sid},
		{"edge", "/staff/edges/bldg-3", web.SessionCookie + "=" + sid},
		{"owner-device", "/my/devices/dev42.dept.example.edu", web.OwnerCookie + "=" + benchOwnerKey},
		{"owner-device-pending", "/my/devices/dev42.dept.example.edu", web.OwnerCookie + "=" + benchOwnerKey},
	} {
		if pg.name == "owner-device-pending" {
			// Pending: its registered address's attempts are read too.
			if _, err := db.ExecContext(ctx, `UPDATE devices SET status = 'pending' WHERE name = 'dev42.dept.example.edu'`); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(pg.name, func(b *testing.B) {
			req, _ := http.NewRequest("GET", srv.URL+pg.path, nil)
			req.Header.Set("Cookie", pg.cookie)
			// One request first: caches and prepared statements are warm
			// in a running central.
			if r, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
			for b.Loop() {
				r, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, r.Body)
				r.Body.Close()
				if r.StatusCode != 200 {
					b.Fatalf("%s: %d", pg.path, r.StatusCode)
				}
				b.SetBytes(n)
			}
		})
	}
}
