package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
)

// The failures tests hold the rows of the README's "Failures" table that
// no other test holds (the table names the test of each row): what a real
// client sees, severity and SQLSTATE, and whether its session goes on.

// flWant fails unless err is a PostgreSQL error with severity and code
// whose message contains each of msgs, and returns it.
func flWant(t testing.TB, err error, what, severity, code string, msgs ...string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: %v, want %s %s", what, err, severity, code)
	}
	if pe.Severity != severity || pe.Code != code {
		t.Fatalf("%s: %s %s %q, want %s %s", what, pe.Severity, pe.Code, pe.Message, severity, code)
	}
	for _, m := range msgs {
		if !strings.Contains(pe.Message, m) {
			t.Fatalf("%s: message %q does not say %q", what, pe.Message, m)
		}
	}
	return pe
}

// flConnectParams connects to tenant with extra startup parameters
// (params), which make the connection's parameter set new to pgtenant
// when their values are.
func flConnectParams(t testing.TB, p *Proxy, tenant string, params map[string]string) (*pgx.Conn, error) {
	return fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
		for k, v := range params {
			c.RuntimeParams[k] = v
		}
	})
}

// Row "no backend free within --query-wait-timeout, at connect": a
// connection that needs a backend to start (a parameter set new to
// pgtenant, or session mode) and gets none in time is refused with FATAL
// 53300 naming the wait and what to tune; a connection pgtenant knows the
// parameters of is admitted without one.
func TestFailuresNoBackendAtConnect(t *testing.T) {
	t.Parallel()
	const tenant = "fl_nobe_connect"
	fltTenant(t, tenant)

	t.Run("transaction mode", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.PoolSize = 1
			c.QueryWaitTimeout = 300 * time.Millisecond
		})
		holder := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		tx, err := holder.Begin(fltCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(fltCtx(t), "select 1"); err != nil {
			t.Fatal(err)
		}

		// Parameters pgtenant has seen (the holder's): admitted at once.
		known, err := fltConnect(t, p, tenant, nil)
		if err != nil {
			t.Fatalf("a client with known parameters while the only backend is held: %v, want admitted", err)
		}
		// New parameters: the startup needs a backend, and none comes.
		_, err = flConnectParams(t, p, tenant, map[string]string{"application_name": "fl_new_params"})
		pe := flWant(t, err, "connect with new parameters while every backend is busy", "FATAL", "53300",
			"query-wait-timeout (300ms)", "--pool-size", "--query-wait-timeout")
		if !strings.Contains(pe.Hint, "session mode") {
			t.Errorf("hint %q does not say when a new client needs a backend", pe.Hint)
		}
		// The admitted client's statement is what waits, and fails as
		// mid-session (TestFaultPoolExhausted).
		_, err = known.Exec(fltCtx(t), "select 1")
		flWant(t, err, "the admitted client's query", "ERROR", "57014", "query-wait-timeout")
		if err := tx.Commit(fltCtx(t)); err != nil {
			t.Fatal(err)
		}
		fltCheckSchema(t, known, tenant)
		c, err := flConnectParams(t, p, tenant, map[string]string{"application_name": "fl_new_params"})
		if err != nil {
			t.Fatalf("the same connect once the backend is free: %v", err)
		}
		fltCheckSchema(t, c, tenant)
	})

	t.Run("session mode", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.PoolMode = config.PoolSession
			c.PoolSize = 1
			c.QueryWaitTimeout = 300 * time.Millisecond
		})
		holder := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		_, err := fltConnect(t, p, tenant, nil)
		flWant(t, err, "a second session-mode client with a pool of one", "FATAL", "53300", "query-wait-timeout (300ms)")
		fltCheckSchema(t, holder, tenant)
		if err := holder.Close(fltCtx(t)); err != nil {
			t.Fatal(err)
		}
		c, err := fltConnect(t, p, tenant, nil)
		if err != nil {
			t.Fatalf("connect once the holder left: %v", err)
		}
		fltCheckSchema(t, c, tenant)
	})
}

// flForwarder stands between pgtenant's pool and PostgreSQL: cut ends
// every connection through it without a word and refuses new ones until
// open is called again, as a lost network or a dead host would.
type flForwarder struct {
	t      testing.TB
	addr   string // host:port it listens on
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newFlForwarder(t testing.TB, target string) *flForwarder {
	f := &flForwarder{t: t, target: target}
	f.open("127.0.0.1:0")
	t.Cleanup(f.cut)
	return f
}

func (f *flForwarder) open(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.ln, f.addr = ln, ln.Addr().String()
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
}

func (f *flForwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// Rows "backend dies with a command in flight and no word from the
// server" and "backend unreachable": the network to PostgreSQL is cut
// under a running query (FATAL 08007, closed), then stays down (a client
// admitted from the greeting cache gets ERROR 08006 and goes on; a
// connect that needs a backend gets FATAL 08006), then comes back.
func TestFailuresBackendUnreachable(t *testing.T) {
	t.Parallel()
	const tenant = "fl_unreach"
	fltTenant(t, tenant)
	fwd := newFlForwarder(t, fmt.Sprintf("%s:%d", pg.Host, pg.Port))
	p := startProxy(t, func(c *config.Config) {
		host, port, _ := net.SplitHostPort(fwd.addr)
		c.Backend = fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, pg.User, backendDB)
		c.Registry = backendDSN() // lookups do not go through the cut
		c.PoolSize = 1
		c.ServerConnectTimeout = 2 * time.Second
	})
	d := direct(t)

	inFlight := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	later := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		_, err := inFlight.Exec(ctx, "select pg_sleep(30) /* fl_unreach_q */")
		errc <- err
	}()
	fltWaitRunning(t, d, "fl_unreach_q")
	fwd.cut()
	err := fltResult(t, errc, "query whose backend's network was cut")
	pe := flWant(t, err, "query whose backend's network was cut", "FATAL", "08007")
	if !strings.Contains(pe.Detail, "whether it took effect is unknown") {
		t.Errorf("detail %q does not say the outcome is unknown", pe.Detail)
	}
	if _, err := inFlight.Exec(fltCtx(t), "select 1"); err == nil || !inFlight.IsClosed() {
		t.Fatalf("the client told FATAL goes on: %v, closed %v", err, inFlight.IsClosed())
	}

	// The backend is unreachable: at once, an ERROR, and the client goes on.
	_, err = later.Exec(fltCtx(t), "select 1")
	flWant(t, err, "a query with the backend unreachable", "ERROR", "08006", "cannot connect to the backend")
	if later.IsClosed() {
		t.Fatal("the client was closed by an unreachable backend")
	}
	_, err = flConnectParams(t, p, tenant, map[string]string{"application_name": "fl_unreach_new"})
	flWant(t, err, "a connect needing a backend, unreachable", "FATAL", "08006", "cannot connect to the backend")

	fwd.open(fwd.addr)
	eventually(t, 20*time.Second, "the same client's query once the backend is back", func() bool {
		_, err := later.Exec(fltCtx(t), "select 1")
		if err != nil && sqlState(err) != "08006" {
			t.Fatalf("query once the backend is back: %v", err)
		}
		return err == nil
	})
	fltCheckSchema(t, later, tenant)
}

// Row "backend dies while the client is inside a transaction with nothing
// in flight, or in session mode": the server's FATAL, with the rollback
// said; the client is closed; the transaction's row is not there.
func TestFailuresBackendDiesIdleInTransaction(t *testing.T) {
	t.Parallel()
	const tenant = "fl_idletx_kill"
	fltTenant(t, tenant, "create table fl_log (v text)")
	d := direct(t)
	terminate := func(t *testing.T, conn *pgx.Conn) {
		t.Helper()
		var pid uint32
		if err := conn.QueryRow(fltCtx(t), "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Exec(fltCtx(t), "select pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, conn *pgx.Conn, rolledBack bool) {
		t.Helper()
		var pe *pgconn.PgError
		eventually(t, 10*time.Second, "the client to hear of its backend's end", func() bool {
			_, err := conn.Exec(fltCtx(t), "select 1")
			if err == nil {
				return false // the server has not ended it yet
			}
			pe = flWant(t, err, "the client after its backend was terminated", "FATAL", "57P01")
			return true
		})
		if rolledBack && pe.Detail != "The open transaction was rolled back." {
			t.Errorf("detail %q, want the rollback said", pe.Detail)
		}
		if _, err := conn.Exec(fltCtx(t), "select 1"); err == nil || !conn.IsClosed() {
			t.Fatalf("the client told FATAL goes on: %v, closed %v", err, conn.IsClosed())
		}
	}

	t.Run("transaction mode", func(t *testing.T) {
		p := startProxy(t)
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		if _, err := conn.Exec(fltCtx(t), "begin; insert into fl_log values ('must be rolled back')"); err != nil {
			t.Fatal(err)
		}
		terminate(t, conn)
		check(t, conn, true)
		var n int
		if err := d.QueryRow(fltCtx(t), "select count(*) from fl_idletx_kill.fl_log").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows of the lost transaction: %d, %v; want 0", n, err)
		}
		fltCheckSchema(t, p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol), tenant)
	})

	t.Run("session mode", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) { c.PoolMode = config.PoolSession })
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		terminate(t, conn)
		check(t, conn, false)
		fltCheckSchema(t, p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol), tenant)
	})
}

// Row "pgtenant shutting down": an idle client is told FATAL 57P01; a
// client inside a transaction finishes it (within --shutdown-timeout),
// and is then told the same.
func TestFailuresShutdown(t *testing.T) {
	t.Parallel()
	const tenant = "fl_shutdown"
	fltTenant(t, tenant, "create table fl_log (v text)")
	p := startProxy(t, func(c *config.Config) { c.ShutdownTimeout = 10 * time.Second })
	idle := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	inTx := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	if _, err := inTx.Exec(fltCtx(t), "begin; insert into fl_log values ('finished')"); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { p.Stop(t); close(stopped) }()

	var err error
	eventually(t, 10*time.Second, "the idle client to be told of the shutdown", func() bool {
		_, err = idle.Exec(fltCtx(t), "select 1")
		return err != nil
	})
	flWant(t, err, "an idle client at shutdown", "FATAL", "57P01")
	if _, err := inTx.Exec(fltCtx(t), "insert into fl_log values ('finished')"); err != nil {
		t.Fatalf("a client in a transaction at shutdown, its next statement: %v", err)
	}
	if _, err := inTx.Exec(fltCtx(t), "commit"); err != nil {
		t.Fatalf("a client in a transaction at shutdown, its commit: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("pgtenant did not stop once its last transaction ended")
	}
	var n int
	if err := direct(t).QueryRow(fltCtx(t), "select count(*) from fl_shutdown.fl_log").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows the finishing transaction committed: %d, %v; want 2", n, err)
	}
}
