package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// nodeTimeout bounds one run of testdata/nodeapp/test.js.
const nodeTimeout = 2 * time.Minute

// nodeItems is how many rows test.js expects in its items table.
const nodeItems = 50

// nodeSummary is test.js's last line on success.
var nodeSummary = regexp.MustCompile(`(?m)^node ok: (\d+) queries, (\d+) committed, (\d+) rolled back, (\d+) expected errors$`)

// nodeAppDir returns testdata/nodeapp, failing the test unless node and the
// app's modules are installed there (scripts/deps.sh does both).
func nodeAppDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "nodeapp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed (run make deps): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); err != nil {
		t.Fatalf("node-postgres is not installed: run make deps (npm ci in integration/testdata/nodeapp): %v", err)
	}
	// The rule scripts/deps.sh applies: node_modules older than the lock
	// file was installed from another lock file.
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	modules, err := os.Stat(filepath.Join(dir, "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	if lock.ModTime().After(modules.ModTime()) {
		t.Fatalf("integration/testdata/nodeapp/node_modules is older than its package-lock.json: run make deps (npm ci in integration/testdata/nodeapp)")
	}
	return dir
}

// nodeRun runs test.js for tenant through p; it returns stdout and stderr.
func nodeRun(ctx context.Context, dir string, p *Proxy, tenant string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test.js")
	cmd.Dir = dir
	var env []string
	for _, kv := range cleanEnv() {
		// NODE_OPTIONS and friends from the caller must not change the run.
		if !strings.HasPrefix(kv, "NODE_") && !strings.HasPrefix(kv, "PGTENANT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"PGTENANT_HOST="+p.Host,
		"PGTENANT_PORT="+strconv.Itoa(p.Port),
		"PGTENANT_TENANT="+tenant,
		"PGTENANT_USER=app",
	)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestNode: node-postgres, as an application uses it (pg.Pool of five,
// named prepared statements, transactions, errors it must survive), runs
// for two tenants at once through pgtenant on a pool of two backends. Both
// tenants have tables of the same names and use the same statement names,
// so a statement or a search_path carried from one to the other shows up
// as a wrong row.
func TestNode(t *testing.T) {
	t.Parallel()
	dir := nodeAppDir(t)
	tenants := []string{"node_a", "node_b"}
	for _, tenant := range tenants {
		createTenant(t, tenant,
			"CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE NOT NULL, tenant text NOT NULL, qty int NOT NULL)",
			fmt.Sprintf("INSERT INTO items SELECT g, '%s-item-' || g, '%[1]s', 0 FROM generate_series(1, %d) g", tenant, nodeItems),
			"CREATE TABLE ledger (id serial PRIMARY KEY, tenant text NOT NULL, note text NOT NULL, amount int NOT NULL)",
		)
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2; c.LogLevel = "info" })
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout+time.Minute)
	defer cancel()

	type nodeResult struct {
		stdout, stderr string
		err            error
	}
	results := make([]nodeResult, len(tenants))
	var wg sync.WaitGroup
	for i, tenant := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.stdout, r.stderr, r.err = nodeRun(ctx, dir, p, tenant)
		}()
	}
	wg.Wait()

	committed := map[string]int64{}
	for i, tenant := range tenants {
		r := results[i]
		if r.err != nil {
			t.Errorf("node test.js for %s: %v\nstdout:\n%s\nstderr:\n%s", tenant, r.err, r.stdout, r.stderr)
			continue
		}
		m := nodeSummary.FindStringSubmatch(r.stdout)
		if m == nil {
			t.Errorf("node test.js for %s printed no summary line:\nstdout:\n%s\nstderr:\n%s", tenant, r.stdout, r.stderr)
			continue
		}
		t.Logf("%s: %s", tenant, m[0])
		n, _ := strconv.ParseInt(m[2], 10, 64)
		if m[1] == "0" || n == 0 || m[3] == "0" || m[4] == "0" {
			t.Errorf("%s: %q: want some of each", tenant, m[0])
		}
		committed[tenant] = n
	}
	if t.Failed() {
		t.FailNow()
	}

	// What the runs left in each schema: their own committed ledger rows,
	// and one qty bump per committed transaction.
	d := direct(t)
	for _, tenant := range tenants {
		schema := pgx.Identifier{tenant}.Sanitize()
		var rows, foreign, qty, items int64
		err := d.QueryRow(ctx, fmt.Sprintf(
			"SELECT (SELECT count(*) FROM %[1]s.ledger), (SELECT count(*) FROM %[1]s.ledger WHERE tenant <> $1), "+
				"(SELECT sum(qty) FROM %[1]s.items), (SELECT count(*) FROM %[1]s.items WHERE tenant = $1)", schema), tenant).
			Scan(&rows, &foreign, &qty, &items)
		if err != nil {
			t.Fatal(err)
		}
		if rows != committed[tenant] || foreign != 0 || qty != committed[tenant] || items != nodeItems {
			t.Errorf("%s holds %d ledger rows (%d of another tenant), items qty sum %d, %d own items; want %d, 0, %d, %d",
				tenant, rows, foreign, qty, items, committed[tenant], committed[tenant], nodeItems)
		}
	}
}
