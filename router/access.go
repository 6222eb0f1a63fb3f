package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// UserGrants is what one user may connect to.
type UserGrants struct {
	// All is true when the user is granted every tenant.
	All bool
	// Tenants are the tenants granted by name, sorted.
	Tenants []string
}

// Allows reports whether the grants cover the tenant called tenant (its
// own name, not an alias).
func (g UserGrants) Allows(tenant string) bool {
	if g.All {
		return true
	}
	_, ok := slices.BinarySearch(g.Tenants, tenant)
	return ok
}

// GrantSource looks up what a user is granted: PGRegistry, or a fake in
// tests. A user with no grants is UserGrants{}, not an error.
type GrantSource interface {
	LookupGrants(ctx context.Context, user string) (UserGrants, error)
}

// Grants decides whether a user may connect to a tenant, from the grants
// in the registry (pgtenant.tenant_users): it is the proxy's TenantAccess
// under --tenant-access granted. It is safe for concurrent use.
//
// It caches each user's grants, so that a client that connects for every
// transaction costs no registry query, and concurrent checks of one
// uncached user share one query. PGRegistry.Watch's callback must call
// Forget for each user whose grants change (GrantsChangedFor) and ForgetAll
// on "": with the TTLs a proxy uses, a revoke would otherwise take a TTL to
// count.
type Grants struct {
	src GrantSource

	// granted holds users with at least one grant; none holds users with
	// no grant at all, for a shorter time, since that is what a newly
	// granted user was a moment ago. Either is nil when its TTL is zero.
	granted *expirable.LRU[string, UserGrants]
	none    *expirable.LRU[string, struct{}]

	mu sync.Mutex
	// flights holds the lookup in progress for each user.
	flights map[string]*grantFlight
	// epoch counts Forget and ForgetAll calls: a lookup that began before
	// one may have read the grants before the change that caused it, so
	// its answer is used once but not cached. See Router.epoch.
	epoch uint64
}

// grantFlight is one registry lookup that several checks may wait on. Its
// result fields are written before done is closed and only read after.
type grantFlight struct {
	done  chan struct{}
	epoch uint64
	// waiters counts the checks that joined the leader; tests read it
	// (under Grants.mu) to know that checks really share a lookup.
	waiters int

	grants UserGrants
	err    error
}

// NewGrants returns a Grants that asks src, caching users with grants for
// ttl and users without any for missTTL; a TTL of zero or less turns that
// cache off. Like the Router's, the caches run a cleanup goroutine for the
// life of the process, so a program makes one Grants and keeps it.
func NewGrants(src GrantSource, ttl, missTTL time.Duration) *Grants {
	g := &Grants{src: src, flights: make(map[string]*grantFlight)}
	if ttl > 0 {
		// Keys are authenticated user names, not whatever a client
		// sends, but the bound still keeps memory fixed.
		g.granted = expirable.NewLRU[string, UserGrants](cacheSize, nil, ttl)
	}
	if missTTL > 0 {
		g.none = expirable.NewLRU[string, struct{}](cacheSize, nil, missTTL)
	}
	return g
}

// CheckAccess returns nil when user may connect to t, an
// *AccessDeniedError when it may not, and otherwise a wrapped lookup
// error, which is not cached. t.Name must be the tenant's own name, as the
// Router returns it even for a client that used an alias: grants belong to
// tenants, not to their names.
func (g *Grants) CheckAccess(ctx context.Context, user string, t Tenant) error {
	ug, err := g.lookup(ctx, user)
	if err != nil {
		return fmt.Errorf("look up grants of user %q: %w", user, err)
	}
	if !ug.Allows(t.Name) {
		return &AccessDeniedError{User: user, Tenant: t.Name}
	}
	return nil
}

func (g *Grants) lookup(ctx context.Context, user string) (UserGrants, error) {
	for {
		g.mu.Lock()
		// Read the caches under mu, for the reason Router.ResolveTenant
		// does: a leader fills them and drops its flight in one step.
		if ug, ok := g.cached(user); ok {
			g.mu.Unlock()
			return ug, nil
		}
		if f, ok := g.flights[user]; ok {
			f.waiters++
			g.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return UserGrants{}, ctx.Err()
			}
			if isContextError(f.err) && ctx.Err() == nil {
				// The leader's client gave up; this one still wants an
				// answer.
				continue
			}
			return f.grants, f.err
		}
		f := &grantFlight{done: make(chan struct{}), epoch: g.epoch}
		g.flights[user] = f
		g.mu.Unlock()
		g.lead(ctx, user, f)
		return f.grants, f.err
	}
}

func (g *Grants) cached(user string) (UserGrants, bool) {
	if g.granted != nil {
		if ug, ok := g.granted.Get(user); ok {
			return ug, true
		}
	}
	if g.none != nil {
		if _, ok := g.none.Get(user); ok {
			return UserGrants{}, true
		}
	}
	return UserGrants{}, false
}

// errGrantsLookupPanicked is what checks waiting on a lookup get when the
// source panicked in the leader's goroutine; the leader itself panics.
var errGrantsLookupPanicked = errors.New("grants lookup panicked")

func (g *Grants) lead(ctx context.Context, user string, f *grantFlight) {
	// finish runs even if the source panics, so waiters are never stranded.
	f.err = errGrantsLookupPanicked
	defer g.finish(user, f)
	f.grants, f.err = g.src.LookupGrants(ctx, user)
}

func (g *Grants) finish(user string, f *grantFlight) {
	g.mu.Lock()
	if g.flights[user] == f {
		delete(g.flights, user)
	}
	// A failed lookup is never cached: a brief registry outage must not
	// lock users out for a TTL.
	if f.epoch == g.epoch && f.err == nil {
		if f.grants.All || len(f.grants.Tenants) > 0 {
			if g.granted != nil {
				g.granted.Add(user, f.grants)
			}
		} else if g.none != nil {
			g.none.Add(user, struct{}{})
		}
	}
	g.mu.Unlock()
	close(f.done)
}

// Forget drops what is cached about user's grants, so that the next check
// asks the registry; a lookup in progress is detached and its answer not
// cached.
func (g *Grants) Forget(user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
	if g.granted != nil {
		g.granted.Remove(user)
	}
	if g.none != nil {
		g.none.Remove(user)
	}
	delete(g.flights, user)
}

// ForgetAll drops every cached grant. Watch asks for it after each
// (re)connect, since notifications sent while it was away are lost.
func (g *Grants) ForgetAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
	if g.granted != nil {
		g.granted.Purge()
	}
	if g.none != nil {
		g.none.Purge()
	}
	clear(g.flights)
}
