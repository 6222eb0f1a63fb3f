package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
//     router forgets that name (Router.Forget).
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

// PGRegistry is the Registry kept in the backend database, in the tables
// pgtenant.tenants and pgtenant.tenant_aliases; it is also the GrantSource
// of pgtenant.tenant_users. It is safe for concurrent use.
type PGRegistry struct {
	pool *pgxpool.Pool
}

// OpenRegistry connects to the database at dsn (a libpq URL or key=value
// string) and checks that it answers, so that a wrong DSN fails at start-up
// rather than at the first client. The registry table need not exist yet.
func OpenRegistry(ctx context.Context, dsn string) (*PGRegistry, error) {
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
	return &PGRegistry{pool: pool}, nil
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
SELECT name, schema_name, active FROM (
	SELECT t.name, t.schema_name, t.active, 0 AS via
	  FROM pgtenant.tenants t
	 WHERE t.name = $1
	UNION ALL
	SELECT t.name, t.schema_name, t.active, 1
	  FROM pgtenant.tenant_aliases a JOIN pgtenant.tenants t ON t.name = a.tenant
	 WHERE a.alias = $1
) found
ORDER BY via
LIMIT 1`

// lookupTenantByNameSQL is lookupTenantSQL for a registry made before
// aliases existed, until an admin command upgrades it.
const lookupTenantByNameSQL = `SELECT name, schema_name, active FROM pgtenant.tenants WHERE name = $1`

// LookupTenant returns the tenant called name, or the tenant of which name
// is an alias; either way the Tenant carries the tenant's own Name, so that
// grants and logs speak of one tenant whatever a client called it. The name
// is only ever a bind parameter: it comes from a client's startup packet.
func (r *PGRegistry) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	err := r.pool.QueryRow(ctx, lookupTenantSQL, name).Scan(&t.Name, &t.Schema, &t.Active)
	if isMissingRegistry(err) {
		// Either no registry at all, or one without the aliases table: an
		// older registry that no admin command has upgraded yet. It has no
		// aliases, so asking by name alone is the whole answer.
		err = r.pool.QueryRow(ctx, lookupTenantByNameSQL, name).Scan(&t.Name, &t.Schema, &t.Active)
	}
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
	rows, err := r.pool.Query(ctx, `SELECT tenant FROM pgtenant.tenant_users WHERE user_name = $1`, user)
	var tenants []*string
	if err == nil {
		tenants, err = pgx.CollectRows(rows, pgx.RowTo[*string])
	}
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
// ctx.Err().
//
// onChange is called from Watch's goroutine, one call at a time; it should
// be quick (Router.Forget and Router.ForgetAll are).
func (r *PGRegistry) Watch(ctx context.Context, onChange func(name string)) error {
	log := slog.Default().With("component", "registry-watch", "channel", NotifyChannel)
	backoff := watchBackoffMin
	for {
		start := time.Now()
		err := r.listen(ctx, onChange)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) >= watchHealthy {
			backoff = watchBackoffMin
		}
		log.Warn("tenant change notifications interrupted; reconnecting",
			"error", err, "retry_in", backoff)
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
// or ctx is done.
func (r *PGRegistry) listen(ctx context.Context, onChange func(name string)) error {
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
SELECT t.name, t.schema_name, t.active
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
			err := row.Scan(&t.Name, &t.Schema, &t.Active)
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
