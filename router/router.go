package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/pgtenant/pgtenant/config"
)

// cacheSize bounds each of the hit and miss caches. Misses are keyed by
// whatever names clients send, so without a bound a client cycling through
// random database names could grow the proxy's memory without limit.
const cacheSize = 10000

// Startup holds the startup values that routing looks at. It is a plain
// struct rather than a pgproto3 message so that the router knows nothing of
// the wire protocol; the proxy copies the values out of the StartupMessage.
type Startup struct {
	// Database is the startup "database" parameter.
	Database string
	// User is the startup "user" parameter.
	User string
}

// Router turns a client's startup values into a tenant. It caches what the
// registry says, so that a burst of connections costs one registry query,
// and it is safe for concurrent use.
type Router struct {
	reg  Registry
	from config.TenantSource

	// hits holds found tenants (active or not); nil when hits are not
	// cached. misses holds names the registry did not know; nil when misses
	// are not cached.
	hits   *expirable.LRU[string, Tenant]
	misses *expirable.LRU[string, struct{}]

	mu sync.Mutex
	// flights holds the lookup in progress for each name, so that
	// concurrent lookups of one uncached name share one registry query.
	flights map[string]*flight
	// epoch counts Forget and ForgetAll calls. A lookup that began before
	// a Forget may have read the registry before the change that caused
	// it, so its result is returned to its callers but not cached.
	// One counter for all names keeps this simple; the price is a cache
	// fill lost now and then, never a stale entry.
	epoch uint64
}

// flight is one registry lookup that several callers may wait on. Its
// result fields are written by the leader before done is closed and only
// read after, so they need no lock.
type flight struct {
	done  chan struct{}
	epoch uint64
	// waiters counts the callers that joined the leader; tests read it
	// (under Router.mu) to know that callers are really sharing a lookup.
	waiters int

	tenant Tenant
	err    error
}

// errLookupPanicked is what callers waiting on a lookup get when the
// registry panicked in the leader's goroutine; the leader itself panics.
var errLookupPanicked = errors.New("registry lookup panicked")

// New returns a Router that names the tenant by the startup value that
// from selects (the database by default, when from is empty) and looks it
// up in reg.
//
// Found tenants are cached for hitTTL and unknown names for missTTL; a TTL
// of zero or less turns that cache off. The miss TTL is kept short because a
// tenant created while its name is cached as a miss stays unreachable until
// the entry expires or is forgotten (see Forget and PGRegistry.Watch).
//
// The caches each run a cleanup goroutine that lives as long as the
// process, so a program makes one Router and keeps it.
func New(reg Registry, from config.TenantSource, hitTTL, missTTL time.Duration) *Router {
	if from == "" {
		from = config.TenantFromDatabase
	}
	r := &Router{
		reg:     reg,
		from:    from,
		flights: make(map[string]*flight),
	}
	if hitTTL > 0 {
		r.hits = expirable.NewLRU[string, Tenant](cacheSize, nil, hitTTL)
	}
	if missTTL > 0 {
		r.misses = expirable.NewLRU[string, struct{}](cacheSize, nil, missTTL)
	}
	return r
}

// tenantName picks the startup value that names the tenant.
func (r *Router) tenantName(s Startup) (string, error) {
	switch r.from {
	case config.TenantFromDatabase:
		return s.Database, nil
	case config.TenantFromUser:
		return s.User, nil
	default:
		return "", fmt.Errorf("router: unknown tenant source %q (want %q or %q)",
			r.from, config.TenantFromDatabase, config.TenantFromUser)
	}
}

// ResolveTenant returns the tenant the client asked for. It returns an
// *UnknownTenantError when no tenant has the name (including an empty
// name), a *DisabledTenantError when the tenant is disabled, and otherwise
// a wrapped registry error, which is not cached so that the next client
// tries again.
func (r *Router) ResolveTenant(ctx context.Context, s Startup) (Tenant, error) {
	name, err := r.tenantName(s)
	if err != nil {
		return Tenant{}, err
	}
	if name == "" {
		// No tenant can have an empty name; do not ask the registry.
		return Tenant{}, &UnknownTenantError{Name: ""}
	}
	for {
		r.mu.Lock()
		// The caches are read under mu so that a lookup finishing between
		// a cache miss here and the flight check below cannot cause a
		// second registry query: the leader fills the cache and removes
		// its flight under mu in one step.
		if t, ok := r.cached(name); ok {
			r.mu.Unlock()
			return outcome(name, t, nil)
		}
		if r.misses != nil {
			if _, ok := r.misses.Get(name); ok {
				r.mu.Unlock()
				return outcome(name, Tenant{}, ErrNotFound)
			}
		}
		if f, ok := r.flights[name]; ok {
			f.waiters++
			r.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return Tenant{}, ctx.Err()
			}
			if isContextError(f.err) && ctx.Err() == nil {
				// The leader gave up (its client went away or timed out);
				// this caller still wants an answer, so it asks again.
				continue
			}
			return outcome(name, f.tenant, f.err)
		}
		f := &flight{done: make(chan struct{}), epoch: r.epoch}
		r.flights[name] = f
		r.mu.Unlock()
		r.lead(ctx, name, f)
		return outcome(name, f.tenant, f.err)
	}
}

func (r *Router) cached(name string) (Tenant, bool) {
	if r.hits == nil {
		return Tenant{}, false
	}
	return r.hits.Get(name)
}

// lead asks the registry on behalf of every caller waiting on f.
func (r *Router) lead(ctx context.Context, name string, f *flight) {
	// If the registry panics, the deferred finish still wakes the waiters
	// (with errLookupPanicked) instead of leaving them blocked forever.
	f.err = errLookupPanicked
	defer r.finish(name, f)
	f.tenant, f.err = r.reg.LookupTenant(ctx, name)
}

func (r *Router) finish(name string, f *flight) {
	r.mu.Lock()
	// Forget may already have removed this flight, and a newer one may have
	// taken its place; only remove our own.
	if r.flights[name] == f {
		delete(r.flights, name)
	}
	if f.epoch == r.epoch {
		switch {
		case f.err == nil:
			if r.hits != nil {
				r.hits.Add(name, f.tenant)
			}
			if r.misses != nil {
				r.misses.Remove(name)
			}
		case errors.Is(f.err, ErrNotFound):
			if r.misses != nil {
				r.misses.Add(name, struct{}{})
			}
			if r.hits != nil {
				r.hits.Remove(name)
			}
		}
		// Any other error is a registry failure: caching it would turn a
		// brief outage into refused connections for a whole TTL.
	}
	r.mu.Unlock()
	close(f.done)
}

// outcome turns a registry answer into what ResolveTenant returns.
func outcome(name string, t Tenant, err error) (Tenant, error) {
	switch {
	case err == nil && !t.Active:
		return Tenant{}, &DisabledTenantError{Name: name}
	case err == nil:
		return t, nil
	case errors.Is(err, ErrNotFound):
		return Tenant{}, &UnknownTenantError{Name: name}
	default:
		return Tenant{}, fmt.Errorf("look up tenant %q: %w", name, err)
	}
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Forget drops what the router has cached about name, found or not, so the
// next lookup asks the registry. A lookup of name already in progress is
// detached: later callers start a new one, and its result is not cached.
func (r *Router) Forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epoch++
	if r.hits != nil {
		r.hits.Remove(name)
	}
	if r.misses != nil {
		r.misses.Remove(name)
	}
	delete(r.flights, name)
}

// ForgetAll drops everything the router has cached. PGRegistry.Watch asks
// for it after (re)connecting, since notifications sent while it was not
// listening are lost.
func (r *Router) ForgetAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epoch++
	if r.hits != nil {
		r.hits.Purge()
	}
	if r.misses != nil {
		r.misses.Purge()
	}
	clear(r.flights)
}
