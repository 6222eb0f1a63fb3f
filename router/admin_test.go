package router

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// grantRows is ListGrants without the times, "user:tenant" each.
func grantRows(t *testing.T, db DB) []string {
	t.Helper()
	grants, err := ListGrants(testContext(t), db)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, g := range grants {
		if g.GrantedAt.IsZero() {
			t.Fatalf("grant %+v has no time", g)
		}
		rows = append(rows, g.User+":"+g.Tenant)
	}
	return rows
}

func mustCreate(t *testing.T, db DB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, _, err := CreateTenant(testContext(t), db, n, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGrantTenant(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()

	// Before any registry: no grants, and nobody is granted anything.
	if rows := grantRows(t, db); len(rows) != 0 {
		t.Fatalf("ListGrants without a registry = %v", rows)
	}
	if g, err := reg.LookupGrants(ctx, "alice"); err != nil || g.All || len(g.Tenants) != 0 {
		t.Fatalf("LookupGrants without a registry = %+v, %v; want none, nil", g, err)
	}
	var unknown *UnknownTenantError
	if _, err := GrantTenant(ctx, db, "acme", "alice"); !errors.As(err, &unknown) || unknown.Name != "acme" {
		t.Fatalf("GrantTenant of a tenant that does not exist = %v, want *UnknownTenantError", err)
	}

	mustCreate(t, db, "acme", "globex", "initech")
	steps := []struct {
		tenant, user string
		created      bool
	}{
		{"acme", "alice", true},
		{"acme", "alice", false}, // twice is harmless
		{"globex", "alice", true},
		{"globex", "bob", true},
		{AllTenants, "root", true},
		{AllTenants, "root", false},
		{"acme", "root", true}, // beside *, kept apart from it
		{"acme", "Alice", true},
		{"acme", "o'brien \"q\"", true}, // user names are data
	}
	for _, s := range steps {
		created, err := GrantTenant(ctx, db, s.tenant, s.user)
		if err != nil || created != s.created {
			t.Fatalf("GrantTenant(%q, %q) = %v, %v; want created=%v", s.tenant, s.user, created, err, s.created)
		}
	}
	want := []string{"Alice:acme", "alice:acme", "alice:globex", "bob:globex", "o'brien \"q\":acme", "root:*", "root:acme"}
	if rows := grantRows(t, db); !slices.Equal(rows, want) {
		t.Fatalf("ListGrants = %q, want %q", rows, want)
	}

	lookups := map[string]UserGrants{
		"alice":   {Tenants: []string{"acme", "globex"}},
		"root":    {All: true, Tenants: []string{"acme"}},
		"nobody":  {},
		"ALICE":   {},
		"alice' ": {},
	}
	for user, w := range lookups {
		g, err := reg.LookupGrants(ctx, user)
		if err != nil || g.All != w.All || !slices.Equal(g.Tenants, w.Tenants) {
			t.Fatalf("LookupGrants(%q) = %+v, %v; want %+v", user, g, err, w)
		}
	}

	if _, err := GrantTenant(ctx, db, "nope", "alice"); !errors.As(err, &unknown) ||
		!strings.Contains(err.Error(), `tenant "nope" does not exist`) {
		t.Fatalf("GrantTenant(nope) = %v, want an error saying tenant \"nope\" does not exist", err)
	}
	// A grant names the tenant, not one of its aliases.
	if err := AddTenantAlias(ctx, db, "acme_co", "acme"); err != nil {
		t.Fatal(err)
	}
	_, err := GrantTenant(ctx, db, "acme_co", "alice")
	if err == nil || !strings.Contains(err.Error(), `"acme_co" is an alias of tenant "acme"`) {
		t.Fatalf("GrantTenant(alias) = %v, want an error naming the tenant", err)
	}

	// Revoke: as granted, one grant at a time.
	revokes := []struct {
		tenant, user string
		removed      bool
	}{
		{"acme", "alice", true},
		{"acme", "alice", false},
		{"acme", "nobody", false},
		{"nope", "alice", false}, // nothing to revoke is not an error
		{AllTenants, "root", true},
		{AllTenants, "root", false},
	}
	for _, r := range revokes {
		removed, err := RevokeTenant(ctx, db, r.tenant, r.user)
		if err != nil || removed != r.removed {
			t.Fatalf("RevokeTenant(%q, %q) = %v, %v; want removed=%v", r.tenant, r.user, removed, err, r.removed)
		}
	}
	want = []string{"Alice:acme", "alice:globex", "bob:globex", "o'brien \"q\":acme", "root:acme"}
	if rows := grantRows(t, db); !slices.Equal(rows, want) {
		t.Fatalf("ListGrants after revokes = %q, want %q", rows, want)
	}

	// Renaming a tenant carries its grants; deleting it takes them along.
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenants SET name = 'globex2' WHERE name = 'globex'`); err != nil {
		t.Fatal(err)
	}
	if g, err := reg.LookupGrants(ctx, "bob"); err != nil || !slices.Equal(g.Tenants, []string{"globex2"}) {
		t.Fatalf("LookupGrants(bob) after renaming globex = %+v, %v; want globex2", g, err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = 'globex2'`); err != nil {
		t.Fatal(err)
	}
	want = []string{"Alice:acme", "o'brien \"q\":acme", "root:acme"}
	if rows := grantRows(t, db); !slices.Equal(rows, want) {
		t.Fatalf("ListGrants after deleting globex2 = %q, want %q", rows, want)
	}

	// The table itself refuses what the admin functions would: a second
	// grant of every tenant, or of one tenant, written by hand.
	if _, err := GrantTenant(ctx, db, AllTenants, "root"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('root', NULL)`,
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('root', 'acme')`,
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('', 'acme')`,
		`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('eve', 'nope')`,
	} {
		if _, err := db.Exec(ctx, q); err == nil {
			t.Fatalf("%s: accepted", q)
		}
	}
}

func TestGrantRejectsBadArguments(t *testing.T) {
	tests := []struct {
		tenant, user string
		want         string
	}{
		{"acme", "", `invalid user name "": it is empty`},
		{"acme", strings.Repeat("u", 64), `at most 63`},
		{"acme", "al\x00ice", `control character`},
		{"acme", "al\nice", `control character`},
		{"acme", "\xff", `not valid UTF-8`},
		{"Acme", "alice", `invalid tenant name "Acme"`},
		{"", "alice", `invalid tenant name ""`},
		{"**", "alice", `invalid tenant name "**"`},
	}
	for _, tt := range tests {
		for name, f := range map[string]func(context.Context, DB, string, string) (bool, error){
			"GrantTenant": GrantTenant, "RevokeTenant": RevokeTenant,
		} {
			ok, err := f(context.Background(), untouchableDB{t}, tt.tenant, tt.user)
			var inv *InvalidNameError
			if !errors.As(err, &inv) || ok || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s(%q, %q) = %v, %v; want *InvalidNameError containing %q", name, tt.tenant, tt.user, ok, err, tt.want)
			}
		}
	}
	for _, ok := range []string{"alice", "o'brien", "ünïcode", "a b", strings.Repeat("u", 63), "*"} {
		if err := ValidateUserName(ok); err != nil {
			t.Errorf("ValidateUserName(%q) = %v, want nil", ok, err)
		}
	}
}

func TestAliases(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	if aliases, err := ListAliases(ctx, db); err != nil || len(aliases) != 0 {
		t.Fatalf("ListAliases without a registry = %v, %v", aliases, err)
	}
	var unknown *UnknownTenantError
	if err := AddTenantAlias(ctx, db, "acme_co", "acme"); !errors.As(err, &unknown) {
		t.Fatalf("AddTenantAlias for a tenant that does not exist = %v, want *UnknownTenantError", err)
	}
	mustCreate(t, db, "acme", "globex")

	for _, a := range []string{"acme_co", "acme.example.com", "acme_co", "9acme"} {
		if err := AddTenantAlias(ctx, db, a, "acme"); err != nil {
			t.Fatalf("AddTenantAlias(%s, acme): %v", a, err)
		}
	}
	if err := AddTenantAlias(ctx, db, "gx", "globex"); err != nil {
		t.Fatal(err)
	}
	acmeT := Tenant{Name: "acme", Schema: "acme", Active: true, Backend: DefaultBackend}
	for _, name := range []string{"acme", "acme_co", "acme.example.com", "9acme"} {
		got, err := reg.LookupTenant(ctx, name)
		if err != nil || got != acmeT {
			t.Fatalf("LookupTenant(%q) = %+v, %v; want %+v", name, got, err, acmeT)
		}
	}
	if got, err := reg.LookupTenant(ctx, "gx"); err != nil || got.Name != "globex" {
		t.Fatalf("LookupTenant(gx) = %+v, %v; want globex", got, err)
	}

	conflicts := []struct {
		alias, tenant string
		want          string
	}{
		{"globex", "acme", `"globex" is the name of a tenant`},
		{"acme", "acme", `"acme" is the name of a tenant`},
		{"acme_co", "globex", `alias "acme_co" already names tenant "acme"; remove it first`},
		{"x", "acme_co", `"acme_co" is an alias of tenant "acme"`},
	}
	for _, c := range conflicts {
		err := AddTenantAlias(ctx, db, c.alias, c.tenant)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("AddTenantAlias(%q, %q) = %v, want an error containing %q", c.alias, c.tenant, err, c.want)
		}
	}
	// And the other way round: a tenant may not take an alias's name.
	_, created, err := CreateTenant(ctx, db, "acme_co", "")
	if err == nil || created || !strings.Contains(err.Error(), `"acme_co" is already an alias of tenant "acme"`) {
		t.Fatalf("CreateTenant(acme_co) = created=%v, %v; want a refusal naming the alias", created, err)
	}
	if schemaExists(t, db, "acme_co") {
		t.Fatal("a refused CreateTenant left its schema behind")
	}

	list := func() []string {
		t.Helper()
		aliases, err := ListAliases(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range aliases {
			if a.CreatedAt.IsZero() {
				t.Fatalf("alias %+v has no time", a)
			}
			out = append(out, a.Alias+">"+a.Tenant)
		}
		return out
	}
	if got, want := list(), []string{"9acme>acme", "acme.example.com>acme", "acme_co>acme", "gx>globex"}; !slices.Equal(got, want) {
		t.Fatalf("ListAliases = %q, want %q", got, want)
	}

	removed, err := RemoveTenantAlias(ctx, db, "9acme")
	if err != nil || !removed {
		t.Fatalf("RemoveTenantAlias(9acme) = %v, %v", removed, err)
	}
	if removed, err := RemoveTenantAlias(ctx, db, "9acme"); err != nil || removed {
		t.Fatalf("second RemoveTenantAlias(9acme) = %v, %v; want false, nil", removed, err)
	}
	if _, err := reg.LookupTenant(ctx, "9acme"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant of a removed alias = %v, want ErrNotFound", err)
	}

	// An alias follows its tenant through a rename and goes with it.
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenants SET name = 'acme2' WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.LookupTenant(ctx, "acme_co"); err != nil || got.Name != "acme2" {
		t.Fatalf("LookupTenant(acme_co) after the rename = %+v, %v; want acme2", got, err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = 'acme2'`); err != nil {
		t.Fatal(err)
	}
	if got, want := list(), []string{"gx>globex"}; !slices.Equal(got, want) {
		t.Fatalf("ListAliases after deleting acme2 = %q, want %q", got, want)
	}

	// Should a hand-made alias meet a tenant's name, the tenant wins.
	if _, err := db.Exec(ctx, `INSERT INTO pgtenant.tenant_aliases (alias, tenant) VALUES ('globex2', 'globex')`); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "initech")
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenant_aliases SET alias = 'initech' WHERE alias = 'globex2'`); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.LookupTenant(ctx, "initech"); err != nil || got.Name != "initech" {
		t.Fatalf("LookupTenant(initech), also a hand-made alias of globex = %+v, %v; want initech", got, err)
	}
}

func TestAliasRejectsBadNames(t *testing.T) {
	for _, bad := range []string{"", "Acme", "-acme", ".acme", "ac me", "acme:1", "user:alice", "ac'me", "acme\x00",
		"ácme", strings.Repeat("a", 254)} {
		if err := AddTenantAlias(context.Background(), untouchableDB{t}, bad, "acme"); err == nil {
			t.Errorf("AddTenantAlias(%q) accepted", bad)
		}
		removed, err := RemoveTenantAlias(context.Background(), untouchableDB{t}, bad)
		var inv *InvalidNameError
		if !errors.As(err, &inv) || removed {
			t.Errorf("RemoveTenantAlias(%q) = %v, %v; want *InvalidNameError", bad, removed, err)
		}
	}
	if err := AddTenantAlias(context.Background(), untouchableDB{t}, "acme_co", "Acme"); err == nil {
		t.Error("AddTenantAlias to an invalid tenant name accepted")
	}
	for _, ok := range []string{"a", "9", "acme_co", "acme-co", "acme.example.com", strings.Repeat("a", 253)} {
		if err := ValidateAliasName(ok); err != nil {
			t.Errorf("ValidateAliasName(%q) = %v", ok, err)
		}
	}
}

// TestRegistryUpgradeInPlace starts from a registry as the first version
// made it (the tenants table alone), which must keep working for lookups
// and be upgraded, keeping its rows, by the next admin command.
func TestRegistryUpgradeInPlace(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	for _, q := range []string{
		`CREATE SCHEMA pgtenant`,
		`CREATE TABLE pgtenant.tenants (
			name        text        PRIMARY KEY,
			schema_name text        NOT NULL UNIQUE,
			active      boolean     NOT NULL DEFAULT true,
			created_at  timestamptz NOT NULL DEFAULT now()
		)`,
		`CREATE SCHEMA acme`,
		`INSERT INTO pgtenant.tenants (name, schema_name) VALUES ('acme', 'acme')`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	want := Tenant{Name: "acme", Schema: "acme", Active: true, Backend: DefaultBackend}
	if got, err := reg.LookupTenant(ctx, "acme"); err != nil || got != want {
		t.Fatalf("LookupTenant on an old registry = %+v, %v; want %+v", got, err, want)
	}
	if _, err := reg.LookupTenant(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant(nope) on an old registry = %v, want ErrNotFound", err)
	}
	if g, err := reg.LookupGrants(ctx, "alice"); err != nil || g.All || len(g.Tenants) != 0 {
		t.Fatalf("LookupGrants on an old registry = %+v, %v; want none", g, err)
	}
	if a, err := ListAliases(ctx, db); err != nil || len(a) != 0 {
		t.Fatalf("ListAliases on an old registry = %v, %v", a, err)
	}

	if _, err := GrantTenant(ctx, db, "acme", "alice"); err != nil {
		t.Fatalf("GrantTenant on an old registry: %v", err)
	}
	for range 2 {
		if err := EnsureRegistry(ctx, db); err != nil {
			t.Fatalf("EnsureRegistry on an upgraded registry: %v", err)
		}
	}
	if got, err := reg.LookupTenant(ctx, "acme"); err != nil || got != want {
		t.Fatalf("LookupTenant after the upgrade = %+v, %v", got, err)
	}
	if g, err := reg.LookupGrants(ctx, "alice"); err != nil || !slices.Equal(g.Tenants, []string{"acme"}) {
		t.Fatalf("LookupGrants after the upgrade = %+v, %v", g, err)
	}
	// Counted against the tables that have them, so that a table added
	// later with its two triggers keeps the test meaning the same.
	var triggers, tables int
	if err := db.QueryRow(ctx, `SELECT count(*), count(DISTINCT t.tgrelid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'pgtenant' AND t.tgname LIKE 'pgtenant_notify%'`).Scan(&triggers, &tables); err != nil {
		t.Fatal(err)
	}
	if tables < 5 || triggers != 2*tables {
		t.Fatalf("%d notify triggers on %d tables after EnsureRegistry twice, want two on each of at least 5", triggers, tables)
	}
}

// TestRegistryNotifications checks what the triggers announce: every
// change a proxy caches, whoever makes it, under the payloads NotifyChannel
// documents.
func TestRegistryNotifications(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	changes := startWatch(t, reg)
	if got := receive(t, "Watch to start listening", changes); got != "" {
		t.Fatalf("first change = %q, want \"\"", got)
	}
	mustCreate(t, db, "acme", "globex")
	nextChange(t, changes, "acme")
	nextChange(t, changes, "globex")

	// expect runs f and waits for each of want, in any order.
	expect := func(what string, f func() error, want ...string) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		pending := map[string]bool{}
		for _, w := range want {
			pending[w] = true
		}
		deadline := time.After(10 * time.Second)
		for len(pending) > 0 {
			select {
			case got := <-changes:
				delete(pending, got)
			case <-deadline:
				t.Fatalf("%s: no notification of %q within 10s", what, keys(pending))
			}
		}
	}
	exec := func(q string) func() error {
		return func() error { _, err := db.Exec(ctx, q); return err }
	}
	expect("grant", func() error { _, err := GrantTenant(ctx, db, "acme", "alice"); return err }, "user:alice")
	expect("grant *", func() error { _, err := GrantTenant(ctx, db, AllTenants, "root"); return err }, "user:root")
	expect("revoke", func() error { _, err := RevokeTenant(ctx, db, "acme", "alice"); return err }, "user:alice")
	expect("add alias", func() error { return AddTenantAlias(ctx, db, "acme_co", "acme") }, "acme_co")
	expect("grant by hand", exec(`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('bob', 'acme')`), "user:bob")
	// A tenant is cached under its aliases too: disabling it must reach
	// them.
	expect("disable by hand", exec(`UPDATE pgtenant.tenants SET active = false WHERE name = 'acme'`), "acme", "acme_co")
	expect("rename by hand", exec(`UPDATE pgtenant.tenants SET name = 'acme2' WHERE name = 'acme'`),
		"acme", "acme2", "acme_co", "user:bob")
	expect("remove alias", func() error { _, err := RemoveTenantAlias(ctx, db, "acme_co"); return err }, "acme_co")
	if err := AddTenantAlias(ctx, db, "acme_inc", "acme2"); err != nil {
		t.Fatal(err)
	}
	// Deleting a tenant deletes its grants and aliases, and says so.
	expect("delete by hand", exec(`DELETE FROM pgtenant.tenants WHERE name = 'acme2'`), "acme2", "acme_inc", "user:bob")
	expect("truncate", exec(`TRUNCATE pgtenant.tenant_users`), "")
	// A tenant's settings changed: its name, so every proxy rereads them.
	expect("set", func() error { return SetTenantSettings(ctx, db, "globex", map[string]string{"tier": "gold"}) }, "globex")
	expect("unset", func() error { _, err := UnsetTenantSettings(ctx, db, "globex", []string{"tier"}); return err }, "globex")
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestGrantsWithRegistry wires Grants and a Router to a PGRegistry as the
// proxy does, with TTLs far longer than the test, and checks that grants,
// revokes and aliases take effect through NOTIFY alone.
func TestGrantsWithRegistry(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()
	mustCreate(t, db, "acme")
	g := NewGrants(reg, time.Hour, time.Hour)
	r := New(reg, config.TenantFromDatabase, time.Hour, time.Hour)
	changes := startWatch(t, reg)
	forgotten := make(chan string, 100)
	go func() {
		for name := range changes {
			if user, ok := GrantsChangedFor(name); ok {
				g.Forget(user)
			} else if name == "" {
				r.ForgetAll()
				g.ForgetAll()
			} else {
				r.Forget(name)
			}
			forgotten <- name
		}
	}()
	receive(t, "Watch to start listening", forgotten)
	acmeT, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
	if err != nil {
		t.Fatal(err)
	}

	wantDenied(t, g.CheckAccess(ctx, "alice", acmeT), "alice", "acme")
	if _, err := GrantTenant(ctx, db, "acme", "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's grant to be seen", func() bool { return g.CheckAccess(ctx, "alice", acmeT) == nil })
	if _, err := RevokeTenant(ctx, db, "acme", "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's revoke to be seen", func() bool {
		var denied *AccessDeniedError
		return errors.As(g.CheckAccess(ctx, "alice", acmeT), &denied)
	})

	// An alias cached as unknown is found once added, resolves to the
	// tenant's own name, and is unknown again once removed.
	var unknown *UnknownTenantError
	if _, err := r.ResolveTenant(ctx, Startup{Database: "acme_co"}); !errors.As(err, &unknown) {
		t.Fatalf("acme_co before the alias: %v", err)
	}
	if err := AddTenantAlias(ctx, db, "acme_co", "acme"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the alias to be seen", func() bool {
		got, err := r.ResolveTenant(ctx, Startup{Database: "acme_co"})
		return err == nil && got == acmeT
	})
	if _, err := RemoveTenantAlias(ctx, db, "acme_co"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the alias's removal to be seen", func() bool {
		_, err := r.ResolveTenant(ctx, Startup{Database: "acme_co"})
		return errors.As(err, &unknown)
	})
}
