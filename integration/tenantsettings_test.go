package integration

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

// setTenant stores settings for tenant through the registry's admin
// function, as `pgtenant tenant set` does.
func setTenant(t *testing.T, tenant string, kv ...string) {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := router.SetTenantSettings(ctx, direct(t), tenant, m); err != nil {
		t.Fatalf("set %s %v: %v", tenant, kv, err)
	}
}

func show(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(context.Background(), "SHOW "+name).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", name, err)
	}
	return v
}

// A tenant's set.* settings are applied by the pin as its clients'
// defaults: its slow statement is cancelled (57014) while another
// tenant's is not, a client may override the setting in its session, and
// a reset returns to the tenant's value. A change reaches a connected
// session at its next transaction.
func TestTenantSessionSettings(t *testing.T) {
	createTenant(t, "tset_slow")
	createTenant(t, "tset_fast")
	setTenant(t, "tset_slow", "set.statement_timeout", "100ms", "tier", "gold")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := context.Background()

	slow := p.Connect(t, "tset_slow", pgx.QueryExecModeCacheStatement)
	if _, err := slow.Exec(ctx, "SELECT pg_sleep(1)"); sqlState(err) != "57014" {
		t.Fatalf("tset_slow's pg_sleep(1) with statement_timeout 100ms: %v; want 57014", err)
	}
	fast := p.Connect(t, "tset_fast", pgx.QueryExecModeCacheStatement)
	if _, err := fast.Exec(ctx, "SELECT pg_sleep(0.3)"); err != nil {
		t.Fatalf("tset_fast's pg_sleep(0.3): %v", err)
	}

	// One backend serves both (pool size 1): the pin key tells their
	// settings apart, so each sees its own, whichever ran last.
	var pidSlow, pidFast int
	for i := 0; i < 3; i++ {
		if got := show(t, slow, "statement_timeout"); got != "100ms" {
			t.Fatalf("tset_slow's statement_timeout = %q, want 100ms", got)
		}
		if got := show(t, fast, "statement_timeout"); got != "0" {
			t.Fatalf("tset_fast's statement_timeout after tset_slow's pin = %q, want the default 0", got)
		}
	}
	if err := slow.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidSlow); err != nil {
		t.Fatal(err)
	}
	if err := fast.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidFast); err != nil {
		t.Fatal(err)
	}
	if pidSlow != pidFast {
		t.Fatalf("pool size 1 served the two tenants from backends %d and %d", pidSlow, pidFast)
	}

	// The client's own SET overrides the tenant's default, as it would a
	// role's ALTER ROLE ... SET; RESET returns to the tenant's value.
	if _, err := slow.Exec(ctx, "SET statement_timeout = '2s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Exec(ctx, "SELECT pg_sleep(0.3)"); err != nil {
		t.Fatalf("tset_slow's pg_sleep(0.3) after its own SET statement_timeout = 2s: %v", err)
	}
	if _, err := slow.Exec(ctx, "RESET statement_timeout"); err != nil {
		t.Fatal(err)
	}
	if got := show(t, slow, "statement_timeout"); got != "100ms" {
		t.Fatalf("tset_slow's statement_timeout after RESET = %q, want the tenant's 100ms", got)
	}
	if _, err := slow.Exec(ctx, "RESET ALL"); err != nil {
		t.Fatal(err)
	}
	if got := show(t, slow, "statement_timeout"); got != "100ms" {
		t.Fatalf("tset_slow's statement_timeout after RESET ALL = %q, want the tenant's 100ms", got)
	}

	// A change reaches the connected session of the fast tenant at its
	// next transaction (after the NOTIFY).
	setTenant(t, "tset_fast", "set.statement_timeout", "150ms", "set.work_mem", "8MB")
	eventually(t, 10*time.Second, "tset_fast's session to get statement_timeout 150ms", func() bool {
		return show(t, fast, "statement_timeout") == "150ms"
	})
	if got := show(t, fast, "work_mem"); got != "8MB" {
		t.Fatalf("tset_fast's work_mem = %q, want 8MB", got)
	}
	if _, err := fast.Exec(ctx, "SELECT pg_sleep(1)"); sqlState(err) != "57014" {
		t.Fatalf("tset_fast's pg_sleep(1) after statement_timeout 150ms: %v; want 57014", err)
	}
	// And the slow tenant, on the same backend, still has its own.
	if got := show(t, slow, "work_mem"); got == "8MB" {
		t.Fatal("tset_slow got tset_fast's work_mem")
	}

	// Unset: back to the server's default at the next transaction.
	ctx15, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := router.UnsetTenantSettings(ctx15, direct(t), "tset_fast", []string{"set.statement_timeout", "set.work_mem"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "tset_fast's session to lose its statement_timeout", func() bool {
		return show(t, fast, "statement_timeout") == "0"
	})
	// A new client of the slow tenant starts with its settings.
	if out, err := p.Psql(t, "tset_slow", "-c", "SHOW statement_timeout"); err != nil || out != "100ms" {
		t.Fatalf("psql for tset_slow: SHOW statement_timeout = %q, %v", out, err)
	}
}

// A tenant over its storage quota gets PostgreSQL's 25006 on writes from
// its next transaction while it can still read; another tenant is not
// affected; raising the quota or deleting data makes writes work again.
func TestTenantStorageQuota(t *testing.T) {
	createTenant(t, "tquota", "CREATE TABLE items (id serial PRIMARY KEY, pad text)")
	createTenant(t, "tquota_other", "CREATE TABLE items (id serial PRIMARY KEY, pad text)")
	setTenant(t, "tquota", "storage_quota", "1MB")
	p := startProxy(t, func(c *config.Config) { c.SchemaSizeInterval = 200 * time.Millisecond })
	ctx := context.Background()

	conn := p.Connect(t, "tquota", pgx.QueryExecModeCacheStatement)
	other := p.Connect(t, "tquota_other", pgx.QueryExecModeCacheStatement)
	// About 2 MB of rows: over the quota.
	if _, err := conn.Exec(ctx, "INSERT INTO items (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 2000) g"); err != nil {
		t.Fatalf("insert under the quota: %v", err)
	}
	insert := func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "INSERT INTO items (pad) VALUES ('x')")
		return err
	}
	eventually(t, 10*time.Second, "tquota's writes to fail with 25006", func() bool {
		err := insert(conn)
		if err != nil && sqlState(err) != "25006" {
			t.Fatalf("insert over the quota: %v; want 25006 or success", err)
		}
		return err != nil
	})
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil || n < 2000 {
		t.Fatalf("read over the quota: %d, %v", n, err)
	}
	if err := insert(other); err != nil {
		t.Fatalf("the other tenant's insert: %v", err)
	}
	// A new client of the tenant is read-only from the start.
	if out, err := p.Psql(t, "tquota", "-c", "INSERT INTO items (pad) VALUES ('y')"); err == nil || !strings.Contains(out, "read-only transaction") {
		t.Fatalf("psql insert over the quota: %q, %v", out, err)
	}
	if !strings.Contains(p.Logs(), "tenant is over its storage quota") {
		t.Fatal("no log line for going over the quota")
	}

	// Raising the quota lets the tenant write again.
	setTenant(t, "tquota", "storage_quota", "100MB")
	eventually(t, 10*time.Second, "tquota's writes to work under a raised quota", func() bool {
		return insert(conn) == nil
	})

	// Lowering it again, then deleting the data, likewise.
	setTenant(t, "tquota", "storage_quota", "1MB")
	eventually(t, 10*time.Second, "tquota to be read-only again", func() bool { return insert(conn) != nil })
	if _, err := conn.Exec(ctx, "TRUNCATE items"); sqlState(err) != "25006" {
		t.Fatalf("TRUNCATE over the quota: %v; want 25006", err)
	}
	if _, err := direct(t).Exec(ctx, "TRUNCATE tquota.items"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "tquota's writes to work once its data is gone", func() bool {
		return insert(conn) == nil
	})
	if !strings.Contains(p.Logs(), "tenant is back under its storage quota") {
		t.Fatal("no log line for going back under the quota")
	}
}

// startProxyWith is startProxy with run options of the test's own.
func startProxyWith(t *testing.T, log *slog.Logger, logs *syncBuffer, opts []proxy.RunOption, mods ...func(*config.Config)) *Proxy {
	t.Helper()
	cfg := config.Default()
	cfg.Backend = backendDSN()
	cfg.AllowPrivilegedBackend = true
	cfg.Listen = "127.0.0.1:0"
	cfg.PoolSize = 4
	cfg.QueryWaitTimeout = 10 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	for _, m := range mods {
		m(&cfg)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Cfg: cfg, cancel: cancel,
		done: make(chan error, 1), logs: logs, reload: make(chan struct{})}
	opts = append(opts, proxy.WithReload(p.reload))
	go func() { p.done <- proxy.RunListener(ctx, cfg, log, ln, opts...) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("pgtenant log:\n%s", logs.String())
		}
	})
	return p
}

// A reload (SIGHUP) changes the pool size under load without a client
// seeing an error, changes the log level, and logs a setting that needs a
// restart without applying it.
func TestReloadPoolSize(t *testing.T) {
	createTenant(t, "treload")
	const appName = "pgtenant_reload_test"
	base := config.Default()
	base.Backend = backendDSN() + " application_name=" + appName
	base.Registry = backendDSN()
	base.AllowPrivilegedBackend = true
	base.Listen = "127.0.0.1:0"
	base.PoolSize = 2
	base.QueryWaitTimeout = 30 * time.Second
	base.ShutdownTimeout = 2 * time.Second
	base.LogLevel = "debug"

	var mu sync.Mutex
	next := base
	loader := func() (config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return next, next.Validate()
	}
	setNext := func(f func(*config.Config)) {
		mu.Lock()
		f(&next)
		mu.Unlock()
	}
	level := new(slog.LevelVar)
	logs := &syncBuffer{}
	log := config.NewLevelLogger(base, logs, level)
	p := startProxyWith(t, log, logs, []proxy.RunOption{proxy.WithConfigLoader(loader), proxy.WithLogLevel(level)},
		func(c *config.Config) { *c = base })

	backends := func() int {
		var n int
		if err := direct(t).QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Load: 8 clients running short sleeps in a loop until told to stop
	// (bounded: each stops after 2000 queries at most).
	var stop atomic.Bool
	var errs []error
	var errMu sync.Mutex
	var queries atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		conn := p.Connect(t, "treload", pgx.QueryExecModeCacheStatement)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 2000 && !stop.Load(); j++ {
				if _, err := conn.Exec(context.Background(), "SELECT pg_sleep(0.05)"); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
					return
				}
				queries.Add(1)
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	eventually(t, 10*time.Second, "load to start", func() bool { return queries.Load() > 8 })
	if n := backends(); n > 2 {
		t.Fatalf("%d backends with pool size 2", n)
	}

	setNext(func(c *config.Config) { c.PoolSize = 6; c.LogLevel = "warn"; c.PoolMode = config.PoolSession })
	p.Reload(t)
	eventually(t, 10*time.Second, "more than 2 backends after growing the pool to 6", func() bool { return backends() > 2 })
	if n := backends(); n > 6 {
		t.Fatalf("%d backends with pool size 6", n)
	}
	eventually(t, 5*time.Second, "the log level to become warn", func() bool { return level.Level() == slog.LevelWarn })
	logText := p.Logs()
	for _, want := range []string{
		`msg="reload: setting changed" key=pool-size old=2 new=6`,
		`msg="reload: setting changed" key=log-level old=debug new=warn`,
		`needs a restart; the old value stays in force" key=pool-mode old=transaction new=session`,
	} {
		if !strings.Contains(logText, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	// Shrink back to 2: busy backends close as they are released.
	setNext(func(c *config.Config) { c.PoolSize = 2 })
	p.Reload(t)
	eventually(t, 15*time.Second, "at most 2 backends after shrinking the pool to 2", func() bool { return backends() <= 2 })
	before := queries.Load()
	eventually(t, 10*time.Second, "load to go on after shrinking", func() bool { return queries.Load() > before+8 })

	// A config that does not validate changes nothing.
	setNext(func(c *config.Config) { c.PoolSize = 0 })
	p.Reload(t)
	eventually(t, 5*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.Logs(), "reload: cannot load the config")
	})

	stop.Store(true)
	wg.Wait()
	errMu.Lock()
	defer errMu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d clients got errors during the reloads, the first: %v", len(errs), errs[0])
	}
	if queries.Load() < 16 {
		t.Fatalf("only %d queries ran", queries.Load())
	}
}
