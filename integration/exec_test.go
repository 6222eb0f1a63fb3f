package integration

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// exDB is the database of the exec and each tests: a registry of their own,
// so that --all means their five tenants and no other test's.
const exDB = "ex_db"

// exTenants are the tenants; the i-th (from 1) has i rows in its table t.
var exTenants = []string{"ex_a", "ex_b", "ex_c", "ex_d", "ex_e"}

// exSetup makes exDB afresh (a run before this one may have left it) with
// exTenants, and builds pgtenant. It returns the binary and a direct
// connection to exDB.
func exSetup(t *testing.T) (bin string, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	drop := func(ctx context.Context) error {
		_, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+exDB+" WITH (FORCE)")
		return err
	}
	if err := drop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateDatabase(ctx, exDB); err != nil {
		t.Fatal(err)
	}
	// Registered before the proxy's, so it runs after the proxy stopped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, pg.DSN("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+exDB+" WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})
	conn, err = pgx.Connect(ctx, pg.DSN(exDB))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for i, name := range exTenants {
		if _, _, err := router.CreateTenant(ctx, conn, name, ""); err != nil {
			t.Fatal(err)
		}
		sql := fmt.Sprintf(`CREATE TABLE %[1]s.t (id int, label text);
			INSERT INTO %[1]s.t SELECT k, '%[1]s-' || k FROM generate_series(1, %[2]d) k`, name, i+1)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	bin = filepath.Join(t.TempDir(), "pgtenant")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, conn
}

// exRun runs the pgtenant binary with args against exDB and returns its
// standard output, standard error and exit code.
func exRun(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), "PGTENANT_BACKEND="+pg.DSN(exDB))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run pgtenant %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// exRows is what `select id, label from t order by id` returns in tenant
// i (from 0).
func exRows(i int) [][]string {
	var rows [][]string
	for k := 1; k <= i+1; k++ {
		rows = append(rows, []string{fmt.Sprint(k), fmt.Sprintf("%s-%d", exTenants[i], k)})
	}
	return rows
}

// exTable is exRows as exec's table format prints it.
func exTable(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- tenant %s\n id | label\n----+--------\n", exTenants[i])
	for _, r := range exRows(i) {
		fmt.Fprintf(&b, "  %s | %s\n", r[0], r[1])
	}
	if i == 0 {
		b.WriteString("(1 row)\n\n")
	} else {
		fmt.Fprintf(&b, "(%d rows)\n\n", i+1)
	}
	return b.String()
}

// exJSON is one line of --format json.
type exJSON struct {
	Tenant  string   `json:"tenant"`
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
	Error   *struct {
		SQLState string `json:"sqlstate"`
		Message  string `json:"message"`
	} `json:"error"`
}

// exCheckFormats runs query in every format with extra flags and checks
// that each tenant but the ones in failing printed its own rows, in tenant
// order, and that the failing ones are reported with SQLSTATE 42P01.
func exCheckFormats(t *testing.T, bin string, failing []string, extra ...string) {
	t.Helper()
	const query = "select id, label from t order by id"
	wantCode := 0
	if len(failing) > 0 {
		wantCode = 2
	}
	base := append([]string{"exec", "--all", "-j", "3"}, extra...)

	out, errOut, code := exRun(t, bin, append(base, query)...)
	if code != wantCode {
		t.Fatalf("exec table: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, wantCode, out, errOut)
	}
	var want strings.Builder
	for i, name := range exTenants {
		if slices.Contains(failing, name) {
			fmt.Fprintf(&want, "-- tenant %s\nERROR: 42P01: relation \"t\" does not exist\n\n", name)
		} else {
			want.WriteString(exTable(i))
		}
	}
	if out != want.String() {
		t.Fatalf("exec table printed:\n%s\nwant:\n%s", out, want.String())
	}
	if len(failing) > 0 {
		// The summary is the command's error (Main may prefix it).
		wantErr := fmt.Sprintf("the SQL failed for %d of 5 tenants: %s\n", len(failing), strings.Join(failing, ", "))
		if !strings.HasSuffix(errOut, wantErr) || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("exec table: stderr %q, want %q", errOut, wantErr)
		}
	}

	out, errOut, code = exRun(t, bin, append(base, "--format", "csv", query)...)
	if code != wantCode {
		t.Fatalf("exec csv: exit %d, want %d\nstderr:\n%s", code, wantCode, errOut)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("exec csv printed no CSV (%v):\n%s", err, out)
	}
	wantRecs := [][]string{{"tenant", "id", "label"}}
	for i, name := range exTenants {
		if !slices.Contains(failing, name) {
			for _, r := range exRows(i) {
				wantRecs = append(wantRecs, append([]string{name}, r...))
			}
		}
	}
	if fmt.Sprint(recs) != fmt.Sprint(wantRecs) {
		t.Fatalf("exec csv printed %v, want %v", recs, wantRecs)
	}
	for _, name := range failing {
		if !strings.Contains(errOut, "pgtenant: tenant "+name+": ERROR: 42P01: relation \"t\" does not exist\n") {
			t.Fatalf("exec csv: stderr does not report %s:\n%s", name, errOut)
		}
	}

	out, errOut, code = exRun(t, bin, append(base, "--format", "json", query)...)
	if code != wantCode {
		t.Fatalf("exec json: exit %d, want %d\nstderr:\n%s", code, wantCode, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(exTenants) {
		t.Fatalf("exec json printed %d lines, want %d:\n%s", len(lines), len(exTenants), out)
	}
	for i, line := range lines {
		var got exJSON
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("exec json line %q: %v", line, err)
		}
		name := exTenants[i]
		if got.Tenant != name {
			t.Fatalf("exec json line %d is tenant %q, want %q", i, got.Tenant, name)
		}
		if slices.Contains(failing, name) {
			if got.Error == nil || got.Error.SQLState != "42P01" || len(got.Rows) != 0 {
				t.Fatalf("exec json %s: %s, want error 42P01", name, line)
			}
			continue
		}
		var wantRows [][]any
		for _, r := range exRows(i) {
			wantRows = append(wantRows, []any{json.Number(r[0]), r[1]})
		}
		if got.Error != nil || !slices.Equal(got.Columns, []string{"id", "label"}) ||
			fmt.Sprint(got.Rows) != fmt.Sprint(wantRows) {
			t.Fatalf("exec json %s: %s, want rows %v", name, line, wantRows)
		}
	}
}

// TestExecAll runs pgtenant exec over five tenants, directly and through
// a running pgtenant: each prints its own rows in table, csv and json; a
// tenant without the table fails alone; multi-statement SQL prints its
// last result and a failure rolls back the tenant's transaction.
func TestExecAll(t *testing.T) {
	bin, conn := exSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startProxy(t, func(c *config.Config) { c.Backend = pg.DSN(exDB) })
	viaProxy := []string{"--proxy", fmt.Sprintf("%s:%d", p.Host, p.Port), "--user", "app"}

	exCheckFormats(t, bin, nil)
	exCheckFormats(t, bin, nil, viaProxy...)

	if _, err := conn.Exec(ctx, "DROP TABLE ex_c.t"); err != nil {
		t.Fatal(err)
	}
	exCheckFormats(t, bin, []string{"ex_c"})
	exCheckFormats(t, bin, []string{"ex_c"}, viaProxy...)

	// Several statements: the last one's result is printed, in each
	// tenant's transaction; one that fails undoes the tenant's insert.
	out, errOut, code := exRun(t, bin, "exec", "--tenant", "ex_b", "--tenant", "ex_a", "--format", "csv",
		"insert into t values (100, 'new'); select count(*) as n, current_schema() as s from t")
	if code != 0 || out != "tenant,n,s\nex_b,3,ex_b\nex_a,2,ex_a\n" {
		t.Fatalf("exec two statements: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = exRun(t, bin, append([]string{"exec", "--tenant", "ex_a", "--format", "json",
		"insert into t values (101, 'lost'); select 1/0"}, viaProxy...)...)
	if code != 2 || !strings.Contains(out, `"sqlstate":"22012"`) {
		t.Fatalf("exec division by zero: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	// --file, and a statement without rows in the table format.
	file := filepath.Join(t.TempDir(), "q.sql")
	if err := os.WriteFile(file, []byte("update t set label = label where id = 1;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = exRun(t, bin, "exec", "--tenant", "ex_e", "-f", file)
	if code != 0 || out != "-- tenant ex_e\nUPDATE 1\n\n" {
		t.Fatalf("exec -f: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from ex_a.t where id = 101").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the failed tenant's insert stayed: %d rows, %v", n, err)
	}

	// Names only: an alias, a disabled tenant and a stranger are refused
	// together, before anything runs; --all leaves the disabled one out.
	if err := router.AddTenantAlias(ctx, conn, "ex-alias", "ex_d"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "UPDATE pgtenant.tenants SET active = false WHERE name = 'ex_e'"); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = exRun(t, bin, "exec", "--tenant", "ex_a", "--tenant", "ex-alias", "--tenant", "ex_e",
		"--tenant", "ex_nobody", "insert into t values (102, 'x')")
	for _, want := range []string{`"ex-alias" is an alias of tenant "ex_d"; name the tenant itself`,
		`tenant "ex_e" is disabled`, `tenant "ex_nobody" does not exist`} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Fatalf("exec with bad names: exit %d, stderr %q; want exit 1 and %q", code, errOut, want)
		}
	}
	if err := conn.QueryRow(ctx, "select count(*) from ex_a.t where id = 102").Scan(&n); err != nil || n != 0 {
		t.Fatalf("exec ran for ex_a although other names were refused: %d rows, %v", n, err)
	}
	out, _, code = exRun(t, bin, "exec", "--all", "--format", "csv", "select current_schema()")
	if code != 0 || out != "tenant,current_schema\nex_a,ex_a\nex_b,ex_b\nex_c,ex_c\nex_d,ex_d\n" {
		t.Fatalf("exec --all with ex_e disabled: exit %d\n%s", code, out)
	}
}

// TestEachAll runs programs once per tenant through a running pgtenant:
// psql reaches each tenant's own table, the environment names the tenant,
// and a failing run makes the exit code non-zero with a summary.
func TestEachAll(t *testing.T) {
	bin, conn := exSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startProxy(t, func(c *config.Config) { c.Backend = pg.DSN(exDB) })
	proxyAddr := fmt.Sprintf("%s:%d", p.Host, p.Port)
	each := func(args ...string) (string, string, int) {
		return exRun(t, bin, append([]string{"each", "--all", "--proxy", proxyAddr, "--user", "app"}, args...)...)
	}

	out, errOut, code := each("-j", "3", "--", "sh", "-c", `echo $PGTENANT_TENANT $DATABASE_URL $PGUSER@$PGHOST:$PGPORT/$PGDATABASE`)
	var want []string
	for _, name := range exTenants {
		want = append(want, fmt.Sprintf("[%s] %s postgres://app@%s/%s app@%s/%s", name, name, proxyAddr, name, proxyAddr, name))
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	slices.Sort(got) // parallel runs finish in any order
	if code != 0 || !slices.Equal(got, want) {
		t.Fatalf("each sh: exit %d\n%s\nwant\n%s\nstderr: %s", code, out, strings.Join(want, "\n"), errOut)
	}

	psql := []string{"--", "psql", "-X", "-Atc", "select current_schema(), count(*) from t"}
	out, errOut, code = each(append([]string{"-j", "4"}, psql...)...)
	want = nil
	for i, name := range exTenants {
		want = append(want, fmt.Sprintf("[%s] %s|%d", name, name, i+1))
	}
	got = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	slices.Sort(got)
	if code != 0 || !slices.Equal(got, want) {
		t.Fatalf("each psql: exit %d\n%s\nstderr: %s", code, out, errOut)
	}

	// -j 1: the program has the terminal (here, the pipes) itself, each
	// run announced on standard error, in tenant order.
	out, errOut, code = each(append([]string{"-j", "1"}, psql...)...)
	want = nil
	for i, name := range exTenants {
		want = append(want, fmt.Sprintf("%s|%d", name, i+1))
	}
	if code != 0 || out != strings.Join(want, "\n")+"\n" ||
		errOut != "== tenant ex_a\n== tenant ex_b\n== tenant ex_c\n== tenant ex_d\n== tenant ex_e\n" {
		t.Fatalf("each -j 1 psql: exit %d\n%s\nstderr: %s", code, out, errOut)
	}

	// ex_c without its table: its psql fails, the others still run.
	if _, err := conn.Exec(ctx, "DROP TABLE ex_c.t"); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = each(append([]string{"-j", "2"}, psql...)...)
	if code != 2 {
		t.Fatalf("each psql with ex_c failing: exit %d, want 2\n%s\nstderr: %s", code, out, errOut)
	}
	for i, name := range exTenants {
		if name != "ex_c" && !strings.Contains(out, fmt.Sprintf("[%s] %s|%d\n", name, name, i+1)) {
			t.Fatalf("each psql with ex_c failing: %s's result missing\n%s", name, out)
		}
	}
	if !strings.Contains(errOut, `[ex_c] ERROR:  relation "t" does not exist`) ||
		!strings.HasSuffix(errOut, "the command failed for 1 of 5 tenants: ex_c\n  ex_c: exit code 1\n") {
		t.Fatalf("each psql with ex_c failing: stderr\n%s", errOut)
	}

	// Under tenant-from user the tenant is the user name; exec and each
	// name it so. One tenant alone gets the terminal, unprefixed.
	byUser := startProxy(t, func(c *config.Config) { c.Backend = pg.DSN(exDB); c.TenantFrom = config.TenantFromUser })
	byUserAddr := fmt.Sprintf("%s:%d", byUser.Host, byUser.Port)
	out, errOut, code = exRun(t, bin, "each", "--tenant", "ex_d", "--proxy", byUserAddr, "--tenant-from", "user", "--",
		"psql", "-X", "-Atc", "select current_schema(), count(*) from t")
	if code != 0 || out != "ex_d|4\n" || errOut != "== tenant ex_d\n" {
		t.Fatalf("each under tenant-from user: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = exRun(t, bin, "exec", "--tenant", "ex_b", "--proxy", byUserAddr, "--tenant-from", "user",
		"--format", "csv", "select current_schema(), count(*) from t")
	if code != 0 || out != "tenant,current_schema,count\nex_b,ex_b,2\n" {
		t.Fatalf("exec under tenant-from user: exit %d\n%s\nstderr: %s", code, out, errOut)
	}

	// Interrupted (here by the first run itself), pgtenant starts no
	// more runs and stops the one running with SIGTERM.
	_, errOut, code = each("-j", "1", "--", "sh", "-c", `kill -INT $PPID; exec sleep 30`)
	if code != 2 || !strings.HasSuffix(errOut, "the command failed for 1 of 5 tenants: ex_a; "+
		"interrupted: 4 of 5 tenants not started: ex_b, ex_c, ex_d, ex_e\n  ex_a: killed by signal terminated\n") {
		t.Fatalf("each interrupted: exit %d, stderr:\n%s", code, errOut)
	}

	// A program that is not there fails before any run.
	_, errOut, code = each("--", "no-such-program-ex")
	if code != 1 || !strings.Contains(errOut, "no-such-program-ex") {
		t.Fatalf("each with a missing program: exit %d, stderr %q", code, errOut)
	}
}
