package auth

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultMaxKeys bounds the memory of a Throttle or RateLimit: about 100
// bytes per key.
const DefaultMaxKeys = 100_000

// ThrottleConfig configures a Throttle (the login.* keys).
type ThrottleConfig struct {
	// FreeAttempts may be made without any delay.
	FreeAttempts int
	// Backoff is the delay required after the first attempt beyond
	// FreeAttempts; it doubles with each further attempt.
	Backoff time.Duration
	// LockAfter attempts lock the key for LockFor.
	LockAfter int
	// LockFor is how long a lock lasts, and how long a key without any
	// new attempt is remembered.
	LockFor time.Duration
	// MaxKeys bounds the number of keys remembered (0: DefaultMaxKeys).
	MaxKeys int
}

// Throttle limits guessing: it counts attempts per key (a client address,
// a user name) and, beyond a few, requires a growing delay between them
// and then locks the key for a while.
//
// Every attempt counts from the moment it is allowed (Begin), before its
// outcome is known, so that many parallel attempts cannot all slip through
// before the first failure is recorded; a success (Reset) forgets the
// keys. A refused attempt is not counted, so a locked key unlocks on time
// however often it is tried. When MaxKeys keys are remembered and none has
// expired, attempts with new keys are refused: under a flood from very
// many addresses, guessing stops rather than the memory growing.
//
// The counts are kept in memory, per central process.
type Throttle struct {
	cfg   ThrottleConfig
	clock func() time.Time
	mu    sync.Mutex
	m     map[string]*attempts
}

type attempts struct {
	n    int
	last time.Time
}

// NewThrottle returns a Throttle; clock may be nil (time.Now).
func NewThrottle(cfg ThrottleConfig, clock func() time.Time) *Throttle {
	if clock == nil {
		clock = time.Now
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.LockAfter < cfg.FreeAttempts {
		cfg.LockAfter = cfg.FreeAttempts
	}
	return &Throttle{cfg: cfg, clock: clock, m: map[string]*attempts{}}
}

// wait is how long key a must still wait at now (0: it may go ahead).
func (t *Throttle) wait(a *attempts, now time.Time) time.Duration {
	if a == nil || now.Sub(a.last) >= t.cfg.LockFor {
		return 0
	}
	if a.n < t.cfg.FreeAttempts {
		return 0
	}
	var d time.Duration
	if a.n >= t.cfg.LockAfter {
		d = t.cfg.LockFor
	} else {
		shift := a.n - t.cfg.FreeAttempts
		f := float64(t.cfg.Backoff) * math.Pow(2, float64(shift))
		d = t.cfg.LockFor
		if f < float64(d) {
			d = time.Duration(f)
		}
	}
	if rest := a.last.Add(d).Sub(now); rest > 0 {
		return rest
	}
	return 0
}

// Begin reports whether an attempt under all of keys may go ahead now and
// counts it for each; when not, retry is how long to wait (nothing is
// counted). Empty keys are ignored.
func (t *Throttle) Begin(keys ...string) (retry time.Duration, ok bool) {
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	fresh := 0
	for _, k := range keys {
		if k == "" {
			continue
		}
		a := t.m[k]
		if a == nil {
			fresh++
		}
		if w := t.wait(a, now); w > retry {
			retry = w
		}
	}
	if retry > 0 {
		return retry, false
	}
	if len(t.m)+fresh > t.cfg.MaxKeys {
		for k, a := range t.m {
			if now.Sub(a.last) >= t.cfg.LockFor {
				delete(t.m, k)
			}
		}
		if len(t.m)+fresh > t.cfg.MaxKeys {
			return t.cfg.Backoff + time.Second, false
		}
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		a := t.m[k]
		if a == nil || now.Sub(a.last) >= t.cfg.LockFor {
			a = &attempts{}
			t.m[k] = a
		}
		a.n++
		a.last = now
	}
	return 0, true
}

// Wait is how long an attempt under keys must still wait (0: it may go
// ahead), counting nothing: for Fail-only use, where successes are many
// and must not be slowed (API tokens).
func (t *Throttle) Wait(keys ...string) time.Duration {
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	var retry time.Duration
	for _, k := range keys {
		if w := t.wait(t.m[k], now); w > retry {
			retry = w
		}
	}
	return retry
}

// Fail counts a failed attempt for keys (new keys beyond MaxKeys are not
// remembered).
func (t *Throttle) Fail(keys ...string) {
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		a := t.m[k]
		if a == nil || now.Sub(a.last) >= t.cfg.LockFor {
			if a == nil && len(t.m) >= t.cfg.MaxKeys {
				continue
			}
			a = &attempts{}
			t.m[k] = a
		}
		a.n++
		a.last = now
	}
}

// Reset forgets keys (after a successful attempt).
func (t *Throttle) Reset(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		delete(t.m, k)
	}
}

// RateLimit allows each key (a client address) Burst events at once and
// Burst events per Per on average (a token bucket per key), with at most
// MaxKeys keys remembered (new keys are refused beyond, as in Throttle).
type RateLimit struct {
	burst   float64
	per     time.Duration
	maxKeys int
	clock   func() time.Time
	mu      sync.Mutex
	m       map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewRateLimit allows n events per period per key; clock may be nil.
func NewRateLimit(n int, per time.Duration, clock func() time.Time) *RateLimit {
	if clock == nil {
		clock = time.Now
	}
	return &RateLimit{burst: float64(n), per: per, maxKeys: DefaultMaxKeys, clock: clock, m: map[string]*bucket{}}
}

// Allow takes one event for key; when none is left, retry says when the
// next one is.
func (l *RateLimit) Allow(key string) (retry time.Duration, ok bool) {
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	rate := l.burst / float64(l.per) // tokens per nanosecond
	b := l.m[key]
	if b == nil {
		if len(l.m) >= l.maxKeys {
			for k, o := range l.m {
				if o.tokens+float64(now.Sub(o.at))*rate >= l.burst {
					delete(l.m, k)
				}
			}
			if len(l.m) >= l.maxKeys {
				return time.Minute, false
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.m[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+float64(now.Sub(b.at))*rate)
	b.at = now
	if b.tokens < 1-1e-9 { // float rounding must not cost a whole event
		return time.Duration((1 - b.tokens) / rate), false
	}
	b.tokens--
	return 0, true
}

// Hashes bounds the number of password hashes computed at once (argon2id
// takes 19 MiB each with DefaultParams), so a login flood cannot exhaust
// memory or starve everything else of CPU.
type Hashes struct{ slots chan struct{} }

// NewHashes allows n hashes at once (at least 1).
func NewHashes(n int) *Hashes {
	return &Hashes{slots: make(chan struct{}, max(n, 1))}
}

// Acquire takes a slot, waiting at most wait; false means none became
// free (the caller answers "busy" without hashing).
func (h *Hashes) Acquire(ctx context.Context, wait time.Duration) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	if wait <= 0 {
		return false
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-tm.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Release frees a slot taken by Acquire.
func (h *Hashes) Release() { <-h.slots }

// ClientIP returns the address a request comes from: the connection's
// peer, or, when the peer is a trusted proxy, the nearest address in
// X-Forwarded-For that is not itself a trusted proxy (addresses further
// left are set by the client and not believed). p may be nil.
func (p *Proxy) ClientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if p == nil || !p.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !p.trusted(a) {
			return a
		}
	}
	return peer
}

func (p *Proxy) trusted(a netip.Addr) bool {
	for _, pf := range p.Trusted {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// ClientKey is the throttling key of a client address: the address for
// IPv4, its /64 for IPv6 (one site usually holds a whole /64).
func ClientKey(a netip.Addr) string {
	if !a.IsValid() {
		return "ip:unknown"
	}
	if a.Is6() {
		pf, _ := a.Prefix(64)
		return "ip:" + pf.String()
	}
	return "ip:" + a.String()
}
