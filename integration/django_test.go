package integration

import (
	"context"
	"fmt"
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

// djPython is the interpreter Debian's python3-django and python3-psycopg2
// are installed for (by scripts/deps.sh). A pyenv or virtualenv python3
// earlier on PATH would not see them, so the tests name it.
const djPython = "/usr/bin/python3"

// djTimeout bounds every manage.py run.
const djTimeout = 3 * time.Minute

// djTables are tables `manage.py migrate` creates for the project's apps
// (admin, auth, contenttypes, sessions, shop); they must land in the
// tenant's schema and nowhere else.
var djTables = []string{
	"auth_group", "auth_permission", "auth_user",
	"django_admin_log", "django_content_type", "django_migrations", "django_session",
	"shop_customer", "shop_order",
}

// djCrudSummary is the crud command's last line.
var djCrudSummary = regexp.MustCompile(`(?m)^crud ok: (\d+) iterations, (\d+) foreign rows, (\d+) customers, (\d+) orders, qty (\d+)$`)

// djRequire fails the test unless Debian's python3 imports Django and
// psycopg2; scripts/deps.sh installs them.
func djRequire(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, djPython, "-c", "import django, psycopg2; print(django.get_version())").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import django and psycopg2 (run make deps: it installs python3-django and python3-psycopg2): %v\n%s", djPython, err, out)
	}
	t.Logf("Django %s", strings.TrimSpace(string(out)))
}

// djManage runs manage.py of testdata/djangoapp against pgtenant with the
// tenant as database name; it returns stdout and stderr apart.
func djManage(ctx context.Context, p *Proxy, tenant string, args ...string) (stdout, stderr string, err error) {
	cmd, err := djCommand(ctx, p, tenant, nil, args...)
	if err != nil {
		return "", "", err
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// djCommand is manage.py of testdata/djangoapp with args, set to run
// against pgtenant with the tenant as database name; env adds to (or
// overrides) its environment.
func djCommand(ctx context.Context, p *Proxy, tenant string, env []string, args ...string) (*exec.Cmd, error) {
	dir, err := filepath.Abs(filepath.Join("testdata", "djangoapp"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, djPython, append([]string{"manage.py"}, args...)...)
	cmd.Dir = dir
	var base []string
	for _, kv := range cleanEnv() {
		// The project must run on Debian's Django, whatever the caller's
		// Python environment says.
		if !strings.HasPrefix(kv, "PYTHON") && !strings.HasPrefix(kv, "DJANGO_") {
			base = append(base, kv)
		}
	}
	cmd.Env = append(append(base,
		"DJANGO_SETTINGS_MODULE=djangoapp.settings",
		"DJANGO_DB_NAME="+tenant,
		"DJANGO_DB_HOST="+p.Host,
		"DJANGO_DB_PORT="+strconv.Itoa(p.Port),
		"DJANGO_DB_USER=app",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
	), env...)
	// Should the context end, do not wait forever for pipes held open by
	// anything the process left behind.
	cmd.WaitDelay = 10 * time.Second
	return cmd, nil
}

// djEmptySchema drops every table in schema.
func djEmptySchema(ctx context.Context, t *testing.T, d *pgx.Conn, schema string) {
	t.Helper()
	rows, err := d.Query(ctx, "SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE', schemaname, tablename) FROM pg_tables WHERE schemaname = $1", schema)
	if err != nil {
		t.Fatal(err)
	}
	drops, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range drops {
		if _, err := d.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}

// djSchemaTables returns which of djTables exist in schema, sorted.
func djSchemaTables(ctx context.Context, t *testing.T, d *pgx.Conn, schema string) []string {
	t.Helper()
	rows, err := d.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename = ANY($2) ORDER BY 1", schema, djTables)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestDjango: an ordinary Django project (testdata/djangoapp, with the
// settings Django recommends behind a transaction pooler) migrates two
// tenants through pgtenant, each into its own schema, and then runs ORM
// CRUD for both at once on a pool of three backends without either seeing
// the other's rows.
func TestDjango(t *testing.T) {
	t.Parallel()
	djRequire(t)
	tenants := []string{"dj_acme", "dj_globex"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*djTimeout+time.Minute)
	defer cancel()
	for _, tenant := range tenants {
		createTenant(t, tenant)
		// A run before this one (-count=2) left its tables.
		djEmptySchema(ctx, t, direct(t), tenant)
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 3; c.LogLevel = "info" })

	// Migrate one tenant after the other, as a deployment would.
	for _, tenant := range tenants {
		mctx, mcancel := context.WithTimeout(ctx, djTimeout)
		out, errOut, err := djManage(mctx, p, tenant, "migrate", "--noinput")
		mcancel()
		if err != nil {
			t.Fatalf("manage.py migrate for %s: %v\nstdout:\n%s\nstderr:\n%s", tenant, err, out, errOut)
		}
		if !strings.Contains(out, "Applying shop.0001_initial... OK") {
			t.Fatalf("manage.py migrate for %s did not apply shop.0001_initial:\n%s\nstderr:\n%s", tenant, out, errOut)
		}
	}

	d := direct(t)
	want := slices.Sorted(slices.Values(djTables))
	for _, tenant := range tenants {
		if got := djSchemaTables(ctx, t, d, tenant); !slices.Equal(got, want) {
			t.Errorf("Django tables in schema %s: %q, want %q", tenant, got, want)
		}
	}
	if got := djSchemaTables(ctx, t, d, "public"); len(got) != 0 {
		t.Errorf("Django tables in schema public: %q, want none", got)
	}
	for _, tenant := range tenants {
		var applied int
		q := fmt.Sprintf("SELECT count(*) FROM %s.django_migrations WHERE app = 'shop' AND name = '0001_initial'", pgx.Identifier{tenant}.Sanitize())
		if err := d.QueryRow(ctx, q).Scan(&applied); err != nil {
			t.Fatal(err)
		}
		if applied != 1 {
			t.Errorf("%s.django_migrations records shop.0001_initial %d times, want once", tenant, applied)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// CRUD for both tenants at once.
	const iterations = 200
	type crudRun struct {
		stdout, stderr string
		err            error
	}
	runs := make([]crudRun, len(tenants))
	var wg sync.WaitGroup
	for i, tenant := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, djTimeout)
			defer ccancel()
			r := &runs[i]
			r.stdout, r.stderr, r.err = djManage(cctx, p, tenant, "crud",
				"--tenant-label", tenant, "--n", strconv.Itoa(iterations), "--expect-schema", tenant)
		}()
	}
	wg.Wait()

	type counts struct{ customers, orders, qty int64 }
	summaries := map[string]counts{}
	for i, tenant := range tenants {
		r := runs[i]
		if r.err != nil {
			t.Errorf("manage.py crud for %s: %v\nstdout:\n%s\nstderr:\n%s", tenant, r.err, r.stdout, r.stderr)
			continue
		}
		m := djCrudSummary.FindStringSubmatch(r.stdout)
		if m == nil {
			t.Errorf("manage.py crud for %s printed no summary line:\nstdout:\n%s\nstderr:\n%s", tenant, r.stdout, r.stderr)
			continue
		}
		t.Logf("%s: %s", tenant, m[0])
		if m[1] != strconv.Itoa(iterations) || m[2] != "0" {
			t.Errorf("%s: %q, want %d iterations and 0 foreign rows", tenant, m[0], iterations)
		}
		var c counts
		for j, v := range []*int64{&c.customers, &c.orders, &c.qty} {
			var err error
			if *v, err = strconv.ParseInt(m[3+j], 10, 64); err != nil {
				t.Fatal(err)
			}
		}
		summaries[tenant] = c
	}
	if t.Failed() {
		t.FailNow()
	}

	// What really is in each schema: only that tenant's label, in the
	// numbers its run reported.
	for _, tenant := range tenants {
		schema := pgx.Identifier{tenant}.Sanitize()
		want := summaries[tenant]
		for _, tc := range []struct {
			table, sum   string
			count, total int64
		}{
			{"shop_customer", "0", want.customers, 0},
			{"shop_order", "qty", want.orders, want.qty},
		} {
			rows, err := d.Query(ctx, fmt.Sprintf("SELECT tenant_label, count(*), coalesce(sum(%s), 0)::bigint FROM %s.%s GROUP BY 1 ORDER BY 1", tc.sum, schema, tc.table))
			if err != nil {
				t.Fatal(err)
			}
			type labelCount struct {
				Label        string
				Count, Total int64
			}
			got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[labelCount])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != (labelCount{tenant, tc.count, tc.total}) {
				t.Errorf("%s.%s holds (label, rows, qty) %v, want only [{%s %d %d}]", tenant, tc.table, got, tenant, tc.count, tc.total)
			}
		}
		var users []string
		rows, err := d.Query(ctx, fmt.Sprintf("SELECT username FROM %s.auth_user ORDER BY 1", schema))
		if err != nil {
			t.Fatal(err)
		}
		if users, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(users, []string{tenant + "-admin"}) {
			t.Errorf("%s.auth_user holds %q, want only %q", tenant, users, tenant+"-admin")
		}
	}
	if got := djSchemaTables(ctx, t, d, "public"); len(got) != 0 {
		t.Errorf("after the CRUD runs, Django tables in schema public: %q, want none", got)
	}
}
