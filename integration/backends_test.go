package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// Several backends (issue 16): a second real cluster stands in for a second
// server. The registry stays on the shared cluster (backend default); the
// second is added as backend bk_eu2. Tenants and the backend are prefixed
// bk_ and removed before and after each test, so that -count=2 passes.

// bkDB is the database of the second cluster that tenants are placed in.
const bkDB = "bk_app"

// startSecondBackend starts a second cluster, with wal_level=logical as a
// move between the two needs, registers it as backend name, and returns
// it. Tenants called like names are removed from the registry, and their
// schemas from the shared cluster, now and when the test ends.
func startSecondBackend(t *testing.T, name string, tenants ...string) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	second := startOwnCluster(ctx, t, pgcluster.Options{Settings: map[string]string{"wal_level": "logical"}}, bkDB)
	clean := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, backendDSN())
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if err := router.EnsureRegistry(ctx, conn); err != nil {
			t.Error(err)
			return
		}
		if _, err := conn.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = ANY($1)`, tenants); err != nil {
			t.Error(err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM pgtenant.backends WHERE name = $1`, name); err != nil {
			t.Error(err)
		}
		for _, n := range tenants {
			if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{n}.Sanitize()+` CASCADE`); err != nil {
				t.Error(err)
			}
		}
	}
	clean()
	t.Cleanup(clean)
	return second
}

// connectTo opens a direct connection to dsn for the test.
func connectTo(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// hasSchema reports whether the database conn is on has schema.
func hasSchema(t *testing.T, conn *pgx.Conn, schema string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// servedBy returns the port of the server a query through conn ran on.
func servedBy(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var port int
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('port')::int`).Scan(&port); err != nil {
		t.Fatalf("query through pgtenant: %v", err)
	}
	return port
}

// TestBackendsCLIAndRouting: the backend commands, a tenant created on the
// second backend (its schema there and only there), and rows written through
// pgtenant landing on the tenant's server, for a tenant on each backend.
func TestBackendsCLIAndRouting(t *testing.T) {
	const backend = "bk_eu2"
	remote, local := "bk_remote", "bk_local"
	second := startSecondBackend(t, backend, remote, local)
	dsn := second.DSN(bkDB)
	ctx := context.Background()

	// A DSN with a password is refused before anything is stored.
	lcRefused(t, "holds a password", "backend", "add", "bk_pw", "postgres://app:hunter2@127.0.0.1:5432/app")
	lcRefused(t, "holds a password", "backend", "add", "bk_pw", "host=127.0.0.1 password=hunter2")
	lcRefused(t, "does not exist", "tenant", "create", remote, "--on", "bk_nope")
	if out := lcOK(t, "backend", "add", backend, dsn); !strings.Contains(out, backend) {
		t.Fatalf("backend add printed %q", out)
	}
	lcOK(t, "backend", "add", backend, dsn) // again: harmless
	lcOK(t, "tenant", "create", remote, "--on", backend)
	lcOK(t, "tenant", "create", remote, "--on", backend) // again: harmless
	lcOK(t, "tenant", "create", local)
	// As for a tenant that exists with another schema: a conflict with the
	// registry, exit 2.
	if out, code, err := lcCLI(t, "", "tenant", "create", remote); code != 2 || err == nil ||
		!strings.Contains(err.Error(), `already exists on backend "bk_eu2"`) {
		t.Fatalf("tenant create of a tenant placed elsewhere: exit %d, %v, %q", code, err, out)
	}

	reg := direct(t)
	other := connectTo(t, dsn)
	if !hasSchema(t, other, remote) || hasSchema(t, reg, remote) {
		t.Fatalf("schema %s: on the second backend %v, on the registry's %v; want only the second",
			remote, hasSchema(t, other, remote), hasSchema(t, reg, remote))
	}
	if hasSchema(t, other, local) || !hasSchema(t, reg, local) {
		t.Fatalf("schema %s is not on the registry's server alone", local)
	}

	list := lcOK(t, "backend", "list")
	if !strings.Contains(list, "default") || !strings.Contains(list, backend) || !strings.Contains(list, dsn) {
		t.Fatalf("backend list:\n%s", list)
	}
	csv := lcOK(t, "tenant", "list", "--format", "csv")
	if !strings.Contains(csv, "\n"+remote+",") || !strings.Contains(csv, ","+backend+"\n") {
		t.Fatalf("tenant list --format csv does not show %s on %s:\n%s", remote, backend, csv)
	}
	lcRefused(t, "are placed on backend", "backend", "remove", backend)
	// Commands that work on the registry's own server refuse a tenant
	// placed elsewhere rather than miss its tables.
	lcRefused(t, "placed on another backend", "exec", "--tenant", remote, "SELECT 1")
	lcRefused(t, "placed on another backend", "tenant", "drop", remote, "--force")
	lcRefused(t, "placed on another backend", "tenant", "export", remote)

	p := startProxy(t, withAdmin)
	for _, tn := range []string{remote, local} {
		c := p.Connect(t, tn, pgx.QueryExecModeCacheStatement)
		for _, q := range []string{
			`CREATE TABLE notes (id int PRIMARY KEY, body text)`,
			`INSERT INTO notes VALUES (1, 'written through pgtenant')`,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %s: %v", tn, q, err)
			}
		}
	}
	count := func(conn *pgx.Conn, schema string) int {
		t.Helper()
		if !hasSchema(t, conn, schema) {
			return -1
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "notes"}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(other, remote); n != 1 {
		t.Fatalf("%s.notes on the second backend holds %d rows, want 1", remote, n)
	}
	if n := count(reg, local); n != 1 {
		t.Fatalf("%s.notes on the registry's server holds %d rows, want 1", local, n)
	}
	if c := p.Connect(t, remote, pgx.QueryExecModeSimpleProtocol); servedBy(t, c) != second.Port {
		t.Fatalf("tenant %s was not served by the second backend", remote)
	}

	// The console shows the backend of each tenant's pool.
	_, rows := consoleRows(t, consoleConn(t, p), "SHOW POOLS")
	seen := map[string]string{}
	for _, r := range rows {
		seen[r["tenant"]] = r["backend"]
	}
	if seen[remote] != backend || seen[local] != router.DefaultBackend {
		t.Fatalf("SHOW POOLS backends = %v", seen)
	}
}

// TestBackendsPlacementChange: a placement change reaches clients already
// connected, on two pgtenant servers sharing the registry, at their next
// transaction, with no error and no reconnect.
func TestBackendsPlacementChange(t *testing.T) {
	const backend = "bk_eu3"
	const tn = "bk_moving"
	second := startSecondBackend(t, backend, tn)
	dsn := second.DSN(bkDB)
	ctx := context.Background()
	lcOK(t, "backend", "add", backend, dsn)
	lcOK(t, "tenant", "create", tn, "--on", backend)

	// The same table on both servers, as a move leaves it at the switch;
	// the registry's copy is made by hand here.
	other := connectTo(t, dsn)
	reg := direct(t)
	for _, c := range []*pgx.Conn{other, reg} {
		for _, q := range []string{
			`CREATE SCHEMA IF NOT EXISTS bk_moving`,
			`CREATE TABLE bk_moving.ledger (id bigserial PRIMARY KEY, via text NOT NULL)`,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}

	p1, p2 := startProxy(t), startProxy(t)
	c1 := p1.Connect(t, tn, pgx.QueryExecModeCacheStatement)
	c2 := p2.Connect(t, tn, pgx.QueryExecModeSimpleProtocol)
	write := func(c *pgx.Conn, via string) {
		t.Helper()
		if _, err := c.Exec(ctx, `INSERT INTO ledger (via) VALUES ($1)`, via); err != nil {
			t.Fatalf("insert through %s: %v", via, err)
		}
	}
	for _, c := range []*pgx.Conn{c1, c2} {
		if port := servedBy(t, c); port != second.Port {
			t.Fatalf("before the change, served by port %d, want the second backend's %d", port, second.Port)
		}
	}
	write(c1, "p1-before")
	write(c2, "p2-before")

	if err := router.SetPlacement(ctx, reg, tn, router.DefaultBackend); err != nil {
		t.Fatal(err)
	}
	// Each proxy hears of it through NOTIFY; the clients' next
	// transactions go to the registry's server.
	for i, c := range []*pgx.Conn{c1, c2} {
		eventually(t, 10*time.Second, "the placement change to reach proxy "+string(rune('1'+i)), func() bool {
			return servedBy(t, c) == pg.Port
		})
	}
	write(c1, "p1-after")
	write(c2, "p2-after")
	// A new client of either proxy lands there too.
	write(p2.Connect(t, tn, pgx.QueryExecModeCacheStatement), "p2-new")

	rowsOn := func(c *pgx.Conn) []string {
		rows, err := c.Query(ctx, `SELECT via FROM bk_moving.ledger ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		vias, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return vias
	}
	if got := strings.Join(rowsOn(other), ","); got != "p1-before,p2-before" {
		t.Fatalf("second backend holds %q, want p1-before,p2-before", got)
	}
	if got := strings.Join(rowsOn(reg), ","); got != "p1-after,p2-after,p2-new" {
		t.Fatalf("registry's server holds %q, want p1-after,p2-after,p2-new", got)
	}

	// And back: the pool of the second backend is still there.
	if err := router.SetPlacement(ctx, reg, tn, backend); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the placement change back", func() bool { return servedBy(t, c1) == second.Port })
	// The backend cannot go while the tenant is on it; once the tenant
	// is back on default it can, and the proxies drop its pool.
	lcRefused(t, "are placed on backend", "backend", "remove", backend)
	if err := router.SetPlacement(ctx, reg, tn, router.DefaultBackend); err != nil {
		t.Fatal(err)
	}
	lcOK(t, "backend", "remove", backend)
	eventually(t, 10*time.Second, "the tenant served from default again", func() bool { return servedBy(t, c1) == pg.Port })
}

// TestBackendsRoleMode: in role isolation mode, tenant create --on makes
// the tenant's role on the tenant's backend, and pgtenant logs in there as
// that role.
func TestBackendsRoleMode(t *testing.T) {
	const backend = "bk_eu4"
	const tn = "bk_isolated"
	second := startSecondBackend(t, backend, tn)
	dsn := second.DSN(bkDB)
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(roleSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	lcOK(t, "backend", "add", backend, dsn)
	out := lcOK(t, "tenant", "create", tn, "--on", backend, "--isolation", "role", "--role-secret-file", secretFile)
	role := router.TenantRoleName(tn)
	if !strings.Contains(out, "on backend "+backend) {
		t.Fatalf("tenant create --isolation role printed %q", out)
	}
	ctx := context.Background()
	var owner string
	if err := connectTo(t, dsn).QueryRow(ctx,
		`SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1`, tn).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner != role {
		t.Fatalf("schema %s on the second backend is owned by %s, want %s", tn, owner, role)
	}
	// Running isolate again finds the tenant's backend by itself.
	lcOK(t, "tenant", "isolate", tn, "--role-secret-file", secretFile)

	p := startProxy(t, roleMode(2))
	c := p.Connect(t, tn, pgx.QueryExecModeCacheStatement)
	var user string
	var port int
	if err := c.QueryRow(ctx, `SELECT current_user::text, current_setting('port')::int`).Scan(&user, &port); err != nil {
		t.Fatal(err)
	}
	if user != role || port != second.Port {
		t.Fatalf("served as %s on port %d, want %s on the second backend's %d", user, port, role, second.Port)
	}
	if _, err := c.Exec(ctx, `CREATE TABLE mine (id int)`); err != nil {
		t.Fatalf("the tenant role cannot create in its schema: %v", err)
	}
}
