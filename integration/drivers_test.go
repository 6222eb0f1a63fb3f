package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// The drivers tests run real client drivers (psycopg 3, asyncpg and pgjdbc
// as programs in testdata/drivers, pgx in process) through the same steps
// directly against PostgreSQL and through pgtenant, and require the same
// outcome of every step: the same rows, or the same exception class and
// SQLSTATE. The steps are issue 9's: statements prepared before a schema
// change (item 3), and one client's DEALLOCATE ALL (item 5).

// drvTimeout bounds one driver program's run.
const drvTimeout = 2 * time.Minute

// drvPgjdbcJar is Debian's pgjdbc (libpostgresql-jdbc-java).
const drvPgjdbcJar = "/usr/share/java/postgresql.jar"

// drvSetup is the tenant's tables for each schema change the scripts make
// (drvscen.py CHANGES, and drvChanges for pgx).
var drvSetup = map[string][]string{
	"addcol": {
		"CREATE TABLE t (id int PRIMARY KEY, name text)",
		"INSERT INTO t VALUES (1, 'one'), (2, 'two')",
	},
	"enum": {
		"CREATE TYPE mood AS ENUM ('ok', 'sad')",
		"CREATE TABLE m (id int, mo mood)",
		"INSERT INTO m VALUES (1, 'ok'), (2, 'sad')",
	},
}

// drvChange is drvscen.py's CHANGES for the pgx runs: the query, its
// parameter, and the DDL that breaks a plan prepared before it.
type drvChange struct {
	query string
	param any
	ddl   []string
}

var drvChanges = map[string]drvChange{
	"addcol": {"select * from t where id = $1", 1,
		[]string{"ALTER TABLE t ADD COLUMN extra int NOT NULL DEFAULT 7"}},
	"enum": {"select id, mo::text from m where mo = $1", "ok",
		[]string{"DROP TABLE m", "DROP TYPE mood", "CREATE TYPE mood AS ENUM ('sad', 'ok')",
			"CREATE TABLE m (id int, mo mood)", "INSERT INTO m VALUES (1, 'ok'), (2, 'sad')"}},
}

// drvTarget is where a driver connects: PostgreSQL itself, with the
// tenant's schema first on search_path as pgtenant would pin it, or
// pgtenant with the tenant as database name. The JSON is what the Python
// scripts take.
type drvTarget struct {
	Host       string `json:"host"`
	Port       int    `json:"port"`
	User       string `json:"user"`
	DBName     string `json:"dbname"`
	SearchPath string `json:"search_path,omitempty"`
}

func drvDirect(tenant string) drvTarget {
	return drvTarget{Host: pg.Host, Port: pg.Port, User: pg.User, DBName: backendDB, SearchPath: tenant + ",public"}
}

func drvProxied(p *Proxy, tenant string) drvTarget {
	return drvTarget{Host: p.Host, Port: p.Port, User: "app", DBName: tenant}
}

func (tg drvTarget) dsn() string {
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10", tg.Host, tg.Port, tg.User, tg.DBName)
	if tg.SearchPath != "" {
		s += " options='-c search_path=" + tg.SearchPath + "'"
	}
	return s
}

func (tg drvTarget) jdbcURL() string {
	u := fmt.Sprintf("jdbc:postgresql://%s:%d/%s?user=%s&sslmode=disable&prepareThreshold=1&connectTimeout=10",
		tg.Host, tg.Port, url.PathEscape(tg.DBName), url.QueryEscape(tg.User))
	if tg.SearchPath != "" {
		u += "&options=" + url.PathEscape("-c search_path="+tg.SearchPath)
	}
	return u
}

// drvResult is what a run printed: "name outcome" per step, in order, and
// the notes (messages) that are logged but not compared.
type drvResult struct {
	steps []string
	notes []string
}

func (r drvResult) outcome(step string) string {
	for _, s := range r.steps {
		if name, out, _ := strings.Cut(s, " "); name == step {
			return out
		}
	}
	return ""
}

// drvParse reads a driver program's output; it fails the test unless the
// program finished (DONE).
func drvParse(t *testing.T, what, out string) drvResult {
	t.Helper()
	var r drvResult
	done := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "STEP "):
			r.steps = append(r.steps, strings.TrimPrefix(line, "STEP "))
		case strings.HasPrefix(line, "NOTE "):
			r.notes = append(r.notes, strings.TrimPrefix(line, "NOTE "))
		case line == "DONE":
			done = true
		}
	}
	if !done {
		t.Fatalf("%s did not finish:\n%s", what, out)
	}
	return r
}

// drvRunner runs one scenario against a target.
type drvRunner func(t *testing.T, tg drvTarget) drvResult

// drvPython runs testdata/drivers/<script> with Debian's python3 (the one
// python3-psycopg and python3-asyncpg are for, see djPython).
func drvPython(script, scenario, change string) drvRunner {
	return func(t *testing.T, tg drvTarget) drvResult {
		t.Helper()
		dir, err := filepath.Abs(filepath.Join("testdata", "drivers"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(tg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), drvTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, djPython, script, scenario, change, string(js))
		cmd.Dir = dir
		var env []string
		for _, kv := range cleanEnv() {
			if !strings.HasPrefix(kv, "PYTHON") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		what := fmt.Sprintf("%s %s %s", script, scenario, change)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return drvParse(t, what, string(out))
	}
}

// drvJava runs PgjdbcStale, compiled into classes by drvCompileJava.
func drvJava(classes *string, scenario string) drvRunner {
	return func(t *testing.T, tg drvTarget) drvResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), drvTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "java", "-cp", *classes+string(os.PathListSeparator)+drvPgjdbcJar,
			"PgjdbcStale", scenario, tg.jdbcURL())
		cmd.Env = cleanEnv()
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		what := "PgjdbcStale " + scenario
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return drvParse(t, what, string(out))
	}
}

// drvCompileJava compiles testdata/drivers/PgjdbcStale.java against Debian's
// pgjdbc and returns the class directory.
func drvCompileJava(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"javac", "java"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (run make deps: it installs openjdk-17-jdk-headless): %v", tool, err)
		}
	}
	if _, err := os.Stat(drvPgjdbcJar); err != nil {
		t.Fatalf("pgjdbc is not installed (run make deps: it installs libpostgresql-jdbc-java): %v", err)
	}
	classes := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), drvTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "javac", "-cp", drvPgjdbcJar, "-d", classes,
		filepath.Join("testdata", "drivers", "PgjdbcStale.java")).CombinedOutput()
	if err != nil {
		t.Fatalf("javac PgjdbcStale.java: %v\n%s", err, out)
	}
	return classes
}

// drvRequirePython fails the test unless Debian's python3 has psycopg 3 and
// asyncpg; scripts/deps.sh installs them.
func drvRequirePython(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, djPython, "-c",
		"import psycopg, asyncpg; print('psycopg', psycopg.__version__, 'asyncpg', asyncpg.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import psycopg (3) and asyncpg (run make deps: it installs python3-psycopg and python3-asyncpg): %v\n%s", djPython, err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
}

// drvPgx runs the scenarios of the Python scripts with pgx in the given
// exec mode: "existing" (one connection across the change) and "new" (two
// connections prepare it at once and leave, the schema changes, three new
// connections run it).
func drvPgx(mode pgx.QueryExecMode, scenario, change string) drvRunner {
	return func(t *testing.T, tg drvTarget) drvResult {
		t.Helper()
		ch := drvChanges[change]
		ctx, cancel := context.WithTimeout(context.Background(), drvTimeout)
		defer cancel()
		connect := func() *pgx.Conn {
			cfg, err := pgx.ParseConfig(tg.dsn())
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatalf("pgx connect %s: %v", tg.dsn(), err)
			}
			return c
		}
		var r drvResult
		step := func(name string, c *pgx.Conn) {
			rows, err := c.Query(ctx, ch.query, ch.param)
			var got [][]string
			if err == nil {
				for rows.Next() {
					vals, verr := rows.Values()
					if verr != nil {
						err = verr
						break
					}
					row := make([]string, len(vals))
					for i, v := range vals {
						row[i] = fmt.Sprint(v)
					}
					got = append(got, row)
				}
				rows.Close()
				if err == nil {
					err = rows.Err()
				}
			}
			if err != nil {
				state := sqlState(err)
				if state == "" {
					state = fmt.Sprintf("%T", err)
				}
				r.steps = append(r.steps, name+" error "+state)
				r.notes = append(r.notes, name+" "+err.Error())
				return
			}
			js, _ := json.Marshal(got)
			r.steps = append(r.steps, name+" ok "+string(js))
		}
		ddl := func() {
			c := connect()
			defer c.Close(ctx)
			for _, q := range ch.ddl {
				if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		}
		switch scenario {
		case "existing":
			c := connect()
			defer c.Close(ctx)
			step("before", c)
			ddl()
			for i := 1; i <= 3; i++ {
				step(fmt.Sprintf("after%d", i), c)
			}
		case "new":
			a, b := connect(), connect()
			for _, c := range []*pgx.Conn{a, b} {
				if _, err := c.Exec(ctx, "BEGIN"); err != nil {
					t.Fatal(err)
				}
				rows, err := c.Query(ctx, ch.query, ch.param)
				if err != nil {
					t.Fatal(err)
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range []*pgx.Conn{a, b} {
				if _, err := c.Exec(ctx, "COMMIT"); err != nil {
					t.Fatal(err)
				}
				c.Close(ctx)
			}
			ddl()
			for i := 1; i <= 3; i++ {
				c := connect()
				step(fmt.Sprintf("new%d", i), c)
				c.Close(ctx)
			}
		default:
			t.Fatalf("unknown scenario %q", scenario)
		}
		return r
	}
}

// drvModes are the pgtenant configurations each case runs through, beside
// the direct run: a pool of two backends, so that statements prepared by
// earlier clients are there for later ones.
var drvModes = []config.PoolMode{config.PoolTransaction, config.PoolSession}

// drvCase is one driver, scenario and schema change.
type drvCase struct {
	name   string
	change string
	run    drvRunner
	// directOK are steps that must succeed directly, so that the
	// comparison is about something.
	directOK []string
}

// drvCompare fails the test unless proxied ran the same steps with the
// same outcomes as direct.
func drvCompare(t *testing.T, direct, proxied drvResult) {
	t.Helper()
	if slices.Equal(direct.steps, proxied.steps) {
		return
	}
	t.Errorf("outcomes differ\ndirect:\n  %s\npgtenant:\n  %s\ndirect notes:\n  %s\npgtenant notes:\n  %s",
		strings.Join(direct.steps, "\n  "), strings.Join(proxied.steps, "\n  "),
		strings.Join(direct.notes, "\n  "), strings.Join(proxied.notes, "\n  "))
}

// TestDriversStaleStatements is issue 9 item 3: statements that drivers
// prepared before ALTER TABLE ... ADD COLUMN, or before an enum they use
// was dropped and made again, on the same connection and on new ones. What
// each driver sees directly (an error and a recovery, or rows at once) it
// must see through pgtenant, step by step.
func TestDriversStaleStatements(t *testing.T) {
	t.Parallel()
	drvRequirePython(t)
	classes := drvCompileJava(t)

	newOK := []string{"new1", "new2", "new3"}
	cases := []drvCase{
		{name: "psycopg/existing/addcol", change: "addcol", run: drvPython("with_psycopg.py", "existing:tx", "addcol"), directOK: []string{"before"}},
		{name: "psycopg-autocommit/existing/addcol", change: "addcol", run: drvPython("with_psycopg.py", "existing:autocommit", "addcol"), directOK: []string{"before"}},
		{name: "psycopg/new/addcol", change: "addcol", run: drvPython("with_psycopg.py", "new:tx", "addcol"), directOK: newOK},
		{name: "psycopg-autocommit/new/addcol", change: "addcol", run: drvPython("with_psycopg.py", "new:autocommit", "addcol"), directOK: newOK},
		{name: "psycopg/existing/enum", change: "enum", run: drvPython("with_psycopg.py", "existing:tx", "enum"), directOK: []string{"before"}},
		{name: "psycopg/new/enum", change: "enum", run: drvPython("with_psycopg.py", "new:tx", "enum"), directOK: newOK},
		{name: "asyncpg/existing/addcol", change: "addcol", run: drvPython("with_asyncpg.py", "existing", "addcol"), directOK: []string{"before", "after1"}},
		{name: "asyncpg/new/addcol", change: "addcol", run: drvPython("with_asyncpg.py", "new", "addcol"), directOK: newOK},
		{name: "asyncpg/existing/enum", change: "enum", run: drvPython("with_asyncpg.py", "existing", "enum"), directOK: []string{"before"}},
		{name: "asyncpg/new/enum", change: "enum", run: drvPython("with_asyncpg.py", "new", "enum"), directOK: newOK},
		{name: "pgx-cache-statement/existing/addcol", change: "addcol", run: drvPgx(pgx.QueryExecModeCacheStatement, "existing", "addcol"), directOK: []string{"before"}},
		{name: "pgx-cache-statement/new/addcol", change: "addcol", run: drvPgx(pgx.QueryExecModeCacheStatement, "new", "addcol"), directOK: newOK},
		{name: "pgx-cache-statement/existing/enum", change: "enum", run: drvPgx(pgx.QueryExecModeCacheStatement, "existing", "enum"), directOK: []string{"before"}},
		{name: "pgx-cache-statement/new/enum", change: "enum", run: drvPgx(pgx.QueryExecModeCacheStatement, "new", "enum"), directOK: newOK},
		{name: "pgx-cache-describe/existing/addcol", change: "addcol", run: drvPgx(pgx.QueryExecModeCacheDescribe, "existing", "addcol"), directOK: []string{"before"}},
		{name: "pgx-cache-describe/new/addcol", change: "addcol", run: drvPgx(pgx.QueryExecModeCacheDescribe, "new", "addcol"), directOK: newOK},
		{name: "pgjdbc/existing/addcol", change: "addcol", run: drvJava(&classes, "existing"), directOK: []string{"before"}},
		{name: "pgjdbc/new/addcol", change: "addcol", run: drvJava(&classes, "new"), directOK: newOK},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := fmt.Sprintf("drv%02d", i)
			createTenant(t, base+"_d", drvSetup[c.change]...)
			direct := c.run(t, drvDirect(base+"_d"))
			t.Logf("direct:\n  %s\n  %s", strings.Join(direct.steps, "\n  "), strings.Join(direct.notes, "\n  "))
			for _, step := range c.directOK {
				if out := direct.outcome(step); !strings.HasPrefix(out, "ok ") {
					t.Fatalf("directly, step %s: %q, want rows", step, out)
				}
			}
			for _, mode := range drvModes {
				t.Run(string(mode), func(t *testing.T) {
					tenant := fmt.Sprintf("%s_%c", base, mode[0])
					createTenant(t, tenant, drvSetup[c.change]...)
					p := startProxy(t, func(cfg *config.Config) { cfg.PoolSize = 2; cfg.PoolMode = mode; cfg.LogLevel = "info" })
					drvCompare(t, direct, c.run(t, drvProxied(p, tenant)))
				})
			}
		})
	}
}

// drvBMarker is client B's statement in TestDriversDeallocateAll, a text
// no other client prepares so that pg_prepared_statements can be asked
// for it.
const drvBMarker = "select $1::int + 4242 as b_marker"

// drvBCount is how many statements with client B's text the server
// connection that answers holds.
func drvBCount(t *testing.T, ctx context.Context, b *pgx.Conn) int {
	t.Helper()
	var n int
	if err := b.QueryRow(ctx, "select count(*) from pg_prepared_statements where statement = $1",
		pgx.QueryExecModeSimpleProtocol, drvBMarker).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDriversDeallocateAll is issue 9 item 5: client A, psycopg 3 with
// prepared statements, rolls back, which makes psycopg send DEALLOCATE ALL.
// Client B prepared a statement before; on one shared backend (transaction
// mode, pool of one) A's DEALLOCATE ALL must leave B's statement on the
// server, as a direct connection of its own would, while A's own statements
// are gone for A (26000 on EXECUTE and on Bind, as directly).
func TestDriversDeallocateAll(t *testing.T) {
	t.Parallel()
	drvRequirePython(t)
	runA := drvPython("with_psycopg.py", "dealloc", "addcol")

	type target struct {
		name    string
		connect func(t *testing.T, tenant string) drvTarget
	}
	proxied := func(mode config.PoolMode, size int) func(t *testing.T, tenant string) drvTarget {
		return func(t *testing.T, tenant string) drvTarget {
			p := startProxy(t, func(cfg *config.Config) { cfg.PoolSize = size; cfg.PoolMode = mode; cfg.LogLevel = "info" })
			return drvProxied(p, tenant)
		}
	}
	targets := []target{
		{"direct", func(t *testing.T, tenant string) drvTarget { return drvDirect(tenant) }},
		// One backend: B's statement and A's DEALLOCATE ALL meet on it.
		{"transaction", proxied(config.PoolTransaction, 1)},
		// Each client holds a backend of its own for its whole session.
		{"session", proxied(config.PoolSession, 2)},
	}
	var directA drvResult
	for i, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			tenant := fmt.Sprintf("drvdealloc%d", i)
			createTenant(t, tenant, drvSetup["addcol"]...)
			target := tg.connect(t, tenant)
			ctx, cancel := context.WithTimeout(context.Background(), drvTimeout)
			defer cancel()
			cfg, err := pgx.ParseConfig(target.dsn())
			if err != nil {
				t.Fatal(err)
			}
			b, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(ctx)
			if _, err := b.Prepare(ctx, "b_stmt", drvBMarker); err != nil {
				t.Fatal(err)
			}
			if n := drvBCount(t, ctx, b); n != 1 {
				t.Fatalf("before A runs, the server holds %d statements with B's text, want 1", n)
			}

			a := runA(t, target)
			t.Logf("A:\n  %s\n  %s", strings.Join(a.steps, "\n  "), strings.Join(a.notes, "\n  "))
			if tg.name == "direct" {
				directA = a
				for _, step := range []string{"prepare", "after"} {
					if out := a.outcome(step); !strings.HasPrefix(out, "ok ") {
						t.Errorf("directly, A's step %s: %q, want rows", step, out)
					}
				}
				for _, step := range []string{"execute-dropped", "bind-dropped"} {
					if out := a.outcome(step); !strings.HasSuffix(out, " 26000") {
						t.Errorf("directly, A's step %s: %q, want 26000", step, out)
					}
				}
			} else if directA.steps == nil {
				t.Fatal("the direct run did not record A's outcomes")
			} else {
				drvCompare(t, directA, a)
			}

			if n := drvBCount(t, ctx, b); n != 1 {
				t.Errorf("after A's DEALLOCATE ALL, the server holds %d statements with B's text, want 1 (B's own)", n)
			}
			var got int
			if err := b.QueryRow(ctx, "b_stmt", 1).Scan(&got); err != nil || got != 4243 {
				t.Errorf("B's statement after A's DEALLOCATE ALL: %d, %v; want 4243", got, err)
			}
		})
	}
}
