package proxy

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/pool"
)

// tenantLimits are a tenant's limits enforced in the proxy before a backend
// is asked for: the transaction rate, a token bucket shared by the tenant's
// sessions. (Its cap on clients is counted in tenantEntry.clients, its cap
// on backends by the pool: see tenantMaxClients and tenantMaxBackends.)
type tenantLimits struct {
	// on says the bucket has a rate (bucket.rate != 0), read without the
	// lock: every checkout of the tenant's sessions passes here, and with
	// no rate (the default) none of them takes the tenant-wide lock.
	on     atomic.Bool
	mu     sync.Mutex
	bucket bucket
	// maxWait is how long a transaction may wait for the rate
	// (query-wait-timeout, as for a backend).
	maxWait time.Duration
	// now is the clock; nil is time.Now (tests set their own).
	now func() time.Time
}

// errRateLimited: the transaction could not start within maxWait under the
// tenant's rate; gate tells the client which limit (rateLimitError).
var errRateLimited = errors.New("over the tenant's transaction rate")

// setRate takes the tenant's rate as it is now (read at every checkout, so
// a changed setting applies to the next transaction); perSec 0 turns the
// limit off.
func (l *tenantLimits) setRate(perSec float64, burst int, maxWait time.Duration) {
	if perSec == 0 && !l.on.Load() {
		return // off, and staying off
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxWait = maxWait
	if perSec == l.bucket.rate && float64(burst) == l.bucket.burst {
		return
	}
	l.bucket.set(perSec, burst, l.clock())
	l.on.Store(l.bucket.rate != 0)
}

func (l *tenantLimits) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// takeTxn waits for the tenant's rate limit to allow one more
// transaction. A transaction that could not start within maxWait waits
// maxWait out and gets errRateLimited, so that a client retrying at once is
// held to the rate too; with wait false it gets pool.ErrBusy at once, as a
// checkout that must not wait does when the pool is busy.
func (l *tenantLimits) takeTxn(ctx context.Context, wait bool) error {
	if !l.on.Load() {
		return nil
	}
	l.mu.Lock()
	if l.bucket.rate == 0 {
		l.mu.Unlock()
		return nil
	}
	maxWait := l.maxWait
	if !wait {
		maxWait = 0
	}
	d, ok := l.bucket.reserve(l.clock(), maxWait)
	l.mu.Unlock()
	switch {
	case !ok && !wait:
		return pool.ErrBusy
	case !ok:
		d = maxWait
	case d == 0:
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		if !ok {
			return errRateLimited
		}
		return nil
	case <-ctx.Done():
		if ok {
			l.giveBack()
		}
		return ctx.Err()
	}
}

// charge takes a token, without waiting, for a transaction that needs no
// checkout: the client started it on the backend its last one left
// attached, having spoken before the backend was released. Waiting there
// would keep a backend idle, so the token is taken ahead of its time
// instead, and the tenant's next checkout waits for it. The debt is bounded
// by the longest wait a checkout accepts (maxWait), so that it never turns
// into refusals on its own.
func (l *tenantLimits) charge() {
	if !l.on.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bucket.rate == 0 {
		return
	}
	l.bucket.charge(l.clock(), max(l.bucket.burst, l.bucket.rate*l.maxWait.Seconds()))
}

// giveBack returns the token of a transaction that got no backend after
// all (the checkout failed): it did not run.
func (l *tenantLimits) giveBack() {
	if !l.on.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket.unreserve(l.clock())
}

// bucket is a token bucket: rate tokens a second, holding at most burst. A
// token may be reserved ahead of its time (tokens goes below zero), which
// queues the callers that wait for the rate in the order they came.
type bucket struct {
	rate   float64 // tokens a second; 0: off
	burst  float64
	tokens float64
	last   time.Time
}

// set changes the rate and the size; burst 0 is one second's worth of
// rate, at least one. A bucket turned on starts full.
func (b *bucket) set(rate float64, burst int, now time.Time) {
	was := b.rate
	b.advance(now)
	b.rate, b.burst = rate, float64(burst)
	if burst <= 0 {
		b.burst = max(1, math.Ceil(rate))
	}
	switch {
	case rate == 0:
		b.tokens = 0
	case was == 0:
		b.tokens = b.burst
	default:
		b.tokens = min(b.tokens, b.burst)
	}
	b.last = now
}

// advance adds the tokens earned since last.
func (b *bucket) advance(now time.Time) {
	if b.rate > 0 && now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if now.After(b.last) {
		b.last = now
	}
}

// reserve takes a token, now or at now+wait. A token that would come later
// than maxWait is not taken (ok false, wait how long it would have been).
func (b *bucket) reserve(now time.Time, maxWait time.Duration) (wait time.Duration, ok bool) {
	b.advance(now)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait = time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	if wait > maxWait {
		return wait, false
	}
	b.tokens--
	return wait, true
}

// charge takes a token whatever the wait, leaving at most debt tokens
// owed.
func (b *bucket) charge(now time.Time, debt float64) {
	b.advance(now)
	b.tokens = max(b.tokens-1, -debt)
}

// unreserve gives a token back.
func (b *bucket) unreserve(now time.Time) {
	if b.rate == 0 {
		return
	}
	b.advance(now)
	b.tokens = min(b.burst, b.tokens+1)
}
