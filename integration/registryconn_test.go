package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// TestRegistryConnectionsTerminated: an operator (or a failover) ends the
// registry's backend sessions, the lookup pool's and the LISTEN watcher's.
// Clients still log in, for a tenant looked up before and for one never
// looked up; the watcher reconnects and says so, and a tenant created
// afterwards is visible at once through its NOTIFY.
//
// It runs on a PostgreSQL of its own: terminating the registry sessions of
// the shared cluster would hit every other test's pgtenant too.
func TestRegistryConnectionsTerminated(t *testing.T) {
	t.Parallel()
	const db = "pgtenant_regconn"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startOwnCluster(ctx, t, pgcluster.Options{}, db)
	admin, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, name := range []string{"rc_known", "rc_fresh"} {
		if _, _, err := router.CreateTenant(ctx, admin, name, ""); err != nil {
			t.Fatal(err)
		}
	}

	p := startProxy(t, func(cfg *config.Config) {
		cfg.Backend = c.DSN(db)
		// A name cached as unknown stays so for the whole test, unless a
		// NOTIFY (or the forget-all of a reconnecting watcher) drops it.
		cfg.TenantMissTTL = time.Hour
	})
	login := func(tenant string) error {
		conn, err := pgx.Connect(ctx, p.DSN(tenant))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var schema string
		if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return err
		}
		if schema != tenant {
			t.Errorf("tenant %s runs in schema %q", tenant, schema)
		}
		return nil
	}
	if err := login("rc_known"); err != nil {
		t.Fatalf("login before the fault: %v", err)
	}
	eventually(t, 30*time.Second, "the watcher listens", func() bool {
		return countSessions(t, admin, "pgtenant registry watch") == 1
	})

	var pids []int32
	err = admin.QueryRow(ctx, `
		SELECT array_agg(pid) FROM pg_stat_activity
		 WHERE application_name IN ('pgtenant registry', 'pgtenant registry watch')`).Scan(&pids)
	if err != nil || len(pids) < 2 {
		t.Fatalf("find the registry sessions: %v, %v", pids, err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid`, pids); err != nil {
		t.Fatalf("terminate the registry sessions: %v", err)
	}
	eventually(t, 30*time.Second, "the terminated sessions are gone", func() bool {
		var left int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, pids).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})

	// A tenant never looked up needs the registry now; one looked up before
	// is served from the cache or after the reconnect.
	if err := login("rc_fresh"); err != nil {
		t.Fatalf("login for a tenant not cached, after the registry sessions ended: %v (SQLSTATE %s)", err, sqlState(err))
	}
	if err := login("rc_known"); err != nil {
		t.Fatalf("login for a cached tenant, after the registry sessions ended: %v (SQLSTATE %s)", err, sqlState(err))
	}
	eventually(t, 30*time.Second, "the log says the watcher reconnected", func() bool {
		return strings.Contains(p.Logs(), "tenant registry watch reconnected")
	})

	// Cache rc_later as unknown, then create it: only the reconnected
	// watcher's NOTIFY can make it visible within the hour.
	if err := login("rc_later"); sqlState(err) != "3D000" {
		t.Fatalf("login for a tenant not created yet: %v, want 3D000", err)
	}
	if _, _, err := router.CreateTenant(ctx, admin, "rc_later", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the new tenant is visible", func() bool { return login("rc_later") == nil })
	if strings.Contains(p.Logs(), `error=`) {
		t.Errorf("a log line says error= where the code says err=:\n%s", lastChars(p.Logs(), 4000))
	}
}

// countSessions is how many sessions have application_name name.
func countSessions(t *testing.T, conn *pgx.Conn, name string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
