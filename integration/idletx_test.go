package integration

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
)

// --idle-transaction-timeout (issue 11 D): a client may not hold a backend
// by sitting in a transaction.

// TestLimitsIdleTransactionTimeout: a client idle inside a transaction
// longer than --idle-transaction-timeout gets FATAL 25P03 and is closed; its
// transaction is rolled back on the server, and the backend, idle again,
// goes back to the pool (the next client gets the same server process).
// A command that runs longer than the timeout is not idleness, and outside
// a transaction nothing times out.
func TestLimitsIdleTransactionTimeout(t *testing.T) {
	for _, mode := range []config.PoolMode{config.PoolTransaction, config.PoolSession} {
		t.Run(string(mode), func(t *testing.T) {
			tenant := "lim_idle_" + string(mode)
			createTenant(t, tenant, "create table items (x int)")
			p := startProxy(t, func(c *config.Config) {
				c.IdleTransactionTimeout = 500 * time.Millisecond
				c.PoolMode = mode
				c.PoolSize = 1
			})
			ctx := prpCtx(t, 60*time.Second)

			conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
			var pid int
			if _, err := conn.Exec(ctx, "begin"); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			// Busy, not idle: a command three times the timeout.
			if _, err := conn.Exec(ctx, "select pg_sleep(1.5)"); err != nil {
				t.Fatalf("a long command inside the transaction: %v", err)
			}
			if _, err := conn.Exec(ctx, "insert into items values (1)"); err != nil {
				t.Fatal(err)
			}
			if s := conn.PgConn().TxStatus(); s != 'T' {
				t.Fatalf("transaction status %q, want T", s)
			}
			// Now idle: read what pgtenant says, until it says it.
			err := conn.PgConn().WaitForNotification(ctx)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "25P03" || pe.Severity != "FATAL" ||
				pe.Message != "terminating connection due to idle-in-transaction timeout" {
				t.Fatalf("idle in transaction: got %v, want FATAL 25P03", err)
			}
			if !conn.PgConn().IsClosed() {
				t.Fatal("connection not closed after FATAL 25P03")
			}

			d := direct(t)
			var n int
			if err := d.QueryRow(ctx, fmt.Sprintf("select count(*) from %s.items", tenant)).Scan(&n); err != nil || n != 0 {
				t.Fatalf("rows in items after the timeout: %d (%v), want 0: the insert was not rolled back", n, err)
			}
			var state string
			eventually(t, 10*time.Second, "the backend to be idle", func() bool {
				err := d.QueryRow(ctx, "select state from pg_stat_activity where pid = $1", pid).Scan(&state)
				return err == nil && state == "idle"
			})

			// The same server process serves the next client: it went back
			// to the pool, it was not closed.
			next := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
			var nextPid int
			var schema string
			if err := next.QueryRow(ctx, "select pg_backend_pid(), current_schema()").Scan(&nextPid, &schema); err != nil {
				t.Fatal(err)
			}
			if nextPid != pid || schema != tenant {
				t.Fatalf("next client got pid %d schema %q, want the pooled pid %d and %q", nextPid, schema, pid, tenant)
			}

			// Outside a transaction, idleness is allowed: four times the
			// timeout pass without a word from pgtenant (the read ends at
			// its own deadline), and the client is still served.
			nc := next.PgConn().Conn()
			_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			var ne net.Error
			if n, err := nc.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("idle outside a transaction: read %d bytes, %v; want nothing", n, err)
			}
			_ = nc.SetReadDeadline(time.Time{})
			if err := next.QueryRow(ctx, "select pg_backend_pid()").Scan(&nextPid); err != nil || nextPid != pid {
				t.Fatalf("after idling outside a transaction: pid %d, %v", nextPid, err)
			}
		})
	}
}
