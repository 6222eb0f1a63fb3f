package router

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/auth"
)

func TestTenantRoleName(t *testing.T) {
	if got := TenantRoleName("acme"); got != "pgt_acme" {
		t.Fatalf("TenantRoleName(acme) = %q", got)
	}
	long1 := strings.Repeat("a", 60) + "one"
	long2 := strings.Repeat("a", 60) + "two"
	r1, r2 := TenantRoleName(long1), TenantRoleName(long2)
	if len(r1) != maxIdentLen || len(r2) != maxIdentLen || r1 == r2 || !strings.HasPrefix(r1, "pgt_aaa") {
		t.Fatalf("long names: %q and %q", r1, r2)
	}
	if r := TenantRoleName(strings.Repeat("b", 59)); r != "pgt_"+strings.Repeat("b", 59) {
		t.Fatalf("a name that fits was cut: %q", r)
	}
	if strings.HasPrefix(TenantsGroupRole, tenantRolePrefix) {
		t.Fatal("the group role could be a tenant role")
	}
}

// verifierMatches reports whether role's stored SCRAM verifier is that of
// password.
func verifierMatches(t *testing.T, db DB, role, password string) bool {
	t.Helper()
	var stored string
	if err := db.QueryRow(testContext(t), `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, role).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	v, err := auth.ParseSCRAMVerifier(stored)
	if err != nil {
		t.Fatalf("role %s has no SCRAM verifier (%q): %v", role, stored, err)
	}
	w, err := auth.NewSCRAMVerifier(password, v.Salt, v.Iterations)
	if err != nil {
		t.Fatal(err)
	}
	return w.StoredKey == v.StoredKey && w.ServerKey == v.ServerKey
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// A converted tenant's role owns its schema and every object in it, has
// the password derived from the secret, and can reach nothing of another
// tenant or of the registry: PostgreSQL says 42501.
func TestEnsureTenantRole(t *testing.T) {
	ctx := testContext(t)
	dsn := newDatabase(t)
	reg := openRegistry(t, dsn)
	db := reg.Pool()
	mustCreate(t, db, "rtr_acme", "rtr_globex")
	for _, s := range []string{
		`CREATE TABLE rtr_acme.orders (id serial PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY, note text)`,
		`CREATE TABLE rtr_acme.parts (id int) PARTITION BY RANGE (id)`,
		`CREATE TABLE rtr_acme.parts_1 PARTITION OF rtr_acme.parts FOR VALUES FROM (0) TO (10)`,
		`CREATE SEQUENCE rtr_acme.loose`,
		`CREATE VIEW rtr_acme.v AS SELECT id FROM rtr_acme.orders`,
		`CREATE MATERIALIZED VIEW rtr_acme.mv AS SELECT 1 AS one`,
		`CREATE TYPE rtr_acme.mood AS ENUM ('ok')`,
		`CREATE TYPE rtr_acme.pair AS (a int, b int)`,
		`CREATE TYPE rtr_acme.span AS RANGE (subtype = int4)`,
		`CREATE DOMAIN rtr_acme.pos AS int CHECK (VALUE > 0)`,
		`CREATE FUNCTION rtr_acme.f(a int, b text) RETURNS int LANGUAGE sql AS 'SELECT a'`,
		`CREATE PROCEDURE rtr_acme.p() LANGUAGE sql AS 'SELECT 1'`,
		`CREATE AGGREGATE rtr_acme.agg(int) (sfunc = int4pl, stype = int)`,
		`CREATE TABLE rtr_globex.secrets (s text)`,
		`INSERT INTO rtr_globex.secrets VALUES ('globex only')`,
	} {
		if _, err := db.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	const secret = "router-test-secret-1"
	for _, name := range []string{"rtr_acme", "rtr_globex"} {
		if err := EnsureTenantRole(ctx, db, Tenant{Name: name, Schema: name}, secret); err != nil {
			t.Fatal(err)
		}
	}
	acme := TenantRoleName("rtr_acme")

	var notOwned []string
	rows, err := db.Query(ctx, `
		SELECT 'class ' || relname FROM pg_class WHERE relnamespace = 'rtr_acme'::regnamespace AND relowner <> $1::regrole
		UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'rtr_acme'::regnamespace AND typowner <> $1::regrole
		UNION ALL SELECT 'proc ' || proname FROM pg_proc WHERE pronamespace = 'rtr_acme'::regnamespace AND proowner <> $1::regrole
		UNION ALL SELECT 'schema' FROM pg_namespace WHERE nspname = 'rtr_acme' AND nspowner <> $1::regrole`, acme)
	if err == nil {
		notOwned, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(notOwned) != 0 {
		t.Fatalf("objects of rtr_acme not owned by %s: %v, %v", acme, notOwned, err)
	}

	var attrs string
	err = db.QueryRow(ctx, `SELECT concat_ws(',', rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
		pg_has_role($1, $2, 'MEMBER'), pg_has_role($1, $3, 'USAGE'),
		has_schema_privilege($1, 'rtr_globex', 'USAGE'), has_schema_privilege($1, 'pgtenant', 'USAGE'),
		has_schema_privilege($1, 'public', 'USAGE'), has_database_privilege($1, current_database(), 'CONNECT'),
		has_database_privilege($1, current_database(), 'CREATE'))
		  FROM pg_roles WHERE rolname = $1`,
		acme, TenantsGroupRole, TenantRoleName("rtr_globex")).Scan(&attrs)
	if want := "t,f,f,f,f,f,t,f,f,f,t,t,f"; err != nil || attrs != want {
		t.Fatalf("attributes and rights of %s = %s, %v; want %s", acme, attrs, err, want)
	}
	if !verifierMatches(t, db, acme, auth.TenantRolePassword(secret, acme)) {
		t.Fatal("the stored verifier is not that of the derived password")
	}

	// What the role itself may do, as PostgreSQL sees it (the test
	// cluster trusts every login, so no password is needed here).
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = acme
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{
		`INSERT INTO rtr_acme.orders (note) VALUES ('mine')`,
		`CREATE TABLE rtr_acme.more (x int)`,
		`SELECT rtr_acme.f(1, 'x')`,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("as %s: %s: %v", acme, s, err)
		}
	}
	for _, s := range []string{
		`SELECT * FROM rtr_globex.secrets`,
		`INSERT INTO pgtenant.tenant_users VALUES ('alice', NULL)`,
		`UPDATE pgtenant.tenants SET schema_name = 'rtr_acme'`,
		`CREATE SCHEMA rtr_mine`,
	} {
		if _, err := conn.Exec(ctx, s); sqlState(err) != "42501" {
			t.Fatalf("as %s: %s: %v, want 42501", acme, s, err)
		}
	}

	// Again with a new secret: the rotation. Nothing else changes.
	const secret2 = "router-test-secret-2"
	if err := EnsureTenantRole(ctx, db, Tenant{Name: "rtr_acme"}, secret2); err != nil {
		t.Fatal(err)
	}
	if !verifierMatches(t, db, acme, auth.TenantRolePassword(secret2, acme)) {
		t.Fatal("a second run did not set the new secret's password")
	}
}

func TestEnsureTenantRoleRefuses(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	mustCreate(t, db, "rtr_priv", "rtr_grp")
	const secret = "router-test-secret-1"

	var unknown *UnknownTenantError
	if err := EnsureTenantRole(ctx, db, Tenant{Name: "rtr_nobody"}, secret); !errors.As(err, &unknown) {
		t.Fatalf("a tenant that does not exist: %v", err)
	}
	if err := EnsureTenantRole(ctx, db, Tenant{Name: "rtr_priv"}, ""); err == nil {
		t.Fatal("an empty secret was accepted")
	}
	// A role of that name that is more than a tenant role is someone
	// else's: refused, not demoted.
	if _, err := db.Exec(ctx, `CREATE ROLE `+TenantRoleName("rtr_priv")+` LOGIN CREATEDB`); err != nil {
		t.Fatal(err)
	}
	createRole(t, db, "rtr_other_group")
	if _, err := db.Exec(ctx, `CREATE ROLE `+TenantRoleName("rtr_grp")+` LOGIN IN ROLE rtr_other_group`); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"rtr_priv": "CREATEDB", "rtr_grp": "membership in rtr_other_group"} {
		err := EnsureTenantRole(ctx, db, Tenant{Name: name}, secret)
		var re *TenantRoleError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), want) {
			t.Fatalf("EnsureTenantRole(%s) = %v, want a *TenantRoleError naming %s", name, err, want)
		}
	}
	if _, err := db.Exec(ctx, `DROP ROLE `+TenantRoleName("rtr_grp")); err != nil {
		t.Fatal(err)
	}
}
