package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A role created after a tenant of the same schema name makes "$user" in
// a search_path reach that tenant's tables (issue 17). tenant create
// refuses such a schema, but cannot refuse a later role; the proxy warns
// of it at start, once per colliding tenant, and serves as usual.
func TestStartupWarnsOfRoleNamedSchema(t *testing.T) {
	t.Parallel()
	const tenant = "rolename_late"
	createTenant(t, tenant)
	ensureRole(t, tenant, "NOLOGIN")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := direct(t).Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{tenant}.Sanitize()); err != nil {
			t.Error(err)
		}
	})

	p := startProxy(t)
	// The check runs before the proxy serves anyone: once a client is in,
	// the warning is in the log.
	conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 through the proxy = %d, %v", one, err)
	}
	var warning string
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "tenant="+tenant+" ") {
			warning = line
		}
	}
	for _, want := range []string{`has the name of a role`, `$user`, "schema=" + tenant, "role=" + tenant} {
		if !strings.Contains(warning, want) {
			t.Fatalf("no start-up warning with %q for tenant %s; log:\n%s", want, tenant, p.Logs())
		}
	}
	t.Logf("start-up warning: %s", warning)
}
