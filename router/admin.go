package router

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what the admin functions need of a connection. *pgxpool.Pool,
// *pgx.Conn and pgx.Tx all satisfy it, so the CLI can use a pool and tests a
// single connection or a transaction of their own.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// registryLockKey is the pg_advisory_xact_lock key that serialises the
// creation of the registry. It spells "pgtenant" in ASCII, to be
// recognisable in pg_locks and unlikely to clash with an application's own
// keys. Once the registry exists, changes are serialised by a lock on
// pgtenant.tenants instead (ensureRegistry): any role can take an advisory
// lock, so a tenant holding this key would block every tenant command,
// while a table lock needs privileges on the registry that tenant traffic
// never has.
const registryLockKey int64 = 0x706774656e616e74

// registryDDL creates the registry, and upgrades an older one in place:
// every statement is idempotent, so running it on a registry made by an
// earlier version adds what is missing and leaves the rest alone. Concurrent
// CREATE ... IF NOT EXISTS of one object can still fail with a unique
// violation in the catalogs, which is why it runs under registryLockKey.
//
// Statements that find their object already there take only locks that do
// not block lookups (reads), though CREATE INDEX IF NOT EXISTS does hold off
// writers of its table until the admin transaction ends; all writers go
// through the registry lock anyway.
var registryDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS pgtenant`,
	`CREATE TABLE IF NOT EXISTS pgtenant.tenants (
		name        text        PRIMARY KEY,
		schema_name text        NOT NULL UNIQUE,
		active      boolean     NOT NULL DEFAULT true,
		created_at  timestamptz NOT NULL DEFAULT now()
	)`,
	// Other names clients may connect with for a tenant (django-tenants'
	// Domain table). An alias follows its tenant through a rename and goes
	// with it when it is deleted. That an alias is never also a tenant's
	// name is kept by AddTenantAlias and CreateTenant, under the lock.
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_aliases (
		alias      text        PRIMARY KEY,
		tenant     text        NOT NULL REFERENCES pgtenant.tenants (name)
		                       ON DELETE CASCADE ON UPDATE CASCADE,
		created_at timestamptz NOT NULL DEFAULT now()
	)`,
	// Serves the cascades and notify_change's search for a tenant's aliases.
	`CREATE INDEX IF NOT EXISTS tenant_aliases_tenant_idx ON pgtenant.tenant_aliases (tenant)`,
	// Which users may connect to which tenants under --tenant-access
	// granted. A NULL tenant grants every tenant (the CLI shows it as *):
	// a foreign key cannot point at "all", and NULL is what a foreign key
	// leaves unchecked. The UNIQUE constraint covers named tenants (NULLs
	// are distinct in it); the partial index allows one every-tenant grant
	// per user.
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_users (
		user_name  text        NOT NULL CHECK (user_name <> ''),
		tenant     text        REFERENCES pgtenant.tenants (name)
		                       ON DELETE CASCADE ON UPDATE CASCADE,
		granted_at timestamptz NOT NULL DEFAULT now(),
		CONSTRAINT tenant_users_user_tenant_key UNIQUE (user_name, tenant)
	)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS tenant_users_all_tenants_key
		ON pgtenant.tenant_users (user_name) WHERE tenant IS NULL`,
	`CREATE INDEX IF NOT EXISTS tenant_users_tenant_idx ON pgtenant.tenant_users (tenant)`,
	// The roles that run tenant traffic in schema mode (the --backend role
	// of serve), recorded once by CreateTenant's PoolRole so that every
	// tenant schema, those made before and after, gives them what they
	// need (see grantPoolRoles). They own nothing of the registry.
	`CREATE TABLE IF NOT EXISTS pgtenant.pool_roles (
		role_name  text        PRIMARY KEY CHECK (role_name <> ''),
		added_at   timestamptz NOT NULL DEFAULT now()
	)`,
	// Per-tenant settings (tenant set NAME key=value): limits, the storage
	// quota, the tier label and session settings (set.NAME). One row per
	// key; they follow their tenant through a rename and go with it. See
	// tenantsettings.go for the keys and how they are checked.
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_settings (
		tenant     text        NOT NULL REFERENCES pgtenant.tenants (name)
		                       ON DELETE CASCADE ON UPDATE CASCADE,
		key        text        NOT NULL CHECK (key <> ''),
		value      text        NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant, key)
	)`,
	// The migrations `pgtenant migrate` applied to each tenant's schema
	// (see migrate.go). A row is written in the transaction that ran the
	// file, so it is there exactly when the file's changes are. Rows go
	// with their tenant and follow it through a rename. No trigger: proxies
	// cache nothing of it.
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_migrations (
		tenant     text        NOT NULL REFERENCES pgtenant.tenants (name)
		                       ON DELETE CASCADE ON UPDATE CASCADE,
		version    bigint      NOT NULL CHECK (version > 0),
		name       text        NOT NULL,
		checksum   text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		duration   interval    NOT NULL,
		PRIMARY KEY (tenant, version)
	)`,
	// The shared migrations (migrate --shared-dir), applied once to public.
	// A table of their own rather than a reserved tenant name, which the
	// foreign key above would need a row of pgtenant.tenants for, and which
	// every listing of tenants would have to leave out.
	`CREATE TABLE IF NOT EXISTS pgtenant.shared_migrations (
		version    bigint      PRIMARY KEY CHECK (version > 0),
		name       text        NOT NULL,
		checksum   text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		duration   interval    NOT NULL
	)`,
	// notify_change announces every change to the registry tables on
	// NotifyChannel (see there for the payloads). It is a trigger rather
	// than a pg_notify in each admin function so that hand edits and
	// cascades are announced too: deleting a tenant deletes its grants, and
	// a proxy that still cached them would let the user into a new tenant
	// created under the old name. Notifications are sent at commit, and
	// duplicates within a transaction are sent once.
	`CREATE OR REPLACE FUNCTION pgtenant.notify_change() RETURNS trigger
	LANGUAGE plpgsql AS $fn$
	BEGIN
		IF TG_LEVEL = 'STATEMENT' THEN
			-- TRUNCATE: too much changed to name it all.
			PERFORM pg_notify('` + NotifyChannel + `', '');
		ELSIF TG_TABLE_NAME = 'tenants' THEN
			-- Aliases are cached under their own names: a tenant that is
			-- disabled or renamed must be forgotten under those too.
			IF TG_OP IN ('UPDATE', 'DELETE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', OLD.name);
				PERFORM pg_notify('` + NotifyChannel + `', a.alias)
				   FROM pgtenant.tenant_aliases a WHERE a.tenant = OLD.name;
			END IF;
			IF TG_OP IN ('INSERT', 'UPDATE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', NEW.name);
			END IF;
			IF TG_OP = 'UPDATE' THEN
				PERFORM pg_notify('` + NotifyChannel + `', a.alias)
				   FROM pgtenant.tenant_aliases a WHERE a.tenant = NEW.name;
			END IF;
		ELSIF TG_TABLE_NAME = 'tenant_aliases' THEN
			IF TG_OP IN ('UPDATE', 'DELETE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', OLD.alias);
			END IF;
			IF TG_OP IN ('INSERT', 'UPDATE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', NEW.alias);
			END IF;
		ELSIF TG_TABLE_NAME = 'tenant_settings' THEN
			-- Every proxy reloads the tenant's settings.
			IF TG_OP IN ('UPDATE', 'DELETE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', OLD.tenant);
			END IF;
			IF TG_OP IN ('INSERT', 'UPDATE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', NEW.tenant);
			END IF;
		ELSIF TG_TABLE_NAME = 'tenant_users' THEN
			IF TG_OP IN ('UPDATE', 'DELETE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', '` + UserNotifyPrefix + `' || OLD.user_name);
			END IF;
			IF TG_OP IN ('INSERT', 'UPDATE') THEN
				PERFORM pg_notify('` + NotifyChannel + `', '` + UserNotifyPrefix + `' || NEW.user_name);
			END IF;
		END IF;
		RETURN NULL;
	END
	$fn$`,
	// The triggers are created only when missing: CREATE OR REPLACE TRIGGER
	// (PostgreSQL 14+) would take a lock that blocks lookups on every admin
	// command, and older servers lack it.
	`DO $do$
	DECLARE
		tbl text;
	BEGIN
		FOREACH tbl IN ARRAY ARRAY['tenants', 'tenant_aliases', 'tenant_users', 'tenant_settings'] LOOP
			IF NOT EXISTS (SELECT FROM pg_trigger
			                WHERE tgrelid = format('pgtenant.%I', tbl)::regclass
			                  AND tgname = 'pgtenant_notify') THEN
				EXECUTE format('CREATE TRIGGER pgtenant_notify
					AFTER INSERT OR UPDATE OR DELETE ON pgtenant.%I
					FOR EACH ROW EXECUTE FUNCTION pgtenant.notify_change()', tbl);
			END IF;
			IF NOT EXISTS (SELECT FROM pg_trigger
			                WHERE tgrelid = format('pgtenant.%I', tbl)::regclass
			                  AND tgname = 'pgtenant_notify_truncate') THEN
				EXECUTE format('CREATE TRIGGER pgtenant_notify_truncate
					AFTER TRUNCATE ON pgtenant.%I
					FOR EACH STATEMENT EXECUTE FUNCTION pgtenant.notify_change()', tbl);
			END IF;
		END LOOP;
	END
	$do$`,
	// The servers tenants may be placed on (issue 16; see backends.go).
	// DSNs hold no password: the registry is readable by every proxy and
	// admin, and credentials come from the environment, a passfile or the
	// role secret. The row DefaultBackend, with an empty DSN, is the server
	// the registry itself lives on (serve's --backend); it always exists.
	`CREATE TABLE IF NOT EXISTS pgtenant.backends (
		name       text        PRIMARY KEY CHECK (name <> ''),
		dsn        text        NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now()
	)`,
	// ON CONFLICT DO NOTHING inserts nothing once the row is there, and
	// fires no trigger.
	`INSERT INTO pgtenant.backends (name, dsn) VALUES ('` + DefaultBackend + `', '') ON CONFLICT DO NOTHING`,
	// Each tenant's placement. Checked in the catalogs first: ALTER TABLE
	// ... ADD COLUMN IF NOT EXISTS takes an ACCESS EXCLUSIVE lock on
	// pgtenant.tenants even when the column is there, which would block
	// every lookup for the length of each admin command. ON UPDATE CASCADE
	// lets a backend be renamed by hand; the cascade updates the tenants,
	// whose trigger announces them.
	`DO $do$
	BEGIN
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute
		                WHERE attrelid = 'pgtenant.tenants'::regclass
		                  AND attname = 'backend' AND NOT attisdropped) THEN
			ALTER TABLE pgtenant.tenants ADD COLUMN backend text NOT NULL DEFAULT '` + DefaultBackend + `'
				REFERENCES pgtenant.backends (name) ON UPDATE CASCADE;
		END IF;
	END
	$do$`,
	// Serves RemoveBackend's check and the foreign key's cascades.
	`CREATE INDEX IF NOT EXISTS tenants_backend_idx ON pgtenant.tenants (backend)`,
	// A function of its own rather than a branch of notify_change, so that
	// this list only grows. A backend's change is announced as
	// BackendNotifyPrefix + its name (old and new on a rename); a tenant's
	// placement is a column of pgtenant.tenants, announced under the
	// tenant's name by notify_change.
	`CREATE OR REPLACE FUNCTION pgtenant.notify_backend_change() RETURNS trigger
	LANGUAGE plpgsql AS $fn$
	BEGIN
		IF TG_LEVEL = 'STATEMENT' THEN
			PERFORM pg_notify('` + NotifyChannel + `', '');
			RETURN NULL;
		END IF;
		IF TG_OP IN ('UPDATE', 'DELETE') THEN
			PERFORM pg_notify('` + NotifyChannel + `', '` + BackendNotifyPrefix + `' || OLD.name);
		END IF;
		IF TG_OP IN ('INSERT', 'UPDATE') THEN
			PERFORM pg_notify('` + NotifyChannel + `', '` + BackendNotifyPrefix + `' || NEW.name);
		END IF;
		RETURN NULL;
	END
	$fn$`,
	`DO $do$
	BEGIN
		IF NOT EXISTS (SELECT FROM pg_trigger
		                WHERE tgrelid = 'pgtenant.backends'::regclass AND tgname = 'pgtenant_notify') THEN
			CREATE TRIGGER pgtenant_notify
				AFTER INSERT OR UPDATE OR DELETE ON pgtenant.backends
				FOR EACH ROW EXECUTE FUNCTION pgtenant.notify_backend_change();
		END IF;
		IF NOT EXISTS (SELECT FROM pg_trigger
		                WHERE tgrelid = 'pgtenant.backends'::regclass AND tgname = 'pgtenant_notify_truncate') THEN
			CREATE TRIGGER pgtenant_notify_truncate
				AFTER TRUNCATE ON pgtenant.backends
				FOR EACH STATEMENT EXECUTE FUNCTION pgtenant.notify_backend_change();
		END IF;
	END
	$do$`,
}

// EnsureRegistry creates the pgtenant schema and its tables (tenants,
// tenant_aliases, tenant_users) and triggers if they do not exist, which
// also upgrades a registry made by an older version. It is safe to run
// concurrently, from several proxies or CLI invocations at once.
func EnsureRegistry(ctx context.Context, db DB) error {
	return inRegistryTx(ctx, db, func(pgx.Tx) error { return nil })
}

// inRegistryTx runs f in a transaction of db that holds the registry lock
// until commit, on a registry created if it was missing: every change to
// the registry goes through it, so that concurrent changes run one at a
// time and a check followed by a write cannot race.
func inRegistryTx(ctx context.Context, db DB, f func(pgx.Tx) error) error {
	return inTx(ctx, db, func(tx pgx.Tx) error {
		if err := ensureRegistry(ctx, tx); err != nil {
			return err
		}
		return f(tx)
	})
}

// registryDelete runs a DELETE in a registry transaction and reports
// whether it removed a row.
func registryDelete(ctx context.Context, db DB, sql string, args ...any) (removed bool, err error) {
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sql, args...)
		removed = tag.RowsAffected() > 0
		return err
	})
	return removed, err
}

// ensureRegistry takes the registry lock for the rest of tx and creates the
// registry if needed. The lock is SHARE ROW EXCLUSIVE on pgtenant.tenants,
// which conflicts with itself (one registry change at a time) and not with
// the reads of lookups; before the registry exists, the advisory lock
// registryLockKey stands in for it.
func ensureRegistry(ctx context.Context, tx pgx.Tx) error {
	// A scan of pg_class under the statement's snapshot, not to_regclass:
	// name lookups go through the backend's catalog caches, which after a
	// wait on an advisory lock (no relation lock, so no cache invalidation)
	// can still say the registry is missing when another creator has just
	// committed it.
	exists := func() (bool, error) {
		var ok bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'pgtenant' AND c.relname = 'tenants')`).Scan(&ok)
		return ok, err
	}
	ok, err := exists()
	if err == nil && !ok {
		// No registry yet: creators queue on the advisory lock. One that
		// got it after another created the registry must also queue with
		// those that found it there (below), or two would change it at
		// once.
		_, err = tx.Exec(ctx, `SELECT pg_catalog.pg_advisory_xact_lock(`+strconv.FormatInt(registryLockKey, 10)+`)`)
		if err == nil {
			ok, err = exists()
		}
	}
	if err == nil && ok {
		_, err = tx.Exec(ctx, `LOCK TABLE pgtenant.tenants IN SHARE ROW EXCLUSIVE MODE`)
	}
	if err != nil {
		return fmt.Errorf("lock registry: %w", err)
	}
	for _, stmt := range registryDDL {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create registry: %w", err)
		}
	}
	return nil
}

// inTx runs f in a transaction of db and commits it when f succeeds.
func inTx(ctx context.Context, db DB, f func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Rollback after a successful Commit is a no-op (ErrTxClosed).
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// CreateOption adjusts CreateTenant.
type CreateOption func(*createOptions)

type createOptions struct {
	adoptSchema bool
	poolRole    string
	backend     string
	target      DB
}

// OnBackend places a new tenant on backend, and creates its schema (and
// the pool roles' grants on it) through target, a connection to that
// backend's server (see ConnectBackend), rather than on the registry's.
// target may be nil for DefaultBackend. Creating a tenant again with
// another backend than the one it is on is refused: moving a tenant is
// `tenant move`.
func OnBackend(backend string, target DB) CreateOption {
	return func(o *createOptions) { o.backend, o.target = backend, target }
}

// AdoptSchema lets CreateTenant make an existing schema that holds objects
// (tables, functions, types ...) the new tenant's. Without it such a schema
// is refused (*SchemaNotEmptyError): the objects in it, and whatever their
// owners can do with them, would become the tenant's, and a mistyped
// --schema would hand a tenant someone else's tables.
func AdoptSchema() CreateOption { return func(o *createOptions) { o.adoptSchema = true } }

// PoolRole records role in pgtenant.pool_roles (once; later calls need not
// name it) as a role that runs tenant traffic in schema mode. Every recorded
// pool role gets, on each tenant's schema, what the tenant's clients need:
// USAGE and CREATE on the schema, and every privilege on the tables and
// sequences the admin has there now or creates there later. It gets
// nothing on the registry. See grantPoolRoles.
func PoolRole(role string) CreateOption { return func(o *createOptions) { o.poolRole = role } }

// SchemaNotEmptyError says that CreateTenant was asked to adopt an existing
// schema that holds objects, without AdoptSchema.
type SchemaNotEmptyError struct {
	Schema  string
	Objects int
}

func (e *SchemaNotEmptyError) Error() string {
	return fmt.Sprintf("schema %q already exists and holds %d object(s); to make it the tenant's schema with everything in it, "+
		"pass --adopt-schema (or choose another schema)", e.Schema, e.Objects)
}

// CreateTenant registers a tenant called name whose tables live in schema
// (schema "" means a schema called like the tenant), creating the schema if
// it does not exist. An existing schema that no tenant owns is adopted when
// it is empty, or with AdoptSchema, which is how an application's existing
// schemas are brought under pgtenant. With PoolRole, or once a pool role
// has been recorded, the pool roles get what they need on the schema.
//
// Running it again with the same arguments is harmless and returns
// created=false. It fails, changing nothing, when the tenant exists with
// another schema or the schema belongs to another tenant. Names are
// validated before the database is touched.
//
// It refuses a name that is already an alias of another tenant, and a
// schema that has the name of a role (a *RoleNamedSchemaError): see
// RoleNamedSchemaError for why. A role created later, or one that already
// had the schema's name when an existing tenant is created again, is not
// refused here; PGRegistry.RoleNamedSchemas finds those.
//
// Everything happens in one transaction; at commit the registry's trigger
// sends a notification on NotifyChannel, so proxies that cached the name as
// unknown see the new tenant at once.
func CreateTenant(ctx context.Context, db DB, name, schema string, opts ...CreateOption) (t Tenant, created bool, err error) {
	var o createOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.poolRole != "" {
		if err := ValidateUserName(o.poolRole); err != nil {
			return Tenant{}, false, fmt.Errorf("pool role: %w", err)
		}
	}
	if schema == "" {
		schema = name
	}
	if err := ValidateTenantName(name); err != nil {
		return Tenant{}, false, err
	}
	if err := ValidateSchemaName(schema); err != nil {
		return Tenant{}, false, err
	}
	if o.backend == "" {
		o.backend = DefaultBackend
	}
	if err := ValidateBackendName(o.backend); err != nil {
		return Tenant{}, false, err
	}
	if o.backend != DefaultBackend && o.target == nil {
		return Tenant{}, false, fmt.Errorf("create tenant %q: no connection to backend %q", name, o.backend)
	}
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		// The schema's server: the registry's own, in the registry's
		// transaction, or the backend's in a transaction of its own that
		// commits just before the registry's. Should the registry's commit
		// then fail, an empty schema is left there, which a second run
		// adopts.
		var on DB = tx
		var onTx pgx.Tx
		if o.backend != DefaultBackend {
			var err error
			if onTx, err = o.target.Begin(ctx); err != nil {
				return fmt.Errorf("begin on backend %q: %w", o.backend, err)
			}
			defer func() { _ = onTx.Rollback(context.WithoutCancel(ctx)) }()
			on = onTx
		}
		commitOn := func() error {
			if onTx == nil {
				return nil
			}
			if err := onTx.Commit(ctx); err != nil {
				return fmt.Errorf("commit on backend %q: %w", o.backend, err)
			}
			return nil
		}
		// The registry lock taken here is held until commit, so concurrent
		// creates run one at a time and the checks below cannot race.
		if err := requireBackend(ctx, tx, o.backend); err != nil {
			return err
		}
		existing, found, err := tenantByName(ctx, tx, name)
		if err != nil {
			return err
		}
		if found {
			if existing.Schema != schema {
				return fmt.Errorf("tenant %q already exists with schema %q, not %q", name, existing.Schema, schema)
			}
			if existing.BackendOf() != o.backend {
				return fmt.Errorf("tenant %q already exists on backend %q, not %q; move it with: pgtenant tenant move %s --to %s",
					name, existing.BackendOf(), o.backend, name, o.backend)
			}
			t = existing
			// Recreate the schema if someone dropped it, so that a second
			// run repairs rather than reports success over a broken tenant.
			if err := createSchema(ctx, on, schema); err != nil {
				return err
			}
			if err := grantPoolRoles(ctx, tx, on, o.poolRole, schema, o.backend); err != nil {
				return err
			}
			return commitOn()
		}
		// A client connecting with name would reach the alias's tenant,
		// not the new one.
		if aliasOf, isAlias, err := aliasTarget(ctx, tx, name); err != nil {
			return err
		} else if isAlias {
			return fmt.Errorf("%q is already an alias of tenant %q; remove the alias first or choose another name", name, aliasOf)
		}
		if err := refuseRoleNamedSchema(ctx, on, schema); err != nil {
			return err
		}
		var owner string
		err = tx.QueryRow(ctx, `SELECT name FROM pgtenant.tenants WHERE schema_name = $1`, schema).Scan(&owner)
		switch {
		case err == nil:
			return fmt.Errorf("schema %q already belongs to tenant %q; choose another schema for tenant %q", schema, owner, name)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("check schema owner: %w", err)
		}
		if !o.adoptSchema {
			if err := refuseNonEmptySchema(ctx, on, schema); err != nil {
				return err
			}
		}
		if err := createSchema(ctx, on, schema); err != nil {
			return err
		}
		if err := grantPoolRoles(ctx, tx, on, o.poolRole, schema, o.backend); err != nil {
			return err
		}
		t = Tenant{Name: name, Schema: schema, Backend: o.backend}
		err = tx.QueryRow(ctx,
			`INSERT INTO pgtenant.tenants (name, schema_name, backend) VALUES ($1, $2, $3)
			 ON CONFLICT DO NOTHING
			 RETURNING active`, name, schema, o.backend,
		).Scan(&t.Active)
		if errors.Is(err, pgx.ErrNoRows) {
			// Only a writer that skips the registry lock (a hand-written
			// INSERT) can get here.
			return fmt.Errorf("tenant %q or schema %q was registered concurrently; run the command again", name, schema)
		}
		if err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		created = true
		// The trigger on pgtenant.tenants announces the new name at
		// commit (and not at all on rollback).
		return commitOn()
	})
	if err != nil {
		return Tenant{}, false, fmt.Errorf("create tenant %q: %w", name, err)
	}
	return t, created, nil
}

// RoleNamedSchemaError says that a tenant's schema would have the name of a
// role. PostgreSQL's default search_path is `"$user", public`, and "$user"
// stands for a schema named like the current role: a client whose backend
// runs with that default (after RESET ALL, RESET search_path or DISCARD
// ALL) as the pool's role, or as any role it can SET ROLE to, would find
// that tenant's tables ahead of public. The pool's role is the usual victim,
// and every client of every tenant runs as it.
type RoleNamedSchemaError struct {
	Schema string
	// Role is the role whose name the schema has. Schema and role names
	// compare exactly (a role "Acme" does not reach schema acme), so the
	// two are equal; the field is there so that messages can say "role".
	Role string
}

func (e *RoleNamedSchemaError) Error() string {
	return fmt.Sprintf(`schema %q has the name of role %q: "$user" in a search_path would reach it; choose another name`, e.Schema, e.Role)
}

// refuseRoleNamedSchema returns a *RoleNamedSchemaError when a role is
// called schema. Roles are not under the registry lock, so a role created
// concurrently can slip past; the proxy warns of those at start
// (PGRegistry.RoleNamedSchemas).
func refuseRoleNamedSchema(ctx context.Context, db DB, schema string) error {
	var isRole bool
	err := db.QueryRow(ctx,
		`SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)`, schema).Scan(&isRole)
	if err != nil {
		return fmt.Errorf("check roles: %w", err)
	}
	if isRole {
		return &RoleNamedSchemaError{Schema: schema, Role: schema}
	}
	return nil
}

// schemaObjectsSQL counts what a schema holds: relations (tables, views,
// sequences, indexes), functions, types and operators. $1 is the schema's
// name; a schema that does not exist holds nothing.
const schemaObjectsSQL = `
SELECT (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid)
     + (SELECT count(*) FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid)
     + (SELECT count(*) FROM pg_catalog.pg_type y WHERE y.typnamespace = n.oid)
     + (SELECT count(*) FROM pg_catalog.pg_operator o WHERE o.oprnamespace = n.oid)
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = $1`

// refuseNonEmptySchema returns a *SchemaNotEmptyError when schema exists and
// holds objects.
func refuseNonEmptySchema(ctx context.Context, db DB, schema string) error {
	var n int
	err := db.QueryRow(ctx, schemaObjectsSQL, schema).Scan(&n)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check schema %q for objects: %w", schema, err)
	case n > 0:
		return &SchemaNotEmptyError{Schema: schema, Objects: n}
	}
	return nil
}

// grantPoolRoles records role (when not "") as a pool role, then gives
// every recorded pool role what tenant traffic in schema mode needs on
// schema: USAGE and CREATE on it, and every privilege on the tables and
// sequences in it that the admin (the role running this) owns now or
// creates there later. A pool role recorded now also gets it on every
// tenant schema made before, so the order of commands does not matter.
//
// The pool role so owns nothing it did not create itself; in particular
// not the schema (it cannot drop it or change who may use it) and nothing
// of the registry.
//
// The roles are recorded in the registry (tx); the grants are made on on,
// the server of backend, where schema lives. Schemas made before are looked
// for among the tenants placed on the same backend.
func grantPoolRoles(ctx context.Context, tx pgx.Tx, on DB, role, schema, backend string) error {
	schemas := []string{schema}
	if role != "" {
		tag, err := tx.Exec(ctx, `INSERT INTO pgtenant.pool_roles (role_name) VALUES ($1) ON CONFLICT DO NOTHING`, role)
		if err != nil {
			return fmt.Errorf("record pool role %q: %w", role, err)
		}
		if tag.RowsAffected() == 1 {
			rows, err := tx.Query(ctx, `SELECT schema_name FROM pgtenant.tenants WHERE backend = $1 ORDER BY name`, backend)
			if err == nil {
				schemas, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil {
				return fmt.Errorf("list tenant schemas: %w", err)
			}
			if !slices.Contains(schemas, schema) {
				schemas = append(schemas, schema)
			}
		}
	}
	rows, err := tx.Query(ctx, `SELECT role_name FROM pgtenant.pool_roles ORDER BY role_name`)
	if err != nil {
		return fmt.Errorf("list pool roles: %w", err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list pool roles: %w", err)
	}
	for _, r := range roles {
		if backend != DefaultBackend {
			// Roles belong to a server. A pool role recorded for the
			// registry's server but missing on this one cannot log in
			// here either, so there is nothing to give it; the proxy's
			// login as it would fail, saying so.
			var exists bool
			if err := on.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)`, r).Scan(&exists); err != nil {
				return fmt.Errorf("find pool role %q on backend %q: %w", r, backend, err)
			}
			if !exists {
				continue
			}
		}
		for _, s := range schemas {
			if err := grantPoolRole(ctx, on, r, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// grantPoolRole gives one pool role what it needs on one schema; see
// grantPoolRoles. Tables, views and sequences the admin owns are granted one
// by one: GRANT ... ON ALL TABLES would fail on one that another role owns
// (say the pool role, which owns what tenants created); those are left to
// their owners. Functions need nothing: PUBLIC may execute them unless an
// owner says otherwise. A tenant whose schema was dropped by hand is
// skipped: the next CreateTenant of it recreates the schema and grants
// again.
func grantPoolRole(ctx context.Context, tx DB, role, schema string) error {
	var exists bool
	if err := tx.QueryRow(ctx,
		`SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil || !exists {
		return err
	}
	r, s := pgx.Identifier{role}.Sanitize(), pgx.Identifier{schema}.Sanitize()
	grants := []string{
		`GRANT USAGE, CREATE ON SCHEMA ` + s + ` TO ` + r,
		`ALTER DEFAULT PRIVILEGES IN SCHEMA ` + s + ` GRANT ALL ON TABLES TO ` + r,
		`ALTER DEFAULT PRIVILEGES IN SCHEMA ` + s + ` GRANT ALL ON SEQUENCES TO ` + r,
	}
	rows, err := tx.Query(ctx, `
		SELECT c.relname::pg_catalog.text, c.relkind = 'S'
		  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
		   AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
		 ORDER BY c.relname`, schema)
	if err != nil {
		return fmt.Errorf("list objects of schema %q: %w", schema, err)
	}
	var name string
	var sequence bool
	_, err = pgx.ForEachRow(rows, []any{&name, &sequence}, func() error {
		kind := "TABLE"
		if sequence {
			kind = "SEQUENCE"
		}
		grants = append(grants, `GRANT ALL ON `+kind+` `+pgx.Identifier{schema, name}.Sanitize()+` TO `+r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list objects of schema %q: %w", schema, err)
	}
	for _, q := range grants {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("grant pool role %q on schema %q: %w", role, schema, err)
		}
	}
	return nil
}

func createSchema(ctx context.Context, tx DB, schema string) error {
	// ValidateSchemaName has already refused anything odd, but an
	// identifier goes into SQL quoted, always.
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("create schema %q: %w", schema, err)
	}
	return nil
}

func tenantByName(ctx context.Context, db DB, name string) (Tenant, bool, error) {
	t := Tenant{Name: name}
	err := db.QueryRow(ctx,
		`SELECT schema_name, active, `+tenantBackendExpr+` FROM pgtenant.tenants t WHERE name = $1`, name,
	).Scan(&t.Schema, &t.Active, &t.Backend)
	switch {
	case err == nil:
		return t, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, false, nil
	default:
		return Tenant{}, false, fmt.Errorf("look up tenant: %w", err)
	}
}

// ListTenants returns every tenant, ordered by name. Before the registry
// exists there are no tenants, which is not an error.
func ListTenants(ctx context.Context, db DB) ([]Tenant, error) {
	// Ask whether the table exists rather than catching 42P01: an error
	// would abort the caller's transaction when db is a pgx.Tx.
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('pgtenant.tenants') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT name, schema_name, active, `+tenantBackendExpr+` FROM pgtenant.tenants t ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := row.Scan(&t.Name, &t.Schema, &t.Active, &t.Backend)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return tenants, nil
}

// namePattern is what tenant and schema names must look like. Names are
// typed as database or user names and used as schema names, so they are
// kept to what PostgreSQL would accept unquoted and would not fold: 1 to 63
// (NAMEDATALEN-1) bytes of lower-case ASCII letters, digits and underscores,
// starting with a letter.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// nameRule says, for error messages, what namePattern allows.
const nameRule = "use 1-63 lower-case letters, digits or _ starting with a letter"

// InvalidNameError says that a tenant or schema name was refused, why, and
// what is allowed.
type InvalidNameError struct {
	// Kind is "tenant name", "schema name", "alias" or "user name".
	Kind string
	Name string
	// Reason says what is wrong and what would be accepted.
	Reason string
}

func (e *InvalidNameError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Kind, e.Name, e.Reason)
}

// ValidateTenantName reports whether name may name a tenant.
func ValidateTenantName(name string) error {
	if !namePattern.MatchString(name) {
		return &InvalidNameError{Kind: "tenant name", Name: name, Reason: nameRule}
	}
	if name == ConsoleDatabase {
		return &InvalidNameError{Kind: "tenant name", Name: name,
			Reason: "it is reserved: database " + ConsoleDatabase + " is the admin console"}
	}
	return nil
}

// ConsoleDatabase is the database name that reaches pgtenant's admin
// console instead of a tenant; no tenant or alias may be called that.
const ConsoleDatabase = "pgtenant"

// ValidateSchemaName reports whether schema may hold a tenant's tables. On
// top of the name rule it refuses the schemas that PostgreSQL or pgtenant
// own, since putting a tenant there would share them with everyone.
func ValidateSchemaName(schema string) error {
	if !namePattern.MatchString(schema) {
		return &InvalidNameError{Kind: "schema name", Name: schema, Reason: nameRule}
	}
	switch {
	case schema == "public", schema == "pgtenant", schema == "information_schema",
		strings.HasPrefix(schema, "pg_"):
		return &InvalidNameError{Kind: "schema name", Name: schema,
			Reason: "it is reserved; use a schema of the tenant's own, not public, pgtenant, information_schema or pg_*"}
	}
	return nil
}

// AllTenants is the tenant argument of GrantTenant and RevokeTenant that
// means every tenant, and how ListGrants reports such a grant. No tenant
// can be called that: it is not a valid tenant name.
const AllTenants = "*"

// Grant is one row of pgtenant.tenant_users: User may connect to Tenant, or
// to every tenant when Tenant is AllTenants.
type Grant struct {
	User      string
	Tenant    string
	GrantedAt time.Time
}

// grantTarget says, for messages, what a grant of tenant covers.
func grantTarget(tenant string) string {
	if tenant == AllTenants {
		return "every tenant (*)"
	}
	return fmt.Sprintf("tenant %q", tenant)
}

// checkGrantArgs validates GrantTenant's and RevokeTenant's arguments and
// returns the tenant as the column stores it: nil for every tenant.
func checkGrantArgs(tenant, user string) (*string, error) {
	if err := ValidateUserName(user); err != nil {
		return nil, err
	}
	if tenant == AllTenants {
		return nil, nil
	}
	if err := ValidateTenantName(tenant); err != nil {
		return nil, err
	}
	return &tenant, nil
}

// GrantTenant lets user connect to tenant (AllTenants: to every tenant,
// including those created later) when the proxy runs with --tenant-access
// granted. Granting what is already granted is harmless and returns
// created=false. A tenant that does not exist is an error wrapping an
// *UnknownTenantError; so is naming a tenant by one of its aliases, since a
// grant belongs to the tenant, not to one of its names.
//
// The registry's trigger announces the change (payload "user:"+user), so
// every proxy's Grants forgets the user at once.
func GrantTenant(ctx context.Context, db DB, tenant, user string) (created bool, err error) {
	target, err := checkGrantArgs(tenant, user)
	if err != nil {
		return false, err
	}
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if target != nil {
			if err := requireTenant(ctx, tx, tenant); err != nil {
				return err
			}
		}
		// ON CONFLICT cannot name both unique indexes at once; under the
		// registry lock a NOT EXISTS is as good, and the indexes still stop
		// a hand-written duplicate.
		tag, err := tx.Exec(ctx,
			`INSERT INTO pgtenant.tenant_users (user_name, tenant)
			 SELECT $1, $2::text
			  WHERE NOT EXISTS (SELECT FROM pgtenant.tenant_users
			                     WHERE user_name = $1 AND tenant IS NOT DISTINCT FROM $2::text)`,
			user, target)
		if err != nil {
			return fmt.Errorf("insert grant: %w", err)
		}
		created = tag.RowsAffected() == 1
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("grant %s to user %q: %w", grantTarget(tenant), user, err)
	}
	return created, nil
}

// RevokeTenant undoes GrantTenant(tenant, user) and reports whether there
// was such a grant. Revoking tenant "acme" leaves a grant of every tenant
// in place, and revoking AllTenants leaves grants of named tenants: each
// grant is revoked as it was given. Clients already connected stay
// connected; new connections are refused as soon as proxies hear of it.
func RevokeTenant(ctx context.Context, db DB, tenant, user string) (removed bool, err error) {
	target, err := checkGrantArgs(tenant, user)
	if err != nil {
		return false, err
	}
	removed, err = registryDelete(ctx, db,
		`DELETE FROM pgtenant.tenant_users WHERE user_name = $1 AND tenant IS NOT DISTINCT FROM $2::text`,
		user, target)
	if err != nil {
		return false, fmt.Errorf("revoke %s from user %q: %w", grantTarget(tenant), user, err)
	}
	return removed, nil
}

// ListGrants returns every grant, ordered by user, each user's grant of
// every tenant (AllTenants) first and then its tenants by name. Before the
// registry (or its grants table) exists there are none, which is not an
// error.
func ListGrants(ctx context.Context, db DB) ([]Grant, error) {
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_users"); err != nil || !ok {
		if err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
		return nil, nil
	}
	rows, err := db.Query(ctx,
		`SELECT user_name, tenant, granted_at FROM pgtenant.tenant_users
		 ORDER BY user_name, tenant NULLS FIRST`)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	grants, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Grant, error) {
		var g Grant
		var tenant *string
		if err := row.Scan(&g.User, &tenant, &g.GrantedAt); err != nil {
			return Grant{}, err
		}
		g.Tenant = AllTenants
		if tenant != nil {
			g.Tenant = *tenant
		}
		return g, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	return grants, nil
}

// Alias is one row of pgtenant.tenant_aliases: clients connecting with
// Alias reach Tenant.
type Alias struct {
	Alias     string
	Tenant    string
	CreatedAt time.Time
}

// AddTenantAlias makes alias another name for tenant: a client that asks
// for alias (as its database name, or however the router picks the name)
// reaches tenant. Adding an alias that already names tenant is harmless.
// It fails, changing nothing, when tenant does not exist (an error wrapping
// an *UnknownTenantError), when alias is a tenant's name, or when alias
// already names another tenant.
//
// The registry's trigger announces the alias at commit, so proxies that
// cached it as an unknown name find it at once.
func AddTenantAlias(ctx context.Context, db DB, alias, tenant string) error {
	if err := ValidateAliasName(alias); err != nil {
		return err
	}
	if err := ValidateTenantName(tenant); err != nil {
		return err
	}
	err := inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		// Under the registry lock, so that CreateTenant cannot create a
		// tenant called alias between the check and the insert.
		if err := requireTenant(ctx, tx, tenant); err != nil {
			return err
		}
		if _, isTenant, err := tenantByName(ctx, tx, alias); err != nil {
			return err
		} else if isTenant {
			return fmt.Errorf("%q is the name of a tenant; an alias must be a name no tenant has", alias)
		}
		current, found, err := aliasTarget(ctx, tx, alias)
		switch {
		case err != nil:
			return err
		case found && current == tenant:
			return nil
		case found:
			return fmt.Errorf("alias %q already names tenant %q; remove it first to move it", alias, current)
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO pgtenant.tenant_aliases (alias, tenant) VALUES ($1, $2)`, alias, tenant); err != nil {
			return fmt.Errorf("insert alias: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add alias %q for tenant %q: %w", alias, tenant, err)
	}
	return nil
}

// RemoveTenantAlias removes alias and reports whether it existed. Clients
// connected through it stay connected; new ones get "does not exist" as
// soon as proxies hear of it.
func RemoveTenantAlias(ctx context.Context, db DB, alias string) (bool, error) {
	// The reserved name passes: an alias made before it was reserved must
	// still be removable.
	if err := ValidateAliasName(alias); err != nil && alias != ConsoleDatabase {
		return false, err
	}
	removed, err := registryDelete(ctx, db, `DELETE FROM pgtenant.tenant_aliases WHERE alias = $1`, alias)
	if err != nil {
		return false, fmt.Errorf("remove alias %q: %w", alias, err)
	}
	return removed, nil
}

// ListAliases returns every alias, ordered by tenant and then alias. Before
// the registry (or its aliases table) exists there are none, which is not
// an error.
func ListAliases(ctx context.Context, db DB) ([]Alias, error) {
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_aliases"); err != nil || !ok {
		if err != nil {
			return nil, fmt.Errorf("list aliases: %w", err)
		}
		return nil, nil
	}
	rows, err := db.Query(ctx,
		`SELECT alias, tenant, created_at FROM pgtenant.tenant_aliases ORDER BY tenant, alias`)
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	aliases, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Alias, error) {
		var a Alias
		err := row.Scan(&a.Alias, &a.Tenant, &a.CreatedAt)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	return aliases, nil
}

// tableExists asks whether table exists rather than catching 42P01, which
// would abort the caller's transaction when db is a pgx.Tx.
func tableExists(ctx context.Context, db DB, table string) (bool, error) {
	var exists bool
	err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists)
	return exists, err
}

// aliasTarget returns the tenant that alias names, if it is an alias.
func aliasTarget(ctx context.Context, db DB, alias string) (tenant string, found bool, err error) {
	err = db.QueryRow(ctx, `SELECT tenant FROM pgtenant.tenant_aliases WHERE alias = $1`, alias).Scan(&tenant)
	switch {
	case err == nil:
		return tenant, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return "", false, nil
	default:
		return "", false, fmt.Errorf("look up alias: %w", err)
	}
}

// requireTenant fails unless a tenant is called name, saying so in a way
// that tells an alias apart from a name nothing has.
func requireTenant(ctx context.Context, db DB, name string) error {
	if _, found, err := tenantByName(ctx, db, name); err != nil || found {
		return err
	}
	if of, isAlias, err := aliasTarget(ctx, db, name); err != nil {
		return err
	} else if isAlias {
		return fmt.Errorf("%q is an alias of tenant %q; name the tenant itself: %w",
			name, of, &UnknownTenantError{Name: name})
	}
	return &UnknownTenantError{Name: name}
}

// aliasPattern is what an alias must look like. Aliases are only ever
// compared with what clients send, as bind parameters, and never become
// identifiers, so they may also be host names (for the SNI host a client
// connects to): lower-case letters, digits, '_', '-' and '.', starting
// with a letter or digit, at most 253 bytes (the longest DNS name). They
// never contain ':', which keeps them apart from NotifyChannel's "user:"
// payloads.
var aliasPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,252}$`)

// ValidateAliasName reports whether alias may be a tenant's alias.
func ValidateAliasName(alias string) error {
	if !aliasPattern.MatchString(alias) {
		return &InvalidNameError{Kind: "alias", Name: alias,
			Reason: "use 1-253 lower-case letters, digits, _, - or . starting with a letter or digit"}
	}
	if alias == ConsoleDatabase {
		return &InvalidNameError{Kind: "alias", Name: alias,
			Reason: "it is reserved: database " + ConsoleDatabase + " is the admin console"}
	}
	return nil
}

// maxUserNameLen is PostgreSQL's limit on role names (NAMEDATALEN-1): the
// users pgtenant authenticates are usually the application's roles, and a
// longer name would be truncated by any server it also logs in to.
const maxUserNameLen = 63

// ValidateUserName reports whether user may be granted tenants. User names
// are whatever the auth file or auth query knows, so only what could never
// arrive in a startup packet, or would garble a listing, is refused: an
// empty name, more than 63 bytes, invalid UTF-8, and control characters
// (NUL, tab, newline ...).
func ValidateUserName(user string) error {
	bad := func(reason string) error {
		return &InvalidNameError{Kind: "user name", Name: user, Reason: reason}
	}
	switch {
	case user == "":
		return bad("it is empty")
	case len(user) > maxUserNameLen:
		return bad(fmt.Sprintf("it is %d bytes long; at most %d are allowed", len(user), maxUserNameLen))
	case !utf8.ValidString(user):
		return bad("it is not valid UTF-8")
	case strings.IndexFunc(user, unicode.IsControl) >= 0:
		return bad("it contains a control character")
	}
	return nil
}
