package router

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// PrivilegedBackendError says that the role tenant traffic runs as (the
// pool's login role, the --backend role) can do what no tenant may: every
// client of every tenant sends SQL as that role, so whatever it can do, any
// tenant can. Reasons are plain phrases ("is a superuser", "owns database
// \"app\"", "can write pgtenant.tenants"), in the order CheckBackendRole
// found them.
type PrivilegedBackendError struct {
	Role    string
	Reasons []string
}

func (e *PrivilegedBackendError) Error() string {
	return fmt.Sprintf(`backend role %q %s; tenant traffic must run as a role that is no superuser, `+
		`has no CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, does not own the database and cannot write `+
		`the registry (schema pgtenant), with the registry read through --registry as another role `+
		`(see README "Security model"), or pass --allow-privileged-backend`,
		e.Role, strings.Join(e.Reasons, ", "))
}

// backendPrivilegesSQL lists what the session's role can do that tenant
// traffic must not, one phrase a row. It asks for the session user and
// every role it is a member of, since a member can SET ROLE to any of them
// (a NOINHERIT membership too), and a tenant can do whatever the session can
// (pg_write_all_data, say, writes the registry). A superuser can do
// everything; only the attribute is named then.
//
// It runs with search_path = pg_catalog (see CheckBackendRole): a tenant
// that left a search_path of its own as the role's default could otherwise
// put an operator of its own in front of the catalog's.
const backendPrivilegesSQL = `
WITH me AS (
	SELECT r.oid, r.rolname, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user
), reach AS (
	SELECT r.oid, r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
	       CASE WHEN r.oid = me.oid THEN '' ELSE pg_catalog.format('can SET ROLE to %I, which ', r.rolname) END AS via
	  FROM pg_catalog.pg_roles r, me
	 WHERE pg_catalog.pg_has_role(me.oid, r.oid, 'MEMBER')
	   -- A superuser is a member of every role: that it is a superuser
	   -- says it all.
	   AND (r.oid = me.oid OR NOT me.rolsuper)
), db AS (
	SELECT d.oid, d.datname, d.datdba FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()
), reg AS (
	SELECT n.oid, n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgtenant'
)
SELECT what FROM (
	SELECT 1 AS ord, r.via || 'is a superuser' AS what FROM reach r WHERE r.rolsuper
	UNION ALL SELECT 2, r.via || 'has CREATEROLE' FROM reach r WHERE r.rolcreaterole AND NOT r.rolsuper
	UNION ALL SELECT 3, r.via || 'has CREATEDB' FROM reach r WHERE r.rolcreatedb AND NOT r.rolsuper
	UNION ALL SELECT 4, r.via || 'has REPLICATION' FROM reach r WHERE r.rolreplication AND NOT r.rolsuper
	UNION ALL SELECT 5, r.via || 'has BYPASSRLS' FROM reach r WHERE r.rolbypassrls AND NOT r.rolsuper
	UNION ALL SELECT 6, pg_catalog.format('is a member of %I (server files and programs)', r.rolname)
	  FROM reach r WHERE r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')
	UNION ALL SELECT 7, r.via || pg_catalog.format('owns database %I', db.datname)
	  FROM reach r, db WHERE db.datdba = r.oid AND NOT r.rolsuper
	UNION ALL SELECT 8, r.via || 'owns schema pgtenant (the registry)'
	  FROM reach r, reg WHERE reg.nspowner = r.oid AND NOT r.rolsuper
	UNION ALL SELECT 9, r.via || 'has CREATE on schema pgtenant (the registry)'
	  FROM reach r, reg
	 WHERE reg.nspowner <> r.oid AND NOT r.rolsuper AND pg_catalog.has_schema_privilege(r.oid, reg.oid, 'CREATE')
	UNION ALL SELECT 10, r.via || CASE WHEN c.relowner = r.oid THEN 'owns ' ELSE 'can write ' END || c.oid::pg_catalog.regclass::pg_catalog.text
	  FROM reach r, reg, pg_catalog.pg_class c
	 WHERE c.relnamespace = reg.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND NOT r.rolsuper
	   AND reg.nspowner <> r.oid
	   AND (c.relowner = r.oid
	        OR pg_catalog.has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')
	        OR pg_catalog.has_any_column_privilege(r.oid, c.oid, 'INSERT, UPDATE'))
	UNION ALL SELECT 11, r.via || 'owns function ' || p.oid::pg_catalog.regprocedure::pg_catalog.text
	  FROM reach r, reg, pg_catalog.pg_proc p
	 WHERE p.pronamespace = reg.oid AND p.proowner = r.oid AND reg.nspowner <> r.oid AND NOT r.rolsuper
	UNION ALL SELECT 12, r.via || pg_catalog.format('can create schema pgtenant (CREATE on database %I) before the registry exists', db.datname)
	  FROM reach r, db
	 WHERE NOT EXISTS (SELECT FROM reg) AND NOT r.rolsuper AND db.datdba <> r.oid
	   AND pg_catalog.has_database_privilege(r.oid, db.oid, 'CREATE')
) found
ORDER BY ord, what`

// BackendPrivileges returns the session's login role (session_user) and
// what it can do that tenant traffic must not: nothing, for a role fit to
// run tenant traffic. See CheckBackendRole.
//
// It sets search_path on db's session (to pg_catalog), so give it a
// connection of its own.
func BackendPrivileges(ctx context.Context, db DB) (role string, reasons []string, err error) {
	if _, err := db.Exec(ctx, `SET search_path TO pg_catalog`); err != nil {
		return "", nil, fmt.Errorf("check backend role: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT session_user::pg_catalog.text`).Scan(&role); err != nil {
		return "", nil, fmt.Errorf("check backend role: %w", err)
	}
	rows, err := db.Query(ctx, backendPrivilegesSQL)
	if err == nil {
		reasons, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return role, nil, fmt.Errorf("check backend role %q: %w", role, err)
	}
	return role, reasons, nil
}

// CheckBackendRole returns a *PrivilegedBackendError when the role db is
// logged in as can do more than tenant traffic may: it is a superuser, has
// CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, may read or write server
// files or run programs there, owns the database, or can write the
// registry (owns schema pgtenant or anything in it, has CREATE on it, may
// change its tables, owns its functions, or could create it before the
// admin does). Roles it can SET ROLE to count as its own.
//
// It sets search_path on db's session, like BackendPrivileges.
func CheckBackendRole(ctx context.Context, db DB) error {
	role, reasons, err := BackendPrivileges(ctx, db)
	if err != nil {
		return err
	}
	if len(reasons) > 0 {
		return &PrivilegedBackendError{Role: role, Reasons: reasons}
	}
	return nil
}
