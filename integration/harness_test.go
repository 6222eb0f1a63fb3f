package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

// backendDB is the database that holds the registry and tenant schemas.
const backendDB = "pgtenant_it"

// pg is the PostgreSQL every test in this package shares.
var pg *pgcluster.Cluster

// startOwnCluster starts a PostgreSQL of the test's own, with database db
// in it, for a test that must not share pg: it changes server settings,
// fills max_connections or terminates sessions every other test depends on.
// The cluster stops when the test ends, after logging the tail of its server
// log if the test failed.
func startOwnCluster(ctx context.Context, t *testing.T, opts pgcluster.Options, db string) *pgcluster.Cluster {
	t.Helper()
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start a PostgreSQL for %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's PostgreSQL server log (tail):\n%s", t.Name(), lastChars(c.ServerLog(), 8000))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop %s's PostgreSQL: %v", t.Name(), err)
		}
	})
	if err := c.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{MaxConnections: 400})
	if err == nil {
		err = c.CreateDatabase(ctx, backendDB)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: cannot start PostgreSQL:", err)
		if c != nil {
			_ = c.Stop()
		}
		os.Exit(1)
	}
	pg = c
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, "--- PostgreSQL server log (tail) ---")
		fmt.Fprintln(os.Stderr, lastChars(pg.ServerLog(), 8000))
	}
	_ = pg.Stop()
	os.Exit(code)
}

// backendDSN is the DSN pgtenant's pool (and direct test connections) use.
func backendDSN() string { return pg.DSN(backendDB) }

// Proxy is a pgtenant serving pg in-process.
type Proxy struct {
	Host string
	Port int
	Cfg  config.Config

	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	reload chan struct{} // proxy.WithReload: see Reload

	stopOnce sync.Once
}

// startProxy starts pgtenant against the shared cluster on a free port.
// mods adjust the config (pool size, mode, timeouts). It stops when the
// test ends; its log is printed if the test failed.
func startProxy(t testing.TB, mods ...func(*config.Config)) *Proxy {
	t.Helper()
	cfg := config.Default()
	cfg.Backend = backendDSN()
	// Most tests check what happened with a superuser's direct connection
	// and make their fixtures as it, and the shared proxy runs as that
	// superuser too: an explicit opt-out of the role check. Tests of the
	// production setup (an admin role and a pool role) use withRecipe.
	cfg.AllowPrivilegedBackend = true
	cfg.Listen = "127.0.0.1:0"
	cfg.PoolSize = 4
	cfg.QueryWaitTimeout = 10 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.LogLevel = "debug"
	for _, m := range mods {
		m(&cfg)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Host: "127.0.0.1", Port: addr.Port, Cfg: cfg, cancel: cancel, done: make(chan error, 1), logs: logs,
		reload: make(chan struct{})}
	go func() { p.done <- proxy.RunListener(ctx, cfg, log, ln, proxy.WithReload(p.reload)) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("pgtenant log:\n%s", logs.String())
		}
	})
	return p
}

// Stop shuts pgtenant down and waits for it; safe to call twice.
func (p *Proxy) Stop(t testing.TB) {
	p.cancel()
	p.stopOnce.Do(func() {
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("pgtenant exited with error: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("pgtenant did not stop within 30s")
		}
	})
}

// Reload asks pgtenant to reread the files its config names (auth file,
// certificates), as SIGHUP does, and returns once the request was taken.
// The reload itself runs asynchronously: poll for its effect.
func (p *Proxy) Reload(t testing.TB) {
	t.Helper()
	select {
	case p.reload <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("pgtenant did not take the reload request within 10s")
	}
}

// Logs returns what pgtenant logged so far.
func (p *Proxy) Logs() string { return p.logs.String() }

// DSN is a key=value DSN for a client of tenant (as database name).
func (p *Proxy) DSN(tenant string) string {
	return fmt.Sprintf("host=%s port=%d user=app dbname=%s sslmode=disable connect_timeout=10", p.Host, p.Port, tenant)
}

// Connect opens a pgx connection to pgtenant for tenant with the given
// query exec mode.
func (p *Proxy) Connect(t testing.TB, tenant string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN(tenant))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to pgtenant as tenant %s: %v", tenant, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Psql runs psql against pgtenant for tenant; it returns combined output.
func (p *Proxy) Psql(t testing.TB, tenant string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-At",
		"-h", p.Host, "-p", fmt.Sprint(p.Port), "-U", "app", "-d", tenant}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", full...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// cleanEnv is the environment for client programs, without PG* variables
// that would point them elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGCONNECT_TIMEOUT=10")
}

// direct connects to the backend database, bypassing pgtenant, to check
// what really happened.
func direct(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, backendDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// createTenant registers a tenant (schema = name) and runs setupSQL in its
// schema (search_path set to it), directly on the backend.
func createTenant(t testing.TB, name string, setupSQL ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := direct(t)
	if _, _, err := router.CreateTenant(ctx, conn, name, ""); err != nil {
		t.Fatalf("create tenant %s: %v", name, err)
	}
	if len(setupSQL) == 0 {
		return
	}
	if _, err := conn.Exec(ctx, "SET search_path TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	for _, q := range setupSQL {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("tenant %s setup %q: %v", name, q, err)
		}
	}
}

// sqlState returns the SQLSTATE of a PostgreSQL error, or "".
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
