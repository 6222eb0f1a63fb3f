package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/auth"
)

// The registry side of a tenant's lifecycle (issue 13): disable with a
// kick, drop, rename, and what `tenant list` shows of each tenant. Every
// change goes through the registry, so the NOTIFY trigger tells every
// running proxy at commit.

// KickNotifyPrefix starts a NotifyChannel payload that asks every proxy to
// close the clients of a tenant ("kick:acme"), as the console's KILL does
// on one proxy. `tenant disable --kick`, `tenant drop --kick` and
// `tenant rename --kick` send it in the same transaction as their change,
// so it arrives after the change's own notifications: a kicked client that
// reconnects finds the tenant as the change left it. Tenant names never
// contain ':', so it cannot be mistaken for a name.
const KickNotifyPrefix = "kick:"

// KickFor reports whether a NotifyChannel payload asks to close a tenant's
// clients, and whose.
func KickFor(payload string) (tenant string, ok bool) {
	return strings.CutPrefix(payload, KickNotifyPrefix)
}

// PresenceLockClass is the first key of the advisory locks by which proxies
// say that a tenant has clients: each proxy holds, on one registry session
// of its own, pg_advisory_lock_shared(PresenceLockClass,
// hashtext(tenant)) for every tenant with at least one client there (the
// tenant's own name, whatever alias the client used). `tenant drop` and
// `tenant rename` try the exclusive lock: when they cannot have it, some
// proxy has clients of the tenant. pg_locks shows the holders (classid
// PresenceLockClass, objid the hash, mode ShareLock), one row per proxy.
//
// It spells "pgtn" in ASCII. hashtext is 32 bits: two tenant names can
// share a key, and then one's clients make the other look connected (a
// false "connected", never a missed one).
const PresenceLockClass int32 = 0x7067746e

// presenceKeySQL is the second key of a tenant name's presence lock.
const presenceKeySQL = `pg_catalog.hashtext($1)`

// presenceLocksSQL counts, per tenant, the proxies holding a presence lock
// of its name or of one of its aliases (an old name kept by a rename, under
// which clients connected before it may still be counted).
var presenceLocksSQL = `
WITH names AS (
	SELECT name AS tenant, name AS key FROM pgtenant.tenants
	UNION
	SELECT tenant, alias FROM pgtenant.tenant_aliases
)
SELECT n.tenant, count(DISTINCT l.pid)::int
  FROM names n
  JOIN pg_catalog.pg_locks l
    ON l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock'
   AND l.classid = ` + strconv.Itoa(int(PresenceLockClass)) + `::oid AND l.objsubid = 2
   AND l.objid::int8 = (pg_catalog.hashtext(n.key)::int8 & 4294967295)
   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
 WHERE $1::text IS NULL OR n.tenant = $1
 GROUP BY n.tenant`

// ConnectedProxies returns, by tenant name, how many proxies have at least
// one client of the tenant (see PresenceLockClass); tenants without any are
// missing from the map. It counts proxies, not clients: a proxy holds one
// lock per tenant however many clients it has.
func ConnectedProxies(ctx context.Context, db DB) (map[string]int, error) {
	return connectedProxies(ctx, db, nil)
}

func connectedProxies(ctx context.Context, db DB, tenant *string) (map[string]int, error) {
	out := map[string]int{}
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_aliases"); err != nil || !ok {
		return out, err
	}
	rows, err := db.Query(ctx, presenceLocksSQL, tenant)
	if err != nil {
		return nil, fmt.Errorf("read presence locks: %w", err)
	}
	var name string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error { out[name] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("read presence locks: %w", err)
	}
	return out, nil
}

// ClientsConnectedError says that a tenant has clients connected through
// running proxies, so that a drop or a schema rename was refused.
type ClientsConnectedError struct {
	Tenant  string
	Proxies int
	// Doing is what was refused ("drop", "rename").
	Doing string
}

func (e *ClientsConnectedError) Error() string {
	via := "a running proxy"
	if e.Proxies > 1 {
		via = fmt.Sprintf("%d running proxies", e.Proxies)
	}
	return fmt.Sprintf("tenant %q has clients connected through %s; refusing to %s it: pass --kick to close them first "+
		"(their open transactions roll back)", e.Tenant, via, e.Doing)
}

// tenantKeys is the tenant's name and its aliases: the names its clients'
// presence locks may be under.
func tenantKeys(ctx context.Context, db DB, name string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT alias FROM pgtenant.tenant_aliases WHERE tenant = $1 ORDER BY alias`, name)
	if err != nil {
		return nil, fmt.Errorf("list aliases of %q: %w", name, err)
	}
	aliases, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list aliases of %q: %w", name, err)
	}
	return append([]string{name}, aliases...), nil
}

// lockOutClients takes, for the rest of tx, the exclusive presence lock of
// each of keys, and fails with a *ClientsConnectedError when a proxy holds
// one: it has clients of the tenant. Holding the locks keeps proxies from
// announcing new clients of those names until commit (they retry later).
func lockOutClients(ctx context.Context, tx pgx.Tx, tenant, doing string, keys []string) error {
	for _, k := range keys {
		var got bool
		err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_xact_lock($2::int4, `+presenceKeySQL+`)`,
			k, PresenceLockClass).Scan(&got)
		if err != nil {
			return fmt.Errorf("check for connected clients: %w", err)
		}
		if !got {
			n := 1
			if m, err := connectedProxies(ctx, tx, &tenant); err == nil && m[tenant] > 0 {
				n = m[tenant]
			}
			return &ClientsConnectedError{Tenant: tenant, Proxies: n, Doing: doing}
		}
	}
	return nil
}

// sendKick asks every proxy, at commit, to close the clients of each of
// names (KickNotifyPrefix).
func sendKick(ctx context.Context, tx pgx.Tx, names []string) error {
	for _, n := range names {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.pg_notify($1, $2)`, NotifyChannel, KickNotifyPrefix+n); err != nil {
			return fmt.Errorf("send kick: %w", err)
		}
	}
	return nil
}

// DisableTenant disables tenant name (new clients get 55000) and, with
// kick, asks every proxy to close the clients it has, in one transaction:
// they are told 57P01 and their open transactions roll back. It reports
// whether the tenant exists.
func DisableTenant(ctx context.Context, db DB, name string, kick bool) (found bool, err error) {
	if !kick {
		return SetTenantActive(ctx, db, name, false)
	}
	if err := ValidateTenantName(name); err != nil {
		return false, err
	}
	err = inTx(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE pgtenant.tenants SET active = false WHERE name = $1`, name)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		found = true
		keys, err := tenantKeys(ctx, tx, name)
		if err != nil {
			return err
		}
		return sendKick(ctx, tx, keys)
	})
	if err != nil {
		return false, fmt.Errorf("disable tenant %q: %w", name, err)
	}
	return found, nil
}

// NameInUseError says that a name asked for a new tenant, alias or schema
// is taken: the person chooses another.
type NameInUseError struct{ Msg string }

func (e *NameInUseError) Error() string { return e.Msg }

func nameInUse(format string, args ...any) error {
	return &NameInUseError{Msg: fmt.Sprintf(format, args...)}
}

// TablesInSchemaError says that a drop was refused because the tenant's
// schema holds tables.
type TablesInSchemaError struct {
	Tenant, Schema string
	Tables         int
}

func (e *TablesInSchemaError) Error() string {
	return fmt.Sprintf("schema %q of tenant %q holds %d table(s); pass --force to drop them with it, or --keep-schema to keep the schema and its data",
		e.Schema, e.Tenant, e.Tables)
}

// DropOptions adjusts DropTenant.
type DropOptions struct {
	// Force drops a schema that holds tables.
	Force bool
	// Kick closes the tenant's clients on every proxy and waits, up to
	// KickWait, for them to go.
	Kick     bool
	KickWait time.Duration
	// KeepSchema leaves the schema and its data; the registry rows go.
	KeepSchema bool
	// Settle is how long to wait after disabling the tenant before looking
	// for its clients: a client admitted just before the disable reaches
	// its proxy's presence lock a moment later (see PresenceLockClass).
	Settle time.Duration
	// Progress, when set, is told each step as it is done.
	Progress func(msg string)
}

// DropResult says what DropTenant did.
type DropResult struct {
	Schema string
	// Tables is how many tables the schema held; SchemaDropped whether it
	// was dropped (false with KeepSchema, or when it did not exist).
	Tables        int
	SchemaDropped bool
	// Rows removed with the tenant by the cascades.
	Aliases, Grants, Settings int
	// Role is the tenant's role (role mode) that was dropped, or "".
	Role string
}

// tableCountSQL counts the tables (and views, materialized views, foreign
// tables) of schema $1.
const tableCountSQL = `
SELECT count(*)::int FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`

// DropTenant removes tenant name: its registry row with its aliases, grants
// and settings (the foreign keys cascade), its schema (unless KeepSchema)
// and, in role mode, its role. In order:
//
//  1. a schema holding tables is refused without Force (nothing changed);
//  2. the tenant is disabled, so no new client is admitted (and, with Kick,
//     every proxy is asked to close its clients, in the same transaction);
//  3. after Settle, clients still connected anywhere (PresenceLockClass)
//     refuse the drop, unless Kick, which waits up to KickWait for them to
//     go; a refused drop enables the tenant again if it was enabled;
//  4. one transaction takes the exclusive presence locks, drops the
//     schema, the rows and the role.
func DropTenant(ctx context.Context, db DB, name string, o DropOptions) (DropResult, error) {
	if err := ValidateTenantName(name); err != nil {
		return DropResult{}, err
	}
	say := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(format, args...))
		}
	}
	fail := func(err error) (DropResult, error) { return DropResult{}, fmt.Errorf("drop tenant %q: %w", name, err) }
	if err := EnsureRegistry(ctx, db); err != nil {
		return fail(err)
	}
	if err := requireTenant(ctx, db, name); err != nil {
		return fail(err)
	}
	t, _, err := tenantByName(ctx, db, name)
	if err != nil {
		return fail(err)
	}
	checkTables := func(q DB) error {
		if o.Force || o.KeepSchema {
			return nil
		}
		var n int
		if err := q.QueryRow(ctx, tableCountSQL, t.Schema).Scan(&n); err != nil {
			return fmt.Errorf("count tables: %w", err)
		}
		if n > 0 {
			return &TablesInSchemaError{Tenant: name, Schema: t.Schema, Tables: n}
		}
		return nil
	}
	if err := checkTables(db); err != nil {
		return fail(err)
	}

	if _, err := DisableTenant(ctx, db, name, o.Kick); err != nil {
		return fail(err)
	}
	if t.Active {
		say("disabled tenant %s: new clients are refused", name)
	}
	if o.Kick {
		say("asked every proxy to close the clients of %s", name)
	}
	// A refusal from here on gives the tenant back its state.
	restore := func(err error) (DropResult, error) {
		if t.Active {
			if _, rerr := SetTenantActive(context.WithoutCancel(ctx), db, name, true); rerr != nil {
				err = fmt.Errorf("%w (and enabling it again failed: %v)", err, rerr)
			} else {
				err = fmt.Errorf("%w (the tenant was enabled again)", err)
			}
		}
		return fail(err)
	}
	if o.Settle > 0 {
		if err := sleepCtx(ctx, o.Settle); err != nil {
			return restore(err)
		}
	}
	if o.Kick {
		deadline := time.Now().Add(o.KickWait)
		for {
			m, err := connectedProxies(ctx, db, &name)
			if err != nil {
				return restore(err)
			}
			if m[name] == 0 || time.Now().After(deadline) {
				break
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return restore(err)
			}
		}
	}

	var res DropResult
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		cur, found, err := tenantByName(ctx, tx, name)
		if err != nil {
			return err
		}
		if !found {
			return &UnknownTenantError{Name: name}
		}
		res.Schema = cur.Schema
		keys, err := tenantKeys(ctx, tx, name)
		if err != nil {
			return err
		}
		if err := lockOutClients(ctx, tx, name, "drop", keys); err != nil {
			return err
		}
		if err := checkTables(tx); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, tableCountSQL, cur.Schema).Scan(&res.Tables); err != nil {
			return fmt.Errorf("count tables: %w", err)
		}
		err = tx.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pgtenant.tenant_aliases WHERE tenant = $1)::int,
			(SELECT count(*) FROM pgtenant.tenant_users WHERE tenant = $1)::int,
			(SELECT count(*) FROM pgtenant.tenant_settings WHERE tenant = $1)::int`, name,
		).Scan(&res.Aliases, &res.Grants, &res.Settings)
		if err != nil {
			return fmt.Errorf("count the tenant's rows: %w", err)
		}
		if !o.KeepSchema {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`,
				cur.Schema).Scan(&exists); err != nil {
				return err
			}
			if exists {
				if _, err := tx.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{cur.Schema}.Sanitize()+` CASCADE`); err != nil {
					return fmt.Errorf("drop schema %q: %w", cur.Schema, err)
				}
				res.SchemaDropped = true
			}
		}
		if err := forgetMigrations(ctx, tx, name, ""); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = $1`, name); err != nil {
			return fmt.Errorf("delete tenant: %w", err)
		}
		role, err := dropTenantRole(ctx, tx, name)
		res.Role = role
		return err
	})
	if err != nil {
		var connected *ClientsConnectedError
		var tables *TablesInSchemaError
		if errors.As(err, &connected) || errors.As(err, &tables) {
			return restore(err)
		}
		return fail(err)
	}
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// forgetMigrations keeps pgtenant.tenant_migrations (the migrate command's
// version records, when that table exists) in step with a tenant dropped
// (to == "") or renamed, in case its rows are not tied to the tenant by a
// cascading foreign key. A table without a tenant column is left alone.
func forgetMigrations(ctx context.Context, tx pgx.Tx, name, to string) error {
	var has bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns
		WHERE table_schema = 'pgtenant' AND table_name = 'tenant_migrations' AND column_name = 'tenant')`).Scan(&has)
	if err != nil || !has {
		return err
	}
	if to == "" {
		_, err = tx.Exec(ctx, `DELETE FROM pgtenant.tenant_migrations WHERE tenant = $1`, name)
	} else {
		_, err = tx.Exec(ctx, `UPDATE pgtenant.tenant_migrations SET tenant = $2 WHERE tenant = $1`, name, to)
	}
	if err != nil {
		return fmt.Errorf("migration records: %w", err)
	}
	return nil
}

// tenantRoleOf returns the role mode role of tenant if it exists and is a
// tenant role (a member of TenantsGroupRole): a role of that name that is
// not one is someone else's, and left alone.
func tenantRoleOf(ctx context.Context, tx pgx.Tx, tenant string) (string, error) {
	role := TenantRoleName(tenant)
	var is bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles r ON r.oid = m.member JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		WHERE r.rolname = $1 AND g.rolname = $2)`, role, TenantsGroupRole).Scan(&is)
	if err != nil {
		return "", fmt.Errorf("find role %s: %w", role, err)
	}
	if !is {
		return "", nil
	}
	return role, nil
}

// dropTenantRole drops the tenant's role, if it has one: what it still owns
// here (a kept schema) goes to the admin running this, its privileges are
// revoked. A role that owns objects in another database cannot be dropped;
// the error says so and the transaction rolls back.
func dropTenantRole(ctx context.Context, tx pgx.Tx, tenant string) (string, error) {
	role, err := tenantRoleOf(ctx, tx, tenant)
	if err != nil || role == "" {
		return "", err
	}
	r := pgx.Identifier{role}.Sanitize()
	for _, q := range []string{`REASSIGN OWNED BY ` + r + ` TO CURRENT_USER`, `DROP OWNED BY ` + r, `DROP ROLE ` + r} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("%s: %w", q, err)
		}
	}
	return role, nil
}

// RenameOptions adjusts RenameTenant.
type RenameOptions struct {
	// Schema, when set and not the tenant's schema, renames the schema too
	// (ALTER SCHEMA ... RENAME).
	Schema string
	// NoAlias drops the old name; by default it stays an alias of the
	// tenant, so clients that still use it keep working.
	NoAlias bool
	// Kick closes the tenant's clients on every proxy at commit. Without
	// it a rename that changes the schema, or drops the old name, is
	// refused while the tenant has clients: their sessions hold the old
	// schema (or name).
	Kick bool
	// RoleSecret is the role secret (role mode): a tenant role is renamed
	// with its tenant, and its password derives from its name, so it must
	// be set again. A tenant with a role is refused without it.
	RoleSecret string
}

// RenameResult says what RenameTenant did.
type RenameResult struct {
	OldSchema, Schema string
	AliasKept         bool
	// Role is the tenant's renamed role (role mode), or "".
	Role string
}

// RenameTenant renames tenant old to new. Its aliases, grants and settings
// follow (ON UPDATE CASCADE); old stays an alias unless NoAlias; with
// Schema the schema is renamed too. Everything happens in one registry
// transaction, whose trigger makes every proxy forget both names at
// commit.
//
// Clients connected under the old name keep their sessions, which hold the
// tenant as it was when they connected: with the schema unchanged they go
// on working; after a schema rename their next transaction would look for
// the old schema, so such a rename (and one with NoAlias) is refused while
// clients are connected, unless Kick closes them.
func RenameTenant(ctx context.Context, db DB, old, new string, o RenameOptions) (RenameResult, error) {
	if err := ValidateTenantName(old); err != nil {
		return RenameResult{}, err
	}
	if err := ValidateTenantName(new); err != nil {
		return RenameResult{}, err
	}
	if o.Schema != "" {
		if err := ValidateSchemaName(o.Schema); err != nil {
			return RenameResult{}, err
		}
	}
	if old == new {
		return RenameResult{}, &InvalidNameError{Kind: "tenant name", Name: new, Reason: "it is the tenant's name already"}
	}
	var res RenameResult
	err := inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if err := requireTenant(ctx, tx, old); err != nil {
			return err
		}
		t, _, err := tenantByName(ctx, tx, old)
		if err != nil {
			return err
		}
		res.OldSchema, res.Schema = t.Schema, t.Schema
		if _, taken, err := tenantByName(ctx, tx, new); err != nil {
			return err
		} else if taken {
			return nameInUse("a tenant is called %q already", new)
		}
		if of, isAlias, err := aliasTarget(ctx, tx, new); err != nil {
			return err
		} else if isAlias && of != old {
			return nameInUse("%q is an alias of tenant %q; remove the alias first or choose another name", new, of)
		} else if isAlias {
			// The tenant's own alias becomes its name.
			if _, err := tx.Exec(ctx, `DELETE FROM pgtenant.tenant_aliases WHERE alias = $1`, new); err != nil {
				return fmt.Errorf("remove alias %q: %w", new, err)
			}
		}
		schemaChange := o.Schema != "" && o.Schema != t.Schema
		if schemaChange {
			if err := refuseRoleNamedSchema(ctx, tx, o.Schema); err != nil {
				return err
			}
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`,
				o.Schema).Scan(&exists); err != nil {
				return err
			}
			if exists {
				return nameInUse("schema %q exists already; choose another schema name", o.Schema)
			}
		}
		keys, err := tenantKeys(ctx, tx, old)
		if err != nil {
			return err
		}
		if (schemaChange || o.NoAlias) && !o.Kick {
			if err := lockOutClients(ctx, tx, old, "rename", keys); err != nil {
				return err
			}
		}
		oldRole, err := tenantRoleOf(ctx, tx, old)
		if err != nil {
			return err
		}
		if oldRole != "" && o.RoleSecret == "" {
			return fmt.Errorf("tenant %q has its own role %s (role mode), whose password derives from its name: "+
				"give the role secret (--isolation role, with %s or --role-secret-file) so the renamed role's password is set", old, oldRole, "PGTENANT_ROLE_SECRET")
		}
		if schemaChange {
			if _, err := tx.Exec(ctx, `ALTER SCHEMA `+pgx.Identifier{t.Schema}.Sanitize()+` RENAME TO `+pgx.Identifier{o.Schema}.Sanitize()); err != nil {
				return fmt.Errorf("rename schema %q to %q: %w", t.Schema, o.Schema, err)
			}
			res.Schema = o.Schema
		}
		if _, err := tx.Exec(ctx, `UPDATE pgtenant.tenants SET name = $2, schema_name = $3 WHERE name = $1`,
			old, new, res.Schema); err != nil {
			return fmt.Errorf("rename tenant: %w", err)
		}
		if err := forgetMigrations(ctx, tx, old, new); err != nil {
			return err
		}
		if !o.NoAlias {
			if _, err := tx.Exec(ctx, `INSERT INTO pgtenant.tenant_aliases (alias, tenant) VALUES ($1, $2)`, old, new); err != nil {
				return fmt.Errorf("keep %q as an alias: %w", old, err)
			}
			res.AliasKept = true
		}
		if oldRole != "" {
			role := TenantRoleName(new)
			if _, err := tx.Exec(ctx, `ALTER ROLE `+pgx.Identifier{oldRole}.Sanitize()+` RENAME TO `+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("rename role %s to %s: %w", oldRole, role, err)
			}
			verifier, err := auth.TenantRoleVerifier(o.RoleSecret, role)
			if err != nil {
				return err
			}
			if err := ensureRole(ctx, tx, new, role, verifier); err != nil {
				return err
			}
			res.Role = role
		}
		if o.Kick {
			return sendKick(ctx, tx, keys)
		}
		return nil
	})
	if err != nil {
		return RenameResult{}, fmt.Errorf("rename tenant %q to %q: %w", old, new, err)
	}
	return res, nil
}

// CheckNewTenant fails, changing nothing, unless a tenant called name with
// schema (schema "": the name) could be created from scratch: name is no
// tenant's or alias, the schema is valid, does not exist and has no role's
// name. Clone and import ask it before they restore anything, so that a
// refusal leaves no schema behind.
func CheckNewTenant(ctx context.Context, db DB, name, schema string) error {
	if schema == "" {
		schema = name
	}
	if err := ValidateTenantName(name); err != nil {
		return err
	}
	if err := ValidateSchemaName(schema); err != nil {
		return err
	}
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_aliases"); err != nil {
		return err
	} else if ok {
		if _, found, err := tenantByName(ctx, db, name); err != nil {
			return err
		} else if found {
			return nameInUse("tenant %q exists already", name)
		}
		if of, isAlias, err := aliasTarget(ctx, db, name); err != nil {
			return err
		} else if isAlias {
			return nameInUse("%q is an alias of tenant %q; remove the alias first or choose another name", name, of)
		}
	}
	if err := refuseRoleNamedSchema(ctx, db, schema); err != nil {
		return err
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`,
		schema).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nameInUse("schema %q exists already; choose another schema (--schema)", schema)
	}
	return nil
}

// TenantInfo is one row of `tenant list`.
type TenantInfo struct {
	Tenant
	Aliases []string
	// SizeBytes is the on-disk size of the schema's tables, indexes,
	// TOAST, materialized views and sequences.
	SizeBytes int64
	// MigrationVersion is the highest version in pgtenant.tenant_migrations
	// (the migrate command's records), "" when none or no such table.
	MigrationVersion string
	// ConnectedProxies is how many running proxies have at least one
	// client of the tenant (see PresenceLockClass).
	ConnectedProxies int
}

// DescribeTenants returns every tenant with its state, aliases, schema
// size, migration version and connected proxies, ordered by name.
func DescribeTenants(ctx context.Context, db DB) ([]TenantInfo, error) {
	ts, err := ListTenants(ctx, db)
	if err != nil || len(ts) == 0 {
		return nil, err
	}
	aliases, err := ListAliases(ctx, db)
	if err != nil {
		return nil, err
	}
	byTenant := map[string][]string{}
	for _, a := range aliases {
		byTenant[a.Tenant] = append(byTenant[a.Tenant], a.Alias)
	}
	sizes := map[string]int64{}
	rows, err := db.Query(ctx, schemaSizesSQL, nil)
	if err != nil {
		return nil, fmt.Errorf("measure tenant schemas: %w", err)
	}
	var name string
	var size int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &size}, func() error { sizes[name] = size; return nil }); err != nil {
		return nil, fmt.Errorf("measure tenant schemas: %w", err)
	}
	versions, err := migrationVersions(ctx, db)
	if err != nil {
		return nil, err
	}
	connected, err := ConnectedProxies(ctx, db)
	if err != nil {
		return nil, err
	}
	out := make([]TenantInfo, len(ts))
	for i, t := range ts {
		out[i] = TenantInfo{Tenant: t, Aliases: byTenant[t.Name], SizeBytes: sizes[t.Name],
			MigrationVersion: versions[t.Name], ConnectedProxies: connected[t.Name]}
	}
	return out, nil
}

// migrationVersions reads each tenant's highest migration version from
// pgtenant.tenant_migrations, asked only when that table exists with tenant
// and version columns: the migrate command makes it, and a registry it
// never ran on has none.
func migrationVersions(ctx context.Context, db DB) (map[string]string, error) {
	out := map[string]string{}
	var cols int
	err := db.QueryRow(ctx, `SELECT count(*)::int FROM information_schema.columns
		WHERE table_schema = 'pgtenant' AND table_name = 'tenant_migrations' AND column_name IN ('tenant', 'version')`).Scan(&cols)
	if err != nil {
		return nil, fmt.Errorf("find migration records: %w", err)
	}
	if cols < 2 {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT tenant::text, max(version)::text FROM pgtenant.tenant_migrations GROUP BY tenant`)
	if err != nil {
		return nil, fmt.Errorf("read migration versions: %w", err)
	}
	var t string
	var v *string
	_, err = pgx.ForEachRow(rows, []any{&t, &v}, func() error {
		if v != nil {
			out[t] = *v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read migration versions: %w", err)
	}
	return out, nil
}
