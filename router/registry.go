package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NotifyChannel is the channel on which changes to the registry are
// announced, so that every proxy drops what it cached at once. Payloads:
//
//   - a tenant name or an alias: what a client connects with changed
//     (created, disabled, renamed, deleted, an alias added or removed); the
//     router forgets that name (Router.Forget). A change to a tenant's
//     settings (pgtenant.tenant_settings) sends the tenant's name too: the
//     proxy reloads them.
//   - UserNotifyPrefix + a user name ("user:alice"): that user's grants
//     changed; the access checker forgets the user (Grants.Forget).
//   - "": forget everything (after a TRUNCATE, and what Watch reports after
//     each reconnect).
//
// The kinds cannot collide: tenant names and aliases never contain ':'
// (ValidateTenantName, ValidateAliasName). Triggers on the registry tables
// (pgtenant.notify_change, installed by EnsureRegistry) send them, so a
// change made by hand in psql, or by a cascade, is announced too. A proxy
// that predates grants hands "user:..." to Router.Forget, which is harmless.
const NotifyChannel = "pgtenant_tenants"

// UserNotifyPrefix starts a NotifyChannel payload that names a user whose
// grants changed. See NotifyChannel.
const UserNotifyPrefix = "user:"

// GrantsChangedFor reports whether a NotifyChannel payload announces a
// change to a user's grants, and whose.
func GrantsChangedFor(payload string) (user string, ok bool) {
	if user, ok = strings.CutPrefix(payload, UserNotifyPrefix); !ok {
		return "", false
	}
	return user, true
}

// registryMaxConns sizes the registry's pool. Lookups are one indexed query
// behind the router's cache, so a few connections carry any load, and every
// one of them is a backend slot taken from the tenants.
const registryMaxConns = 4

// Watch's reconnect backoff: it starts short, because a restart of the
// backend is the common case, and is capped so that a proxy notices a
// returning backend within seconds.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
	// watchHealthy is how long a listening connection must have lived for
	// its loss to count as a fresh failure rather than part of a flapping
	// series, resetting the backoff.
	watchHealthy = 30 * time.Second
)

// The lookup sessions' reconnect backoff. A lost session is replaced at
// once (see PGRegistry.ask); only when the new one fails too do lookups wait
// this long before trying the server again, failing at once meanwhile so
// that the router serves what it cached instead of every login waiting on a
// dead server.
const (
	lookupBackoffMin = 50 * time.Millisecond
	lookupBackoffMax = 5 * time.Second
)

// PGRegistry is the Registry kept in the backend database, in the tables
// pgtenant.tenants and pgtenant.tenant_aliases; it is also the GrantSource
// of pgtenant.tenant_users. It is safe for concurrent use.
type PGRegistry struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu   sync.Mutex
	link registryLink
}

// registryLink is what the registry knows of its lookup sessions: whether
// the server is unreachable, since when, and when to try it again.
type registryLink struct {
	down    bool
	err     error         // why it is down
	since   time.Time     // first failure of this outage
	next    time.Time     // no lookup reaches the server before this
	backoff time.Duration // the wait after the next failure
}

// OpenRegistry connects to the database at dsn (a libpq URL or key=value
// string) and checks that it answers, so that a wrong DSN fails at start-up
// rather than at the first client. The registry table need not exist yet.
// log receives the registry's outages and reconnections (nil: discard).
func OpenRegistry(ctx context.Context, dsn string, log *slog.Logger) (*PGRegistry, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("registry dsn: %w", err)
	}
	cfg.MaxConns = registryMaxConns
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		// Lets an operator tell registry connections apart in
		// pg_stat_activity.
		cfg.ConnConfig.RuntimeParams["application_name"] = "pgtenant registry"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open registry: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PGRegistry{pool: pool, log: log}, nil
}

// ask runs q, one registry query, on the lookup sessions, and keeps them
// healthy. A query that fails because its session is gone (the server
// restarted, an operator ran pg_terminate_backend) is run once more after
// dropping every pooled session, which may all be dead alike: lookups are
// reads, so running one twice is harmless. If that fails too, the server is
// unreachable: ask logs it once, and until the backoff has passed it fails
// at once, so that the router serves its cached answers.
func (r *PGRegistry) ask(ctx context.Context, q func() error) error {
	r.mu.Lock()
	down := r.link.down
	if down && time.Now().Before(r.link.next) {
		err := r.link.err
		r.mu.Unlock()
		return fmt.Errorf("registry unreachable: %w", err)
	}
	r.mu.Unlock()

	err := q()
	// A lost session is replaced at once, unless the registry is known to
	// be down: then the pool holds no session worth dropping, and q has
	// just tried a new one.
	if sessionLost(ctx, err) && !down {
		r.pool.Reset()
		err = q()
		if !sessionLost(ctx, err) && ctx.Err() == nil {
			r.log.Info("tenant registry sessions lost; reconnected", "component", "registry")
		}
	}
	switch {
	case sessionLost(ctx, err):
		r.linkFailed(err)
	case ctx.Err() == nil && (err == nil || serverAnswered(err)):
		r.linkWorks()
	}
	return err
}

func (r *PGRegistry) linkFailed(err error) {
	r.mu.Lock()
	first := !r.link.down
	if first {
		r.link = registryLink{down: true, since: time.Now(), backoff: lookupBackoffMin}
	}
	r.link.err = err
	r.link.next = time.Now().Add(r.link.backoff)
	r.link.backoff = min(2*r.link.backoff, lookupBackoffMax)
	r.mu.Unlock()
	if first {
		r.log.Warn("tenant registry unreachable; logins are served from cached lookups until it answers again",
			"component", "registry", "err", err)
	}
}

func (r *PGRegistry) linkWorks() {
	r.mu.Lock()
	was := r.link
	r.link = registryLink{}
	r.mu.Unlock()
	if was.down {
		r.log.Info("tenant registry reachable again", "component", "registry", "down_for", time.Since(was.since).Round(time.Millisecond))
	}
}

// sessionLost reports whether err says that the session a query ran on, or
// the connection to the server, is gone, rather than that the server
// answered. A caller that gave up (ctx done) lost nothing.
func sessionLost(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return !serverAnswered(err)
}

// serverAnswered reports whether err is the server's answer to a query (no
// rows, a missing table, a permission denied) on a session that still
// works. A login the server refused, or a session it ended (class 08
// connection exception, 57P0x operator intervention, 53300 too many
// connections), is not.
func serverAnswered(err error) bool {
	if errors.Is(err, pgx.ErrNoRows) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57P"), pgErr.Code == "53300":
		return false
	}
	return true
}

// Close closes the registry's connections. Watch connections are not part
// of the pool: cancel Watch's context to end them.
func (r *PGRegistry) Close() { r.pool.Close() }

// Pool returns the registry's connection pool, for the admin functions
// (EnsureRegistry, CreateTenant, ListTenants) and for tests.
func (r *PGRegistry) Pool() *pgxpool.Pool { return r.pool }

// lookupTenantSQL finds a tenant by its name or by one of its aliases, in
// one round trip. A name is preferred to an alias: the admin functions keep
// the two apart, but a row inserted by hand could make them meet, and then
// the answer must still be the same every time.
const lookupTenantSQL = `
SELECT name, schema_name, active, backend FROM (
	SELECT t.name, t.schema_name, t.active, ` + tenantBackendExpr + ` AS backend, 0 AS via
	  FROM pgtenant.tenants t
	 WHERE t.name = $1
	UNION ALL
	SELECT t.name, t.schema_name, t.active, ` + tenantBackendExpr + `, 1
	  FROM pgtenant.tenant_aliases a JOIN pgtenant.tenants t ON t.name = a.tenant
	 WHERE a.alias = $1
) found
ORDER BY via
LIMIT 1`

// lookupTenantByNameSQL is lookupTenantSQL for a registry made before
// aliases existed, until an admin command upgrades it.
const lookupTenantByNameSQL = `SELECT name, schema_name, active, ` + tenantBackendExpr + ` FROM pgtenant.tenants t WHERE name = $1`

// LookupTenant returns the tenant called name, or the tenant of which name
// is an alias; either way the Tenant carries the tenant's own Name, so that
// grants and logs speak of one tenant whatever a client called it. The name
// is only ever a bind parameter: it comes from a client's startup packet.
func (r *PGRegistry) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	err := r.ask(ctx, func() error {
		err := r.pool.QueryRow(ctx, lookupTenantSQL, name).Scan(&t.Name, &t.Schema, &t.Active, &t.Backend)
		if isMissingRegistry(err) {
			// Either no registry at all, or one without the aliases
			// table: an older registry that no admin command has upgraded
			// yet. It has no aliases, so asking by name alone is the
			// whole answer.
			err = r.pool.QueryRow(ctx, lookupTenantByNameSQL, name).Scan(&t.Name, &t.Schema, &t.Active, &t.Backend)
		}
		return err
	})
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	case isMissingRegistry(err):
		// A backend on which no tenant was ever created has no registry;
		// that is an empty registry, not an outage.
		return Tenant{}, fmt.Errorf("tenant %q: no registry table: %w", name, ErrNotFound)
	default:
		return Tenant{}, fmt.Errorf("registry lookup: %w", err)
	}
}

// LookupGrants returns what user is granted in pgtenant.tenant_users. A
// registry without that table (never created, or made before grants
// existed) grants nothing, which is not an error: with --tenant-access
// granted, nobody may connect until someone is granted a tenant.
func (r *PGRegistry) LookupGrants(ctx context.Context, user string) (UserGrants, error) {
	var tenants []*string
	err := r.ask(ctx, func() error {
		rows, err := r.pool.Query(ctx, `SELECT tenant FROM pgtenant.tenant_users WHERE user_name = $1`, user)
		if err == nil {
			tenants, err = pgx.CollectRows(rows, pgx.RowTo[*string])
		}
		return err
	})
	switch {
	case isMissingRegistry(err):
		return UserGrants{}, nil
	case err != nil:
		return UserGrants{}, fmt.Errorf("registry grants lookup: %w", err)
	}
	var g UserGrants
	for _, t := range tenants {
		if t == nil {
			g.All = true
			continue
		}
		g.Tenants = append(g.Tenants, *t)
	}
	slices.Sort(g.Tenants)
	return g, nil
}

// isMissingRegistry reports whether err says that the pgtenant schema or
// its table does not exist.
func isMissingRegistry(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	// 42P01 undefined_table, 3F000 invalid_schema_name.
	return pgErr.Code == "42P01" || pgErr.Code == "3F000"
}

// Watch listens on NotifyChannel and calls onChange with each
// notification's payload (see NotifyChannel for what payloads mean), so that
// every proxy drops a changed tenant, alias or grant from its caches at once
// instead of waiting for a TTL.
//
// It listens on a connection of its own, outside the pool: LISTEN belongs
// to a session, and a pooled connection would be handed to lookups.
// After each (re)connect, once it is listening, it calls onChange("")
// (meaning: forget everything), because notifications sent while it was
// not listening are lost. While it is disconnected it keeps the cache as
// it is, so that clients of known tenants keep working through a backend
// restart; it reconnects with backoff until ctx is done, and then returns
// ctx.Err(). It logs each interruption and each reconnection ("tenant
// registry watch reconnected").
//
// onChange is called from Watch's goroutine, one call at a time; it should
// be quick (Router.Forget and Router.ForgetAll are).
func (r *PGRegistry) Watch(ctx context.Context, onChange func(name string)) error {
	log := r.log.With("component", "registry-watch", "channel", NotifyChannel)
	backoff := watchBackoffMin
	// lost is when the last listening session ended; zero before the
	// first one.
	var lost time.Time
	for {
		start := time.Now()
		listened := false
		err := r.listen(ctx, onChange, func() {
			listened = true
			if !lost.IsZero() {
				log.Info("tenant registry watch reconnected; caches forgotten, since changes may have been missed",
					"after", time.Since(lost).Round(time.Millisecond))
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if listened {
			lost = time.Now()
		}
		if time.Since(start) >= watchHealthy {
			backoff = watchBackoffMin
		}
		log.Warn("tenant change notifications interrupted; reconnecting",
			"err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// listen runs one listening session; it returns when the connection fails
// or ctx is done. It calls listening once it listens, before onChange("").
func (r *PGRegistry) listen(ctx context.Context, onChange func(name string), listening func()) error {
	cfg := r.pool.Config().ConnConfig
	cfg.RuntimeParams["application_name"] = "pgtenant registry watch"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		// ctx may be done already; the close still needs a moment to say
		// goodbye to the server.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Forget only now that we are listening: a change committed after this
	// point is notified, and one committed before it is covered by the
	// forget.
	listening()
	onChange("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		onChange(n.Payload)
	}
}

// roleNamedSchemasSQL finds the tenants whose schema has the name of a role.
// pg_roles is readable by every role, and is qualified so that nothing on
// the registry role's search_path can stand in for it.
const roleNamedSchemasSQL = `
SELECT t.name, t.schema_name, t.active, ` + tenantBackendExpr + `
  FROM pgtenant.tenants t
 WHERE EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = t.schema_name)
 ORDER BY t.name`

// RoleNamedSchemas returns the tenants, active or not, whose schema has the
// name of a role, ordered by name: "$user" in a search_path reaches such a
// schema (see RoleNamedSchemaError). CreateTenant refuses them, but a role
// can be created after its namesake tenant, so the proxy asks at start and
// warns. A registry that does not exist yet has none, which is not an
// error.
func (r *PGRegistry) RoleNamedSchemas(ctx context.Context) ([]Tenant, error) {
	rows, err := r.pool.Query(ctx, roleNamedSchemasSQL)
	var tenants []Tenant
	if err == nil {
		tenants, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) {
			var t Tenant
			err := row.Scan(&t.Name, &t.Schema, &t.Active, &t.Backend)
			return t, err
		})
	}
	switch {
	case isMissingRegistry(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("find tenants whose schema has a role's name: %w", err)
	}
	return tenants, nil
}
