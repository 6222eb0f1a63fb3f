package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// These tests hold what README "Django" says: the settings that work
// unchanged through pgtenant, why DISABLE_SERVER_SIDE_CURSORS must be True,
// and how manage.py test runs through it.

// djIterateSummary is the iterate command's last line.
var djIterateSummary = regexp.MustCompile(`(?m)^iterate ok: (\d+) threads, (\d+) rows each, server-side cursors (on|off)$`)

// djMigrate runs manage.py migrate for tenant through p.
func djMigrate(ctx context.Context, t *testing.T, p *Proxy, tenant string) {
	t.Helper()
	mctx, cancel := context.WithTimeout(ctx, djTimeout)
	defer cancel()
	out, errOut, err := djManage(mctx, p, tenant, "migrate", "--noinput")
	if err != nil {
		t.Fatalf("manage.py migrate for %s: %v\nstdout:\n%s\nstderr:\n%s", tenant, err, out, errOut)
	}
}

// TestDjangoIteratorThreads: four threads of one tenant each hold a
// QuerySet.iterator() open on a pool of four backends. With the settings
// README "Django" gives (DISABLE_SERVER_SIDE_CURSORS True) another tenant's
// query runs while they wait; with server-side cursors on, each iterator
// is a cursor WITH HOLD that pins its client to a backend, the pool is
// taken, and the other tenant gets 57014 at query-wait-timeout, as the
// README says.
func TestDjangoIteratorThreads(t *testing.T) {
	t.Parallel()
	djRequire(t)
	const (
		tenant  = "dj14_iter"
		other   = "dj14_iter_other"
		threads = 4
		rows    = 120
	)
	createTenant(t, tenant)
	createTenant(t, other)
	// The pool is as large as the threads; query-wait-timeout is the
	// harness's 10 s, which the pinned case waits out once.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = threads; c.LogLevel = "info" })
	ctx, cancel := context.WithTimeout(context.Background(), 2*djTimeout+time.Minute)
	defer cancel()
	djMigrate(ctx, t, p, tenant)
	d := direct(t)
	for _, q := range []string{
		fmt.Sprintf("TRUNCATE %s.shop_customer CASCADE", tenant),
		fmt.Sprintf("INSERT INTO %s.shop_customer (name, tenant_label, created) SELECT 'c' || i, '%s', now() FROM generate_series(1, %d) i", tenant, tenant, rows),
	} {
		if _, err := d.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	oc := p.Connect(t, other, pgx.QueryExecModeSimpleProtocol)

	for _, tc := range []struct {
		name              string
		serverSideCursors bool
		wantState         string // of the other tenant's query while the threads wait
	}{
		{"DISABLE_SERVER_SIDE_CURSORS True", false, ""},
		{"DISABLE_SERVER_SIDE_CURSORS False", true, "57014"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			if tc.serverSideCursors {
				env = append(env, "DJANGO_DB_SERVER_SIDE_CURSORS=1")
			}
			cctx, ccancel := context.WithTimeout(ctx, djTimeout)
			defer ccancel()
			cmd, err := djCommand(cctx, p, tenant, env, "iterate", "--threads", fmt.Sprint(threads))
			if err != nil {
				t.Fatal(err)
			}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdoutPipe, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var errb strings.Builder
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = stdin.Close(); _ = cmd.Wait() }()

			// Wait until every thread holds its iterator.
			sc := bufio.NewScanner(stdoutPipe)
			var out strings.Builder
			ready := false
			for !ready && sc.Scan() {
				out.WriteString(sc.Text() + "\n")
				ready = strings.HasPrefix(sc.Text(), "ready: ")
			}
			if !ready {
				_ = cmd.Wait()
				t.Fatalf("manage.py iterate never had all threads ready:\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
			}

			// Another tenant, while the threads hold their iterators.
			var one int
			err = oc.QueryRow(cctx, "SELECT 1").Scan(&one)
			if got := sqlState(err); got != tc.wantState || (tc.wantState == "" && err != nil) {
				t.Errorf("tenant %s's SELECT 1 while %d iterators are open: %v (SQLSTATE %q), want SQLSTATE %q",
					other, threads, err, got, tc.wantState)
			}

			// Let the threads finish.
			if err := stdin.Close(); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(stdoutPipe)
			out.Write(rest)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("manage.py iterate: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
			}
			m := djIterateSummary.FindStringSubmatch(out.String())
			wantMode := "off"
			if tc.serverSideCursors {
				wantMode = "on"
			}
			if m == nil || m[1] != fmt.Sprint(threads) || m[2] != fmt.Sprint(rows) || m[3] != wantMode {
				t.Errorf("manage.py iterate printed:\n%s\nwant %d threads, %d rows each, server-side cursors %s", out.String(), threads, rows, wantMode)
			}
			if tc.serverSideCursors {
				if !strings.Contains(p.Logs(), "client pinned to its server connection") {
					t.Errorf("pgtenant logged no pinned client for iterators with server-side cursors")
				}
			}

			// Once the threads have disconnected, the pool serves the other
			// tenant again.
			if err := oc.QueryRow(cctx, "SELECT 1").Scan(&one); err != nil {
				t.Errorf("tenant %s's SELECT 1 after the iterators closed: %v", other, err)
			}
		})
	}
}

// djNoDatabase fails the test if the server has a database named name.
func djNoDatabase(ctx context.Context, t *testing.T, d *pgx.Conn, name string) {
	t.Helper()
	var n int
	if err := d.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the server has a database %q: a CREATE DATABASE sent through pgtenant ran", name)
	}
}

// TestDjangoManageTest: manage.py test through pgtenant. With a test tenant
// created beforehand (test_<NAME>) and --keepdb it runs the app's tests in
// that tenant's schema; without --keepdb it stops with pgtenant's refusal
// of DROP DATABASE. Neither leaves a database on the server, although the
// pool role here is a superuser that could create one.
func TestDjangoManageTest(t *testing.T) {
	t.Parallel()
	djRequire(t)
	const (
		tenant     = "dj14_app"
		testTenant = "test_" + tenant // Django's test database name
	)
	createTenant(t, tenant)
	createTenant(t, testTenant)
	p := startProxy(t, func(c *config.Config) { c.LogLevel = "info" })
	ctx, cancel := context.WithTimeout(context.Background(), 2*djTimeout+time.Minute)
	defer cancel()
	d := direct(t)

	t.Run("keepdb", func(t *testing.T) {
		tctx, tcancel := context.WithTimeout(ctx, djTimeout)
		defer tcancel()
		out, errOut, err := djManage(tctx, p, tenant, "test", "--keepdb", "--noinput", "-v", "1", "shop")
		if err != nil {
			t.Fatalf("manage.py test --keepdb: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		t.Logf("manage.py test --keepdb:\n%s%s", out, errOut)
		// unittest reports on stderr.
		if !strings.Contains(errOut, "Ran 2 tests") || !regexp.MustCompile(`(?m)^OK$`).MatchString(errOut) {
			t.Errorf("manage.py test --keepdb did not run 2 tests OK:\nstdout:\n%s\nstderr:\n%s", out, errOut)
		}
		if got := djSchemaTables(tctx, t, d, testTenant); !strings.Contains(strings.Join(got, ","), "shop_customer") {
			t.Errorf("tables in schema %s after the test run: %q, want Django's (migrate ran in the test tenant)", testTenant, got)
		}
		djNoDatabase(tctx, t, d, testTenant)
	})

	t.Run("without keepdb", func(t *testing.T) {
		tctx, tcancel := context.WithTimeout(ctx, djTimeout)
		defer tcancel()
		out, errOut, err := djManage(tctx, p, tenant, "test", "--noinput", "shop")
		if err == nil {
			t.Fatalf("manage.py test without --keepdb succeeded through pgtenant; want it to stop at DROP DATABASE\nstdout:\n%s\nstderr:\n%s", out, errOut)
		}
		t.Logf("manage.py test:\n%s%s", out, errOut)
		if want := "pgtenant: DROP DATABASE is not allowed through pgtenant"; !strings.Contains(out+errOut, want) {
			t.Errorf("manage.py test without --keepdb does not say %q:\nstdout:\n%s\nstderr:\n%s", want, out, errOut)
		}
		djNoDatabase(tctx, t, d, testTenant)
	})
}

// TestCreateDatabaseRefused: CREATE DATABASE and DROP DATABASE through
// pgtenant never reach the server (here the pool role is a superuser, which
// would carry them out): 42501 naming tenants instead, or 42P04 when
// CREATE DATABASE names a tenant the client may use (what lets manage.py
// test --keepdb go on). The same words in a string, a comment or a column
// are left alone.
func TestCreateDatabaseRefused(t *testing.T) {
	t.Parallel()
	const (
		tenant   = "dj14_cdb"
		existing = "dj14_cdb_other"
		stray    = "dj14_cdb_stray"
	)
	createTenant(t, tenant)
	createTenant(t, existing)
	p := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := direct(t)
	if _, err := d.Exec(ctx, "DROP DATABASE IF EXISTS "+stray); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			c := p.Connect(t, tenant, mode)
			for _, tc := range []struct{ sql, state, msg string }{
				{`CREATE DATABASE ` + stray, "42501", "pgtenant: CREATE DATABASE is not allowed through pgtenant; create or drop a tenant instead"},
				{`create database "` + stray + `" TEMPLATE template0`, "42501", "pgtenant: CREATE DATABASE is not allowed"},
				{`CREATE DATABASE "` + existing + `"`, "42P04", `pgtenant: database "` + existing + `" already exists: it is a tenant`},
				{`DROP DATABASE IF EXISTS ` + stray, "42501", "pgtenant: DROP DATABASE is not allowed through pgtenant"},
				{`DROP DATABASE "` + existing + `"`, "42501", "pgtenant: DROP DATABASE is not allowed through pgtenant"},
			} {
				_, err := c.Exec(ctx, tc.sql)
				if sqlState(err) != tc.state || err == nil || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("%s: %v, want SQLSTATE %s and %q", tc.sql, err, tc.state, tc.msg)
				}
				// The connection goes on.
				var one int
				if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
					t.Fatalf("after %s: %v", tc.sql, err)
				}
			}
			// No false positives: the words in a string, a comment, a name.
			var s string
			if err := c.QueryRow(ctx, "/* DROP DATABASE x */ SELECT 'CREATE DATABASE x' -- DROP DATABASE y").Scan(&s); err != nil || s != "CREATE DATABASE x" {
				t.Errorf("a query with the words in a string and comments: %q, %v", s, err)
			}
			if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS "database" (database text)`); err != nil {
				t.Errorf("CREATE TABLE named database: %v", err)
			}
		})
	}
	djNoDatabase(ctx, t, d, stray)
	var n int
	if err := d.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", existing).Scan(&n); err != nil || n != 0 {
		t.Errorf("databases named %s on the server: %d, %v; want none", existing, n, err)
	}
}

// saRequire fails the test unless Debian's python3 imports SQLAlchemy and
// psycopg2; scripts/deps.sh installs them.
func saRequire(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, djPython, "-c", "import sqlalchemy, psycopg2; print(sqlalchemy.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import sqlalchemy and psycopg2 (run make deps: it installs python3-sqlalchemy): %v\n%s", djPython, err, out)
	}
	t.Logf("SQLAlchemy %s", strings.TrimSpace(string(out)))
}

// saSummary is testdata/sqlalchemy/app.py's last line.
var saSummary = regexp.MustCompile(`(?m)^sqlalchemy ok: label (\S+), schema (\S+), rows (\d+), streamed (\d+), nullpool rows (\d+)$`)

// TestSQLAlchemy: a small SQLAlchemy application (testdata/sqlalchemy) with
// README "SQLAlchemy"'s settings, for two tenants at once on a pool of
// three: ORM sessions insert and read each tenant's rows in its own schema,
// stream_results streams them through a server-side cursor inside the
// transaction without pinning anyone, with SQLAlchemy's pool and with
// NullPool.
func TestSQLAlchemy(t *testing.T) {
	t.Parallel()
	saRequire(t)
	tenants := []string{"sa14_acme", "sa14_globex"}
	const rows = 200
	d := direct(t)
	ctx, cancel := context.WithTimeout(context.Background(), djTimeout+time.Minute)
	defer cancel()
	for _, tenant := range tenants {
		createTenant(t, tenant)
		if _, err := d.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{tenant, "sa_items"}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 3; c.LogLevel = "info" })
	script, err := filepath.Abs(filepath.Join("testdata", "sqlalchemy", "app.py"))
	if err != nil {
		t.Fatal(err)
	}

	type run struct {
		out []byte
		err error
	}
	runs := make([]run, len(tenants))
	var wg sync.WaitGroup
	for i, tenant := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("postgresql+psycopg2://app@%s:%d/%s", p.Host, p.Port, tenant)
			cmd := exec.CommandContext(ctx, djPython, script, url, tenant, strconv.Itoa(rows))
			cmd.Env = append(cleanEnv(), "PYTHONDONTWRITEBYTECODE=1")
			cmd.WaitDelay = 10 * time.Second
			runs[i].out, runs[i].err = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for i, tenant := range tenants {
		r := runs[i]
		if r.err != nil {
			t.Errorf("app.py for %s: %v\n%s", tenant, r.err, r.out)
			continue
		}
		m := saSummary.FindStringSubmatch(string(r.out))
		want := []string{tenant, tenant, strconv.Itoa(rows), strconv.Itoa(rows), strconv.Itoa(2 * rows)}
		if m == nil || !slices.Equal(m[1:], want) {
			t.Errorf("app.py for %s printed:\n%s\nwant label and schema %s, %d rows, %d streamed, %d with NullPool", tenant, r.out, tenant, rows, rows, 2*rows)
		}
	}
	// What each schema really holds.
	for _, tenant := range tenants {
		var n, own int
		q := fmt.Sprintf("SELECT count(*), count(*) FILTER (WHERE label = $1) FROM %s", pgx.Identifier{tenant, "sa_items"}.Sanitize())
		if err := d.QueryRow(ctx, q, tenant).Scan(&n, &own); err != nil {
			t.Fatal(err)
		}
		if n != 2*rows || own != n {
			t.Errorf("%s.sa_items holds %d rows, %d of them its own; want %d, all its own", tenant, n, own, 2*rows)
		}
	}
	var public int
	if err := d.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'sa_items'").Scan(&public); err != nil || public != 0 {
		t.Errorf("sa_items in schema public: %d, %v; want none", public, err)
	}
	// stream_results' cursor is WITHOUT HOLD, inside a transaction: nothing
	// to pin.
	if strings.Contains(p.Logs(), "client pinned to its server connection") {
		t.Errorf("pgtenant pinned a SQLAlchemy client; its log:\n%s", p.Logs())
	}
}

// djTenantLine is one line of the tenants command.
var djTenantLine = regexp.MustCompile(`(?m)^tenant (\S+): alias (\S+), schema (\S+), customers (\d+), labels (\S*)$`)

// TestDjangoRouter: README "Django"'s database router (testdata/djangoapp,
// djangoapp/tenancy.py), one alias per tenant and the tenant picked from
// the request's host name by middleware: requests for two tenants,
// interleaved, each land in their own tenant's schema through pgtenant.
func TestDjangoRouter(t *testing.T) {
	t.Parallel()
	djRequire(t)
	// Django's host validation allows no '_' in a host name.
	tenants := []string{"dj14racme", "dj14rglobex"}
	const n = 3
	d := direct(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*djTimeout)
	defer cancel()
	for _, tenant := range tenants {
		createTenant(t, tenant)
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2; c.LogLevel = "info" })
	env := []string{"DJANGO_DB_TENANTS=" + strings.Join(tenants, ",")}
	manage := func(args ...string) string {
		t.Helper()
		mctx, mcancel := context.WithTimeout(ctx, djTimeout)
		defer mcancel()
		cmd, err := djCommand(mctx, p, tenants[0], env, args...)
		if err != nil {
			t.Fatal(err)
		}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("manage.py %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String()
	}
	for _, tenant := range tenants {
		manage("migrate", "--noinput", "--database", tenant)
		if _, err := d.Exec(ctx, "DELETE FROM "+pgx.Identifier{tenant, "shop_customer"}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	out := manage("tenants", "--n", strconv.Itoa(n))
	lines := djTenantLine.FindAllStringSubmatch(out, -1)
	if len(lines) != len(tenants) {
		t.Fatalf("manage.py tenants printed:\n%s\nwant a line for each of %q", out, tenants)
	}
	for i, tenant := range tenants {
		want := []string{tenant, tenant, tenant, strconv.Itoa(n), tenant}
		if !slices.Equal(lines[i][1:], want) {
			t.Errorf("manage.py tenants: %q, want tenant, alias, schema %s, %d customers, labels %s", lines[i][0], tenant, n, tenant)
		}
		var count, own int
		q := fmt.Sprintf("SELECT count(*), count(*) FILTER (WHERE tenant_label = $1) FROM %s", pgx.Identifier{tenant, "shop_customer"}.Sanitize())
		if err := d.QueryRow(ctx, q, tenant).Scan(&count, &own); err != nil {
			t.Fatal(err)
		}
		if count != n || own != n {
			t.Errorf("%s.shop_customer holds %d rows, %d of them its own; want %d, all its own", tenant, count, own, n)
		}
	}
}
