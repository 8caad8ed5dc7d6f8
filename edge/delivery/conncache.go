package delivery

import (
	"context"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Connection reuse.
//
// A connection whose transaction ended with the server's final reply to
// DATA is in a clean state: instead of QUIT it goes into a cache for a
// short while, and the next message for the same server (same address,
// host name and TLS requirement) skips the TCP handshake, greeting, EHLO,
// STARTTLS and AUTH. This is Postfix's connection cache (scache): a relay
// that sends a steady stream to one smarthost or MX keeps a few
// connections busy instead of opening one per message. A cached
// connection that fails before the server took the message (it timed the
// connection out, say) is closed and the message goes over a new one, so
// reuse never turns into a failed attempt; an attemptError (MAIL, RCPT or
// the DATA command failing at connection level) always means that.

const (
	// defaultConnIdle is how long a connection waits in the cache for the
	// next message (Postfix: smtp_connection_cache_time_limit = 2s).
	defaultConnIdle = 2 * time.Second
	// connMaxUses ends a connection after this many messages, so that a
	// long stream does not stay on one connection (and one server of a
	// load-balanced pool) forever.
	connMaxUses = 100
	// connMaxAge ends a connection this long after it was opened
	// (Postfix: smtp_connection_reuse_time_limit = 300s).
	connMaxAge = 5 * time.Minute
	// connMaxIdlePerKey bounds idle connections per server.
	connMaxIdlePerKey = 16
)

// connKey is everything that shaped a connection: only a connection made
// for the same server under the same TLS requirement may be reused.
type connKey struct {
	addr       string // ip:port
	host       string // host name (certificate checks, RemoteMTA)
	mode       TLSMode
	serverName string
	roots      *x509.CertPool
	useTLS     bool // STARTTLS was attempted (false: plaintext fallback)
	smart      bool
	// policy, verified, verifyID and reportOnly are the rest of the TLSRequirement;
	// uncacheable is set for requirements with a Verify function, whose
	// connections are never reused.
	policy, verified, verifyID string
	reportOnly                 bool
	uncacheable                bool
}

// cachedConn is an idle connection that finished a transaction.
type cachedConn struct {
	sc     *smtp.Client
	w      *batchConn // under sc (transaction)
	conn   net.Conn   // what to close (the TLS connection when there is one)
	tls    tlsState
	opened time.Time
	uses   int
	timer  *time.Timer
}

type connCache struct {
	idle time.Duration
	mu   sync.Mutex
	m    map[connKey][]*cachedConn
}

func newConnCache(idle time.Duration) *connCache {
	return &connCache{idle: idle, m: map[connKey][]*cachedConn{}}
}

// get takes the most recently used idle connection for k, if any.
func (cc *connCache) get(k connKey) *cachedConn {
	if cc == nil {
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	l := cc.m[k]
	if len(l) == 0 {
		return nil
	}
	c := l[len(l)-1]
	l[len(l)-1] = nil
	if l = l[:len(l)-1]; len(l) == 0 {
		delete(cc.m, k)
	} else {
		cc.m[k] = l
	}
	c.timer.Stop() // if it already fired, it finds c gone and leaves it
	return c
}

// put caches c for k, or ends it with QUIT when it is used up or the
// cache for k is full.
func (cc *connCache) put(k connKey, c *cachedConn) {
	if cc == nil || c.uses >= connMaxUses || time.Since(c.opened) >= connMaxAge {
		quit(c)
		return
	}
	cc.mu.Lock()
	if len(cc.m[k]) >= connMaxIdlePerKey {
		cc.mu.Unlock()
		quit(c)
		return
	}
	cc.m[k] = append(cc.m[k], c)
	c.timer = time.AfterFunc(cc.idle, func() { cc.expire(k, c) })
	cc.mu.Unlock()
}

// expire removes c from the cache, if it is still there, and ends it.
func (cc *connCache) expire(k connKey, c *cachedConn) {
	cc.mu.Lock()
	l := cc.m[k]
	found := false
	for i, x := range l {
		if x == c {
			l = append(l[:i], l[i+1:]...)
			found = true
			break
		}
	}
	if len(l) == 0 {
		delete(cc.m, k)
	} else {
		cc.m[k] = l
	}
	cc.mu.Unlock()
	if found {
		quit(c)
	}
}

// closeAll ends every idle connection.
func (cc *connCache) closeAll() {
	if cc == nil {
		return
	}
	cc.mu.Lock()
	var all []*cachedConn
	for k, l := range cc.m {
		for _, c := range l {
			c.timer.Stop()
			all = append(all, c)
		}
		delete(cc.m, k)
	}
	cc.mu.Unlock()
	for _, c := range all {
		quit(c)
	}
}

func quit(c *cachedConn) {
	if c.sc.Quit() != nil {
		c.conn.Close()
	}
}

// Close ends the connections kept for reuse. Deliver may still be called
// afterwards; it then opens new connections.
func (c *Client) Close() error {
	c.cache.closeAll()
	return nil
}

// reuse runs job's transaction on a cached connection. ok is false when
// the connection failed before the server took anything of the job (the
// server closed it while it was idle, typically): it is closed, and the
// caller opens a new one for the job, as if the cache had been empty.
func (c *Client) reuse(ctx context.Context, k connKey, cc *cachedConn, job *Job, h host) (res []Result, aerr *attemptError, ok bool) {
	stop := context.AfterFunc(ctx, func() { cc.conn.Close() })
	res, aerr, clean := c.transaction(cc.sc, cc.w, job, h)
	alive := stop() // false: ctx ended and closed the connection
	switch {
	case aerr != nil, !clean && alive && closing(res):
		// A 421 on a connection that waited in the cache is the server
		// ending it (an idle timeout, a restart), not an answer about
		// the job: nothing was taken, so a new connection carries it.
		cc.conn.Close()
		return nil, nil, false
	case clean && alive:
		cc.uses++
		c.cache.put(k, cc)
	case alive:
		quit(cc)
	default:
		cc.conn.Close()
	}
	return res, nil, true
}

// closing reports whether every result is a 421 (RFC 5321 §3.8: the
// server is closing the transmission channel).
func closing(res []Result) bool {
	for _, r := range res {
		if r.Code != 421 {
			return false
		}
	}
	return len(res) > 0
}
