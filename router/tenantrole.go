package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/auth"
)

// Role mode (--isolation role): each tenant has a LOGIN role of its own that
// owns the tenant's schema and everything in it, and nothing else. Backends
// of the tenant log in as it, so that PostgreSQL itself refuses what crosses
// tenants: other schemas, the registry, other roles' query texts, cancels,
// large objects. A SET ROLE from one pool role would be no boundary (a DO
// block can RESET ROLE), which is why the login itself is the tenant's.
const (
	// tenantRolePrefix starts every tenant role's name. A role named like
	// the tenant would make "$user" in a search_path reach the tenant's
	// schema (see RoleNamedSchemaError); the prefix also keeps tenant roles
	// apart from TenantsGroupRole ("pgt_" never starts "pgtenant_").
	tenantRolePrefix = "pgt_"
	// maxIdentLen is PostgreSQL's NAMEDATALEN-1: longer names are cut.
	maxIdentLen = 63
	// TenantsGroupRole is the NOLOGIN role every tenant role is a member
	// of. It holds what all tenants share: CONNECT on the database, USAGE
	// on public and on the shared schemas. Grant it read access to shared
	// tables (GRANT SELECT ON ALL TABLES IN SCHEMA shared TO
	// pgtenant_tenants). Membership gives a tenant role no rights over
	// another: PostgreSQL's checks for other roles' sessions and objects
	// ask whether one role has the privileges of the other, which fellow
	// members of a group do not.
	TenantsGroupRole = "pgtenant_tenants"
)

// TenantRoleName is the LOGIN role of tenant in role mode: "pgt_" and the
// tenant's name. A name too long for PostgreSQL keeps its first 54 bytes
// and gets a hash of the whole name, so that two long names sharing a
// prefix still get roles of their own.
func TenantRoleName(tenant string) string {
	name := tenantRolePrefix + tenant
	if len(name) <= maxIdentLen {
		return name
	}
	sum := sha256.Sum256([]byte(tenant))
	return name[:maxIdentLen-9] + "_" + hex.EncodeToString(sum[:4])
}

// TenantRoleError says why EnsureTenantRole will not make or take over a
// role.
type TenantRoleError struct {
	Tenant, Role string
	Reason       string
}

func (e *TenantRoleError) Error() string {
	return fmt.Sprintf("tenant %q: role %q: %s", e.Tenant, e.Role, e.Reason)
}

// EnsureTenantGroup creates TenantsGroupRole if it is missing and grants
// it CONNECT on the current database and USAGE on public and on each of
// shared. It is idempotent.
func EnsureTenantGroup(ctx context.Context, db DB, shared []string) error {
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error { return ensureTenantGroup(ctx, tx, shared) })
}

func ensureTenantGroup(ctx context.Context, tx pgx.Tx, shared []string) error {
	group := pgx.Identifier{TenantsGroupRole}.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)`,
		TenantsGroupRole).Scan(&exists); err != nil {
		return fmt.Errorf("find role %s: %w", TenantsGroupRole, err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE ROLE `+group+` NOLOGIN`); err != nil {
			return fmt.Errorf("create role %s: %w", TenantsGroupRole, err)
		}
	}
	var dbname string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.current_database()`).Scan(&dbname); err != nil {
		return err
	}
	grants := []string{`GRANT CONNECT ON DATABASE ` + pgx.Identifier{dbname}.Sanitize() + ` TO ` + group}
	for _, s := range append([]string{"public"}, shared...) {
		grants = append(grants, `GRANT USAGE ON SCHEMA `+pgx.Identifier{s}.Sanitize()+` TO `+group)
	}
	for _, g := range grants {
		if _, err := tx.Exec(ctx, g); err != nil {
			return fmt.Errorf("%s: %w", g, err)
		}
	}
	return nil
}

// EnsureTenantRole makes t's LOGIN role (TenantRoleName) or converts t to
// it: the role is created if missing, made a member of TenantsGroupRole,
// given the password derived from secret (auth.TenantRolePassword), sent
// as a SCRAM-SHA-256 verifier only, and made the owner of t's schema and of
// every table, view, materialized view, foreign table, sequence, composite
// type, enum, domain, range type and function in it.
//
// It is idempotent, and running it with a new secret is how the passwords
// are rotated. An existing role with more than a tenant role needs
// (SUPERUSER, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS, or membership
// in another role) is refused rather than demoted: it is someone else's.
// The caller's role needs CREATEROLE (or SUPERUSER) and must own the
// tenant's schema and objects; when it is not a superuser it is granted
// the tenant role, which PostgreSQL requires to give objects to it.
//
// Everything happens in one transaction under the registry lock.
func EnsureTenantRole(ctx context.Context, db DB, t Tenant, secret string) error {
	if secret == "" {
		return errors.New("tenant role: the role secret is empty")
	}
	role := TenantRoleName(t.Name)
	verifier, err := auth.TenantRoleVerifier(secret, role)
	if err != nil {
		return err
	}
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		reg, err := tenantForRole(ctx, tx, t, role)
		if err != nil {
			return err
		}
		return makeTenantRole(ctx, tx, t.Name, reg.Schema, role, verifier, nil)
	})
	if err != nil {
		return fmt.Errorf("tenant role for %q: %w", t.Name, err)
	}
	return nil
}

// ensureRole creates role, or checks that an existing one is fit to be a
// tenant role, and sets its attributes, group and password.
func ensureRole(ctx context.Context, tx pgx.Tx, tenant, role, verifier string) error {
	ident := pgx.Identifier{role}.Sanitize()
	var (
		exists                                    bool
		super, createDB, createRole, repl, bypass bool
		others                                    []string
	)
	err := tx.QueryRow(ctx, `
		SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
		       ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
		               JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		              WHERE m.member = r.oid AND g.rolname <> $2 ORDER BY 1)
		  FROM pg_catalog.pg_roles r WHERE r.rolname = $1`, role, TenantsGroupRole,
	).Scan(&super, &createDB, &createRole, &repl, &bypass, &others)
	switch {
	case err == nil:
		exists = true
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("find role %s: %w", role, err)
	}
	if exists {
		var extra []string
		for _, a := range []struct {
			on   bool
			name string
		}{{super, "SUPERUSER"}, {createDB, "CREATEDB"}, {createRole, "CREATEROLE"}, {repl, "REPLICATION"}, {bypass, "BYPASSRLS"}} {
			if a.on {
				extra = append(extra, a.name)
			}
		}
		if len(others) > 0 {
			extra = append(extra, "membership in "+strings.Join(others, ", "))
		}
		if len(extra) > 0 {
			return &TenantRoleError{Tenant: tenant, Role: role,
				Reason: "it exists with " + strings.Join(extra, ", ") + ", which a tenant role must not have; drop or fix it by hand"}
		}
	} else if _, err := tx.Exec(ctx, `CREATE ROLE `+ident+` LOGIN`); err != nil {
		return fmt.Errorf("create role %s: %w", role, err)
	}
	// The verifier is a literal: ALTER ROLE takes no parameters. It is
	// base64 and '$', ':' and digits only, so quoting it cannot go wrong.
	if _, err := tx.Exec(ctx, `ALTER ROLE `+ident+` WITH LOGIN INHERIT PASSWORD '`+verifier+`'`); err != nil {
		return fmt.Errorf("set the password of role %s: %w", role, err)
	}
	if _, err := tx.Exec(ctx, `GRANT `+pgx.Identifier{TenantsGroupRole}.Sanitize()+` TO `+ident); err != nil {
		return fmt.Errorf("grant %s to %s: %w", TenantsGroupRole, role, err)
	}
	return nil
}

// ownedObjectsSQL lists the objects of schema $1 not owned by role $2, with
// the ALTER statement that gives one away. Tables come first: ALTER TABLE
// carries the sequences the table owns (serial, identity) and its indexes,
// and a sequence owned by a table cannot be given away alone; the query is
// run again for each kind, so sequences already carried are not listed.
// Array and multirange types follow their element and range type.
const ownedObjectsSQL = `
SELECT CASE c.relkind
         WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
         WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
         WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
       pg_catalog.format('%I.%I', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
   AND c.relkind::text = ANY ($3::text[])
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
       pg_catalog.format('%I.%I', n.nspname, t.typname)
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = $1 AND t.typowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
   AND 'types' = ANY ($4::text[])
   AND t.typtype IN ('b', 'd', 'e', 'r', 'm') AND t.typrelid = 0
   AND NOT (t.typelem <> 0 AND t.typlen = -1 AND t.typcategory = 'A')
UNION ALL
SELECT CASE p.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1 AND p.proowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
   AND 'routines' = ANY ($4::text[])`

// giveSchema makes role the owner of schema and of the objects in it.
func giveSchema(ctx context.Context, tx pgx.Tx, schema, role string) error {
	ident := pgx.Identifier{role}.Sanitize()
	var super bool
	if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return err
	}
	if !super {
		// ALTER ... OWNER TO needs the caller to be able to act as the
		// new owner.
		if _, err := tx.Exec(ctx, `GRANT `+ident+` TO CURRENT_USER`); err != nil {
			return fmt.Errorf("grant %s to the admin role: %w", role, err)
		}
	}
	if _, err := tx.Exec(ctx, `ALTER SCHEMA `+pgx.Identifier{schema}.Sanitize()+` OWNER TO `+ident); err != nil {
		return fmt.Errorf("give schema %s to %s: %w", schema, role, err)
	}
	// Relations first (they carry their sequences and indexes), then the
	// sequences left, then types and routines.
	passes := []struct {
		relkinds []string
		other    []string
	}{
		{relkinds: []string{"r", "p", "v", "m", "f"}},
		{relkinds: []string{"S", "c"}},
		{other: []string{"types", "routines"}},
	}
	for _, p := range passes {
		rows, err := tx.Query(ctx, ownedObjectsSQL, schema, role, p.relkinds, p.other)
		if err != nil {
			return fmt.Errorf("list the objects of schema %s: %w", schema, err)
		}
		stmts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var kind, name string
			err := r.Scan(&kind, &name)
			return "ALTER " + kind + " " + name + " OWNER TO " + ident, err
		})
		if err != nil {
			return fmt.Errorf("list the objects of schema %s: %w", schema, err)
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
	}
	return nil
}

// EnsureTenantRoleOn is EnsureTenantRole for a tenant placed on a backend
// other than the registry's (Tenant.Backend): roles belong to a server, so
// the tenant's role, TenantsGroupRole (with USAGE on public and on each of
// shared) and the ownership of the schema are made on target, a connection
// to that backend, where the proxy logs the tenant's role in. The registry
// (db) is only read, to check the tenant, its schema and its placement.
func EnsureTenantRoleOn(ctx context.Context, db, target DB, t Tenant, secret string, shared []string) error {
	if secret == "" {
		return errors.New("tenant role: the role secret is empty")
	}
	role := TenantRoleName(t.Name)
	verifier, err := auth.TenantRoleVerifier(secret, role)
	if err != nil {
		return err
	}
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		reg, err := tenantForRole(ctx, tx, t, role)
		if err != nil {
			return err
		}
		return inTx(ctx, target, func(on pgx.Tx) error {
			return makeTenantRole(ctx, on, t.Name, reg.Schema, role, verifier, shared)
		})
	})
	if err != nil {
		return fmt.Errorf("tenant role for %q on backend %q: %w", t.Name, t.BackendOf(), err)
	}
	return nil
}

// tenantForRole is the registry's record of t, checked for a tenant role:
// t exists, with the schema and backend t names when it names them, and
// no tenant has a schema called role (which "$user" in search_path would
// reach). The schema check comes before anything is made on a server:
// the schema and the role are created where the tenant is served.
func tenantForRole(ctx context.Context, tx pgx.Tx, t Tenant, role string) (Tenant, error) {
	reg, found, err := tenantByName(ctx, tx, t.Name)
	if err != nil {
		return Tenant{}, err
	}
	if !found {
		return Tenant{}, &UnknownTenantError{Name: t.Name}
	}
	if t.Schema != "" && reg.Schema != t.Schema {
		return Tenant{}, fmt.Errorf("tenant %q has schema %q in the registry, not %q", t.Name, reg.Schema, t.Schema)
	}
	if t.Backend != "" && reg.BackendOf() != t.Backend {
		return Tenant{}, fmt.Errorf("tenant %q is placed on backend %q in the registry, not %q", t.Name, reg.BackendOf(), t.Backend)
	}
	var other string
	err = tx.QueryRow(ctx, `SELECT name FROM pgtenant.tenants WHERE schema_name = $1`, role).Scan(&other)
	switch {
	case err == nil:
		return Tenant{}, &TenantRoleError{Tenant: t.Name, Role: role,
			Reason: fmt.Sprintf(`tenant %q has a schema of that name, which "$user" would reach`, other)}
	case !errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, err
	}
	return reg, nil
}

// makeTenantRole makes, on the server tx runs on, what a tenant role needs
// there: the tenant's schema, the tenants' group (with USAGE on public and
// shared), the role itself and the ownership of the schema. EnsureTenantRole
// runs it on the registry's server, EnsureTenantRoleOn on the tenant's.
func makeTenantRole(ctx context.Context, tx pgx.Tx, tenant, schema, role, verifier string, shared []string) error {
	if err := createSchema(ctx, tx, schema); err != nil {
		return err
	}
	if err := ensureTenantGroup(ctx, tx, shared); err != nil {
		return err
	}
	if err := ensureRole(ctx, tx, tenant, role, verifier); err != nil {
		return err
	}
	return giveSchema(ctx, tx, schema, role)
}
