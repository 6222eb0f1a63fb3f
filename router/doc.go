// Package router turns a client's startup values into a tenant, and owns
// the tenant registry that this needs. It knows nothing of sockets or of
// the wire protocol: the proxy hands it a Startup and gets back a Tenant or
// an error to turn into an ErrorResponse.
//
// # Resolving
//
// Router.ResolveTenant looks at every startup value that names a tenant (a
// claim): the primary one, which config.TenantSource picks (the database,
// the user, or with sni the TLS server name under the SNI suffix, falling
// back to options -c pgtenant.tenant=NAME), plus the SNI claim whenever a
// suffix is set and the client sent a host name under it, plus the options
// claim whenever the client sent one. Each is looked up (a tenant name or
// an alias) through two LRU caches, one for found tenants (an answer for
// the hit TTL) and one, with a short TTL, for unknown names so that a flood
// of bad names stays off the registry; concurrent lookups of one uncached
// name share a single registry query. All claims must come to the same tenant, or the
// client gets a *ConflictingClaimsError (FATAL 08004); no claim at all is
// a *NoTenantError (3D000). An unknown name gives an *UnknownTenantError
// (3D000), a disabled tenant a *DisabledTenantError (55000); a registry
// failure is never cached: the tenant's last found answer is served
// instead, however old, unless a NOTIFY said that name changed, and with
// none the failure is returned wrapped.
//
// # Access
//
// Grants.CheckAccess (--tenant-access granted) admits a user to the tenants
// it is granted in pgtenant.tenant_users, or to every tenant with a grant of
// *; anything else is an *AccessDeniedError (FATAL 28000). Each user's
// grants are cached like tenants.
//
// # The registry
//
// The registry lives in the backend database, schema pgtenant:
// tenants (name, schema_name, active, created_at, backend), tenant_aliases
// (alias, tenant), tenant_users (user_name, tenant; NULL tenant = every
// tenant) and backends (name, dsn: the servers tenants are placed on; see
// backends.go; "backend:NAME" is announced when one changes).
// EnsureRegistry creates it, or upgrades an older one in place. PGRegistry
// reads it through a small pool of its own; a session lost under a lookup
// is replaced and the lookup run again, and while the server cannot be
// reached lookups fail at once (so the caches answer), trying it again
// with backoff, with one log line when it goes and one when it returns. A trigger on the three tables
// announces every change with NOTIFY on NotifyChannel: the tenant or alias
// name, "user:NAME" when a user's grants change, "" after a TRUNCATE.
// PGRegistry.Watch listens, and its callback makes every proxy forget what
// changed at once rather than after a TTL:
//
//	go reg.Watch(ctx, func(name string) {
//		if user, ok := router.GrantsChangedFor(name); ok {
//			grants.Forget(user)
//			return
//		}
//		if name == "" {
//			rt.ForgetAll()
//			grants.ForgetAll()
//			return
//		}
//		rt.Forget(name)
//	})
//
// # A django-tenants registry
//
// DjangoRegistry is the Registry of a django-tenants deployment
// (--registry-source django-tenants): it reads, and never writes, the
// tables of the tenant model (schema_name) and the domain model (domain,
// tenant_id) on a PGRegistry's connections. A name is a schema name or a
// domain; the public tenant is never served; there is no NOTIFY, so the
// router's TTLs bound how stale an answer is. WithSNIHostNames makes the
// whole TLS server name a claim when no SNI suffix is set, so that a
// client's host name is looked up as a domain.
//
// # Administration
//
// EnsureRegistry, CreateTenant, ListTenants, GrantTenant, RevokeTenant,
// ListGrants, AddTenantAlias and RemoveTenantAlias back the `pgtenant
// tenant` and `pgtenant user` commands. Names are validated (ValidateTenantName, ValidateSchemaName)
// before any SQL runs. Startup values and names are data: they reach SQL
// only as bind parameters, or quoted with pgx.Identifier when they must be
// identifiers.
package router
