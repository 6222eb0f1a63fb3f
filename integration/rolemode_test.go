package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// Role mode (--isolation role): each tenant's backends log in as the
// tenant's own role, so PostgreSQL refuses what crosses tenants. These
// tests make the roles with the test's own superuser connection, as
// `pgtenant tenant isolate` would.

const roleSecret = "integration-role-secret-0123456789"

var scramForTenantRoles sync.Once

// requireSCRAMForTenantRoles makes the shared cluster ask tenant roles
// (members of pgtenant_tenants) for a SCRAM-SHA-256 password, where it
// trusts everyone else: role mode's derived passwords are then really
// checked. Only tenant roles are affected, so other tests run on as before.
func requireSCRAMForTenantRoles(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := direct(t)
	// The group must exist for pg_hba's +group to match anyone.
	if err := router.EnsureTenantGroup(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	var failed error
	scramForTenantRoles.Do(func() {
		var path string
		if failed = conn.QueryRow(ctx, `SHOW hba_file`).Scan(&path); failed != nil {
			return
		}
		old, err := os.ReadFile(path)
		if err != nil {
			failed = err
			return
		}
		line := "host all +" + router.TenantsGroupRole + " 127.0.0.1/32 scram-sha-256\n"
		if failed = os.WriteFile(path, append([]byte(line), old...), 0o600); failed != nil {
			return
		}
		_, failed = conn.Exec(ctx, `SELECT pg_reload_conf()`)
	})
	if failed != nil {
		t.Fatalf("require SCRAM for tenant roles: %v", failed)
	}
	// The reload is asynchronous: wait until a tenant role without the
	// password is refused.
	probe := "rmprobe"
	createTenant(t, probe)
	isolate(t, probe)
	eventually(t, 20*time.Second, "pg_hba asks tenant roles for a password", func() bool {
		cfg, err := pgconn.ParseConfig(backendDSN())
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password = router.TenantRoleName(probe), "wrong"
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
			return false
		}
		return sqlState(err) == "28P01"
	})
}

// isolate gives tenants their roles, as `pgtenant tenant isolate` does.
func isolate(t *testing.T, tenants ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := direct(t)
	for _, name := range tenants {
		if err := router.EnsureTenantRole(ctx, conn, router.Tenant{Name: name}, roleSecret); err != nil {
			t.Fatal(err)
		}
	}
}

func roleMode(size int) func(*config.Config) {
	return func(c *config.Config) {
		c.Isolation = config.IsolationRole
		c.RoleSecret = roleSecret
		c.PoolSize = size
	}
}

// backendsByRole counts the client backends of the roles whose names start
// with prefix, by role, as PostgreSQL sees them.
func backendsByRole(t *testing.T, conn *pgx.Conn, prefix string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT usename::text, count(*)::int FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND starts_with(usename::text, $1) GROUP BY 1`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var role string
		var n int
		if err := rows.Scan(&role, &n); err != nil {
			t.Fatal(err)
		}
		got[role] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// In role mode a client of acme can reach nothing of globex's, nor the
// registry: PostgreSQL answers 42501, and hides globex's query texts. A
// client of globex still works, and so do cached prepared statements when
// both tenants share a pool of one (each checkout evicts the other's
// backend).
func TestIsolationRoleModeRefusesCrossTenant(t *testing.T) {
	requireSCRAMForTenantRoles(t)
	acme, globex := "rmx_acme", "rmx_globex"
	createTenant(t, acme, "CREATE TABLE orders (id int PRIMARY KEY, item text)", "INSERT INTO orders VALUES (1, 'anvil')")
	createTenant(t, globex, "CREATE TABLE secrets (s text)", "INSERT INTO secrets VALUES ('globex plans')",
		"CREATE TABLE orders (id int PRIMARY KEY, item text)", "INSERT INTO orders VALUES (1, 'laser'), (2, 'hammock')")
	isolate(t, acme, globex)
	p := startProxy(t, roleMode(2))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := p.Connect(t, acme, pgx.QueryExecModeSimpleProtocol)
	g := p.Connect(t, globex, pgx.QueryExecModeSimpleProtocol)
	var user string
	if err := a.QueryRow(ctx, `SELECT current_user`).Scan(&user); err != nil || user != router.TenantRoleName(acme) {
		t.Fatalf("acme runs as %q, %v; want its role", user, err)
	}

	// globex has a large object, and holds a transaction open (so keeps
	// its backend) with a literal in its query text.
	var loid uint32
	if err := g.QueryRow(ctx, `SELECT lo_from_bytea(0, 'globex blob')`).Scan(&loid); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	var gpid uint32
	if err := g.QueryRow(ctx, `SELECT pg_backend_pid(), 'globex-literal-4711'`).Scan(&gpid, new(string)); err != nil {
		t.Fatal(err)
	}

	for _, q := range []string{
		`SELECT * FROM rmx_globex.secrets`,
		`INSERT INTO rmx_globex.orders VALUES (9, 'stolen')`,
		`INSERT INTO pgtenant.tenant_users VALUES ('alice', NULL)`,
		`UPDATE pgtenant.tenants SET schema_name = 'rmx_acme' WHERE name = 'rmx_globex'`,
		`DELETE FROM pgtenant.tenants`,
		fmt.Sprintf(`SELECT pg_cancel_backend(%d)`, gpid),
		fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, gpid),
		fmt.Sprintf(`SELECT lo_get(%d)`, loid),
		fmt.Sprintf(`SELECT lo_unlink(%d)`, loid),
	} {
		if _, err := a.Exec(ctx, q); sqlState(err) != "42501" {
			t.Errorf("acme: %s: %v, want 42501", q, err)
		}
	}
	// globex's backend is listed, its query text is not.
	var seen, text int
	if err := a.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pid = $1),
		count(*) FILTER (WHERE query LIKE '%' || 'globex-lit' || 'eral' || '%')
		FROM pg_stat_activity`, gpid).Scan(&seen, &text); err != nil {
		t.Fatal(err)
	}
	if seen != 1 || text != 0 {
		t.Fatalf("acme sees globex's backend %d time(s) and its query text %d time(s); want 1 and 0", seen, text)
	}
	// The superuser, by contrast, does see it: the check can fail.
	if err := direct(t).QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || 'globex-lit' || 'eral' || '%'`).Scan(&text); err != nil || text != 1 {
		t.Fatalf("superuser sees globex's query text %d time(s), %v; want 1", text, err)
	}

	// globex is untouched and still works.
	var n int
	var blob []byte
	if err := g.QueryRow(ctx, `SELECT count(*), lo_get($1::oid) FROM secrets`, loid).Scan(&n, &blob); err != nil || n != 1 || string(blob) != "globex blob" {
		t.Fatalf("globex: %d secrets, blob %q, %v", n, blob, err)
	}
	if _, err := g.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	if err := a.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("acme's own orders: %d, %v", n, err)
	}

	// A pool of one shared by both tenants in turn, with pgx's statement
	// cache: every checkout closes the other tenant's backend and logs in
	// as this one's role, and cached statements are prepared again.
	p1 := startProxy(t, roleMode(1))
	ca := p1.Connect(t, acme, pgx.QueryExecModeCacheStatement)
	cg := p1.Connect(t, globex, pgx.QueryExecModeCacheStatement)
	for round := range 4 {
		for _, c := range []struct {
			conn *pgx.Conn
			want int
			role string
		}{{ca, 1, router.TenantRoleName(acme)}, {cg, 2, router.TenantRoleName(globex)}} {
			var got int
			var who string
			if err := c.conn.QueryRow(ctx, `SELECT count(*), current_user FROM orders WHERE id > $1`, 0).Scan(&got, &who); err != nil {
				t.Fatalf("round %d as %s: %v", round, c.role, err)
			}
			if got != c.want || who != c.role {
				t.Fatalf("round %d: %d orders as %s; want %d as %s", round, got, who, c.want, c.role)
			}
		}
	}
}

// The pool keeps one cap across tenant roles, reuses a tenant's own
// backend, and when full closes the least recently used idle backend of
// another tenant, as pg_stat_activity shows.
func TestIsolationRoleModePoolCap(t *testing.T) {
	requireSCRAMForTenantRoles(t)
	names := []string{"rmcap_a", "rmcap_b", "rmcap_c", "rmcap_d"}
	for _, n := range names {
		createTenant(t, n, "CREATE TABLE t (x int)")
	}
	isolate(t, names...)
	p := startProxy(t, roleMode(2))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := direct(t)
	prefix := router.TenantRoleName("rmcap_")
	role := func(n string) string { return router.TenantRoleName(n) }
	expect := func(step string, want map[string]int) {
		t.Helper()
		var got map[string]int
		eventually(t, 20*time.Second, step, func() bool {
			got = backendsByRole(t, admin, prefix)
			total := 0
			for _, n := range got {
				total += n
			}
			if total > 2 {
				return false
			}
			for r, n := range want {
				if got[r] != n {
					return false
				}
			}
			return true
		})
	}
	conns := map[string]*pgx.Conn{}
	for _, n := range names {
		conns[n] = p.Connect(t, n, pgx.QueryExecModeSimpleProtocol)
	}
	run := func(n, q string) {
		t.Helper()
		if _, err := conns[n].Exec(ctx, q); err != nil {
			t.Fatalf("%s: %s: %v", n, q, err)
		}
	}
	run("rmcap_a", "BEGIN") // a holds its backend
	run("rmcap_a", "SELECT 1")
	run("rmcap_b", "SELECT 1") // the second slot
	expect("a and b have a backend each", map[string]int{role("rmcap_a"): 1, role("rmcap_b"): 1})
	run("rmcap_b", "SELECT 2") // b's own idle backend again
	run("rmcap_c", "SELECT 1") // full: b's idle backend goes
	expect("c replaced b", map[string]int{role("rmcap_a"): 1, role("rmcap_b"): 0, role("rmcap_c"): 1})
	run("rmcap_a", "COMMIT") // a is now the most recently used idle backend
	run("rmcap_d", "SELECT 1")
	expect("d replaced c, the least recently used", map[string]int{role("rmcap_a"): 1, role("rmcap_c"): 0, role("rmcap_d"): 1})

	// Every tenant at once, many times over: never more than two
	// backends, and every query answered.
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				var who string
				if err := conns[n].QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != role(n) {
					errs <- fmt.Errorf("%s: ran as %q, %v", n, who, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	expect("at most two backends", nil)
}

// A tenant without a role of its own is refused at connect, with the
// command that fixes it; a proxy whose secret differs from the one the
// roles were made with says so.
func TestIsolationRoleModeRefusesUnconverted(t *testing.T) {
	requireSCRAMForTenantRoles(t)
	createTenant(t, "rmplain")
	createTenant(t, "rmkeyed")
	isolate(t, "rmkeyed")
	p := startProxy(t, roleMode(2))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, p.DSN("rmplain"))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || pe.Severity != "FATAL" ||
		!strings.Contains(pe.Hint, "pgtenant tenant isolate rmplain") {
		t.Fatalf("connect to an unconverted tenant: %v (hint %q); want FATAL 28000 naming `pgtenant tenant isolate rmplain`", err, hintOf(err))
	}
	c, err := pgx.Connect(ctx, p.DSN("rmkeyed"))
	if err != nil {
		t.Fatalf("a converted tenant beside it: %v", err)
	}
	c.Close(ctx)

	wrong := startProxy(t, roleMode(2), func(c *config.Config) { c.RoleSecret = "another-secret-0123456789" })
	_, err = pgx.Connect(ctx, wrong.DSN("rmkeyed"))
	if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Hint, "role secret") {
		t.Fatalf("connect with the wrong secret: %v (hint %q); want 28000 naming the role secret", err, hintOf(err))
	}
}

func hintOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Hint
	}
	return ""
}
