package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
)

// TestRegistryPause: a pause recorded in the registry holds a tenant on two
// proxies at once. The pauser gets the serve lock only once neither runs a
// transaction of the tenant (an open one holds it up), new transactions
// wait on both, and lifting the pause lets them run, with no error.
func TestRegistryPause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const tenant = "rpause_acme"
	createTenant(t, tenant, `CREATE TABLE IF NOT EXISTS rpause_acme.t (id int)`, `TRUNCATE rpause_acme.t`)
	p1, p2 := startProxy(t), startProxy(t)
	c1 := p1.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	c2 := p2.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	for _, c := range []*pgx.Conn{c1, c2} {
		if _, err := c.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
			t.Fatal(err)
		}
	}
	db := direct(t)
	lockConn := direct(t)

	// An open transaction on p2 keeps the pause from draining.
	tx, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	if err := router.PauseTenant(ctx, db, tenant, "test", 30*time.Second, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := router.AwaitDrained(ctx, lockConn, tenant, 500*time.Millisecond); err != nil || got {
		t.Fatalf("AwaitDrained with a transaction open = %v, %v; want false", got, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the running transaction could not finish under the pause: %v", err)
	}
	start := time.Now()
	if got, err := router.AwaitDrained(ctx, lockConn, tenant, 10*time.Second); err != nil || !got {
		t.Fatalf("AwaitDrained after the commit = %v, %v; want true", got, err)
	}
	t.Logf("drained %v after the last commit", time.Since(start).Round(time.Millisecond))

	// New transactions wait on both proxies.
	done := make(chan error, 2)
	for _, c := range []*pgx.Conn{c1, c2} {
		go func() { _, err := c.Exec(ctx, `INSERT INTO t VALUES (3)`); done <- err }()
	}
	select {
	case err := <-done:
		t.Fatalf("a transaction ran while the tenant was paused (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM rpause_acme.t WHERE id = 3`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows written under the pause: %d, %v", n, err)
	}
	if resumed, err := router.ResumeTenant(ctx, db, tenant); err != nil || !resumed {
		t.Fatalf("ResumeTenant = %v, %v", resumed, err)
	}
	if err := router.ReleaseDrained(ctx, lockConn, tenant); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a transaction held by the pause failed after it: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a transaction held by the pause did not run after it was lifted")
		}
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM rpause_acme.t`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("rows after the pause: %d, %v; want 5", n, err)
	}

	// A pauser that dies: the pause lapses at its deadline by itself.
	if err := router.PauseTenant(ctx, db, tenant, "test", 200*time.Millisecond, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the pause to reach the proxy", func() bool {
		var waiting bool
		_ = db.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid AND granted)`,
			router.ServeLockClass).Scan(&waiting)
		return waiting
	})
	if _, err := c1.Exec(ctx, `INSERT INTO t VALUES (4)`); err != nil {
		t.Fatalf("a transaction after a lapsed pause failed: %v", err)
	}
	if _, err := router.ResumeTenant(ctx, db, tenant); err != nil {
		t.Fatal(err)
	}
}
