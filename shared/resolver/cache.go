package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey identifies one question.
type cacheKey struct {
	name  string // lower-case FQDN
	qtype uint16
}

// result is the outcome of one question: the answer section (CNAMEs
// included) or a definite negative (err is ErrNXDomain or ErrNoData).
// Temporary failures are never stored.
type result struct {
	rrs     []dns.RR
	err     error
	ttl     time.Duration // how long it is fresh (0 = stale at once)
	expires time.Time     // end of freshness, set when cached
	// staleUntil is how long the entry is kept past expires, to be served
	// while the servers fail (RFC 8767); equal to expires when serving
	// stale is off.
	staleUntil time.Time
	// recheck, when set, is before when no refresh is tried again: a
	// refresh failed, and until then the stale entry is used at once
	// (RFC 8767's failure recheck timer).
	recheck time.Time
}

// cache is a bounded LRU of results, each kept until its staleUntil.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used; values are *entry
	items map[cacheKey]*list.Element
}

type entry struct {
	key cacheKey
	res result
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: map[cacheKey]*list.Element{}}
}

// get returns the result kept for k and whether it is still fresh. A
// result past its stale window is dropped and not returned.
func (c *cache) get(k cacheKey, now time.Time) (res result, fresh, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return result{}, false, false
	}
	e := el.Value.(*entry)
	if now.Before(e.res.expires) {
		c.ll.MoveToFront(el)
		return e.res, true, true
	}
	if !now.Before(e.res.staleUntil) {
		c.ll.Remove(el)
		delete(c.items, k)
		return result{}, false, false
	}
	c.ll.MoveToFront(el)
	return e.res, false, true
}

// markRecheck sets when a refresh of the stale entry k is tried next.
func (c *cache) markRecheck(k cacheKey, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*entry).res.recheck = at
	}
}

// put stores res, evicting the least recently used entry when full.
func (c *cache) put(k cacheKey, res result) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*entry).res = res
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&entry{key: k, res: res})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*entry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
