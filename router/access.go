package router

import (
	"context"
	"fmt"
	"slices"
	"time"
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
	// users caches each user's grants: users with at least one for the
	// hit TTL, users with none for the miss TTL, since that is what a
	// newly granted user was a moment ago.
	users *lookupCache[UserGrants]
}

// NewGrants returns a Grants that asks src, caching users with grants for
// ttl and users without any for missTTL; a TTL of zero or less turns that
// cache off. Like the Router's, the caches run a cleanup goroutine for the
// life of the process, so a program makes one Grants and keeps it.
func NewGrants(src GrantSource, ttl, missTTL time.Duration) *Grants {
	return &Grants{users: newLookupCache(src.LookupGrants, grantsAnswer, ttl, missTTL)}
}

// grantsAnswer sorts a grants lookup for the cache.
func grantsAnswer(g UserGrants, err error) answerKind {
	switch {
	case err != nil:
		return answerFailure
	case g.All || len(g.Tenants) > 0:
		return answerHit
	default:
		return answerMiss
	}
}

// CheckAccess returns nil when user may connect to t, an
// *AccessDeniedError when it may not, and otherwise a wrapped lookup
// error, which is not cached. t.Name must be the tenant's own name, as the
// Router returns it even for a client that used an alias: grants belong to
// tenants, not to their names.
func (g *Grants) CheckAccess(ctx context.Context, user string, t Tenant) error {
	ug, err := g.users.get(ctx, user)
	if err != nil {
		return fmt.Errorf("look up grants of user %q: %w", user, err)
	}
	if !ug.Allows(t.Name) {
		return &AccessDeniedError{User: user, Tenant: t.Name}
	}
	return nil
}

// Forget drops what is cached about user's grants, so that the next check
// asks the registry; a lookup in progress is detached and its answer not
// cached.
func (g *Grants) Forget(user string) { g.users.Forget(user) }

// ForgetAll drops every cached grant. Watch asks for it after each
// (re)connect, since notifications sent while it was away are lost.
func (g *Grants) ForgetAll() { g.users.ForgetAll() }
