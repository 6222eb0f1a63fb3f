package proxy

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// Several backends (issue 16). Each tenant is placed on one backend server
// (router.Tenant.Backend); the server keeps one pool per backend. The
// default backend's pool is srv.pool, made at start from --backend; the
// others are made when a tenant placed there first needs a connection,
// with the same pool.Config (pool size, timeouts, statement cache) and the
// same dialer settings (role isolation's role passwords), and their DSN read
// from the registry. The global caps stay global: max-client-conn counts
// clients whatever their backend, and a tenant's max-backends is counted
// by the pool of the backend it is on (it is on one at a time). pool-size
// is per backend, as PgBouncer's is per database.
//
// Connections return to their own pool whichever pool is asked
// (pool.Release forwards), so the relay keeps releasing through srv.pool.

// backendPools holds the pools of the backends other than the default.
type backendPools struct {
	// newPool makes the pool of a backend reached at dsn.
	newPool func(dsn string) (*pool.Pool, error)
	// lookup reads a backend's row from the registry.
	lookup func(ctx context.Context, name string) (router.Backend, bool, error)

	mu     sync.Mutex
	m      map[string]*backendPool
	closed bool
}

// backendPool is one backend's pool, or its making: ready is closed once
// p or err is set, so that the clients asking meanwhile wait for one
// registry lookup and one pool.
type backendPool struct {
	ready chan struct{}
	dsn   string
	p     *pool.Pool
	err   error
	at    time.Time // when err was set
}

// backendRetry is how long a failure to find or reach a backend's
// definition is served to the clients that ask, before the registry is
// asked again: a burst of clients does not become a burst of lookups.
const backendRetry = time.Second

// placement is where this proxy sends a tenant's transactions: the backend
// named in the registry as last read. Set from the tenant a client resolved
// to at its first checkout, and read again from the registry on every
// NOTIFY naming the tenant (and on every reconnect of the watch), so that a
// placement change reaches connected clients at their next transaction.
type placement struct {
	cur atomic.Pointer[string]
	// mu serialises the reads of the registry, so that a slow older read
	// cannot overwrite a newer one.
	mu sync.Mutex
}

// backendOf returns the backend the session's tenant is on now.
func (s *session) backendOf() string {
	if s.te == nil {
		return s.tr.tenant.BackendOf()
	}
	if b := s.te.place.cur.Load(); b != nil {
		return *b
	}
	b := s.tr.tenant.BackendOf()
	if !s.te.place.cur.CompareAndSwap(nil, &b) {
		return *s.te.place.cur.Load()
	}
	return b
}

// PlacementSource finds a tenant's placement in the registry
// (router.PGRegistry.LookupTenant).
type PlacementSource interface {
	LookupTenant(ctx context.Context, name string) (router.Tenant, error)
}

// placementChanged is the registry watch's callback for a payload: a
// tenant name ("" for every tenant known here) whose placement may have
// changed is read again, in the background, and a backend whose row
// changed loses its pool (so that a backend removed and added again with
// another DSN is dialled anew).
func (srv *Server) placementChanged(ctx context.Context, payload string) {
	if b, ok := router.BackendChangedFor(payload); ok {
		srv.backends.retire(b)
		return
	}
	if srv.placements == nil || strings.Contains(payload, ":") {
		return
	}
	if payload == "" {
		entries := srv.tenants.all()
		go func() {
			for _, te := range entries {
				srv.refreshPlacement(ctx, te)
			}
		}()
		return
	}
	if te := srv.tenants.lookup(payload); te != nil {
		go srv.refreshPlacement(ctx, te)
	}
}

// refreshPlacement reads te's placement again. A tenant that is gone, or a
// registry that does not answer, leaves the placement as it was: a deleted
// tenant's clients are closed by other means, and during an outage the
// last known placement is the best there is.
func (srv *Server) refreshPlacement(ctx context.Context, te *tenantEntry) {
	te.place.mu.Lock()
	defer te.place.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	t, err := srv.placements.LookupTenant(ctx, te.name)
	if err != nil || t.Name != te.name {
		// An alias's payload finds its tenant under another name, whose
		// own payload comes too.
		return
	}
	b := t.BackendOf()
	old := te.place.cur.Swap(&b)
	if old != nil && *old != b {
		srv.log.Info("tenant placed on another backend; its next transactions go there",
			"tenant", te.name, "from", *old, "to", b)
	}
}

// poolFor returns the pool of backend, made if this is its first use.
func (srv *Server) poolFor(ctx context.Context, backend string) (*pool.Pool, error) {
	if backend == router.DefaultBackend || backend == "" {
		return srv.pool, nil
	}
	if srv.backends == nil {
		return nil, errorf(codeConnectionFailure,
			"pgtenant: tenant is placed on backend %q, and this server knows no backends but its own", backend)
	}
	return srv.backends.get(ctx, backend)
}

// get returns backend's pool, making it on first use.
func (b *backendPools) get(ctx context.Context, name string) (*pool.Pool, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, pool.ErrClosed
	}
	if b.m == nil {
		b.m = map[string]*backendPool{}
	}
	bp := b.m[name]
	if bp != nil {
		select {
		case <-bp.ready:
			if bp.err != nil && time.Since(bp.at) > backendRetry {
				bp = nil // try again
			}
		default:
		}
	}
	if bp == nil {
		bp = &backendPool{ready: make(chan struct{})}
		b.m[name] = bp
		b.mu.Unlock()
		b.make(ctx, name, bp)
	} else {
		b.mu.Unlock()
	}
	select {
	case <-bp.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return bp.p, bp.err
}

// make fills bp with backend name's pool, or the reason there is none.
func (b *backendPools) make(ctx context.Context, name string, bp *backendPool) {
	defer close(bp.ready)
	fail := func(err error) {
		bp.err, bp.at = err, time.Now()
	}
	// The lookup must not be cut short by the first asker leaving: others
	// wait on it.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settingsTimeout)
	defer cancel()
	be, found, err := b.lookup(lctx, name)
	switch {
	case err != nil:
		fail(errorf(codeConnectionFailure, "pgtenant: cannot read backend %q from the registry: %v", name, err))
		return
	case !found:
		fail(errorf(codeConnectionFailure,
			"pgtenant: the tenant is placed on backend %q, which is not in the registry; add it with: pgtenant backend add %s DSN", name, name))
		return
	}
	p, err := b.newPool(be.DSN)
	if err != nil {
		fail(errorf(codeConnectionFailure, "pgtenant: backend %q: %v", name, err))
		return
	}
	bp.dsn, bp.p = be.DSN, p
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		p.Close()
		bp.p, bp.err = nil, pool.ErrClosed
	}
}

// retire forgets backend name's pool, closing it: its idle connections
// now, the ones in use when their clients give them back. The next client
// placed there makes a new pool from the registry's row.
func (b *backendPools) retire(name string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	bp := b.m[name]
	delete(b.m, name)
	b.mu.Unlock()
	if bp == nil {
		return
	}
	go func() {
		<-bp.ready
		if bp.p != nil {
			bp.p.Close()
		}
	}()
}

// each calls f with every backend's pool made so far, by name.
func (b *backendPools) each(f func(name string, p *pool.Pool)) {
	if b == nil {
		return
	}
	b.mu.Lock()
	type named struct {
		name string
		bp   *backendPool
	}
	var all []named
	for n, bp := range b.m {
		all = append(all, named{n, bp})
	}
	b.mu.Unlock()
	for _, x := range all {
		select {
		case <-x.bp.ready:
			if x.bp.p != nil {
				f(x.name, x.bp.p)
			}
		default:
		}
	}
}

// closeAll closes every pool and refuses to make more.
func (b *backendPools) closeAll() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closed = true
	all := b.m
	b.m = nil
	b.mu.Unlock()
	for _, bp := range all {
		select {
		case <-bp.ready:
			if bp.p != nil {
				bp.p.Close()
			}
		default:
			// Being made: make sees closed and closes it.
		}
	}
}

// poolStatsOf returns the stats of backend's pool, if it has one.
func (srv *Server) poolStatsOf(backend string) (pool.Stats, bool) {
	if backend == router.DefaultBackend || backend == "" {
		if srv.pool == nil {
			return pool.Stats{}, false
		}
		return srv.pool.Stats(), true
	}
	var st pool.Stats
	found := false
	srv.backends.each(func(name string, p *pool.Pool) {
		if name == backend {
			st, found = p.Stats(), true
		}
	})
	return st, found
}

// eachPool calls f with every pool: the default backend's first.
func (srv *Server) eachPool(f func(backend string, p *pool.Pool)) {
	if srv.pool != nil {
		f(router.DefaultBackend, srv.pool)
	}
	srv.backends.each(f)
}

// backendDSN is the DSN a proxy dials a backend with: the registry's,
// which holds no password, with --backend's user when it names none, so
// that one pool role can serve every server. The password then comes from
// the environment or a passfile, looked up for that user (pgconn does it),
// or, in role isolation mode, from the role secret.
func backendDSN(dsn, defaultDSN string) (string, error) {
	def, err := pgconn.ParseConfig(defaultDSN)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("the DSN is not a valid URL")
		}
		if u.User == nil || u.User.Username() == "" {
			if !u.Query().Has("user") {
				u.User = url.User(def.User)
			}
		}
		return u.String(), nil
	}
	if hasKeyword(dsn, "user") {
		return dsn, nil
	}
	return dsn + " user='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(def.User) + "'", nil
}

// hasKeyword reports whether a key=value DSN sets keyword. Good enough
// for the DSNs router.CheckBackendDSN accepted: a keyword starts the
// string or follows a space, and is followed by '=' (spaces allowed).
func hasKeyword(dsn, keyword string) bool {
	for i := 0; i+len(keyword) <= len(dsn); i++ {
		if (i == 0 || dsn[i-1] == ' ' || dsn[i-1] == '\t') && strings.HasPrefix(dsn[i:], keyword) {
			rest := strings.TrimLeft(dsn[i+len(keyword):], " \t")
			if strings.HasPrefix(rest, "=") {
				return true
			}
		}
	}
	return false
}

// backendName is the backend that pool p serves, for the console.
func (srv *Server) backendName(p *pool.Pool) string {
	name := router.DefaultBackend
	srv.backends.each(func(n string, q *pool.Pool) {
		if q == p {
			name = n
		}
	})
	return name
}
