package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// Bad arguments of tenant set, unset and show are refused before anything
// connects (no backend is given), with the usage exit code and a message
// that names the problem.
func TestTenantSettingsArgs(t *testing.T) {
	t.Setenv("PGTENANT_BACKEND", "")
	t.Setenv("PGTENANT_REGISTRY", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "set", "acme"}, "usage: pgtenant tenant set"},
		{[]string{"tenant", "set", "Bad!", "tier=x"}, "invalid tenant name"},
		{[]string{"tenant", "set", "acme", "tier"}, "is not KEY=VALUE"},
		{[]string{"tenant", "set", "acme", "colour=red"}, "unknown key"},
		{[]string{"tenant", "set", "acme", "max_backends=-3"}, "whole number"},
		{[]string{"tenant", "set", "acme", "rate=fast"}, "transactions per second"},
		{[]string{"tenant", "set", "acme", "storage_quota=10XB"}, "unknown unit"},
		{[]string{"tenant", "set", "acme", "set.search_path=other"}, "pgtenant pins search_path"},
		{[]string{"tenant", "set", "acme", "set.role=admin"}, "cannot be given role"},
		{[]string{"tenant", "set", "acme", "set.session_authorization=admin"}, "cannot be given session_authorization"},
		{[]string{"tenant", "set", "acme", "tier=a", "TIER=b"}, "given twice"},
		{[]string{"tenant", "unset", "acme"}, "usage: pgtenant tenant unset"},
		{[]string{"tenant", "unset", "acme", "colour"}, "unknown key"},
		{[]string{"tenant", "show"}, "usage: pgtenant tenant show"},
		// Valid arguments get as far as needing a backend.
		{[]string{"tenant", "set", "acme", "tier=gold", "set.statement_timeout=5s", "storage_quota=10GB"}, "--registry or --backend"},
	} {
		_, code, err := runCLI(t, tc.args...)
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pgtenant %s: exit %d, %v; want exit %d saying %q", strings.Join(tc.args, " "), code, err, exitUsage, tc.want)
		}
	}
}

// tenant set, show and unset against a throwaway PostgreSQL.
func TestTenantSettingsCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	if err := pg.CreateDatabase(ctx, "cli"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGTENANT_BACKEND", pg.DSN("cli"))
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, code, err := runCLI(t, args...)
		if code != wantCode {
			t.Fatalf("pgtenant %s: exit %d (%v), want %d; output:\n%s", strings.Join(args, " "), code, err, wantCode, out)
		}
		if err != nil {
			return err.Error()
		}
		return out
	}
	run(0, "tenant", "create", "acme")
	if out := run(0, "tenant", "show", "acme"); !strings.Contains(out, "no settings of its own") {
		t.Fatalf("show before set:\n%s", out)
	}
	out := run(0, "tenant", "set", "acme", "set.statement_timeout=5s", "tier=gold", "storage_quota=500MB", "max_backends=2")
	if !strings.Contains(out, "tenant acme: set max_backends=2 set.statement_timeout=5s storage_quota=500MB tier=gold") {
		t.Fatalf("set printed:\n%s", out)
	}
	want := "tenant acme (schema acme, active)\nKEY                    VALUE\nmax_backends           2\nstorage_quota          500MB\ntier                   gold\nset.statement_timeout  5s\n"
	if out := run(0, "tenant", "show", "acme"); trimLines(out) != want {
		t.Fatalf("show printed:\n%s\nwant:\n%s", out, want)
	}
	// The server refuses what it does not know.
	if msg := run(exitUsage, "tenant", "set", "acme", "set.statement_timeout=banana"); !strings.Contains(msg, "the server refuses it") {
		t.Fatalf("set of a bad value: %s", msg)
	}
	if msg := run(exitUsage, "tenant", "set", "nobody", "tier=x"); !strings.Contains(msg, "does not exist") {
		t.Fatalf("set of an unknown tenant: %s", msg)
	}
	if out := run(0, "tenant", "unset", "acme", "tier", "set.statement_timeout", "rate"); !strings.Contains(out, "unset set.statement_timeout tier") {
		t.Fatalf("unset printed:\n%s", out)
	}
	if msg := run(exitUsage, "tenant", "show", "nobody"); !strings.Contains(msg, "does not exist") {
		t.Fatalf("show of an unknown tenant: %s", msg)
	}
}
