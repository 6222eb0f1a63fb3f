package router

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// createRole creates a role for the calling test and drops it when the
// test ends. Roles belong to the cluster, not to the test's database, so
// each test uses names no other test uses.
func createRole(t *testing.T, db DB, name string) {
	t.Helper()
	role := pgx.Identifier{name}.Sanitize()
	if _, err := db.Exec(testContext(t), `CREATE ROLE `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(testContext(t), `DROP ROLE IF EXISTS `+role); err != nil {
			t.Error(err)
		}
	})
}

// A tenant whose schema has a role's name is refused: "$user", the first
// entry of PostgreSQL's default search_path, expands to the current role's
// name, so every client that RESETs search_path while running as that role
// (the pool's role, in the common case) would find the tenant's tables.
func TestCreateTenantRefusesRoleNamedSchema(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	createRole(t, db, "rt_collide")

	refused := []struct{ name, schema, role string }{
		// The role the pool logs in as (the test cluster's superuser):
		// the case of issue 17.
		{pg.User, "", pg.User},
		{"rt_collide", "", "rt_collide"},
		{"acme", "rt_collide", "rt_collide"}, // named by --schema
	}
	for _, c := range refused {
		_, created, err := CreateTenant(ctx, db, c.name, c.schema)
		var collision *RoleNamedSchemaError
		if !errors.As(err, &collision) || created {
			t.Fatalf("CreateTenant(%q, %q) = created=%v, %v; want a *RoleNamedSchemaError", c.name, c.schema, created, err)
		}
		schema := c.role
		if collision.Schema != schema || collision.Role != c.role {
			t.Fatalf("CreateTenant(%q, %q): error names schema %q and role %q, want %q and %q",
				c.name, c.schema, collision.Schema, collision.Role, schema, c.role)
		}
		want := `schema "` + schema + `" has the name of role "` + c.role +
			`": "$user" in a search_path would reach it; choose another name`
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("CreateTenant(%q, %q) error %q does not say %q", c.name, c.schema, err, want)
		}
		if schemaExists(t, db, schema) {
			t.Fatalf("a refused CreateTenant(%q, %q) created schema %q", c.name, c.schema, schema)
		}
		if _, err := reg.LookupTenant(ctx, c.name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused CreateTenant(%q, %q) registered the tenant: %v", c.name, c.schema, err)
		}
	}

	// A normal name still works. A tenant may be called like a role when
	// its schema is not: "$user" names a schema, never a tenant.
	for _, c := range []struct{ name, schema string }{{"acme", ""}, {"rt_collide", "rt_collide_data"}} {
		got, created, err := CreateTenant(ctx, db, c.name, c.schema)
		if err != nil || !created {
			t.Fatalf("CreateTenant(%q, %q) = %+v, created=%v, %v; want it created", c.name, c.schema, got, created, err)
		}
	}
	tenants, err := ListTenants(ctx, db)
	want := []Tenant{{"acme", "acme", true, DefaultBackend}, {"rt_collide", "rt_collide_data", true, DefaultBackend}}
	if err != nil || !slices.Equal(tenants, want) {
		t.Fatalf("ListTenants = %+v, %v; want %+v", tenants, err, want)
	}
}

// A role created after its tenant cannot be refused by CreateTenant;
// RoleNamedSchemas finds such tenants, for the proxy to warn of at start.
func TestRoleNamedSchemas(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()

	// No registry yet: nothing to report, and no error.
	if got, err := reg.RoleNamedSchemas(ctx); err != nil || len(got) != 0 {
		t.Fatalf("RoleNamedSchemas without a registry = %+v, %v; want none, nil", got, err)
	}
	mustCreate(t, db, "acme")
	for _, c := range []struct{ name, schema string }{{"globex", "globex_s"}, {"initech", "rt_late"}, {"hooli", "rt_late_off"}} {
		if _, _, err := CreateTenant(ctx, db, c.name, c.schema); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := reg.RoleNamedSchemas(ctx); err != nil || len(got) != 0 {
		t.Fatalf("RoleNamedSchemas before any colliding role = %+v, %v; want none", got, err)
	}

	createRole(t, db, "rt_late")
	createRole(t, db, "rt_late_off")
	createRole(t, db, "globex") // a tenant's name, not its schema: harmless
	// A disabled tenant is reported too: enabling it needs no new check.
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenants SET active = false WHERE name = 'hooli'`); err != nil {
		t.Fatal(err)
	}
	got, err := reg.RoleNamedSchemas(ctx)
	want := []Tenant{{"hooli", "rt_late_off", false, DefaultBackend}, {"initech", "rt_late", true, DefaultBackend}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("RoleNamedSchemas = %+v, %v; want %+v", got, err, want)
	}
}
