package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// The fault tests check what a client sees when something goes wrong
// between it, pgtenant and the server: unknown tenants, a full pool, a
// server connection killed under a query, cancels, too many clients, and
// clients that vanish mid-query. Each asserts the SQLSTATE the client gets
// and that what should keep working (the same client, other clients, the
// pool) does.

// fltConnect opens a pgx connection to pgtenant for tenant, with mod
// applied to the config, and returns the error instead of failing the test
// (the fault tests expect some connects to fail). A connection that opens
// is closed when the test ends.
func fltConnect(t testing.TB, p *Proxy, tenant string, mod func(*pgx.ConnConfig)) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN(tenant))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	if mod != nil {
		mod(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, nil
}

// fltDropTenant removes what an earlier run (go test -count=N shares one
// server) left of a tenant of these tests: its registry row and schema.
func fltDropTenant(t testing.TB, name string) {
	t.Helper()
	d := direct(t)
	ctx := fltCtx(t)
	var registry bool
	if err := d.QueryRow(ctx, "select to_regclass('pgtenant.tenants') is not null").Scan(&registry); err != nil {
		t.Fatal(err)
	}
	if registry {
		if _, err := d.Exec(ctx, "delete from pgtenant.tenants where name = $1", name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Exec(ctx, "drop schema if exists "+pgx.Identifier{name}.Sanitize()+" cascade"); err != nil {
		t.Fatal(err)
	}
}

// fltTenant creates a tenant afresh (see createTenant).
func fltTenant(t testing.TB, name string, setupSQL ...string) {
	t.Helper()
	fltDropTenant(t, name)
	createTenant(t, name, setupSQL...)
}

// fltCtx is a bounded context for one step of a test.
func fltCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fltPgError returns the *pgconn.PgError in err, or fails the test.
func fltPgError(t testing.TB, err error, what string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: want a PostgreSQL error, got %v", what, err)
	}
	return pe
}

// fltCheckSchema asserts that conn's queries run in tenant's schema and
// that it answers a computed query correctly.
func fltCheckSchema(t testing.TB, conn *pgx.Conn, tenant string) {
	t.Helper()
	var schema string
	var sum int
	err := conn.QueryRow(fltCtx(t), "select current_schema(), 40 + 2").Scan(&schema, &sum)
	if err != nil {
		t.Fatalf("query as %s: %v", tenant, err)
	}
	if schema != tenant || sum != 42 {
		t.Fatalf("query as %s: got schema %q, sum %d; want %q, 42", tenant, schema, sum, tenant)
	}
}

// fltWaitRunning polls pg_stat_activity (on a direct connection) until a
// query containing marker is active on some other backend, and returns that
// backend's pid.
func fltWaitRunning(t testing.TB, d *pgx.Conn, marker string) uint32 {
	t.Helper()
	var pid uint32
	eventually(t, 15*time.Second, "a backend running the query marked "+marker, func() bool {
		err := d.QueryRow(fltCtx(t),
			`select pid from pg_stat_activity
			 where state = 'active' and query like '%' || $1 || '%' and pid <> pg_backend_pid()
			 limit 1`, marker).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		if err != nil {
			t.Fatalf("poll pg_stat_activity: %v", err)
		}
		return true
	})
	return pid
}

// fltActive counts active backends running a query containing marker.
func fltActive(t testing.TB, d *pgx.Conn, marker string) int {
	t.Helper()
	var n int
	err := d.QueryRow(fltCtx(t),
		`select count(*) from pg_stat_activity
		 where state = 'active' and query like '%' || $1 || '%' and pid <> pg_backend_pid()`,
		marker).Scan(&n)
	if err != nil {
		t.Fatalf("count active queries: %v", err)
	}
	return n
}

// fltResult waits for the result of a query started in a goroutine; a
// query that does not return within the bound is a hang.
func fltResult(t testing.TB, errc <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s (hang)", what)
		return nil
	}
}

func TestFaultUnknownTenant(t *testing.T) {
	t.Parallel()
	p := startProxy(t)

	_, err := fltConnect(t, p, "flt_nosuch", nil)
	if err == nil {
		t.Fatal("connect to unknown tenant flt_nosuch succeeded")
	}
	pe := fltPgError(t, err, "pgx connect to unknown tenant")
	if pe.Code != "3D000" {
		t.Errorf("pgx: SQLSTATE %s, want 3D000 (%v)", pe.Code, err)
	}
	if !strings.Contains(pe.Message, `tenant "flt_nosuch" does not exist`) {
		t.Errorf("pgx: message %q does not name the tenant", pe.Message)
	}
	if pe.Severity != "FATAL" {
		t.Errorf("pgx: severity %q, want FATAL", pe.Severity)
	}

	out, err := p.Psql(t, "nosuch", "-c", "select 1")
	if err == nil {
		t.Fatalf("psql to unknown tenant succeeded: %s", out)
	}
	if !strings.Contains(out, `tenant "nosuch" does not exist`) {
		t.Errorf("psql output does not say the tenant does not exist:\n%s", out)
	}
}

func TestFaultTenantCreatedWhileRunning(t *testing.T) {
	t.Parallel()
	const name = "flt_late"
	fltDropTenant(t, name)
	p := startProxy(t)

	_, err := fltConnect(t, p, name, nil)
	if code := sqlState(err); code != "3D000" {
		t.Fatalf("connect before the tenant exists: want 3D000, got %v", err)
	}

	d := direct(t)
	if _, _, err := router.CreateTenant(fltCtx(t), d, name, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Exec(fltCtx(t), `create table flt_late.flt_items (v text); insert into flt_late.flt_items values ('late and found')`); err != nil {
		t.Fatal(err)
	}

	// The registry NOTIFY drops the cached miss at once; at worst the miss
	// cache expires after TenantMissTTL (1s). Either way no restart.
	var conn *pgx.Conn
	eventually(t, 10*time.Second, "the new tenant to be found", func() bool {
		c, err := fltConnect(t, p, name, nil)
		if err != nil {
			if sqlState(err) != "3D000" {
				t.Fatalf("connect to new tenant: %v", err)
			}
			return false
		}
		conn = c
		return true
	})
	fltCheckSchema(t, conn, name)
	var v string
	if err := conn.QueryRow(fltCtx(t), "select v from flt_items").Scan(&v); err != nil || v != "late and found" {
		t.Fatalf("read the new tenant's table: %q, %v", v, err)
	}
}

func TestFaultPoolExhausted(t *testing.T) {
	t.Parallel()
	const tenant = "flt_pool"
	fltTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 1
		c.QueryWaitTimeout = 300 * time.Millisecond
	})

	// Connect everyone first: startup needs a backend too.
	holder := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	simple := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	extended := p.Connect(t, tenant, pgx.QueryExecModeExec)

	tx, err := holder.Begin(fltCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(fltCtx(t), "select 1"); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		conn *pgx.Conn
	}{{"simple protocol", simple}, {"extended protocol", extended}} {
		var n int
		err := c.conn.QueryRow(fltCtx(t), "select $1::int", 7).Scan(&n)
		if err == nil {
			t.Fatalf("%s: query succeeded while the only backend is held in a transaction", c.name)
		}
		pe := fltPgError(t, err, c.name)
		if pe.Code != "57014" || !strings.Contains(pe.Message, "query-wait-timeout") {
			t.Fatalf("%s: got %s %q, want 57014 mentioning query-wait-timeout", c.name, pe.Code, pe.Message)
		}
		if c.conn.IsClosed() {
			t.Fatalf("%s: the connection was closed by a pool wait timeout", c.name)
		}
	}

	if err := tx.Commit(fltCtx(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		conn *pgx.Conn
	}{{"simple protocol", simple}, {"extended protocol", extended}} {
		var n int
		if err := c.conn.QueryRow(fltCtx(t), "select $1::int * 6", 7).Scan(&n); err != nil || n != 42 {
			t.Fatalf("%s: query after the holder committed: %d, %v", c.name, n, err)
		}
		fltCheckSchema(t, c.conn, tenant)
	}
}

func TestFaultTerminateBackend(t *testing.T) {
	t.Parallel()
	const tenant, other = "flt_term", "flt_term_other"
	fltTenant(t, tenant, "create table flt_log (v text)")
	fltTenant(t, other)
	// One backend: the pool must replace the one killed.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	d := direct(t)

	t.Run("idle", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			_, err := conn.Exec(ctx, "select pg_sleep(30) /* flt_term_idle */")
			errc <- err
		}()
		pid := fltWaitRunning(t, d, "flt_term_idle")
		var ok bool
		if err := d.QueryRow(fltCtx(t), "select pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
		}
		err := fltResult(t, errc, "query on a terminated backend")
		pe := fltPgError(t, err, "query on a terminated backend")
		if pe.Code != "57P01" {
			t.Fatalf("terminated backend: SQLSTATE %s (%s), want 57P01", pe.Code, pe.Message)
		}
		if pe.Severity == "FATAL" || conn.IsClosed() {
			t.Fatalf("outside a transaction the client should continue: severity %s, closed %v", pe.Severity, conn.IsClosed())
		}
		// The same client carries on, on a fresh backend.
		fltCheckSchema(t, conn, tenant)
		var serverPID uint32
		if err := conn.QueryRow(fltCtx(t), "select pg_backend_pid()").Scan(&serverPID); err != nil || serverPID == pid {
			t.Fatalf("after the kill: backend pid %d (killed %d), %v", serverPID, pid, err)
		}
		// The pool refilled its only slot: another client works.
		fltCheckSchema(t, p.Connect(t, other, pgx.QueryExecModeSimpleProtocol), other)
	})

	t.Run("in transaction", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		if _, err := conn.Exec(fltCtx(t), "begin"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(fltCtx(t), "insert into flt_log values ('must be rolled back')"); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			_, err := conn.Exec(ctx, "select pg_sleep(30) /* flt_term_tx */")
			errc <- err
		}()
		pid := fltWaitRunning(t, d, "flt_term_tx")
		if _, err := d.Exec(fltCtx(t), "select pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		err := fltResult(t, errc, "query in a transaction on a terminated backend")
		pe := fltPgError(t, err, "query in a transaction on a terminated backend")
		if pe.Severity != "FATAL" {
			t.Fatalf("in a transaction: severity %q (%s %s), want FATAL", pe.Severity, pe.Code, pe.Message)
		}
		if pe.Code != "57P01" {
			t.Errorf("in a transaction: SQLSTATE %s, want 57P01", pe.Code)
		}
		if _, err := conn.Exec(fltCtx(t), "select 1"); err == nil {
			t.Fatal("the client's session survived the loss of its transaction")
		}
		if !conn.IsClosed() {
			t.Error("connection not closed after FATAL")
		}
		var n int
		if err := d.QueryRow(fltCtx(t), "select count(*) from flt_term.flt_log").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows of the killed transaction: %d, %v; want 0", n, err)
		}
		// Other clients keep working on the refilled pool.
		fltCheckSchema(t, p.Connect(t, other, pgx.QueryExecModeSimpleProtocol), other)
		fltCheckSchema(t, p.Connect(t, tenant, pgx.QueryExecModeExec), tenant)
	})
}

func TestFaultCancel(t *testing.T) {
	t.Parallel()
	const tenant = "flt_cancel"
	fltTenant(t, tenant)
	p := startProxy(t)
	d := direct(t)

	checkCanceled := func(t *testing.T, err error) {
		t.Helper()
		pe := fltPgError(t, err, "cancelled query")
		if pe.Code != "57014" || !strings.Contains(pe.Message, "canceling statement due to user request") {
			t.Fatalf("cancelled query: %s %q, want 57014 canceling statement due to user request", pe.Code, pe.Message)
		}
	}

	// pgx v5's default context handler only sets a deadline on the socket;
	// CancelRequestContextWatcherHandler sends a CancelRequest (to
	// pgtenant, which forwards it) and keeps the connection.
	t.Run("context", func(t *testing.T) {
		conn, err := fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
			c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 15 * time.Second}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "select pg_sleep(30) /* flt_cancel_ctx */")
			errc <- err
		}()
		fltWaitRunning(t, d, "flt_cancel_ctx")
		cancel()
		checkCanceled(t, fltResult(t, errc, "query with a cancelled context"))
		if conn.IsClosed() {
			t.Fatal("the connection closed after a cancel")
		}
		fltCheckSchema(t, conn, tenant)
		fltCheckSchema(t, p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol), tenant)
	})

	// As psql does on ^C: a CancelRequest on a connection of its own while
	// the query runs.
	t.Run("CancelRequest", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			_, err := conn.Exec(ctx, "select pg_sleep(30) /* flt_cancel_req */")
			errc <- err
		}()
		fltWaitRunning(t, d, "flt_cancel_req")
		go func() { _ = conn.PgConn().CancelRequest(fltCtx(t)) }()
		checkCanceled(t, fltResult(t, errc, "query cancelled by CancelRequest"))
		fltCheckSchema(t, conn, tenant)
		if fltActive(t, d, "flt_cancel_req") != 0 {
			t.Fatal("the cancelled query is still running")
		}
	})
}

func TestFaultMaxClientConn(t *testing.T) {
	t.Parallel()
	const tenant = "flt_maxconn"
	fltTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.MaxClientConn = 2 })

	first := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	second := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)

	_, err := fltConnect(t, p, tenant, nil)
	if err == nil {
		t.Fatal("a third client got in with max-client-conn 2")
	}
	if pe := fltPgError(t, err, "third client"); pe.Code != "53300" {
		t.Fatalf("third client: %s %q, want 53300", pe.Code, pe.Message)
	}
	// The two admitted clients are unaffected.
	fltCheckSchema(t, first, tenant)
	fltCheckSchema(t, second, tenant)

	if err := first.Close(fltCtx(t)); err != nil {
		t.Fatal(err)
	}
	var conn *pgx.Conn
	eventually(t, 10*time.Second, "a client to get in after one left", func() bool {
		c, err := fltConnect(t, p, tenant, nil)
		if err != nil {
			if sqlState(err) != "53300" {
				t.Fatalf("connect after one left: %v", err)
			}
			return false
		}
		conn = c
		return true
	})
	fltCheckSchema(t, conn, tenant)
}

func TestFaultClientVanishes(t *testing.T) {
	t.Parallel()
	const tenant, next = "flt_vanish", "flt_vanish_next"
	fltTenant(t, tenant, "create table flt_log (v text)")
	fltTenant(t, next, "create table flt_log (v text)")
	// One backend: the next client gets the very slot the vanished one held.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	d := direct(t)

	t.Run("mid-query", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			_, err := conn.Exec(ctx, "select pg_sleep(30) /* flt_vanish_q */")
			errc <- err
		}()
		fltWaitRunning(t, d, "flt_vanish_q")
		// Close the socket under pgx: no Terminate, just gone.
		_ = conn.PgConn().Conn().Close()
		if err := fltResult(t, errc, "query on a closed socket"); err == nil {
			t.Fatal("query succeeded on a closed socket")
		}

		// The next client is served on the only slot, in its own schema.
		c := p.Connect(t, next, pgx.QueryExecModeSimpleProtocol)
		fltCheckSchema(t, c, next)
		var status string
		if err := c.QueryRow(fltCtx(t), "select count(*)::text from flt_log").Scan(&status); err != nil || status != "0" {
			t.Fatalf("next client reading its own table: %q, %v", status, err)
		}
		// The vanished client's query does not run on.
		eventually(t, 15*time.Second, "the vanished client's pg_sleep to end", func() bool {
			return fltActive(t, d, "flt_vanish_q") == 0
		})
	})

	t.Run("in transaction", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		if _, err := conn.Exec(fltCtx(t), "begin; insert into flt_log values ('vanished')"); err != nil {
			t.Fatal(err)
		}
		if conn.PgConn().TxStatus() != 'T' {
			t.Fatalf("tx status %q, want T", conn.PgConn().TxStatus())
		}
		_ = conn.PgConn().Conn().Close()

		c := p.Connect(t, next, pgx.QueryExecModeSimpleProtocol)
		fltCheckSchema(t, c, next)
		// The backend was rolled back (or replaced): the next client is not
		// inside the vanished client's transaction.
		var inTx bool
		if err := c.QueryRow(fltCtx(t), "select now() <> statement_timestamp()").Scan(&inTx); err != nil || inTx {
			t.Fatalf("next client inside a leftover transaction: %v, %v", inTx, err)
		}
		var n int
		if err := d.QueryRow(fltCtx(t), "select count(*) from flt_vanish.flt_log").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows of the vanished client's transaction: %d, %v; want 0", n, err)
		}
	})
}

// Shutting down while clients are in the middle of their startup must not
// race with them: shutdown tells idle sessions 57P01 by writing to the
// same buffer a session fills with its greeting. Every client either gets
// in and is then told 57P01 (or its query finished), or is refused
// cleanly; pgtenant itself must exit without error or panic.
func TestFaultShutdownDuringStartups(t *testing.T) {
	t.Parallel()
	const tenant = "fault_shutdown_startups"
	createTenant(t, tenant)
	p := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const clients = 20
	var wg sync.WaitGroup
	var admitted atomic.Int64
	unexpected := make(chan error, clients*100)
	stop := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := pgx.Connect(ctx, p.DSN(tenant))
				if err != nil {
					if code := sqlState(err); code != "" && code != "57P01" {
						unexpected <- err
					}
					continue
				}
				admitted.Add(1)
				_, err = conn.Exec(ctx, "select 1")
				if code := sqlState(err); err != nil && code != "" && code != "57P01" {
					unexpected <- err
				}
				conn.Close(ctx)
			}
		}()
	}
	// Shut down once clients are coming in, then let them run into it.
	eventually(t, 20*time.Second, "clients being admitted", func() bool { return admitted.Load() >= clients })
	p.Stop(t)
	close(stop)
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("client got %v, want success, 57P01 or a refused connection", err)
	}
}

// A client counts toward max-client-conn only once it has authenticated
// (issue 11 D): clients that connect and stall at the password exchange
// hold startup slots (capped per address), never the slots of clients that
// proved who they are.
func TestFaultMaxClientConnCountsAuthenticatedOnly(t *testing.T) {
	t.Parallel()
	const tenant = "flt_maxauth"
	fltTenant(t, tenant)
	path := newUserList(t, map[string]string{"alice": "secret-a"})
	p := startProxy(t, withAuthFile(path), func(c *config.Config) {
		c.MaxClientConn = 1
		c.StartupTimeout = 30 * time.Second
	})
	// Three clients stall at the password: each got the SASL request and
	// answers nothing.
	for i := 0; i < 3; i++ {
		nc := rawDial(t, p)
		rawSend(t, nc, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": "alice", "database": tenant}})
		fe := pgproto3.NewFrontend(nc, nc)
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("stalling client %d: %v", i, err)
		}
		if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
			t.Fatalf("stalling client %d got %T, want the SASL request", i, msg)
		}
	}
	conn, err := connectAs(p, "alice", "secret-a", tenant)
	if err != nil {
		t.Fatalf("an authenticating client was refused while others stalled at the password: %v", err)
	}
	defer conn.Close(context.Background())
	fltCheckSchema(t, conn, tenant)
	// The one max-client-conn slot is now taken by an authenticated client.
	if _, err := connectAs(p, "alice", "secret-a", tenant); sqlState(err) != "53300" {
		t.Fatalf("a second authenticated client: %v, want 53300", err)
	}
}
