package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// aliasLands checks that a client asking for name (as its database) works
// in tenant's schema.
func aliasLands(t *testing.T, p *Proxy, name, tenant string) {
	t.Helper()
	conn := p.Connect(t, name, pgx.QueryExecModeCacheStatement)
	var schema, marker string
	err := conn.QueryRow(context.Background(), `SELECT current_schema(), (SELECT v FROM marker)`).Scan(&schema, &marker)
	if err != nil {
		t.Fatalf("client of %s: %v", name, err)
	}
	if schema != tenant || marker != tenant {
		t.Fatalf("client of %s landed in schema %q (marker %q), want %q", name, schema, marker, tenant)
	}
	conn.Close(context.Background())
}

// aliasConnectErr is the error of connecting with database name, nil when
// it worked.
func aliasConnectErr(p *Proxy, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN(name))
	if err == nil {
		conn.Close(context.Background())
	}
	return err
}

// TestAliasRoutesToTenant: a client using an alias as its database name
// lands in the tenant's schema, an alias added while the proxy runs is
// found although its name was cached as unknown, and a removed alias is
// unknown (3D000) again, all without a restart.
func TestAliasRoutesToTenant(t *testing.T) {
	markedTenant(t, "al_acme")
	markedTenant(t, "al_globex")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := direct(t)
	if err := router.AddTenantAlias(ctx, db, "al_acme_co", "al_acme"); err != nil {
		t.Fatal(err)
	}
	// TTLs far longer than the test: only NOTIFY can make a change count.
	p := startProxy(t, func(c *config.Config) {
		c.TenantCacheTTL = time.Hour
		c.TenantMissTTL = time.Hour
	})

	waitWatching(t, "al_acme", "al-probe", func(name string) error { return aliasConnectErr(p, name) })
	aliasLands(t, p, "al_acme_co", "al_acme")
	aliasLands(t, p, "al_acme", "al_acme")
	out, err := p.Psql(t, "al_acme_co", "-c", "SELECT v FROM marker")
	if err != nil || out != "al_acme" {
		t.Fatalf("psql through the alias: %q, %v; want al_acme", out, err)
	}

	// Unknown first, and cached as such; then added.
	if err := aliasConnectErr(p, "al-globex.example.com"); sqlState(err) != "3D000" {
		t.Fatalf("an alias not yet added: %v, want 3D000", err)
	}
	if err := router.AddTenantAlias(ctx, db, "al-globex.example.com", "al_globex"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new alias to be found", func() bool {
		return aliasConnectErr(p, "al-globex.example.com") == nil
	})
	aliasLands(t, p, "al-globex.example.com", "al_globex")

	removed, err := router.RemoveTenantAlias(ctx, db, "al_acme_co")
	if err != nil || !removed {
		t.Fatalf("RemoveTenantAlias: %v, %v", removed, err)
	}
	eventually(t, 10*time.Second, "the removed alias to be unknown", func() bool {
		return sqlState(aliasConnectErr(p, "al_acme_co")) == "3D000"
	})
	err = aliasConnectErr(p, "al_acme_co")
	if sqlState(err) != "3D000" {
		t.Fatalf("the removed alias: %v, want 3D000", err)
	}
	aliasLands(t, p, "al_acme", "al_acme")
	aliasLands(t, p, "al-globex.example.com", "al_globex")

	// Disabling the tenant reaches the clients of its alias too.
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenants SET active = false WHERE name = 'al_globex'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = direct(t).Exec(ctx, `UPDATE pgtenant.tenants SET active = true WHERE name = 'al_globex'`)
	})
	eventually(t, 10*time.Second, "the alias of a disabled tenant to be refused", func() bool {
		return aliasConnectErr(p, "al-globex.example.com") != nil
	})
	if err := aliasConnectErr(p, "al-globex.example.com"); sqlState(err) != "55000" {
		t.Fatalf("the alias of a disabled tenant: %v, want 55000", err)
	}
}
