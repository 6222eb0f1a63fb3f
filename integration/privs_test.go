package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

// The production setup of the README ("Production setup (registry and pool
// roles)"), made once in a database of its own: an admin role that owns
// the registry and creates tenants, and a pool role, no superuser, that
// runs tenant traffic and owns nothing of the registry.
const (
	recipeDB    = "pgtenant_recipe"
	recipeAdmin = "pgtenant_admin"
	recipePool  = "pgtenant_pool"
)

// recipeSuperuserSQL is what the README has a superuser run once, word for
// word but for the passwords (the test cluster trusts loopback).
const recipeSuperuserSQL = `
CREATE ROLE pgtenant_admin LOGIN;
CREATE ROLE pgtenant_pool LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT CREATE ON DATABASE pgtenant_recipe TO pgtenant_admin;
CREATE SCHEMA pgtenant AUTHORIZATION pgtenant_admin;
CREATE OR REPLACE FUNCTION pgtenant.user_secret(p_user text)
RETURNS TABLE (rolname text, rolpassword text)
LANGUAGE sql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.rolname::text,
           CASE WHEN a.rolvaliduntil < now() THEN NULL ELSE a.rolpassword END
      FROM pg_catalog.pg_authid a
     WHERE a.rolname = p_user AND a.rolcanlogin AND NOT a.rolsuper
$$;
REVOKE ALL ON FUNCTION pgtenant.user_secret(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.user_secret(text) TO pgtenant_admin;
`

var (
	recipeOnce sync.Once
	recipeErr  error
)

// recipe makes the production setup, once per run.
func recipe(t testing.TB) {
	t.Helper()
	recipeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if recipeErr = pg.CreateDatabase(ctx, recipeDB); recipeErr != nil {
			return
		}
		conn, err := pgx.Connect(ctx, pg.DSN(recipeDB))
		if err != nil {
			recipeErr = err
			return
		}
		defer conn.Close(context.Background())
		_, recipeErr = conn.Exec(ctx, recipeSuperuserSQL)
	})
	if recipeErr != nil {
		t.Fatalf("production setup: %v", recipeErr)
	}
}

// recipeDSN is the recipe database's DSN for role.
func recipeDSN(role string) string { return pg.DSN(recipeDB) + " user=" + role }

// withRecipe runs pgtenant as the README's production setup does: tenant
// traffic as the pool role, the registry through the admin role, and no
// opt-out of the role check.
func withRecipe(c *config.Config) {
	c.Backend = recipeDSN(recipePool)
	c.Registry = recipeDSN(recipeAdmin)
	c.AllowPrivilegedBackend = false
}

// recipeTenant creates a tenant as the admin role, as `pgtenant tenant
// create NAME --pool-role pgtenant_pool` does, and runs setupSQL in its
// schema as the admin.
func recipeTenant(t testing.TB, name string, setupSQL ...string) {
	t.Helper()
	recipe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, recipeDSN(recipeAdmin))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, _, err := router.CreateTenant(ctx, admin, name, "", router.PoolRole(recipePool)); err != nil {
		t.Fatalf("create tenant %s as the admin: %v", name, err)
	}
	if _, err := admin.Exec(ctx, "SET search_path TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	for _, q := range setupSQL {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("tenant %s setup %q: %v", name, q, err)
		}
	}
}

// recipeSuperuser connects to the recipe database as the superuser, to
// check what really happened.
func recipeSuperuser(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN(recipeDB))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// A tenant's client, in the production setup, can neither write the
// registry nor replace the auth function: PostgreSQL refuses it (42501),
// also from a DO block. Its own work runs, and a user looked up by the auth
// query, which runs as the admin, logs in.
func TestPrivsRecipeClosesRegistry(t *testing.T) {
	recipeTenant(t, "pv_acme", `CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)`)
	recipeTenant(t, "pv_globex", `CREATE TABLE IF NOT EXISTS secrets (id serial PRIMARY KEY, secret text)`)
	su := recipeSuperuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := su.Exec(ctx, `DROP ROLE IF EXISTS pv_alice; CREATE ROLE pv_alice LOGIN PASSWORD 'alice-secret'`); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, withRecipe, func(c *config.Config) {
		c.AuthQuery = `SELECT rolname, rolpassword FROM pgtenant.user_secret($1)`
		c.TenantAccess = config.AccessAll
	})
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=pv_alice password=alice-secret dbname=pv_acme sslmode=disable",
		p.Host, p.Port))
	if err != nil {
		t.Fatalf("alice through the auth query: %v", err)
	}
	defer conn.Close(context.Background())

	for _, q := range []string{
		`INSERT INTO orders (item) VALUES ('anvil')`,
		`CREATE TABLE IF NOT EXISTS pv_mine (id int)`,
		`SELECT count(*) FROM orders`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("the tenant's own work %q: %v", q, err)
		}
	}
	for _, q := range []string{
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('pv_alice', NULL)`,
		`UPDATE pgtenant.tenants SET schema_name = 'pv_acme' WHERE name = 'pv_globex'`,
		`INSERT INTO pgtenant.tenants (name, schema_name) VALUES ('pv_evil', 'pv_acme')`,
		`DELETE FROM pgtenant.tenant_users`,
		`UPDATE pgtenant.tenant_users SET tenant = NULL`,
		`CREATE OR REPLACE FUNCTION pgtenant.user_secret(p_user text)
		 RETURNS TABLE (rolname text, rolpassword text) LANGUAGE sql AS $$ SELECT p_user, 'forged' $$`,
		`DO $$ BEGIN INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('pv_alice', NULL); END $$`,
		`DO $$ BEGIN UPDATE pgtenant.tenants SET schema_name = 'pv_acme' WHERE name = 'pv_globex'; END $$`,
	} {
		_, err := conn.Exec(ctx, q)
		if sqlState(err) != "42501" {
			t.Errorf("%s\n= %v, want SQLSTATE 42501", q, err)
		}
	}
	var grants, moved int
	if err := su.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgtenant.tenant_users),
		(SELECT count(*) FROM pgtenant.tenants WHERE name = 'pv_globex' AND schema_name <> 'pv_globex')`).Scan(&grants, &moved); err != nil {
		t.Fatal(err)
	}
	if grants != 0 || moved != 0 {
		t.Errorf("registry changed: %d grants, %d tenants moved", grants, moved)
	}
	var src string
	if err := su.QueryRow(ctx, `SELECT prosrc FROM pg_proc WHERE oid = 'pgtenant.user_secret(text)'::regprocedure`).Scan(&src); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(src, "forged") {
		t.Error("pgtenant.user_secret was replaced")
	}
}

// runExpectingRefusal runs pgtenant with cfg and returns what RunListener
// returned; it fails the test if pgtenant serves for a minute.
func runExpectingRefusal(t *testing.T, cfg config.Config) error {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = proxy.RunListener(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if ctx.Err() != nil {
		t.Fatalf("pgtenant served with backend %q until the test gave up (%v)", cfg.Backend, err)
	}
	return err
}

// serve refuses to start when tenant traffic would run as a role that can
// do what no tenant may, and says which attribute. The registry is the
// recipe's, read as the admin.
func TestPrivsServeRefusesPrivilegedBackend(t *testing.T) {
	recipe(t)
	su := recipeSuperuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cases := []struct {
		name  string
		setup string // as the superuser; {role} is the role
		db    string // the backend's database; default the recipe's
		want  string
	}{
		{"superuser", `ALTER ROLE {role} SUPERUSER`, "", "is a superuser"},
		{"createrole", `ALTER ROLE {role} CREATEROLE`, "", "has CREATEROLE"},
		{"createdb", `ALTER ROLE {role} CREATEDB`, "", "has CREATEDB"},
		{"replication", `ALTER ROLE {role} REPLICATION`, "", "has REPLICATION"},
		{"bypassrls", `ALTER ROLE {role} BYPASSRLS`, "", "has BYPASSRLS"},
		{"database owner", `CREATE DATABASE pv_owned_db OWNER {role}`, "pv_owned_db", `owns database pv_owned_db`},
		{"registry writer", `GRANT USAGE ON SCHEMA pgtenant TO {role}; GRANT INSERT ON pgtenant.tenant_users TO {role}`, "",
			"can write pgtenant.tenant_users"},
		{"registry owner's member", `GRANT pgtenant_admin TO {role}`, "", "can SET ROLE to pgtenant_admin, which owns schema pgtenant"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role := fmt.Sprintf("pv_priv_%d", i)
			if _, err := su.Exec(ctx, `DROP DATABASE IF EXISTS pv_owned_db`); err != nil {
				t.Fatal(err)
			}
			if _, err := su.Exec(ctx, `DROP ROLE IF EXISTS `+role+`; CREATE ROLE `+role+` LOGIN`); err != nil {
				t.Fatal(err)
			}
			if _, err := su.Exec(ctx, strings.ReplaceAll(tc.setup, "{role}", role)); err != nil {
				t.Fatal(err)
			}
			db := recipeDB
			if tc.db != "" {
				db = tc.db
			}
			cfg := config.Default()
			withRecipe(&cfg)
			cfg.Backend = pg.DSN(db) + " user=" + role
			err := runExpectingRefusal(t, cfg)
			var pe *router.PrivilegedBackendError
			if !errors.As(err, &pe) {
				t.Fatalf("RunListener = %v, want a *router.PrivilegedBackendError", err)
			}
			for _, part := range []string{`backend role "` + role + `" `, tc.want, "--allow-privileged-backend"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("refusal %q does not say %q", err, part)
				}
			}
		})
	}
	// The opt-out serves, and says what it lets through.
	t.Run("allowed", func(t *testing.T) {
		p := startProxy(t) // the superuser, with AllowPrivilegedBackend
		createTenant(t, "pv_allowed")
		if out, err := p.Psql(t, "pv_allowed", "-c", "select 1"); err != nil || out != "1" {
			t.Fatalf("psql = %q, %v", out, err)
		}
		if logs := p.Logs(); !strings.Contains(logs, "--allow-privileged-backend") || !strings.Contains(logs, "is a superuser") {
			t.Errorf("no warning naming the superuser in:\n%s", logs)
		}
	})
}

// A tenant that writes settings of the pool's role (ALTER ROLE CURRENT_USER
// SET, from a DO block) reaches no other tenant: the next new backend finds
// them, removes them, says so, and is never used with them.
func TestPrivsRoleSettingsNeverReachAnotherTenant(t *testing.T) {
	recipeTenant(t, "pv_acme")
	recipeTenant(t, "pv_globex", `CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text)`)
	su := recipeSuperuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() {
		_, _ = su.Exec(context.Background(), `ALTER ROLE pgtenant_pool RESET ALL; ALTER ROLE pgtenant_pool IN DATABASE pgtenant_recipe RESET ALL`)
	})
	roleSettings := func() int {
		var n int
		if err := su.QueryRow(ctx, `SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig)
			WHERE s.setrole = 'pgtenant_pool'::regrole`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	p1 := startProxy(t, withRecipe)
	acme := p1.Connect(t, "pv_acme", pgx.QueryExecModeSimpleProtocol)
	if _, err := acme.Exec(ctx, `DO $$ BEGIN
		EXECUTE 'ALTER ROLE CURRENT_USER SET search_path = pv_acme, pg_catalog';
		EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET default_transaction_read_only = on', current_database());
	END $$`); err != nil {
		t.Fatalf("the tenant's ALTER ROLE: %v", err)
	}
	if n := roleSettings(); n != 2 {
		t.Fatalf("after the tenant's ALTER ROLE the pool role has %d settings, want 2", n)
	}

	// A fresh pgtenant dials new backends: globex's client gets one.
	p2 := startProxy(t, withRecipe)
	globex := p2.Connect(t, "pv_globex", pgx.QueryExecModeSimpleProtocol)
	var readOnly string
	if err := globex.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&readOnly); err != nil {
		t.Fatal(err)
	}
	if readOnly != "off" {
		t.Errorf("globex's backend has default_transaction_read_only = %s", readOnly)
	}
	if _, err := globex.Exec(ctx, `INSERT INTO items (name) VALUES ('stapler')`); err != nil {
		t.Errorf("globex's insert: %v", err)
	}
	// RESET ALL goes back to the login values: nothing of acme's is there.
	var path string
	if err := globex.QueryRow(ctx, `SELECT reset_val FROM pg_settings WHERE name = 'search_path'`).Scan(&path); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(path, "pv_acme") {
		t.Errorf("globex's backend would reset search_path to acme's: %q", path)
	}
	if n := roleSettings(); n != 0 {
		t.Errorf("the pool role still has %d settings", n)
	}
	logs := p2.Logs()
	for _, want := range []string{"removed a setting of the pool's role", "setting=search_path", "setting=default_transaction_read_only"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// A setting of the database, which the pool's role cannot remove, makes
// pgtenant refuse the new backend and log what to run.
func TestPrivsDatabaseSettingRefusesBackend(t *testing.T) {
	recipeTenant(t, "pv_acme")
	su := recipeSuperuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := su.Exec(ctx, `ALTER DATABASE pgtenant_recipe SET work_mem = '8MB'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = su.Exec(context.Background(), `ALTER DATABASE pgtenant_recipe RESET work_mem`) })
	p := startProxy(t, withRecipe, func(c *config.Config) { c.QueryWaitTimeout = 3 * time.Second })
	out, err := p.Psql(t, "pv_acme", "-c", "select 1")
	if err == nil {
		t.Fatalf("psql succeeded (%q) on a backend with a database setting", out)
	}
	logs := p.Logs()
	for _, want := range []string{"refusing a backend connection", `setting \"work_mem\" of database \"pgtenant_recipe\"`, "ALTER DATABASE"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}
