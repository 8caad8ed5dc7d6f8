package leader_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/leader"
)

func pgURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("POSTERN_TEST_POSTGRES")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("POSTERN_TEST_POSTGRES must be set in CI (see .ci/run)")
		}
		t.Skip("PostgreSQL tests skipped: set POSTERN_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	return u
}

func open(t *testing.T, u string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// leaders returns which of els lead now; it fails the test if two do.
func leaders(t *testing.T, els []*leader.Postgres) []int {
	t.Helper()
	var out []int
	for i, e := range els {
		if e.IsLeader(t.Context()) {
			out = append(out, i)
		}
	}
	if len(out) > 1 {
		t.Fatalf("instances %v lead at once", out)
	}
	return out
}

func waitLeader(t *testing.T, els []*leader.Postgres, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if l := leaders(t, els); len(l) == 1 {
			return l[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no leader within %v", within)
	return -1
}

// Three instances, each with its own pool: exactly one leads; when the
// leader's database session is killed, it stops leading at once and
// another takes over within a few intervals.
func TestElectionAndHandOver(t *testing.T) {
	u := pgURL(t)
	key := rand.Int64()
	const interval = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var els []*leader.Postgres
	for range 3 {
		e := leader.NewPostgres(open(t, u), key, interval, nil)
		els = append(els, e)
		go e.Run(ctx)
	}
	first := waitLeader(t, els, 5*time.Second)
	// Stable: the same instance keeps leading over several intervals.
	for range 10 {
		time.Sleep(interval / 2)
		if l := leaders(t, els); len(l) != 1 || l[0] != first {
			t.Fatalf("leaders %v, want only %d", l, first)
		}
	}

	// Kill the leader's session the way a dead process or a broken
	// connection ends it.
	admin := open(t, u)
	var n int
	err := admin.QueryRowContext(t.Context(), `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 1`,
		int64(uint32(uint64(key)>>32)), int64(uint32(uint64(key)))).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate leader session: %d sessions, %v", n, err)
	}
	if els[first].IsLeader(t.Context()) {
		t.Fatal("old leader still claims leadership after its session ended")
	}
	second := waitLeader(t, els, 10*interval+2*time.Second)
	if second == first {
		// Possible only if the old leader re-acquired on a fresh
		// connection before the others; still exactly one.
		t.Logf("instance %d took the lock again", first)
	}

	// A clean stop hands over too.
	stopCtx, stop := context.WithCancel(t.Context())
	defer stop()
	e := leader.NewPostgres(open(t, u), rand.Int64(), interval, nil)
	done := make(chan struct{})
	go func() { e.Run(stopCtx); close(done) }()
	waitLeader(t, []*leader.Postgres{e}, 5*time.Second)
	stop()
	<-done
	if e.IsLeader(t.Context()) {
		t.Fatal("stopped elector still leads")
	}
}

func TestAlways(t *testing.T) {
	if !(leader.Always{}).IsLeader(t.Context()) {
		t.Fatal("Always is not leader")
	}
}
