package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// pg is the PostgreSQL server the registry tests share; each test gets a
// database of its own on it, so that "before the registry exists" means
// something and tests cannot see each other's tenants.
var pg *pgcluster.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "router: cannot start PostgreSQL for the registry tests:", err)
		os.Exit(1)
	}
	pg = c
	code := m.Run()
	if code != 0 {
		log := pg.ServerLog()
		if len(log) > 8000 {
			log = log[len(log)-8000:]
		}
		fmt.Fprintf(os.Stderr, "--- PostgreSQL server log (tail) ---\n%s\n", log)
	}
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "router: stop PostgreSQL:", err)
	}
	os.Exit(code)
}

var dbSeq atomic.Int64

// newDatabase creates an empty database for the calling test and returns
// its DSN.
func newDatabase(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("router_%d", dbSeq.Add(1))
	if err := pg.CreateDatabase(testContext(t), name); err != nil {
		t.Fatal(err)
	}
	return pg.DSN(name)
}

// testContext bounds a test's database work, so that a hang fails the test
// instead of stalling the run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openRegistry(t *testing.T, dsn string) *PGRegistry {
	t.Helper()
	reg, err := OpenRegistry(testContext(t), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}

func TestOpenRegistryBadDSN(t *testing.T) {
	ctx := testContext(t)
	if _, err := OpenRegistry(ctx, "host=127.0.0.1 port=1 connect_timeout=2 sslmode=disable", nil); err == nil {
		t.Fatal("OpenRegistry on a closed port succeeded")
	}
	if _, err := OpenRegistry(ctx, "postgres://[::1", nil); err == nil {
		t.Fatal("OpenRegistry on a malformed DSN succeeded")
	}
}

func TestRegistryBeforeItExists(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))

	_, err := reg.LookupTenant(ctx, "acme")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant without a registry: got %v, want ErrNotFound", err)
	}
	// Schema present, table missing: 42P01 rather than 3F000.
	if _, err := reg.Pool().Exec(ctx, `CREATE SCHEMA pgtenant`); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.LookupTenant(ctx, "acme"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant without the table: got %v, want ErrNotFound", err)
	}

	tenants, err := ListTenants(ctx, reg.Pool())
	if err != nil || len(tenants) != 0 {
		t.Fatalf("ListTenants without a registry: got %v, %v; want none, nil", tenants, err)
	}
	// Inside a caller's transaction, ListTenants must not abort it.
	tx, err := reg.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := ListTenants(ctx, tx); err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("the transaction is unusable after ListTenants: %v", err)
	}
}

func schemaExists(t *testing.T, db DB, schema string) bool {
	t.Helper()
	var exists bool
	err := db.QueryRow(testContext(t),
		`SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestCreateTenant(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()

	got, created, err := CreateTenant(ctx, db, "acme", "")
	if err != nil || !created {
		t.Fatalf("CreateTenant(acme): %+v, created=%v, %v", got, created, err)
	}
	if want := (Tenant{Name: "acme", Schema: "acme", Active: true, Backend: DefaultBackend}); got != want {
		t.Fatalf("CreateTenant(acme) = %+v, want %+v", got, want)
	}
	if !schemaExists(t, db, "acme") {
		t.Fatal("schema acme was not created")
	}
	found, err := reg.LookupTenant(ctx, "acme")
	if err != nil || found != got {
		t.Fatalf("LookupTenant(acme) = %+v, %v; want %+v", found, err, got)
	}

	// Twice is harmless, and puts back a schema someone dropped.
	if _, err := db.Exec(ctx, `DROP SCHEMA acme`); err != nil {
		t.Fatal(err)
	}
	again, created, err := CreateTenant(ctx, db, "acme", "acme")
	if err != nil || created || again != got {
		t.Fatalf("second CreateTenant(acme) = %+v, created=%v, %v; want %+v, created=false", again, created, err, got)
	}
	if !schemaExists(t, db, "acme") {
		t.Fatal("second CreateTenant did not recreate the dropped schema")
	}

	// A schema named apart from the tenant, and one that already exists
	// (adopted, not an error).
	if _, err := db.Exec(ctx, `CREATE SCHEMA legacy_globex`); err != nil {
		t.Fatal(err)
	}
	globex, created, err := CreateTenant(ctx, db, "globex", "legacy_globex")
	if err != nil || !created || globex.Schema != "legacy_globex" {
		t.Fatalf("CreateTenant(globex, legacy_globex) = %+v, created=%v, %v", globex, created, err)
	}

	conflicts := []struct {
		name, schema string
		want         []string // substrings of the error
	}{
		{"acme", "acme2", []string{`tenant "acme" already exists with schema "acme", not "acme2"`}},
		{"initech", "acme", []string{`schema "acme" already belongs to tenant "acme"`}},
		{"legacy_globex", "", []string{`schema "legacy_globex" already belongs to tenant "globex"`}},
	}
	for _, c := range conflicts {
		_, created, err := CreateTenant(ctx, db, c.name, c.schema)
		if err == nil || created {
			t.Fatalf("CreateTenant(%q, %q) succeeded (created=%v), want a conflict", c.name, c.schema, created)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("CreateTenant(%q, %q) error %q does not contain %q", c.name, c.schema, err, w)
			}
		}
	}
	if schemaExists(t, db, "acme2") {
		t.Fatal("a refused CreateTenant left schema acme2 behind")
	}
	if _, err := reg.LookupTenant(ctx, "initech"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused CreateTenant registered initech: %v", err)
	}

	// Registered tenants a lookup must not confuse.
	if _, err := reg.LookupTenant(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant(nope): got %v, want ErrNotFound", err)
	}
	if _, err := reg.LookupTenant(ctx, "ACME"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant(ACME): got %v, want ErrNotFound (names are exact)", err)
	}
	// Startup values are data: a name built to break out of a string
	// literal is just an unknown name.
	if _, err := reg.LookupTenant(ctx, `x' OR '1'='1`); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupTenant(injection attempt): got %v, want ErrNotFound", err)
	}

	// A disabled tenant is found, inactive.
	if _, err := db.Exec(ctx, `UPDATE pgtenant.tenants SET active = false WHERE name = 'globex'`); err != nil {
		t.Fatal(err)
	}
	if g, err := reg.LookupTenant(ctx, "globex"); err != nil || g.Active {
		t.Fatalf("LookupTenant(disabled globex) = %+v, %v; want it found, inactive", g, err)
	}
}

// untouchableDB fails the test if an admin function uses it.
type untouchableDB struct{ t *testing.T }

func (d untouchableDB) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	d.t.Error("Exec called")
	return pgconn.CommandTag{}, errors.New("untouchable")
}

func (d untouchableDB) Query(context.Context, string, ...any) (pgx.Rows, error) {
	d.t.Error("Query called")
	return nil, errors.New("untouchable")
}

func (d untouchableDB) QueryRow(context.Context, string, ...any) pgx.Row {
	d.t.Error("QueryRow called")
	return nil
}

func (d untouchableDB) Begin(context.Context) (pgx.Tx, error) {
	d.t.Error("Begin called")
	return nil, errors.New("untouchable")
}

func TestCreateTenantRejectsBadNames(t *testing.T) {
	tests := []struct {
		name, schema string
		want         string
	}{
		{"Acme!", "", `invalid tenant name "Acme!"`},
		{"", "acme", `invalid tenant name ""`},
		{"acme", "Acme", `invalid schema name "Acme"`},
		{"acme", `a"; DROP SCHEMA public; --`, `invalid schema name`},
		{"acme", "public", `invalid schema name "public": it is reserved`},
		{"pg_acme", "", `invalid schema name "pg_acme": it is reserved`},
		{"acme", "pgtenant", `invalid schema name "pgtenant": it is reserved`},
		{"pgtenant", "", `invalid tenant name "pgtenant": it is reserved: database pgtenant is the admin console`},
		{"acme", "information_schema", `reserved`},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.schema, func(t *testing.T) {
			_, created, err := CreateTenant(context.Background(), untouchableDB{t}, tt.name, tt.schema)
			var nameErr *InvalidNameError
			if !errors.As(err, &nameErr) || created {
				t.Fatalf("CreateTenant(%q, %q) = created=%v, %v; want *InvalidNameError", tt.name, tt.schema, created, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	// The same check on the real database: nothing is created there.
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	if _, _, err := CreateTenant(ctx, reg.Pool(), "acme", "public"); err == nil {
		t.Fatal("CreateTenant(acme, public) succeeded")
	}
	if schemaExists(t, reg.Pool(), "pgtenant") {
		t.Fatal("a refused CreateTenant created the registry")
	}
}

func TestConcurrentAdmin(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	const workers = 8
	// The pool holds only a few connections; these workers queue on it,
	// which is fine: the point is that nothing fails.
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	var createdCount atomic.Int32
	for range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- EnsureRegistry(ctx, reg.Pool())
		}()
		go func() {
			defer wg.Done()
			_, created, err := CreateTenant(ctx, reg.Pool(), "acme", "")
			if created {
				createdCount.Add(1)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent EnsureRegistry/CreateTenant: %v", err)
		}
	}
	if n := createdCount.Load(); n != 1 {
		t.Fatalf("%d concurrent CreateTenant calls reported created %d times, want 1", workers, n)
	}
}

func TestListTenants(t *testing.T) {
	ctx := testContext(t)
	dsn := newDatabase(t)
	// A *pgx.Conn satisfies DB as well as a pool does.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	if err := EnsureRegistry(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if tenants, err := ListTenants(ctx, conn); err != nil || len(tenants) != 0 {
		t.Fatalf("ListTenants of an empty registry = %v, %v", tenants, err)
	}
	for _, name := range []string{"zeta", "alpha", "mid_1", "mid"} {
		if _, _, err := CreateTenant(ctx, conn, name, name+"_s"); err != nil {
			t.Fatal(err)
		}
	}
	tenants, err := ListTenants(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []Tenant{
		{"alpha", "alpha_s", true, DefaultBackend},
		{"mid", "mid_s", true, DefaultBackend},
		{"mid_1", "mid_1_s", true, DefaultBackend},
		{"zeta", "zeta_s", true, DefaultBackend},
	}
	if !slices.Equal(tenants, want) {
		t.Fatalf("ListTenants = %+v, want %+v", tenants, want)
	}
}

// startWatch runs reg.Watch until the test ends, sending what onChange gets
// to the returned channel.
func startWatch(t *testing.T, reg *PGRegistry) <-chan string {
	t.Helper()
	changes := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Watch(ctx, func(name string) { changes <- name }) }()
	t.Cleanup(func() {
		cancel()
		if err := receive(t, "Watch to return", done); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
	return changes
}

// nextChange waits for a notification of want, skipping others.
func nextChange(t *testing.T, changes <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-changes:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no change %q notified within 10s", want)
		}
	}
}

func TestWatch(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	changes := startWatch(t, reg)
	// "" is sent once Watch is listening, so a tenant created after it
	// must be notified.
	if got := receive(t, "Watch to start listening", changes); got != "" {
		t.Fatalf("first change = %q, want \"\" (forget all)", got)
	}
	if _, _, err := CreateTenant(ctx, reg.Pool(), "acme", ""); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, "the notification for acme", changes); got != "acme" {
		t.Fatalf("change = %q, want acme", got)
	}
	// A second, harmless create changes nothing and need not notify; a
	// notification sent by hand is passed on as it is.
	if _, err := reg.Pool().Exec(ctx, `SELECT pg_notify($1, 'globex')`, NotifyChannel); err != nil {
		t.Fatal(err)
	}
	nextChange(t, changes, "globex")

	// Kill the listening session: Watch reconnects, says "forget all",
	// and notifications flow again.
	var killed int
	err := reg.Pool().QueryRow(ctx,
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		 WHERE application_name = 'pgtenant registry watch' AND datname = current_database()`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the watch session: killed %d, %v", killed, err)
	}
	nextChange(t, changes, "")
	if _, _, err := CreateTenant(ctx, reg.Pool(), "initech", ""); err != nil {
		t.Fatal(err)
	}
	nextChange(t, changes, "initech")
}

// TestRouterWithRegistry wires a Router to a PGRegistry as the proxy does,
// and checks that a tenant created after its name was cached as unknown is
// found at once, not after the miss TTL.
func TestRouterWithRegistry(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	// TTLs far longer than the test: only Watch can make the change seen.
	r := New(reg, config.TenantFromDatabase, time.Hour, time.Hour)
	changes := startWatch(t, reg)
	forgotten := make(chan string, 100)
	go func() {
		for name := range changes {
			if name == "" {
				r.ForgetAll()
			} else {
				r.Forget(name)
			}
			forgotten <- name
		}
	}()
	receive(t, "Watch to start listening", forgotten)

	var unknown *UnknownTenantError
	if _, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); !errors.As(err, &unknown) {
		t.Fatalf("before creation: got %v, want UnknownTenantError", err)
	}
	if _, _, err := CreateTenant(ctx, reg.Pool(), "acme", "acme_s"); err != nil {
		t.Fatal(err)
	}
	want := Tenant{Name: "acme", Schema: "acme_s", Active: true, Backend: DefaultBackend}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
		if err == nil {
			if got != want {
				t.Fatalf("ResolveTenant(acme) = %+v, want %+v", got, want)
			}
			break
		}
		if !errors.As(err, &unknown) {
			t.Fatalf("ResolveTenant(acme): %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the new tenant was not found within 10s: the cached miss was never forgotten")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}

	// Disabling it, announced the same way, reaches the router too.
	if _, err := reg.Pool().Exec(ctx, `UPDATE pgtenant.tenants SET active = false WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Pool().Exec(ctx, `SELECT pg_notify($1, 'acme')`, NotifyChannel); err != nil {
		t.Fatal(err)
	}
	var disabled *DisabledTenantError
	waitFor(t, "the router to see acme disabled", func() bool {
		_, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
		return errors.As(err, &disabled)
	})
}

// TestLookupAfterSessionsTerminated: the registry's lookup sessions are
// ended under it (pg_terminate_backend, as an operator or a failover does);
// the next lookups reconnect instead of failing.
func TestLookupAfterSessionsTerminated(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	if _, _, err := CreateTenant(ctx, reg.Pool(), "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := GrantTenant(ctx, reg.Pool(), "acme", "alice"); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		if _, err := reg.LookupTenant(ctx, "acme"); err != nil {
			t.Fatalf("round %d, before: %v", round, err)
		}
		// Open a few sessions, so that more than one dead one waits in
		// the pool.
		var wg sync.WaitGroup
		for i := 0; i < registryMaxConns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = reg.Pool().Exec(ctx, "SELECT pg_sleep(0.05)")
			}()
		}
		wg.Wait()

		admin, err := pgx.Connect(ctx, reg.Pool().Config().ConnConfig.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		var pids []int32
		err = admin.QueryRow(ctx, `SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
			WHERE application_name = 'pgtenant registry' AND datname = current_database()`).Scan(&pids)
		if err != nil || len(pids) == 0 {
			t.Fatalf("find the registry sessions: %v, %v", pids, err)
		}
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid`, pids); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the terminated sessions to end", func() bool {
			var left int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, pids).Scan(&left); err != nil {
				t.Fatal(err)
			}
			return left == 0
		})
		admin.Close(ctx)

		if round%2 == 0 {
			if got, err := reg.LookupTenant(ctx, "acme"); err != nil || got.Name != "acme" {
				t.Fatalf("round %d, lookup after the sessions ended: %+v, %v", round, got, err)
			}
		} else {
			if g, err := reg.LookupGrants(ctx, "alice"); err != nil || !slices.Equal(g.Tenants, []string{"acme"}) {
				t.Fatalf("round %d, grants after the sessions ended: %+v, %v", round, g, err)
			}
		}
	}
}

// syncLog is a log destination that tests read while the registry writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRegistryOutage: the registry's database stops taking connections and
// its sessions are ended. A tenant found before is still found (stale, even
// after ForgetAll), a name never found gets the registry's error, and the
// outage is logged once; when the database takes connections again, lookups
// reach it again (after the backoff) and that is logged once.
func TestRegistryOutage(t *testing.T) {
	ctx := testContext(t)
	dsn := newDatabase(t)
	logs := &syncLog{}
	reg, err := OpenRegistry(ctx, dsn, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	if _, _, err := CreateTenant(ctx, reg.Pool(), "acme", ""); err != nil {
		t.Fatal(err)
	}
	r := New(reg, config.TenantFromDatabase, time.Hour, time.Hour)
	if _, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); err != nil {
		t.Fatal(err)
	}

	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) }) // after allow(true) below
	db := reg.Pool().Config().ConnConfig.Database
	allow := func(on bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t",
			pgx.Identifier{db}.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	t.Cleanup(func() { allow(true) })
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the registry sessions to end", func() bool {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, db).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})

	r.ForgetAll() // as a watcher that reconnected would
	for i := 0; i < 5; i++ {
		if got, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); err != nil || got.Name != "acme" {
			t.Fatalf("known tenant during the outage: %+v, %v", got, err)
		}
		var unknown *UnknownTenantError
		if _, err := r.ResolveTenant(ctx, Startup{Database: "globex"}); err == nil || errors.As(err, &unknown) {
			t.Fatalf("a name never found, during the outage: %v, want the registry's error", err)
		}
	}
	const down, up = "tenant registry unreachable", "tenant registry reachable again"
	if n := logs.count(down); n != 1 {
		t.Fatalf("%d lines say %q, want 1:\n%s", n, down, logs)
	}

	allow(true)
	waitFor(t, "lookups to reach the registry again", func() bool {
		_, err := reg.LookupTenant(ctx, "globex")
		return errors.Is(err, ErrNotFound)
	})
	if n := logs.count(up); n != 1 {
		t.Fatalf("%d lines say %q, want 1:\n%s", n, up, logs)
	}
	if n := logs.count(down); n != 1 {
		t.Fatalf("%d lines say %q after the outage, want 1:\n%s", n, down, logs)
	}
	if strings.Contains(logs.String(), "error=") {
		t.Fatalf("a line says error= where the code says err=:\n%s", logs)
	}
}
