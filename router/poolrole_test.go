package router

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// An existing schema that holds something is adopted only when asked; an
// empty one still is, as before.
func TestCreateTenantRefusesNonEmptySchema(t *testing.T) {
	ctx := testContext(t)
	db := connectAs(t, newDatabase(t), "postgres")
	for _, q := range []string{
		`CREATE SCHEMA empty_one`,
		`CREATE SCHEMA billing`,
		`CREATE TABLE billing.invoices (id int)`,
		`CREATE SCHEMA funcs_only`,
		`CREATE FUNCTION funcs_only.f() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, created, err := CreateTenant(ctx, db, "fresh", "empty_one"); err != nil || !created {
		t.Fatalf("CreateTenant on an empty schema = created %v, %v; want created", created, err)
	}
	for _, schema := range []string{"billing", "funcs_only"} {
		_, _, err := CreateTenant(ctx, db, "acme", schema)
		var ne *SchemaNotEmptyError
		if !errors.As(err, &ne) || ne.Schema != schema || ne.Objects == 0 || !strings.Contains(err.Error(), "--adopt-schema") {
			t.Fatalf("CreateTenant(acme, %s) = %v, want a *SchemaNotEmptyError that names --adopt-schema", schema, err)
		}
		if ts, err := ListTenants(ctx, db); err != nil || len(ts) != 1 {
			t.Fatalf("after a refused create the tenants are %v, %v; want only fresh", ts, err)
		}
	}
	got, created, err := CreateTenant(ctx, db, "acme", "billing", AdoptSchema())
	if err != nil || !created || got.Schema != "billing" {
		t.Fatalf("CreateTenant(acme, billing, AdoptSchema) = %+v, %v, %v", got, created, err)
	}
	// Running it again for the same tenant is no adoption.
	if _, created, err := CreateTenant(ctx, db, "acme", "billing"); err != nil || created {
		t.Fatalf("second CreateTenant(acme, billing) = created %v, %v; want nil, not created", created, err)
	}
}

// A recorded pool role can work in every tenant schema, made before or after
// it was recorded, on tables the admin made too, and cannot write the
// registry.
func TestCreateTenantPoolRole(t *testing.T) {
	ctx := testContext(t)
	dsn := newDatabase(t)
	admin := connectAs(t, dsn, "postgres")
	if _, err := admin.Exec(ctx, `CREATE ROLE pool_tenant_traffic LOGIN`); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	if _, _, err := CreateTenant(ctx, admin, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE TABLE acme.orders (id serial PRIMARY KEY, item text)`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CreateTenant(ctx, admin, "globex", "", PoolRole("pool_tenant_traffic")); err != nil {
		t.Fatal(err)
	}
	// Recorded once: initech gets the grants without naming the role.
	if _, _, err := CreateTenant(ctx, admin, "initech", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE TABLE initech.staff (id serial PRIMARY KEY, name text)`); err != nil {
		t.Fatal(err)
	}
	pool := connectAs(t, dsn, "pool_tenant_traffic")
	for _, q := range []string{
		`INSERT INTO acme.orders (item) VALUES ('anvil')`, // made before the role was recorded
		`CREATE TABLE globex.things (id int)`,
		`INSERT INTO initech.staff (name) VALUES ('milton')`, // made by the admin after
		`CREATE TABLE initech.own (id int)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Errorf("as the pool role, %s: %v", q, err)
		}
	}
	for _, q := range []string{
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('mallory', NULL)`,
		`UPDATE pgtenant.tenants SET schema_name = 'globex' WHERE name = 'acme'`,
		`INSERT INTO pgtenant.pool_roles (role_name) VALUES ('mallory')`,
		`DROP SCHEMA acme CASCADE`,
	} {
		_, err := pool.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("as the pool role, %s = %v, want 42501", q, err)
		}
	}
	if err := CheckBackendRole(ctx, pool); err != nil {
		t.Errorf("CheckBackendRole of the pool role = %v, want nil", err)
	}
}
