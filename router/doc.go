// Package router turns a client's startup values into a tenant, and owns
// the tenant registry that this needs. It knows nothing of sockets or of
// the wire protocol: the proxy hands it a Startup and gets back a Tenant or
// an error to turn into an ErrorResponse.
//
// # Resolving
//
// Router.ResolveTenant picks the tenant name from the startup database or
// user (config.TenantSource) and looks it up through two expirable LRU
// caches, one for found tenants and one, with a short TTL, for unknown
// names so that a flood of bad names stays off the registry. Concurrent
// lookups of one uncached name share a single registry query. An unknown
// name gives an *UnknownTenantError (FATAL 3D000 to the client), a disabled
// tenant a *DisabledTenantError; a registry failure is returned wrapped and
// never cached.
//
// # The registry
//
// Tenants are kept in the backend database, in pgtenant.tenants (name,
// schema_name, active, created_at). PGRegistry reads it through a small
// pool of its own. Changes are announced with NOTIFY on NotifyChannel, the
// payload being the tenant's name; PGRegistry.Watch listens and its
// callback calls Router.Forget, so every proxy sees a new or changed tenant
// at once rather than after a TTL:
//
//	go reg.Watch(ctx, func(name string) {
//		if name == "" {
//			rt.ForgetAll()
//			return
//		}
//		rt.Forget(name)
//	})
//
// # Administration
//
// EnsureRegistry, CreateTenant and ListTenants back the `pgtenant tenant`
// commands. Names are validated (ValidateTenantName, ValidateSchemaName)
// before any SQL runs. Startup values and names are data: they reach SQL
// only as bind parameters, or quoted with pgx.Identifier when they must be
// identifiers.
package router
