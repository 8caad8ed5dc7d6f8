// Package leader decides which central instance publishes the allowlist
// when several run against one PostgreSQL database.
//
// The leader is the instance holding a session-level PostgreSQL advisory
// lock on a connection set aside for it. PostgreSQL releases the lock when
// that session ends (the process dies, the connection breaks), and a
// follower retrying every interval takes it over, so a hand-over after the
// leader dies is bounded by about one interval plus the time PostgreSQL
// needs to notice the dead session (immediate after a process kill, whose
// socket the kernel closes). The leader confirms it still holds the
// session with a round trip before every publish; an instance that cannot
// reach the database stops publishing at once. A single instance (SQLite,
// embedded broker) is always the leader.
package leader

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Leader reports whether this instance may publish now. IsLeader may do a
// round trip to confirm; call it right before publishing.
type Leader interface {
	IsLeader(ctx context.Context) bool
}

// Always is the leader of a deployment with one instance.
type Always struct{}

// IsLeader is always true.
func (Always) IsLeader(context.Context) bool { return true }

// confirmTimeout bounds the round trip that confirms leadership.
const confirmTimeout = 2 * time.Second

// Postgres elects through pg_try_advisory_lock on a dedicated connection.
type Postgres struct {
	db       *sql.DB
	key      int64
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex // guards conn
	conn    *sql.Conn
	leading atomic.Bool
}

// NewPostgres returns an elector on db for the lock key (see Key), trying
// every interval. Nothing happens until Run.
func NewPostgres(db *sql.DB, key int64, interval time.Duration, log *slog.Logger) *Postgres {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = time.Second
	}
	return &Postgres{db: db, key: key, interval: interval, log: log.With("component", "leader")}
}

// Key derives the lock key from the database and schema the store uses, so
// independent deployments (or tests) sharing a PostgreSQL server in
// different databases or schemas never contend.
func Key(ctx context.Context, db *sql.DB) (int64, error) {
	var dbname, schema string
	if err := db.QueryRowContext(ctx, `SELECT current_database(), current_schema()`).Scan(&dbname, &schema); err != nil {
		return 0, fmt.Errorf("leader: lock key: %w", err)
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "postern-central publisher\x00%s\x00%s", dbname, schema)
	return int64(h.Sum64()), nil
}

// Run tries to become (and checks it stays) the leader every interval
// until ctx ends, then gives the lock back.
func (p *Postgres) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.step(ctx)
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.drop("shutting down")
			p.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

func (p *Postgres) step(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leading.Load() {
		p.confirmLocked(ctx)
		return
	}
	if p.conn == nil {
		c, err := p.db.Conn(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("leader election: no database connection", "err", err)
			}
			return
		}
		p.conn = c
	}
	var got bool
	qctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	if err := p.conn.QueryRowContext(qctx, `SELECT pg_try_advisory_lock($1)`, p.key).Scan(&got); err != nil {
		if ctx.Err() == nil {
			p.log.Warn("leader election: lock attempt failed", "err", err)
		}
		p.drop("")
		return
	}
	if got {
		p.leading.Store(true)
		p.log.Info("this instance is now the allowlist publisher (leader)")
	}
}

// IsLeader reports whether this instance holds the lock, confirming with a
// round trip on the lock's session.
func (p *Postgres) IsLeader(ctx context.Context) bool {
	if !p.leading.Load() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmLocked(ctx)
}

func (p *Postgres) confirmLocked(ctx context.Context) bool {
	if !p.leading.Load() || p.conn == nil {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	if _, err := p.conn.ExecContext(qctx, `SELECT 1`); err != nil {
		p.drop(fmt.Sprintf("lost the database session holding the lock: %v", err))
		return false
	}
	return true
}

// drop forgets leadership and discards the connection (never back into
// the pool: a pooled connection would keep holding the lock).
func (p *Postgres) drop(why string) {
	if p.leading.Swap(false) && why != "" {
		p.log.Warn("this instance stopped publishing the allowlist (no longer leader)", "reason", why)
	}
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), confirmTimeout)
	defer cancel()
	_, _ = p.conn.ExecContext(ctx, `SELECT pg_advisory_unlock_all()`)
	_ = p.conn.Raw(func(any) error { return driver.ErrBadConn })
	if err := p.conn.Close(); err != nil && !errors.Is(err, sql.ErrConnDone) {
		p.log.Debug("leader election: close lock connection", "err", err)
	}
	p.conn = nil
}
