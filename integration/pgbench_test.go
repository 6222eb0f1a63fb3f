package integration

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// pgbenchResult is what a pgbench run printed that the tests look at.
type pgbenchResult struct {
	out       string
	processed string // "number of transactions actually processed: N/M"
	failed    string // "number of failed transactions: N (x%)"
	tps       string // the tps line(s)
}

var (
	pgbenchProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)(?:/(\d+))?$`)
	pgbenchFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+) `)
	pgbenchTPS       = regexp.MustCompile(`(?m)^tps = .*$`)
)

// runPgbench runs pgbench with args and env; it fails the test if pgbench
// does not exit 0.
func runPgbench(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkPgbenchRun asserts that a run of clients×txPerClient transactions
// all completed, none failed, no client aborted, and returns the tps line.
func checkPgbenchRun(t *testing.T, label, out string, clients, txPerClient int) string {
	t.Helper()
	if strings.Contains(out, "aborted") {
		t.Errorf("%s: a client aborted:\n%s", label, out)
	}
	m := pgbenchProcessed.FindStringSubmatch(out)
	want := fmt.Sprint(clients * txPerClient)
	if m == nil || m[1] != want || (m[2] != "" && m[2] != want) {
		t.Errorf("%s: want %s transactions processed, output:\n%s", label, want, out)
	}
	f := pgbenchFailed.FindStringSubmatch(out)
	if f == nil || f[1] != "0" {
		t.Errorf("%s: want \"number of failed transactions: 0\", output:\n%s", label, out)
	}
	tps := strings.Join(pgbenchTPS.FindAllString(out, -1), "; ")
	if tps == "" {
		t.Errorf("%s: no tps line in output:\n%s", label, out)
	}
	return tps
}

// TestPgbench: pgbench -i through pgtenant builds its tables in the
// tenant's schema; select-only runs with the simple and the extended
// (unnamed statements) protocol complete without a failure. The same run
// directly against PostgreSQL is logged for comparison.
func TestPgbench(t *testing.T) {
	t.Parallel()
	const (
		tenant      = "bench_t1"
		clients     = 10
		threads     = 2
		txPerClient = 200
	)
	createTenant(t, tenant)
	// A second tenant, so that the pool is shared the way it is in use.
	createTenant(t, "bench_t2", "CREATE TABLE bench_marker (v text)", "INSERT INTO bench_marker VALUES ('bench_t2')")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 4; c.LogLevel = "info" })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hostArgs := []string{"-h", p.Host, "-p", fmt.Sprint(p.Port), "-U", "app"}

	out := runPgbench(t, cleanEnv(), append(append([]string{"-i", "-s", "1"}, hostArgs...), tenant)...)
	if !strings.Contains(out, "done in") {
		t.Fatalf("pgbench -i did not finish:\n%s", out)
	}

	d := direct(t)
	tables := func(schema string) []string {
		rows, err := d.Query(ctx, "select table_name from information_schema.tables where table_schema = $1 and table_name like 'pgbench%'", schema)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(names)
		return names
	}
	want := []string{"pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"}
	if got := tables(tenant); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pgbench tables in schema %s: %q, want %q", tenant, got, want)
	}
	if got := tables("public"); len(got) != 0 {
		t.Fatalf("pgbench tables in schema public: %q", got)
	}
	if got := tables("bench_t2"); len(got) != 0 {
		t.Fatalf("pgbench tables in another tenant's schema: %q", got)
	}
	var accounts, branches, tellers int
	err := d.QueryRow(ctx, "select (select count(*) from bench_t1.pgbench_accounts), (select count(*) from bench_t1.pgbench_branches), (select count(*) from bench_t1.pgbench_tellers)").
		Scan(&accounts, &branches, &tellers)
	if err != nil {
		t.Fatal(err)
	}
	if accounts != 100000 || branches != 1 || tellers != 10 {
		t.Fatalf("scale 1 data: %d accounts, %d branches, %d tellers; want 100000, 1, 10", accounts, branches, tellers)
	}
	var pkeys int
	if err := d.QueryRow(ctx, "select count(*) from pg_indexes where schemaname = $1 and indexname like 'pgbench_%_pkey'", tenant).Scan(&pkeys); err != nil {
		t.Fatal(err)
	}
	if pkeys != 3 {
		t.Fatalf("%d pgbench primary keys in %s, want 3", pkeys, tenant)
	}

	// The other tenant, meanwhile, still sees only its own world.
	if out, err := p.Psql(t, "bench_t2", "-c", "select v from bench_marker", "-c", "select count(*) from pg_tables where tablename = 'pgbench_accounts' and schemaname = current_schema()"); err != nil || out != "bench_t2\n0" {
		t.Fatalf("bench_t2 client: %q, %v", out, err)
	}

	run := []string{"-S", "-c", fmt.Sprint(clients), "-j", fmt.Sprint(threads), "-t", fmt.Sprint(txPerClient)}
	tps := map[string]string{}
	for _, mode := range []string{"simple", "extended"} {
		args := append(append(append([]string{}, run...), "-M", mode), hostArgs...)
		out := runPgbench(t, cleanEnv(), append(args, tenant)...)
		tps["pgtenant -M "+mode] = checkPgbenchRun(t, "pgbench via pgtenant -M "+mode, out, clients, txPerClient)
	}

	// The same select-only run straight at PostgreSQL, for the record.
	env := append(cleanEnv(), "PGOPTIONS=-c search_path="+tenant)
	args := append(append([]string{}, run...), "-M", "simple", "-h", pg.Host, "-p", fmt.Sprint(pg.Port), "-U", pg.User, backendDB)
	out = runPgbench(t, env, args...)
	tps["direct -M simple"] = checkPgbenchRun(t, "pgbench direct -M simple", out, clients, txPerClient)

	for _, k := range []string{"pgtenant -M simple", "pgtenant -M extended", "direct -M simple"} {
		t.Logf("pgbench -S -c %d -j %d -t %d, %s: %s", clients, threads, txPerClient, k, tps[k])
	}
}
