package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pgtenant/pgtenant/config"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
)

// buildPgtenant builds the pgtenant binary into a temporary directory of
// t's, for tests that run the CLI as a person would (exit codes, stdout).
func buildPgtenant(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgtenant")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// migrateCLI runs the pgtenant binary with args against dsn and returns
// its stdout and stderr together, and its exit code.
func migrateCLI(t *testing.T, bin, dsn string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), "PGTENANT_BACKEND="+dsn)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("run pgtenant %s: %v", strings.Join(args, " "), err)
		return "", -1
	}
}

// writeMigrations writes files (name -> SQL) into dir, replacing what is
// there.
func writeMigrations(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, sql := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// migDatabase makes a database of the test's own in the shared cluster,
// afresh on every run, so that migrate (which runs on every tenant of a
// registry) sees only the test's tenants. It returns its DSN and a
// superuser's connection to it.
func migDatabase(t *testing.T, name string) (string, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{
		`DROP DATABASE IF EXISTS ` + pgx.Identifier{name}.Sanitize() + ` WITH (FORCE)`,
		`CREATE DATABASE ` + pgx.Identifier{name}.Sanitize(),
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, pg.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return pg.DSN(name), conn
}

// migTenant creates tenant name (schema = name) in db's registry.
func migTenant(t *testing.T, db *pgx.Conn, name string) {
	t.Helper()
	if _, _, err := router.CreateTenant(context.Background(), db, name, ""); err != nil {
		t.Fatalf("create tenant %s: %v", name, err)
	}
}

// migVersions returns each tenant's applied versions, of tenants named
// with prefix.
func migVersions(t *testing.T, db *pgx.Conn, prefix string) map[string][]int64 {
	t.Helper()
	rows, err := db.Query(context.Background(),
		`SELECT tenant, version FROM pgtenant.tenant_migrations WHERE starts_with(tenant, $1) ORDER BY tenant, version`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int64{}
	var tenant string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&tenant, &v}, func() error {
		got[tenant] = append(got[tenant], v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// relExists reports whether schema.name exists.
func relExists(t *testing.T, db *pgx.Conn, schema, name string) bool {
	t.Helper()
	var ok bool
	if err := db.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`,
		pgx.Identifier{schema, name}.Sanitize()).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

var migFiles = map[string]string{
	"0001_items.sql": `-- the first table
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'anvil'), (2, 'rocket');
`,
	// Two statements: on a tenant where the second fails, the first must
	// not stay.
	"0002_tags.sql": `CREATE TABLE labels (id int PRIMARY KEY);
CREATE TABLE tags (id serial PRIMARY KEY, item int REFERENCES items, tag text);
CREATE INDEX tags_tag_idx ON tags (tag);
`,
	"0003_prices.sql": `ALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0;
UPDATE items SET price = id * 10;
`,
}

// TestMigrateAcrossTenants runs `pgtenant migrate` on 20 tenants with -j 4:
// one tenant fails and is reported while the others are migrated; it
// catches up once fixed, as does a tenant created after the run; a changed
// file stops everything before it runs; status shows versions and pending
// files; a dry run changes nothing; shared migrations go to public once.
func TestMigrateAcrossTenants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dsn, db := migDatabase(t, "pgtenant_migrate")
	bin := buildPgtenant(t)
	dir := t.TempDir()
	writeMigrations(t, dir, migFiles)
	var tenants []string
	for i := 1; i <= 20; i++ {
		name := fmt.Sprintf("mig_%02d", i)
		tenants = append(tenants, name)
		migTenant(t, db, name)
	}
	// mig_07 already has a table 0002 creates.
	if _, err := db.Exec(ctx, `CREATE TABLE mig_07.tags (x int)`); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		t.Helper()
		return migrateCLI(t, bin, dsn, args...)
	}

	// A dry run lists what would run and changes nothing.
	out, code := run("migrate", "--dir", dir, "--dry-run", "--tenant", "mig_01", "--tenant", "mig_02")
	if code != 0 || !strings.Contains(out, "mig_01: would apply 0001_items.sql, 0002_tags.sql, 0003_prices.sql\n") ||
		strings.Contains(out, "mig_03") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	if v := migVersions(t, db, "mig_"); len(v) != 0 || relExists(t, db, "mig_01", "items") {
		t.Fatalf("the dry run changed something: versions %v", v)
	}

	out, code = run("migrate", "--dir", dir, "-j", "4")
	if code != 2 {
		t.Fatalf("migrate with a failing tenant: exit %d, want 2\n%s", code, out)
	}
	failLine := regexp.MustCompile(`(?m)^mig_07: FAILED at 0002_tags\.sql .*ERROR 42P07: relation "tags" already exists$`)
	if !failLine.MatchString(out) || !strings.Contains(out, "1 of 20 tenant(s) failed: mig_07") {
		t.Fatalf("the failure is not reported with tenant, file and SQLSTATE:\n%s", out)
	}
	if !strings.Contains(out, "mig_01: applied 3 file(s), now at version 3, in ") {
		t.Fatalf("mig_01's line is missing:\n%s", out)
	}
	versions := migVersions(t, db, "mig_")
	for _, name := range tenants {
		want := []int64{1, 2, 3}
		if name == "mig_07" {
			want = []int64{1}
		}
		if !slices.Equal(versions[name], want) {
			t.Errorf("%s has versions %v, want %v", name, versions[name], want)
		}
		if name != "mig_07" && (!relExists(t, db, name, "tags") || !relExists(t, db, name, "labels")) {
			t.Errorf("%s lacks the tables of 0002", name)
		}
	}
	// Nothing of the failed file: not the first statement, not the index.
	if relExists(t, db, "mig_07", "labels") || relExists(t, db, "mig_07", "tags_tag_idx") {
		t.Error("mig_07 kept part of 0002_tags.sql")
	}
	var price int
	if err := db.QueryRow(ctx, `SELECT price FROM mig_13.items WHERE id = 2`).Scan(&price); err != nil || price != 20 {
		t.Fatalf("mig_13's backfill: %d, %v", price, err)
	}

	// Status, as a table and as JSON, shows versions and pending files.
	out, code = run("migrate", "status", "--dir", dir)
	if code != 0 ||
		!regexp.MustCompile(`(?m)^mig_01 +mig_01 +enabled +3 +3 +\d{4}-\d\d-\d\dT\S+ +\S+ +-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^mig_07 +mig_07 +enabled +1 +1 +\S+ +\S+ +0002_tags\.sql,0003_prices\.sql$`).MatchString(out) {
		t.Fatalf("migrate status: exit %d\n%s", code, out)
	}
	statusJSON := func() map[string]map[string]any {
		t.Helper()
		out, code := run("migrate", "status", "--dir", dir, "--format", "json")
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
			t.Fatalf("migrate status --format json: exit %d, %v\n%s", code, err, out)
		}
		m := map[string]map[string]any{}
		for _, r := range rows {
			m[r["tenant"].(string)] = r
		}
		return m
	}
	st := statusJSON()
	if r := st["mig_07"]; r["version"] != 1.0 || fmt.Sprint(r["pending"]) != "[0002_tags.sql 0003_prices.sql]" {
		t.Fatalf("status of mig_07: %v", r)
	}
	if r := st["mig_02"]; r["version"] != 3.0 || r["applied"] != 3.0 || r["last_applied_at"] == nil ||
		fmt.Sprint(r["pending"]) != "[]" {
		t.Fatalf("status of mig_02: %v", r)
	}
	// tenant list shows each tenant's migration version too.
	out, code = run("tenant", "list", "--format", "json")
	var listed []map[string]any
	if err := json.Unmarshal([]byte(out), &listed); code != 0 || err != nil {
		t.Fatalf("tenant list --format json: exit %d, %v\n%s", code, err, out)
	}
	listedVersions := map[string]any{}
	for _, r := range listed {
		listedVersions[fmt.Sprint(r["name"])] = r["migration_version"]
	}
	if listedVersions["mig_02"] != "3" || listedVersions["mig_07"] != "1" {
		t.Fatalf("tenant list migration versions: mig_02 %v, mig_07 %v\n%s", listedVersions["mig_02"], listedVersions["mig_07"], out)
	}
	// And a proxy on the database exports them as metrics, read in the
	// background with the schema sizes.
	maddr := freeAddr(t)
	startProxy(t, withMetrics(maddr, "all"), func(c *config.Config) { c.Backend = dsn })
	eventually(t, 10*time.Second, "migration versions in the metrics", func() bool {
		sc := scrapeMetrics(t, maddr)
		v2 := sc.find("pgtenant_tenant_migration_version", "tenant=mig_02")
		v7 := sc.find("pgtenant_tenant_migration_version", "tenant=mig_07")
		took := sc.find("pgtenant_tenant_migration_seconds", "tenant=mig_02")
		return v2 != nil && v2.Gauge.GetValue() == 3 && v7 != nil && v7.Gauge.GetValue() == 1 &&
			took != nil && took.Gauge.GetValue() > 0
	})

	// Fixed, mig_07 catches up; the others are up to date.
	if _, err := db.Exec(ctx, `DROP TABLE mig_07.tags`); err != nil {
		t.Fatal(err)
	}
	out, code = run("migrate", "--dir", dir, "-j", "4")
	if code != 0 || !strings.Contains(out, "mig_07: applied 2 file(s), now at version 3") ||
		!strings.Contains(out, "mig_01: up to date at version 3") {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}

	// A tenant created after the runs gets every migration on the next.
	migTenant(t, db, "mig_21")
	out, code = run("migrate", "--dir", dir, "--dry-run")
	if code != 0 || !strings.Contains(out, "mig_21: would apply 0001_items.sql, 0002_tags.sql, 0003_prices.sql") ||
		!strings.Contains(out, "dry run: 1 of 21 tenant(s) have pending migrations") {
		t.Fatalf("dry run for the new tenant: exit %d\n%s", code, out)
	}
	out, code = run("migrate", "--dir", dir)
	if v := migVersions(t, db, "mig_21"); code != 0 || !slices.Equal(v["mig_21"], []int64{1, 2, 3}) {
		t.Fatalf("the new tenant: exit %d, versions %v\n%s", code, v, out)
	}

	// A changed file that was applied is refused before anything runs,
	// a new file included.
	writeMigrations(t, dir, map[string]string{
		"0001_items.sql": migFiles["0001_items.sql"] + "-- an afterthought\n",
		"0004_more.sql":  `CREATE TABLE more (id int);`,
	})
	out, code = run("migrate", "--dir", dir)
	if code != 1 || !regexp.MustCompile(`tenant mig_01: 0001_items\.sql was applied with sha256 [0-9a-f]{64}, the file now has sha256 [0-9a-f]{64}`).MatchString(out) {
		t.Fatalf("a changed file: exit %d\n%s", code, out)
	}
	if relExists(t, db, "mig_01", "more") {
		t.Fatal("a run that found a changed file ran 0004")
	}
	out, code = run("migrate", "status", "--dir", dir)
	if !strings.Contains(out, "0004_more.sql (0001_items.sql CHANGED since applied)") {
		t.Fatalf("status does not show the changed file: exit %d\n%s", code, out)
	}
	writeMigrations(t, dir, map[string]string{"0001_items.sql": migFiles["0001_items.sql"]})

	// --tenant picks tenants; shared migrations run once, in public, first.
	shared := t.TempDir()
	writeMigrations(t, shared, map[string]string{
		"0001_countries.sql": `CREATE TABLE mig_countries (code text PRIMARY KEY); INSERT INTO mig_countries VALUES ('fr');`,
	})
	out, code = run("migrate", "--shared-dir", shared, "--dir", dir, "--tenant", "mig_03")
	if code != 0 || !strings.Contains(out, "public (shared): applied 1 file(s), now at version 1") ||
		!strings.Contains(out, "mig_03: applied 1 file(s), now at version 4") || strings.Contains(out, "mig_04") {
		t.Fatalf("--shared-dir and --tenant: exit %d\n%s", code, out)
	}
	if !relExists(t, db, "public", "mig_countries") || !relExists(t, db, "mig_03", "more") || relExists(t, db, "mig_04", "more") {
		t.Fatal("the shared migration or mig_03's 0004 is missing, or mig_04 got 0004")
	}
	out, code = run("migrate", "--shared-dir", shared, "--dir", dir)
	var sharedRows int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pgtenant.shared_migrations`).Scan(&sharedRows); err != nil {
		t.Fatal(err)
	}
	if code != 0 || !strings.Contains(out, "public (shared): up to date at version 1") || sharedRows != 1 {
		t.Fatalf("second shared run: exit %d, %d shared rows\n%s", code, sharedRows, out)
	}
	if v := migVersions(t, db, "mig_"); !slices.Equal(v["mig_20"], []int64{1, 2, 3, 4}) {
		t.Fatalf("mig_20 after the last run: %v", v["mig_20"])
	}
	st = statusJSON()
	if r := st["(shared)"]; r == nil || r["version"] != 1.0 {
		t.Fatalf("status of the shared migrations: %v", r)
	}
}

// TestMigrateFileNames refuses a directory whose files are misnamed or
// share a version, before connecting.
func TestMigrateFileNames(t *testing.T) {
	bin := buildPgtenant(t)
	for _, tc := range []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"0001_a.sql": "", "create-b.sql": ""}, "create-b.sql: name it NNNN_name.sql"},
		{map[string]string{"0001_a.sql": "", "01_b.sql": ""}, "0001_a.sql and 01_b.sql both have version 1"},
	} {
		dir := t.TempDir()
		writeMigrations(t, dir, tc.files)
		out, code := migrateCLI(t, bin, "host=/nonexistent", "migrate", "--dir", dir)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("files %v: exit %d, want 1 with %q\n%s", tc.files, code, tc.want, out)
		}
	}
}

// TestMigrateLock: while one migrate runs, a second is refused, naming it;
// with --wait it starts once the first is done.
func TestMigrateLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn, db := migDatabase(t, "pgtenant_migrate_lock")
	migTenant(t, db, "migl_a")
	bin := buildPgtenant(t)
	dir := t.TempDir()
	writeMigrations(t, dir, map[string]string{"0001_slow.sql": `SELECT pg_sleep(3); CREATE TABLE slow (id int);`})

	first := exec.CommandContext(ctx, bin, "migrate", "--dir", dir, "--tenant", "migl_a")
	first.Env = append(cleanEnv(), "PGTENANT_BACKEND="+dsn)
	var firstOut syncBuffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	eventually(t, 30*time.Second, "the first migrate holds the lock", func() bool {
		var held bool
		err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)`,
			router.MigrateLockKey>>32, router.MigrateLockKey&0xffffffff).Scan(&held)
		return err == nil && held
	})
	out, code := migrateCLI(t, bin, dsn, "migrate", "--dir", dir, "--tenant", "migl_a")
	if code != 2 || !strings.Contains(out, "another migrate is running (pgtenant migrate, PostgreSQL pid") {
		t.Fatalf("second migrate: exit %d\n%s", code, out)
	}
	out, code = migrateCLI(t, bin, dsn, "migrate", "--dir", dir, "--tenant", "migl_a", "--wait")
	if code != 0 || !strings.Contains(out, "waiting for it to finish") || !strings.Contains(out, "migl_a: up to date at version 1") {
		t.Fatalf("migrate --wait: exit %d\n%s", code, out)
	}
	if err := <-done; err != nil {
		t.Fatalf("first migrate: %v\n%s", err, firstOut.String())
	}
	if !strings.Contains(firstOut.String(), "migl_a: applied 1 file(s)") {
		t.Fatalf("first migrate:\n%s", firstOut.String())
	}

	// PostgreSQL's error position comes out as the file's line and column.
	writeMigrations(t, dir, map[string]string{"0002_typo.sql": "CREATE TABLE ok (id int);\n  SELEC 1;\n"})
	out, code = migrateCLI(t, bin, dsn, "migrate", "--dir", dir)
	if code != 2 || !strings.Contains(out, `migl_a: FAILED at 0002_typo.sql (after 0 file(s) applied in this run; `+
		`0002_typo.sql rolled back): ERROR 42601: syntax error at or near "SELEC" (line 2, column 3)`) {
		t.Fatalf("a syntax error: exit %d\n%s", code, out)
	}
	if relExists(t, db, "migl_a", "ok") {
		t.Fatal("the failed file's first statement stayed")
	}

	// CREATE INDEX CONCURRENTLY is refused in a file's transaction, and
	// runs in a file marked no-transaction.
	if err := os.Remove(filepath.Join(dir, "0002_typo.sql")); err != nil {
		t.Fatal(err)
	}
	cic := "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_id_idx ON slow (id);\n"
	writeMigrations(t, dir, map[string]string{"0002_index.sql": cic})
	out, code = migrateCLI(t, bin, dsn, "migrate", "--dir", dir)
	if code != 2 || !strings.Contains(out, "ERROR 25001: CREATE INDEX CONCURRENTLY cannot run inside a transaction block") {
		t.Fatalf("CONCURRENTLY in a transaction: exit %d\n%s", code, out)
	}
	writeMigrations(t, dir, map[string]string{"0002_index.sql": "-- pgtenant:no-transaction\n" + cic})
	out, code = migrateCLI(t, bin, dsn, "migrate", "--dir", dir)
	if v := migVersions(t, db, "migl_a"); code != 0 || !relExists(t, db, "migl_a", "slow_id_idx") ||
		!slices.Equal(v["migl_a"], []int64{1, 2}) {
		t.Fatalf("a no-transaction file: exit %d, versions %v\n%s", code, v, out)
	}
}

// TestMigrateRecipe: in the production setup, what migrate creates as the
// admin role is usable by the tenant's clients through the proxy (the
// pool role): they read, insert (a serial's sequence included) and alter
// nothing they should not.
func TestMigrateRecipe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recipeTenant(t, "migr_acme")
	su := recipeSuperuser(t)
	if _, err := su.Exec(ctx, `DROP TABLE IF EXISTS migr_acme.orders;
		DELETE FROM pgtenant.tenant_migrations WHERE tenant = 'migr_acme'`); err != nil {
		t.Fatal(err)
	}
	bin := buildPgtenant(t)
	dir := t.TempDir()
	writeMigrations(t, dir, map[string]string{
		"0001_orders.sql": `CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL);
CREATE INDEX orders_item_idx ON orders (item);`,
		"0002_backfill.sql": `INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 100) g;`,
	})
	out, code := migrateCLI(t, bin, recipeDSN(recipeAdmin), "migrate", "--dir", dir, "--tenant", "migr_acme")
	if code != 0 {
		t.Fatalf("migrate as the admin role: exit %d\n%s", code, out)
	}
	var owner string
	if err := su.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE schemaname = 'migr_acme' AND tablename = 'orders'`).Scan(&owner); err != nil || owner != recipeAdmin {
		t.Fatalf("orders is owned by %q (%v), want %s", owner, err, recipeAdmin)
	}
	p := startProxy(t, withRecipe)
	conn := p.Connect(t, "migr_acme", pgx.QueryExecModeCacheStatement)
	if _, err := conn.Exec(ctx, `INSERT INTO orders (item) VALUES ('anvil')`); err != nil {
		t.Fatalf("the tenant's client inserts into the migrated table: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 101 {
		t.Fatalf("the tenant's client reads the migrated table: %d rows, %v", n, err)
	}
	var who string
	if err := conn.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != recipePool {
		t.Fatalf("the client runs as %q (%v), want the pool role %s", who, err, recipePool)
	}
}

// TestMigrateThousandTenants is the figure the README quotes: migrate on
// 1000 tenants with a realistic migration (a table, an index, a backfill of
// 1000 rows), with -j 1 and -j 8, and the progress output in both modes.
// It takes minutes, so it runs only with PGTENANT_MIGRATE_FIGURES=1; it
// asserts outcomes, and logs the wall times.
func TestMigrateThousandTenants(t *testing.T) {
	if os.Getenv("PGTENANT_MIGRATE_FIGURES") == "" {
		t.Skip("set PGTENANT_MIGRATE_FIGURES=1 to measure migrate on 1000 tenants")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dsn, db := migDatabase(t, "pgtenant_migrate_1000")
	const n = 1000
	start := time.Now()
	for i := 1; i <= n; i++ {
		migTenant(t, db, fmt.Sprintf("t%04d", i))
	}
	t.Logf("created %d tenants in %s", n, time.Since(start).Round(time.Millisecond))
	bin := buildPgtenant(t)
	dir := t.TempDir()
	writeMigrations(t, dir, map[string]string{"0001_events.sql": `CREATE TABLE events (
    id         bigint PRIMARY KEY,
    kind       text NOT NULL,
    payload    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_kind_idx ON events (kind, created_at);
INSERT INTO events (id, kind, payload)
SELECT g, 'kind_' || (g % 10), jsonb_build_object('n', g) FROM generate_series(1, 1000) g;
`})
	reset := func() {
		t.Helper()
		if _, err := db.Exec(ctx, `DELETE FROM pgtenant.tenant_migrations;
			DO $$ DECLARE s text; BEGIN
				FOR s IN SELECT schema_name FROM pgtenant.tenants LOOP
					EXECUTE format('DROP TABLE IF EXISTS %I.events', s);
				END LOOP;
			END $$`); err != nil {
			t.Fatal(err)
		}
	}
	check := func() {
		t.Helper()
		var tenants, rows int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM pgtenant.tenant_migrations WHERE version = 1`).Scan(&tenants); err != nil || tenants != n {
			t.Fatalf("%d tenants at version 1 (%v), want %d", tenants, err, n)
		}
		if err := db.QueryRow(ctx, `SELECT count(*) FROM t0500.events`).Scan(&rows); err != nil || rows != 1000 {
			t.Fatalf("t0500.events has %d rows (%v)", rows, err)
		}
	}
	for _, j := range []string{"1", "8"} {
		reset()
		start := time.Now()
		out, code := migrateCLI(t, bin, dsn, "migrate", "--dir", dir, "-j", j)
		took := time.Since(start)
		if code != 0 {
			t.Fatalf("-j %s: exit %d\n%s", j, code, lastChars(out, 4000))
		}
		check()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		t.Logf("-j %s: wall %s; plain output, first and last lines:\n%s\n...\n%s", j, took.Round(time.Millisecond),
			strings.Join(lines[:3], "\n"), strings.Join(lines[len(lines)-3:], "\n"))
	}
	// Terminal mode, through script(1), which gives the command a terminal.
	if _, err := exec.LookPath("script"); err != nil {
		t.Log("no script(1): the terminal mode is not shown")
		return
	}
	reset()
	cmd := exec.CommandContext(ctx, "script", "-q", "-e", "-c", bin+" migrate --dir "+dir+" -j 8", "/dev/null")
	cmd.Env = append(cleanEnv(), "PGTENANT_BACKEND="+dsn)
	start = time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, lastChars(string(out), 4000))
	}
	check()
	frames := strings.Split(string(out), "\r")
	sample := frames
	if len(frames) > 6 {
		sample = append(append([]string{}, frames[1:4]...), frames[len(frames)-3:]...)
	}
	t.Logf("terminal mode (-j 8): wall %s, %d redraws; a sample (each \\r starts a line here):\n%q",
		time.Since(start).Round(time.Millisecond), len(frames)-1, sample)
}
