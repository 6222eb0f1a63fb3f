package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/cli"
)

// The tenant lifecycle commands (issue 13), run as the command line runs
// them (in-process, cli.Run) against the shared cluster, with a running
// proxy where the test needs one. Tenants are prefixed lc_ and removed
// before and after each test, so that -count=2 passes.

// lcCLI runs pgtenant ARGS --backend <the shared cluster> with stdin, and
// returns what it printed, its exit code and its error.
func lcCLI(t *testing.T, stdin string, args ...string) (string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := cli.Run(ctx, append(args, "--backend", backendDSN()), strings.NewReader(stdin), &stdout, &stderr)
	return stdout.String(), code, err
}

// lcOK runs a command that must succeed and returns its output.
func lcOK(t *testing.T, args ...string) string {
	t.Helper()
	out, code, err := lcCLI(t, "", args...)
	if code != 0 || err != nil {
		t.Fatalf("pgtenant %s: exit %d, %v\n%s", strings.Join(args, " "), code, err, out)
	}
	return out
}

// lcRefused runs a command that must fail with exit code 1 and an error
// saying want.
func lcRefused(t *testing.T, want string, args ...string) {
	t.Helper()
	out, code, err := lcCLI(t, "", args...)
	if code != 1 || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("pgtenant %s: exit %d, %v (output %q); want exit 1 saying %q", strings.Join(args, " "), code, err, out, want)
	}
}

// lcClean removes tenants and schemas of these names, now and when the
// test ends.
func lcClean(t *testing.T, names ...string) {
	t.Helper()
	clean := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, backendDSN())
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = ANY($1)`, names); err != nil {
			t.Error(err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM pgtenant.tenant_aliases WHERE alias = ANY($1)`, names); err != nil {
			t.Error(err)
		}
		for _, n := range names {
			if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{n}.Sanitize()+` CASCADE`); err != nil {
				t.Error(err)
			}
		}
	}
	createTenant(t, "lc_registry_probe") // makes sure the registry exists
	names = append(names, "lc_registry_probe")
	clean()
	t.Cleanup(clean)
}

// lcCount counts the rows of a table, directly on the backend.
func lcCount(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := direct(t).QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// lcConnectErr tries to connect to tenant through p and returns the error.
func lcConnectErr(p *Proxy, tenant string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN(tenant))
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT 1")
		conn.Close(ctx)
	}
	return err
}

// lcListed returns tenant list --format json's row for name.
func lcListed(t *testing.T, name string) map[string]any {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(lcOK(t, "tenant", "list", "--format", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r["name"] == name {
			return r
		}
	}
	t.Fatalf("tenant list lacks %s", name)
	return nil
}

// Disable and enable are seen by a running proxy within a second (the
// NOTIFY trigger): a new connection gets 55000, then works again; tenant
// list shows the state and the schema's size.
func TestLifecycleDisableEnable(t *testing.T) {
	lcClean(t, "lc_de")
	createTenant(t, "lc_de", `CREATE TABLE t (v text)`, `INSERT INTO t SELECT repeat('x', 1000) FROM generate_series(1, 100)`)
	p := startProxy(t)
	if err := lcConnectErr(p, "lc_de"); err != nil {
		t.Fatal(err)
	}
	if out := lcOK(t, "tenant", "disable", "lc_de"); !strings.Contains(out, "disabled tenant lc_de") {
		t.Fatalf("disable printed %q", out)
	}
	eventually(t, time.Second, "a new client of lc_de gets 55000", func() bool {
		return sqlState(lcConnectErr(p, "lc_de")) == "55000"
	})
	csvOut := lcOK(t, "tenant", "list", "--format", "csv")
	if !strings.HasPrefix(csvOut, "name,schema,state,size_bytes,migration_version,connected_proxies,aliases,backend\n") ||
		!strings.Contains(csvOut, "\nlc_de,lc_de,disabled,") {
		t.Fatalf("tenant list --format csv:\n%s", csvOut)
	}
	if size := lcListed(t, "lc_de")["size_bytes"].(float64); size < 100_000 {
		t.Fatalf("lc_de's size is %v bytes; its table holds 100 kB", size)
	}
	lcOK(t, "tenant", "enable", "lc_de")
	eventually(t, time.Second, "lc_de's clients connect again", func() bool { return lcConnectErr(p, "lc_de") == nil })
	table := lcOK(t, "tenant", "list")
	if !strings.HasPrefix(table, "NAME") || !strings.Contains(table, "STATE") || !strings.Contains(table, "CLIENTS") {
		t.Fatalf("tenant list:\n%s", table)
	}
	lcRefused(t, "does not exist", "tenant", "disable", "lc_nosuch")
}

// disable --kick closes a connected client on every proxy; the insert of
// its open transaction is rolled back.
func TestLifecycleDisableKick(t *testing.T) {
	lcClean(t, "lc_kick")
	createTenant(t, "lc_kick", `CREATE TABLE t (v int)`)
	p := startProxy(t)
	ctx := context.Background()
	c := p.Connect(t, "lc_kick", pgx.QueryExecModeSimpleProtocol)
	if _, err := c.Exec(ctx, "BEGIN; INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	lcOK(t, "tenant", "disable", "lc_kick", "--kick")
	eventually(t, 5*time.Second, "the kicked client's connection ends", func() bool {
		_, err := c.Exec(ctx, "SELECT 1")
		return err != nil
	})
	eventually(t, 5*time.Second, "the transaction rolled back", func() bool { return lcCount(t, "lc_kick.t") == 0 })
	if err := lcConnectErr(p, "lc_kick"); sqlState(err) != "55000" {
		t.Fatalf("a new client of the disabled tenant: %v; want 55000", err)
	}
	if n := lcCount(t, "lc_kick.t"); n != 0 {
		t.Fatalf("lc_kick.t has %d rows; the kicked transaction's insert must not be committed", n)
	}
}

// drop refuses a schema with tables without --force, and a tenant with
// connected clients without --kick (which tenant list shows); --force
// --kick drops everything; --keep-schema keeps the data.
func TestLifecycleDrop(t *testing.T) {
	lcClean(t, "lc_drop", "lc_drop_alias", "lc_keep", "lc_empty")
	createTenant(t, "lc_drop", `CREATE TABLE t (v int)`, `INSERT INTO t VALUES (1)`)
	lcOK(t, "tenant", "alias", "add", "lc_drop_alias", "lc_drop")
	lcOK(t, "tenant", "grant", "lc_drop", "lc_user")
	lcOK(t, "tenant", "set", "lc_drop", "tier=gold")
	p := startProxy(t)

	lcRefused(t, "holds 1 table(s); pass --force", "tenant", "drop", "lc_drop")
	if r := lcListed(t, "lc_drop"); r["state"] != "active" {
		t.Fatalf("after a refused drop lc_drop is %v", r["state"])
	}

	ctx := context.Background()
	c := p.Connect(t, "lc_drop_alias", pgx.QueryExecModeSimpleProtocol)
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "tenant list shows lc_drop's client", func() bool {
		return lcListed(t, "lc_drop")["connected_proxies"].(float64) == 1
	})
	lcRefused(t, "has clients connected through a running proxy", "tenant", "drop", "lc_drop", "--force")
	if r := lcListed(t, "lc_drop"); r["state"] != "active" {
		t.Fatalf("after a refused drop lc_drop is %v; a refusal enables it again", r["state"])
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("the client after a refused drop: %v", err)
	}

	out := lcOK(t, "tenant", "drop", "lc_drop", "--force", "--kick")
	for _, want := range []string{"disabled tenant lc_drop", "dropped schema lc_drop (1 table(s))",
		"removed tenant lc_drop from the registry, with 1 alias(es), 1 grant(s), 1 setting(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("drop printed %q; want %q", out, want)
		}
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the client of the dropped tenant still works")
	}
	var schemas, rows int
	err := direct(t).QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_namespace WHERE nspname = 'lc_drop'),
		(SELECT count(*) FROM pgtenant.tenants WHERE name = 'lc_drop')
		+ (SELECT count(*) FROM pgtenant.tenant_aliases WHERE tenant = 'lc_drop' OR alias = 'lc_drop_alias')
		+ (SELECT count(*) FROM pgtenant.tenant_users WHERE tenant = 'lc_drop')
		+ (SELECT count(*) FROM pgtenant.tenant_settings WHERE tenant = 'lc_drop')`).Scan(&schemas, &rows)
	if err != nil || schemas != 0 || rows != 0 {
		t.Fatalf("after drop: %d schema(s), %d registry row(s), %v; want none", schemas, rows, err)
	}
	if err := lcConnectErr(p, "lc_drop_alias"); sqlState(err) != "3D000" {
		t.Fatalf("a client of the dropped tenant's alias: %v; want 3D000", err)
	}

	// An empty schema needs no --force; --keep-schema keeps the data.
	createTenant(t, "lc_empty")
	lcOK(t, "tenant", "drop", "lc_empty")
	createTenant(t, "lc_keep", `CREATE TABLE t (v int)`, `INSERT INTO t VALUES (1), (2)`)
	out = lcOK(t, "tenant", "drop", "lc_keep", "--keep-schema")
	if !strings.Contains(out, "kept schema lc_keep") {
		t.Fatalf("drop --keep-schema printed %q", out)
	}
	if n := lcCount(t, "lc_keep.t"); n != 2 {
		t.Fatalf("the kept schema's table has %d rows; want 2", n)
	}
	lcRefused(t, "does not exist", "tenant", "drop", "lc_keep")
}

// rename keeps the old name as an alias and lets connected clients go on;
// a schema rename is refused while clients are connected, unless --kick;
// --no-alias drops the old name.
func TestLifecycleRename(t *testing.T) {
	lcClean(t, "lc_ren_a", "lc_ren_b", "lc_ren_c", "lc_ren_d", "lc_ren_x")
	createTenant(t, "lc_ren_x")
	createTenant(t, "lc_ren_a", `CREATE TABLE t (v int)`, `INSERT INTO t VALUES (1), (2), (3)`)
	p := startProxy(t)
	ctx := context.Background()
	count := func(c *pgx.Conn) (n int, err error) {
		err = c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
		return n, err
	}
	old := p.Connect(t, "lc_ren_a", pgx.QueryExecModeSimpleProtocol)
	if n, err := count(old); err != nil || n != 3 {
		t.Fatal(n, err)
	}

	out := lcOK(t, "tenant", "rename", "lc_ren_a", "lc_ren_b")
	if !strings.Contains(out, "renamed tenant lc_ren_a to lc_ren_b") || !strings.Contains(out, "lc_ren_a stays an alias") {
		t.Fatalf("rename printed %q", out)
	}
	if n, err := count(old); err != nil || n != 3 {
		t.Fatalf("the client connected before a rename of the name alone: %d, %v", n, err)
	}
	for _, name := range []string{"lc_ren_b", "lc_ren_a"} {
		var c *pgx.Conn
		eventually(t, 5*time.Second, name+" reaches the renamed tenant", func() bool {
			cc, err := pgx.Connect(ctx, p.DSN(name))
			if err != nil {
				return false
			}
			c = cc
			return true
		})
		n, err := count(c)
		c.Close(ctx)
		if err != nil || n != 3 {
			t.Fatalf("%s: %d rows, %v", name, n, err)
		}
	}

	// The schema too: the old client's pin names the old schema.
	eventually(t, 10*time.Second, "tenant list sees the connected client", func() bool {
		return lcListed(t, "lc_ren_b")["connected_proxies"].(float64) == 1
	})
	lcRefused(t, "has clients connected", "tenant", "rename", "lc_ren_b", "lc_ren_c", "--rename-schema")
	out = lcOK(t, "tenant", "rename", "lc_ren_b", "lc_ren_c", "--rename-schema", "--kick")
	if !strings.Contains(out, "renamed schema lc_ren_a to lc_ren_c") {
		t.Fatalf("rename --rename-schema printed %q", out)
	}
	eventually(t, 5*time.Second, "the kicked client's connection ends", func() bool {
		_, err := count(old)
		return err != nil
	})
	if n := lcCount(t, "lc_ren_c.t"); n != 3 {
		t.Fatalf("lc_ren_c.t: %d rows", n)
	}
	for _, name := range []string{"lc_ren_a", "lc_ren_b", "lc_ren_c"} {
		var n int
		eventually(t, 5*time.Second, name+" reaches the renamed schema", func() bool {
			c, err := pgx.Connect(ctx, p.DSN(name))
			if err != nil {
				return false
			}
			defer c.Close(ctx)
			n, err = count(c)
			return err == nil
		})
		if n != 3 {
			t.Fatalf("%s: %d rows", name, n)
		}
	}

	lcOK(t, "tenant", "rename", "lc_ren_c", "lc_ren_d", "--no-alias", "--schema", "lc_ren_d")
	eventually(t, 5*time.Second, "lc_ren_c is gone", func() bool {
		return sqlState(lcConnectErr(p, "lc_ren_c")) == "3D000"
	})
	if err := lcConnectErr(p, "lc_ren_a"); err != nil {
		t.Fatalf("the older alias lc_ren_a after a rename --no-alias: %v", err)
	}
	lcRefused(t, "invalid schema name", "tenant", "rename", "lc_ren_d", "lc_ren_e", "--schema", "public")
	lcRefused(t, "a tenant is called", "tenant", "rename", "lc_ren_d", "lc_ren_x")
}

// clone copies the structure (tables, indexes, foreign keys, a view), and
// with --with-data the rows too, with sequences carrying on; the source is
// untouched.
func TestLifecycleClone(t *testing.T) {
	lcClean(t, "lc_cl_src", "lc_cl_empty", "lc_cl_full")
	createTenant(t, "lc_cl_src",
		`CREATE TABLE parent (id serial PRIMARY KEY, name text UNIQUE)`,
		`CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id), v int)`,
		`CREATE INDEX child_v_idx ON child (v)`,
		`CREATE VIEW parent_names AS SELECT name FROM parent`,
		`INSERT INTO parent (name) SELECT 'p' || i FROM generate_series(1, 20) i`,
		`INSERT INTO child (parent_id, v) SELECT 1 + i % 20, i FROM generate_series(1, 100) i`)
	p := startProxy(t)
	ctx := context.Background()
	db := direct(t)

	structure := func(schema string) (idx, fks int) {
		t.Helper()
		err := db.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_indexes WHERE schemaname = $1),
			(SELECT count(*) FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid
			  WHERE c.contype = 'f' AND c.connamespace = $1::regnamespace AND r.relnamespace = $1::regnamespace)`,
			schema).Scan(&idx, &fks)
		if err != nil {
			t.Fatal(err)
		}
		return idx, fks
	}
	srcIdx, srcFKs := structure("lc_cl_src")

	out := lcOK(t, "tenant", "clone", "lc_cl_src", "lc_cl_empty")
	if !strings.Contains(out, "cloned tenant lc_cl_src (schema lc_cl_src) to lc_cl_empty (schema lc_cl_empty): structure") {
		t.Fatalf("clone printed %q", out)
	}
	if idx, fks := structure("lc_cl_empty"); idx != srcIdx || fks != srcFKs || fks != 1 {
		t.Fatalf("the clone has %d indexes and %d foreign keys within itself; the source %d and %d", idx, fks, srcIdx, srcFKs)
	}
	if n := lcCount(t, "lc_cl_empty.parent") + lcCount(t, "lc_cl_empty.child"); n != 0 {
		t.Fatalf("the structure-only clone has %d rows", n)
	}

	lcOK(t, "tenant", "clone", "lc_cl_src", "lc_cl_full", "--with-data")
	for _, tbl := range []string{"parent", "child"} {
		if a, b := lcCount(t, "lc_cl_src."+tbl), lcCount(t, "lc_cl_full."+tbl); a != b {
			t.Fatalf("%s: %d rows in the source, %d in the clone", tbl, a, b)
		}
	}
	if idx, fks := structure("lc_cl_full"); idx != srcIdx || fks != srcFKs {
		t.Fatalf("the clone with data has %d indexes and %d foreign keys; the source %d and %d", idx, fks, srcIdx, srcFKs)
	}
	// Through the proxy: the sequence carries on, the foreign key holds
	// within the clone, the view reads the clone's table.
	c := p.Connect(t, "lc_cl_full", pgx.QueryExecModeSimpleProtocol)
	var id int
	if err := c.QueryRow(ctx, `INSERT INTO parent (name) VALUES ('new') RETURNING id`).Scan(&id); err != nil || id != 21 {
		t.Fatalf("a new row of the clone got id %d, %v; want 21 (the sequence carries on)", id, err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO child (parent_id, v) VALUES (999, 0)`); sqlState(err) != "23503" {
		t.Fatalf("a child of no parent in the clone: %v; want 23503", err)
	}
	var names int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM parent_names`).Scan(&names); err != nil || names != 21 {
		t.Fatalf("the clone's view sees %d names, %v; want 21 (its own table)", names, err)
	}
	if n := lcCount(t, "lc_cl_src.parent"); n != 20 {
		t.Fatalf("the source has %d parents; want 20, untouched", n)
	}
	if idx, fks := structure("lc_cl_src"); idx != srcIdx || fks != srcFKs {
		t.Fatal("the source's structure changed")
	}
	lcRefused(t, "exists already", "tenant", "clone", "lc_cl_src", "lc_cl_full")
	lcRefused(t, "does not exist", "tenant", "clone", "lc_nosuch", "lc_cl_x")
}

// export then import under a new name gives equal row counts, both while
// the exported schema still exists (the rename dance) and after it is
// gone.
func TestLifecycleExportImport(t *testing.T) {
	lcClean(t, "lc_ex_src", "lc_ex_copy", "lc_ex_back", "lc_ex_other")
	createTenant(t, "lc_ex_src",
		`CREATE TABLE items (id serial PRIMARY KEY, body text)`,
		`INSERT INTO items (body) SELECT 'item ' || i FROM generate_series(1, 250) i`)
	dump := lcOK(t, "tenant", "export", "lc_ex_src")
	if !strings.HasPrefix(dump, "-- pgtenant tenant export\n-- tenant: lc_ex_src\n-- schema: lc_ex_src\n") ||
		!strings.Contains(dump, "CREATE TABLE lc_ex_src.items") {
		t.Fatalf("export's output starts %q", dump[:min(len(dump), 400)])
	}
	imp := func(name string, args ...string) string {
		t.Helper()
		out, code, err := lcCLI(t, dump, append([]string{"tenant", "import", name}, args...)...)
		if code != 0 || err != nil {
			t.Fatalf("import %s: exit %d, %v\n%s", name, code, err, out)
		}
		return out
	}
	imp("lc_ex_copy")
	if a, b := lcCount(t, "lc_ex_src.items"), lcCount(t, "lc_ex_copy.items"); a != b || a != 250 {
		t.Fatalf("%d rows exported, %d imported", a, b)
	}
	lcOK(t, "tenant", "drop", "lc_ex_src", "--force")
	imp("lc_ex_back", "--schema", "lc_ex_other")
	if n := lcCount(t, "lc_ex_other.items"); n != 250 {
		t.Fatalf("imported after the source was dropped: %d rows", n)
	}
	p := startProxy(t)
	var n int
	if err := p.Connect(t, "lc_ex_back", pgx.QueryExecModeSimpleProtocol).QueryRow(context.Background(),
		`SELECT count(*) FROM items`).Scan(&n); err != nil || n != 250 {
		t.Fatalf("the imported tenant through the proxy: %d rows, %v", n, err)
	}
	out, code, err := lcCLI(t, "not a dump\n", "tenant", "import", "lc_ex_x")
	if code != 1 || err == nil || !strings.Contains(err.Error(), "holds no schema") {
		t.Fatalf("import of garbage: exit %d, %v, %q", code, err, out)
	}
}
