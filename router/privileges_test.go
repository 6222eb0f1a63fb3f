package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// connectAs connects to dsn as role (the test cluster trusts loopback).
func connectAs(t *testing.T, dsn, role string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), dsn+" user="+role)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Each case makes a role that tenant traffic must not run as, for one
// reason, and checks that CheckBackendRole refuses it naming that reason.
// The registry belongs to the superuser that created it, as an admin role
// would own it.
func TestCheckBackendRole(t *testing.T) {
	cases := []struct {
		name string
		// setup runs as the superuser, with {role} and {db} replaced by the
		// role and the database.
		setup []string
		// noRegistry leaves the registry uncreated.
		noRegistry bool
		want       string // "" for a role fit to run tenant traffic
	}{
		{name: "plain", want: ""},
		{name: "plain with a read grant", setup: []string{
			`GRANT USAGE ON SCHEMA pgtenant TO {role}`, `GRANT SELECT ON ALL TABLES IN SCHEMA pgtenant TO {role}`}, want: ""},
		{name: "superuser", setup: []string{`ALTER ROLE {role} SUPERUSER`}, want: "is a superuser"},
		{name: "createrole", setup: []string{`ALTER ROLE {role} CREATEROLE`}, want: "has CREATEROLE"},
		{name: "createdb", setup: []string{`ALTER ROLE {role} CREATEDB`}, want: "has CREATEDB"},
		{name: "replication", setup: []string{`ALTER ROLE {role} REPLICATION`}, want: "has REPLICATION"},
		{name: "bypassrls", setup: []string{`ALTER ROLE {role} BYPASSRLS`}, want: "has BYPASSRLS"},
		{name: "database owner", setup: []string{`ALTER DATABASE {db} OWNER TO {role}`}, want: "owns database"},
		{name: "registry owner", setup: []string{`ALTER SCHEMA pgtenant OWNER TO {role}`}, want: "owns schema pgtenant"},
		{name: "create on registry", setup: []string{`GRANT USAGE, CREATE ON SCHEMA pgtenant TO {role}`},
			want: "has CREATE on schema pgtenant"},
		{name: "insert tenants", setup: []string{`GRANT USAGE ON SCHEMA pgtenant TO {role}`, `GRANT INSERT ON pgtenant.tenants TO {role}`},
			want: "can write pgtenant.tenants"},
		{name: "update a column of tenants", setup: []string{`GRANT UPDATE (schema_name) ON pgtenant.tenants TO {role}`},
			want: "can write pgtenant.tenants"},
		{name: "delete tenant_users", setup: []string{`GRANT DELETE ON pgtenant.tenant_users TO {role}`},
			want: "can write pgtenant.tenant_users"},
		{name: "truncate aliases", setup: []string{`GRANT TRUNCATE ON pgtenant.tenant_aliases TO {role}`},
			want: "can write pgtenant.tenant_aliases"},
		{name: "owns a registry table", setup: []string{`ALTER TABLE pgtenant.tenant_users OWNER TO {role}`},
			want: "owns pgtenant.tenant_users"},
		{name: "owns the auth function", setup: []string{
			`CREATE FUNCTION pgtenant.user_secret(text) RETURNS TABLE (name text, secret text) LANGUAGE sql AS 'SELECT NULL::text, NULL::text'`,
			`ALTER FUNCTION pgtenant.user_secret(text) OWNER TO {role}`},
			want: "owns function pgtenant.user_secret(text)"},
		{name: "member of a superuser", setup: []string{
			`CREATE ROLE {role}_su SUPERUSER NOINHERIT`, `GRANT {role}_su TO {role}`},
			want: "can SET ROLE to {role}_su, which is a superuser"},
		{name: "member of the registry owner", setup: []string{
			`CREATE ROLE {role}_admin`, `ALTER SCHEMA pgtenant OWNER TO {role}_admin`, `GRANT {role}_admin TO {role}`},
			want: "can SET ROLE to {role}_admin, which owns schema pgtenant"},
		{name: "write all data", setup: []string{`GRANT pg_write_all_data TO {role}`},
			want: "can SET ROLE to pg_write_all_data, which can write pgtenant.tenants"},
		{name: "server files", setup: []string{`GRANT pg_read_server_files TO {role}`},
			want: "is a member of pg_read_server_files"},
		{name: "create before the registry", noRegistry: true, setup: []string{`GRANT CREATE ON DATABASE {db} TO {role}`},
			want: "can create schema pgtenant"},
		{name: "create on database once the registry exists", setup: []string{`GRANT CREATE ON DATABASE {db} TO {role}`},
			want: ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			dsn := newDatabase(t)
			admin := connectAs(t, dsn, "postgres")
			if !tc.noRegistry {
				if err := EnsureRegistry(ctx, admin); err != nil {
					t.Fatal(err)
				}
			}
			var dbName string
			if err := admin.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
				t.Fatal(err)
			}
			role := fmt.Sprintf("privs_%d", i)
			if _, err := admin.Exec(ctx, `CREATE ROLE `+role+` LOGIN`); err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.setup {
				if _, err := admin.Exec(ctx, strings.NewReplacer("{role}", role, "{db}", dbName).Replace(q)); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			err := CheckBackendRole(ctx, connectAs(t, dsn, role))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckBackendRole = %v, want nil", err)
				}
				return
			}
			want := strings.ReplaceAll(tc.want, "{role}", role)
			var pe *PrivilegedBackendError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckBackendRole = %v, want a *PrivilegedBackendError", err)
			}
			if pe.Role != role || !strings.Contains(strings.Join(pe.Reasons, "; "), want) {
				t.Fatalf("refused role %q for %q, want role %q for %q", pe.Role, pe.Reasons, role, want)
			}
			if tc.name == "superuser" && len(pe.Reasons) != 1 {
				// A superuser is a member of every role; listing them
				// all would bury the one reason that matters.
				t.Errorf("a superuser is refused for %q, want only that it is one", pe.Reasons)
			}
			msg := err.Error()
			for _, part := range []string{`backend role "` + role + `" `, want, "--allow-privileged-backend", `README "Security model"`} {
				if !strings.Contains(msg, part) {
					t.Errorf("message %q does not say %q", msg, part)
				}
			}
		})
	}
}

// A tenant that made search_path its role's default cannot hide anything
// from the check: it runs with the catalog first.
func TestCheckBackendRoleIgnoresRoleSearchPath(t *testing.T) {
	ctx := testContext(t)
	dsn := newDatabase(t)
	admin := connectAs(t, dsn, "postgres")
	if err := EnsureRegistry(ctx, admin); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE ROLE privs_path LOGIN CREATEDB`,
		`CREATE SCHEMA evil`,
		// An equality that is never true would hide every row of the check
		// if it were found before the catalog's.
		`CREATE FUNCTION evil.never(name, name) RETURNS boolean LANGUAGE sql AS 'SELECT false'`,
		`CREATE OPERATOR evil.= (FUNCTION = evil.never, LEFTARG = name, RIGHTARG = name)`,
		`ALTER ROLE privs_path SET search_path = evil, pg_catalog`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var pe *PrivilegedBackendError
	if err := CheckBackendRole(ctx, connectAs(t, dsn, "privs_path")); !errors.As(err, &pe) || !strings.Contains(err.Error(), "has CREATEDB") {
		t.Fatalf("CheckBackendRole = %v, want CREATEDB named", err)
	}
}
