package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// TestIsolateCommands runs `tenant create --isolation role` and `tenant
// isolate` against a throwaway PostgreSQL: they need the role secret, and
// leave each tenant's schema owned by its role.
func TestIsolateCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	t.Setenv("PGTENANT_BACKEND", pg.DSN("postgres"))
	t.Setenv(config.RoleSecretEnv, "")

	if _, code, err := runCLI(t, "tenant", "create", "--isolation", "role", "acme"); code != exitUsage ||
		err == nil || !strings.Contains(err.Error(), config.RoleSecretEnv) {
		t.Fatalf("create --isolation role without a secret: exit %d, %v; want %d naming %s", code, err, exitUsage, config.RoleSecretEnv)
	}
	t.Setenv(config.RoleSecretEnv, "cli-test-role-secret-0123")
	if out, code, err := runCLI(t, "tenant", "create", "--isolation", "role", "acme"); code != 0 ||
		!strings.Contains(out, "tenant acme: role pgt_acme owns its schema") {
		t.Fatalf("create --isolation role: exit %d, %v\n%s", code, err, out)
	}
	if _, code, err := runCLI(t, "tenant", "create", "globex"); code != 0 {
		t.Fatalf("create globex: exit %d, %v", code, err)
	}
	if _, code, _ := runCLI(t, "tenant", "isolate"); code != exitUsage {
		t.Fatalf("isolate without a tenant: exit %d", code)
	}
	if out, code, err := runCLI(t, "tenant", "isolate", "--all"); code != 0 ||
		!strings.Contains(out, "tenant acme: role pgt_acme") || !strings.Contains(out, "tenant globex: role pgt_globex") {
		t.Fatalf("isolate --all: exit %d, %v\n%s", code, err, out)
	}
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var owners string
	if err := conn.QueryRow(ctx, `SELECT string_agg(nspname || ':' || nspowner::regrole::text, ',' ORDER BY nspname)
		FROM pg_namespace WHERE nspname IN ('acme', 'globex')`).Scan(&owners); err != nil || owners != "acme:pgt_acme,globex:pgt_globex" {
		t.Fatalf("schema owners %q, %v", owners, err)
	}
}
