package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// recipeScript is the production recipe, kept as a script the README shows
// verbatim between recipeMarkers.
const recipeScript = "../scripts/production-recipe.sh"

var recipeMarkers = [2]string{"<!-- production-recipe.sh: begin -->", "<!-- production-recipe.sh: end -->"}

// readmeSection returns what README.md holds between the two markers.
func readmeSection(t *testing.T, markers [2]string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), markers[0])
	if !ok {
		t.Fatalf("README.md lacks the marker %q", markers[0])
	}
	section, _, ok := strings.Cut(rest, markers[1])
	if !ok {
		t.Fatalf("README.md lacks the marker %q", markers[1])
	}
	return section
}

// The README's production recipe, run as written on a fresh cluster that
// asks every role but the superuser for its password, gives a deployment
// where a client of acme is refused globex's table by PostgreSQL (42501)
// while globex's own client uses it.
func TestRecipeAsWritten(t *testing.T) {
	script, err := os.ReadFile(recipeScript)
	if err != nil {
		t.Fatal(err)
	}
	if section := readmeSection(t, recipeMarkers); !strings.Contains(section, "```sh\n"+string(script)+"```\n") {
		t.Fatalf("README.md does not show %s verbatim between %q and %q", recipeScript, recipeMarkers[0], recipeMarkers[1])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startOwnCluster(ctx, t, pgcluster.Options{}, "app")
	requirePasswords(ctx, t, c)

	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "pgtenant"), "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close() // serve binds it next

	cmd := exec.Command("sh", recipeScript)
	cmd.Env = append(cleanEnv(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PGHOST="+c.Host, fmt.Sprintf("PGPORT=%d", c.Port), "PGUSER="+c.User,
		"APP_DB=app", "ADMIN_PASSWORD=admin-pw-7f3a", "POOL_PASSWORD=pool-pw-91c2",
		"PGTENANT_ROLE_SECRET=recipe-role-secret-5d1e8a0b4c", "LISTEN="+listen)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("the recipe's output:\n%s", out.String())
		}
	})

	dsn := func(tenant string) string {
		return fmt.Sprintf("postgres://app@%s/%s?sslmode=disable&connect_timeout=5", listen, tenant)
	}
	var globex *pgx.Conn
	eventually(t, 45*time.Second, "the recipe's pgtenant serves globex", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the recipe ended (%v) before serving", err)
		default:
		}
		conn, err := pgx.Connect(ctx, dsn("globex"))
		if err != nil {
			return false
		}
		globex = conn
		return true
	})
	defer globex.Close(context.Background())
	if _, err := globex.Exec(ctx, `CREATE TABLE secrets (s text); INSERT INTO secrets VALUES ('globex plans')`); err != nil {
		t.Fatalf("globex's own table: %v", err)
	}
	var n int
	if err := globex.QueryRow(ctx, `SELECT count(*) FROM secrets`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("globex reads its own table: %d rows, %v", n, err)
	}

	acme, err := pgx.Connect(ctx, dsn("acme"))
	if err != nil {
		t.Fatal(err)
	}
	defer acme.Close(context.Background())
	var who string
	if err := acme.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != "pgt_acme" {
		t.Fatalf("acme runs as %q, %v; want pgt_acme", who, err)
	}
	_, err = acme.Exec(ctx, `select * from globex.secrets`)
	if sqlState(err) != "42501" {
		t.Fatalf("acme: select * from globex.secrets = %v, want SQLSTATE 42501", err)
	}
}

// requirePasswords makes c ask every role but its superuser for a
// SCRAM-SHA-256 password on loopback, as a production server would, and
// waits until the reload took.
func requirePasswords(ctx context.Context, t *testing.T, c *pgcluster.Cluster) {
	t.Helper()
	su, err := pgx.Connect(ctx, c.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(context.Background())
	var path string
	if err := su.QueryRow(ctx, `SHOW hba_file`).Scan(&path); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := "host all " + c.User + " 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(path, append([]byte(lines), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pg_hba asks for passwords", func() bool {
		cfg, err := pgconn.ParseConfig(c.DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password = "nobody", "wrong"
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			conn.Close(ctx)
			return false
		}
		return sqlState(err) == "28P01"
	})
}
