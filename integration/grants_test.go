package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// grantUsers are the users the grant tests log in as; the passwords are
// plain in the auth file, which SCRAM turns into verifiers itself.
var grantUsers = map[string]string{
	"g_alice": "alicepw",
	"g_bob":   "bobpw",
	"g_root":  "rootpw",
}

// startGrantProxy starts pgtenant with an auth file of grantUsers and
// nothing else said about access: an auth file makes the method
// scram-sha-256 and the tenant access "granted" by default, which is the
// point.
func startGrantProxy(t *testing.T, mods ...func(*config.Config)) *Proxy {
	t.Helper()
	var b strings.Builder
	for user, pw := range grantUsers {
		fmt.Fprintf(&b, "%q %q\n", user, pw)
	}
	file := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, append([]func(*config.Config){func(c *config.Config) { c.AuthFile = file }}, mods...)...)
	if got := p.Cfg.EffectiveTenantAccess(); got != config.AccessGranted {
		t.Fatalf("tenant access with an auth file = %q, want %q", got, config.AccessGranted)
	}
	return p
}

// grantConnect logs in to pgtenant as user (with its password) for tenant.
func grantConnect(p *Proxy, user, tenant string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.DSN(tenant))
	if err != nil {
		return nil, err
	}
	cfg.User = user
	cfg.Password = grantUsers[user]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// grantLands logs in as user for tenant (a name or an alias), and checks
// that the session works in wantSchema: its marker table says so.
func grantLands(t *testing.T, p *Proxy, user, tenant, wantSchema string) {
	t.Helper()
	conn, err := grantConnect(p, user, tenant)
	if err != nil {
		t.Fatalf("%s connecting to %s: %v", user, tenant, err)
	}
	defer conn.Close(context.Background())
	var schema, marker string
	err = conn.QueryRow(context.Background(), `SELECT current_schema(), (SELECT v FROM marker)`).Scan(&schema, &marker)
	if err != nil {
		t.Fatalf("%s in %s: %v", user, tenant, err)
	}
	if schema != wantSchema || marker != wantSchema {
		t.Fatalf("%s connecting to %s landed in schema %q (marker %q), want %q", user, tenant, schema, marker, wantSchema)
	}
}

// deniedError returns the refusal of user's connection to tenant, or nil
// when the user got in (the connection is closed again).
func deniedError(p *Proxy, user, tenant string) *pgconn.PgError {
	conn, err := grantConnect(p, user, tenant)
	if err == nil {
		conn.Close(context.Background())
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return &pgconn.PgError{Message: err.Error()}
}

// grantRefused checks that user may not connect to tenant, with FATAL
// 28000 naming both the user and the tenant (its own name, also when the
// client used an alias).
func grantRefused(t *testing.T, p *Proxy, user, tenant, canonical string) {
	t.Helper()
	pe := deniedError(p, user, tenant)
	if pe == nil {
		t.Fatalf("%s connected to %s; want it refused", user, tenant)
	}
	want := fmt.Sprintf("user %q is not allowed to connect to tenant %q", user, canonical)
	if pe.Code != "28000" || pe.Severity != "FATAL" || pe.Message != want {
		t.Fatalf("%s connecting to %s: %s %s %q; want FATAL 28000 %q", user, tenant, pe.Severity, pe.Code, pe.Message, want)
	}
}

// grantAdmin runs an admin function on the backend directly, as the CLI
// would.
func grantAdmin(t *testing.T, what string, f func(ctx context.Context, db router.DB) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f(ctx, direct(t)); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func grant(t *testing.T, tenant, user string) {
	t.Helper()
	grantAdmin(t, "grant "+tenant+" to "+user, func(ctx context.Context, db router.DB) error {
		_, err := router.GrantTenant(ctx, db, tenant, user)
		return err
	})
}

func revoke(t *testing.T, tenant, user string) {
	t.Helper()
	grantAdmin(t, "revoke "+tenant+" from "+user, func(ctx context.Context, db router.DB) error {
		removed, err := router.RevokeTenant(ctx, db, tenant, user)
		if err == nil && !removed {
			err = errors.New("there was no such grant")
		}
		return err
	})
}

// waitWatching returns once p's registry watch is listening. Until then a
// test could pass without NOTIFY: the watch forgets every cached entry when
// it starts listening, so a change made before that is seen anyway. It
// caches an unused alias of tenant as unknown (connect must report its
// error), adds the alias, and waits until connect stops getting 3D000 for
// it, which only a notification or that first forget can bring about.
func waitWatching(t *testing.T, tenant, probe string, connect func(name string) error) {
	t.Helper()
	if err := connect(probe); sqlState(err) != "3D000" {
		t.Fatalf("probe alias %s before it exists: %v, want 3D000", probe, err)
	}
	grantAdmin(t, "add probe alias", func(ctx context.Context, db router.DB) error {
		return router.AddTenantAlias(ctx, db, probe, tenant)
	})
	eventually(t, 10*time.Second, "pgtenant's registry watch to listen", func() bool {
		return sqlState(connect(probe)) != "3D000"
	})
	grantAdmin(t, "remove probe alias", func(ctx context.Context, db router.DB) error {
		_, err := router.RemoveTenantAlias(ctx, db, probe)
		return err
	})
}

// pgErr turns deniedError's answer into an error for waitWatching.
func pgErr(pe *pgconn.PgError) error {
	if pe == nil {
		return nil
	}
	return pe
}

func markedTenant(t *testing.T, name string) {
	t.Helper()
	createTenant(t, name, `CREATE TABLE IF NOT EXISTS marker (v text)`, `TRUNCATE marker`,
		fmt.Sprintf(`INSERT INTO marker VALUES ('%s')`, name))
}

// TestGrantAccess: a granted user lands in its tenant, a user not granted
// it gets FATAL 28000 naming both, and a user granted * reaches every
// tenant.
func TestGrantAccess(t *testing.T) {
	markedTenant(t, "gr_acme")
	markedTenant(t, "gr_globex")
	grant(t, "gr_acme", "g_alice")
	grant(t, router.AllTenants, "g_root")
	p := startGrantProxy(t)

	grantLands(t, p, "g_alice", "gr_acme", "gr_acme")
	grantRefused(t, p, "g_alice", "gr_globex", "gr_globex")
	grantRefused(t, p, "g_bob", "gr_acme", "gr_acme")
	grantLands(t, p, "g_root", "gr_acme", "gr_acme")
	grantLands(t, p, "g_root", "gr_globex", "gr_globex")
	// Again, now that the grants are cached: the same answers.
	grantLands(t, p, "g_alice", "gr_acme", "gr_acme")
	grantRefused(t, p, "g_alice", "gr_globex", "gr_globex")

	// Refusal comes after authentication, never instead of it: a wrong
	// password is still 28P01, whatever the grants.
	cfg, err := pgx.ParseConfig(p.DSN("gr_acme"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = "g_bob", "wrong"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pgx.ConnectConfig(ctx, cfg); sqlState(err) != "28P01" {
		t.Fatalf("g_bob with a wrong password: %v, want 28P01", err)
	}

	// What psql shows a refused user.
	cmd := exec.CommandContext(ctx, "psql", "-X", "-At", "-h", p.Host, "-p", fmt.Sprint(p.Port),
		"-U", "g_alice", "-d", "gr_globex", "-c", "SELECT 1")
	cmd.Env = append(cleanEnv(), "PGPASSWORD="+grantUsers["g_alice"])
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `FATAL:  user "g_alice" is not allowed to connect to tenant "gr_globex"`) {
		t.Fatalf("psql as g_alice to gr_globex: %v\n%s", err, out)
	}
}

// TestGrantRevokeTakesEffect: grants and revokes reach a running proxy
// through NOTIFY, for new connections, without a restart; connections
// already open stay open.
func TestGrantRevokeTakesEffect(t *testing.T) {
	markedTenant(t, "gr_initech")
	grant(t, "gr_initech", "g_alice")
	// TTLs far longer than the test: only NOTIFY can make a change count.
	p := startGrantProxy(t, func(c *config.Config) {
		c.TenantCacheTTL = time.Hour
		c.TenantMissTTL = time.Hour
	})
	waitWatching(t, "gr_initech", "gr-probe-revoke", func(name string) error { return pgErr(deniedError(p, "g_alice", name)) })
	grantLands(t, p, "g_alice", "gr_initech", "gr_initech")
	grantRefused(t, p, "g_bob", "gr_initech", "gr_initech") // bob is now cached as granted nothing

	open, err := grantConnect(p, "g_alice", "gr_initech")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(context.Background())

	revoke(t, "gr_initech", "g_alice")
	eventually(t, 10*time.Second, "g_alice's revoke to refuse new connections", func() bool {
		pe := deniedError(p, "g_alice", "gr_initech")
		return pe != nil && pe.Code == "28000"
	})
	grantRefused(t, p, "g_alice", "gr_initech", "gr_initech")
	var one int
	if err := open.QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("a connection opened before the revoke: %v", err)
	}

	grant(t, "gr_initech", "g_bob")
	eventually(t, 10*time.Second, "g_bob's new grant to let it in", func() bool {
		return deniedError(p, "g_bob", "gr_initech") == nil
	})
	grantLands(t, p, "g_bob", "gr_initech", "gr_initech")
	revoke(t, "gr_initech", "g_bob")
}

// TestGrantCascadesOnTenantDelete: deleting a tenant deletes its grants,
// and the proxy forgets them, so a new tenant under the old name is not
// open to users of the old one.
func TestGrantCascadesOnTenantDelete(t *testing.T) {
	markedTenant(t, "gr_umbrella")
	grant(t, "gr_umbrella", "g_alice")
	p := startGrantProxy(t, func(c *config.Config) {
		c.TenantCacheTTL = time.Hour
		c.TenantMissTTL = time.Hour
	})
	waitWatching(t, "gr_umbrella", "gr-probe-cascade", func(name string) error { return pgErr(deniedError(p, "g_alice", name)) })
	grantLands(t, p, "g_alice", "gr_umbrella", "gr_umbrella")

	grantAdmin(t, "delete gr_umbrella", func(ctx context.Context, db router.DB) error {
		_, err := db.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = 'gr_umbrella'`)
		return err
	})
	var left int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := direct(t).QueryRow(ctx,
		`SELECT count(*) FROM pgtenant.tenant_users WHERE tenant = 'gr_umbrella'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("grants of the deleted tenant left: %d, %v", left, err)
	}
	eventually(t, 10*time.Second, "the deleted tenant to be unknown", func() bool {
		pe := deniedError(p, "g_alice", "gr_umbrella")
		return pe != nil && pe.Code == "3D000"
	})

	// The deleted tenant's schema is still there, with its table: taking it
	// back is adopting it, which must be asked for.
	if _, _, err := router.CreateTenant(ctx, direct(t), "gr_umbrella", ""); err == nil {
		t.Fatal("recreating gr_umbrella over its old schema adopted it without being asked")
	}
	if _, _, err := router.CreateTenant(ctx, direct(t), "gr_umbrella", "", router.AdoptSchema()); err != nil {
		t.Fatalf("recreate gr_umbrella, adopting its schema: %v", err)
	}
	markedTenant(t, "gr_umbrella")
	eventually(t, 10*time.Second, "the recreated tenant to be known", func() bool {
		pe := deniedError(p, "g_alice", "gr_umbrella")
		return pe == nil || pe.Code != "3D000"
	})
	grantRefused(t, p, "g_alice", "gr_umbrella", "gr_umbrella")
}

// TestGrantThroughAlias: a grant is of the tenant, whatever name the client
// uses for it, and a refusal names the tenant itself.
func TestGrantThroughAlias(t *testing.T) {
	markedTenant(t, "gr_hooli")
	grant(t, "gr_hooli", "g_alice")
	grantAdmin(t, "alias", func(ctx context.Context, db router.DB) error {
		return router.AddTenantAlias(ctx, db, "gr-hooli.example.com", "gr_hooli")
	})
	p := startGrantProxy(t)
	grantLands(t, p, "g_alice", "gr-hooli.example.com", "gr_hooli")
	grantRefused(t, p, "g_bob", "gr-hooli.example.com", "gr_hooli")
}
