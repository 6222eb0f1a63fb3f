package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// cacheSize bounds each of the hit and miss caches. Misses are keyed by
// whatever names clients send, so without a bound a client cycling through
// random database names could grow the proxy's memory without limit.
const cacheSize = 10000

// answerKind sorts a lookup's answer for the cache.
type answerKind int

const (
	// answerHit is cached for the hit TTL.
	answerHit answerKind = iota
	// answerMiss (an unknown tenant, a user without grants) is cached for
	// the shorter miss TTL: it is what a new tenant or grant was a moment
	// ago.
	answerMiss
	// answerFailure (the registry could not answer) is never cached:
	// caching it would turn a brief outage into refused connections for a
	// whole TTL. The key's last hit, if the cache still knows it, is
	// served instead, however old (see lookupCache).
	answerFailure
)

// lookupCache is a read-through cache in front of one registry lookup, for
// the Router (tenants by name) and Grants (grants by user). Concurrent
// lookups of one uncached key share a single registry query; Forget and
// ForgetAll drop entries at once (NOTIFY), and a lookup that began before
// a Forget answers its callers but is not cached. It is safe for
// concurrent use.
//
// While the registry cannot answer (a lookup fails: the server is down, or
// its sessions were ended and not yet replaced), a key's last hit is given
// instead, even when its TTL has passed or ForgetAll dropped it: an answer
// that was true a while ago beats refusing every login of a known tenant
// during an outage. ForgetAll (a watcher that reconnected, a TRUNCATE) only
// says that entries may be out of date, so they stay as this fallback;
// Forget says that the key changed, so its entry goes entirely. A miss is
// never served stale: "unknown tenant" is not worth guessing.
//
// The caches each run a cleanup goroutine that lives as long as the
// process, so a program makes one of each and keeps it.
type lookupCache[V any] struct {
	lookup func(ctx context.Context, key string) (V, error)
	kind   func(V, error) answerKind

	// hits holds the last hit of each key, fresh or not: an entry is an
	// answer while it is younger than hitTTL and of the current
	// generation, and a fallback while the registry fails. misses holds
	// misses for the miss TTL (nil when it is zero or less), whole, value
	// and error, given back as the lookup gave it.
	hits   *simplelru.LRU[string, hit[V]]
	hitTTL time.Duration
	misses *expirable.LRU[string, answer[V]]

	mu sync.Mutex
	// flights holds the lookup in progress for each key.
	flights map[string]*flight[V]
	// epoch counts Forget and ForgetAll calls. A lookup that began before
	// a Forget may have read the registry before the change that caused
	// it, so its answer is returned to its callers but not cached. One
	// counter for all keys keeps this simple; the price is a cache fill
	// lost now and then, never a stale entry.
	epoch uint64
	// generation counts ForgetAll calls: a hit of an older generation is
	// no answer, only a fallback.
	generation uint64
}

// hit is a found value and when and in which generation it was found.
type hit[V any] struct {
	v          V
	at         time.Time
	generation uint64
}

type answer[V any] struct {
	v   V
	err error
}

// flight is one registry lookup that several callers may wait on. Its
// answer is written by the leader before done is closed and only read
// after, so it needs no lock.
type flight[V any] struct {
	done  chan struct{}
	epoch uint64
	// waiters counts the callers that joined the leader; tests read it
	// (waitersOn) to know that callers are really sharing a lookup.
	waiters int

	answer[V]
}

// errLookupPanicked is what callers waiting on a lookup get when the
// registry panicked in the leader's goroutine; the leader itself panics.
var errLookupPanicked = errors.New("registry lookup panicked")

func newLookupCache[V any](lookup func(context.Context, string) (V, error), kind func(V, error) answerKind,
	hitTTL, missTTL time.Duration) *lookupCache[V] {
	hits, err := simplelru.NewLRU[string, hit[V]](cacheSize, nil)
	if err != nil {
		panic(err) // only for a size below 1
	}
	c := &lookupCache[V]{lookup: lookup, kind: kind, flights: make(map[string]*flight[V]), hits: hits, hitTTL: hitTTL}
	if missTTL > 0 {
		c.misses = expirable.NewLRU[string, answer[V]](cacheSize, nil, missTTL)
	}
	return c
}

// get returns key's answer from the cache, or from the lookup.
func (c *lookupCache[V]) get(ctx context.Context, key string) (V, error) {
	for {
		c.mu.Lock()
		// The caches are read under mu so that a lookup finishing between
		// a cache miss here and the flight check below cannot cause a
		// second registry query: the leader fills the cache and removes
		// its flight under mu in one step.
		if a, ok := c.cached(key); ok {
			c.mu.Unlock()
			return a.v, a.err
		}
		if f, ok := c.flights[key]; ok {
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				var zero V
				return zero, ctx.Err()
			}
			if isContextError(f.err) && ctx.Err() == nil {
				// The leader gave up (its client went away or timed out);
				// this caller still wants an answer, so it asks again.
				continue
			}
			return f.v, f.err
		}
		f := &flight[V]{done: make(chan struct{}), epoch: c.epoch}
		c.flights[key] = f
		c.mu.Unlock()
		c.lead(ctx, key, f)
		return f.v, f.err
	}
}

func (c *lookupCache[V]) cached(key string) (answer[V], bool) {
	if h, ok := c.hits.Get(key); ok && h.generation == c.generation && time.Since(h.at) < c.hitTTL {
		return answer[V]{v: h.v}, true
	}
	if c.misses != nil {
		if a, ok := c.misses.Get(key); ok {
			return a, true
		}
	}
	return answer[V]{}, false
}

// lead asks the registry on behalf of every caller waiting on f.
func (c *lookupCache[V]) lead(ctx context.Context, key string, f *flight[V]) {
	// If the lookup panics, the deferred finish still wakes the waiters
	// (with errLookupPanicked) instead of leaving them blocked forever.
	f.err = errLookupPanicked
	defer c.finish(key, f)
	f.v, f.err = c.lookup(ctx, key)
}

func (c *lookupCache[V]) finish(key string, f *flight[V]) {
	c.mu.Lock()
	// Forget may already have removed this flight, and a newer one may have
	// taken its place; only remove our own.
	if c.flights[key] == f {
		delete(c.flights, key)
	}
	if f.epoch == c.epoch {
		switch c.kind(f.v, f.err) {
		case answerHit:
			c.hits.Add(key, hit[V]{v: f.v, at: time.Now(), generation: c.generation})
			if c.misses != nil {
				c.misses.Remove(key)
			}
		case answerMiss:
			if c.misses != nil {
				c.misses.Add(key, f.answer)
			}
			c.hits.Remove(key)
		}
	}
	if c.kind(f.v, f.err) == answerFailure && !isContextError(f.err) {
		// The registry could not answer: the last hit, if any, is the
		// best answer there is (see lookupCache). A Forget since it was
		// found has removed it. Its age is left alone, so that the next
		// lookup asks the registry again.
		if h, ok := c.hits.Peek(key); ok {
			f.answer = answer[V]{v: h.v}
		}
	}
	c.mu.Unlock()
	close(f.done)
}

// Forget drops what is cached about key, so the next lookup asks the
// registry. A lookup of key already in progress is detached: later callers
// start a new one, and its answer is not cached.
func (c *lookupCache[V]) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.hits.Remove(key)
	if c.misses != nil {
		c.misses.Remove(key)
	}
	delete(c.flights, key)
}

// ForgetAll drops everything cached, but keeps the hits as a fallback for
// while the registry fails (see lookupCache).
func (c *lookupCache[V]) ForgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.generation++
	if c.misses != nil {
		c.misses.Purge()
	}
	clear(c.flights)
}

// waitersOn is how many callers wait on the lookup of key in progress.
func (c *lookupCache[V]) waitersOn(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[key]; ok {
		return f.waiters
	}
	return 0
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
