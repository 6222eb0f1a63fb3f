package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// The isolation tests give two tenants tables of the same name with
// different rows, and check that each tenant's clients see and write only
// their own, whatever the client: psql, pgx with the simple protocol, pgx
// with the extended protocol (unnamed statements).

// isoTenants creates two tenants with the same table iso_orders holding
// different rows, and returns their names. The table name is unusual so
// that no other test can shadow it with a table in public.
func isoTenants(t *testing.T, prefix string) (a, b string) {
	t.Helper()
	a, b = prefix+"_acme", prefix+"_globex"
	createTenant(t, a,
		"CREATE TABLE iso_orders (id int PRIMARY KEY, item text NOT NULL)",
		"INSERT INTO iso_orders VALUES (1, 'acme anvil'), (2, 'acme rocket')")
	createTenant(t, b,
		"CREATE TABLE iso_orders (id int PRIMARY KEY, item text NOT NULL)",
		"INSERT INTO iso_orders VALUES (1, 'globex laser'), (3, 'globex doomsday device'), (4, 'globex hammock')")
	return a, b
}

// isoWant is what each tenant of isoTenants must see, as psql -At prints
// `select id, item from iso_orders order by id`.
var isoWant = map[string][]string{
	"acme":   {"1|acme anvil", "2|acme rocket"},
	"globex": {"1|globex laser", "3|globex doomsday device", "4|globex hammock"},
}

func isoWantFor(tenant string) []string {
	return isoWant[tenant[strings.LastIndexByte(tenant, '_')+1:]]
}

func TestIsolationSameTableNamesPsql(t *testing.T) {
	t.Parallel()
	a, b := isoTenants(t, "isops")
	// A pool of one: the same backend connection serves both tenants in
	// turn, re-pinned each time.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	for round := 0; round < 3; round++ {
		for _, tenant := range []string{a, b} {
			out, err := p.Psql(t, tenant,
				"-c", "select current_schema()",
				"-c", "select id, item from iso_orders order by id",
				"-c", "select count(*) from iso_orders")
			if err != nil {
				t.Fatalf("psql as %s: %v\n%s", tenant, err, out)
			}
			want := append([]string{tenant}, isoWantFor(tenant)...)
			want = append(want, fmt.Sprint(len(isoWantFor(tenant))))
			if got := strings.Split(out, "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("psql as %s (round %d): got\n%s\nwant\n%s", tenant, round, out, strings.Join(want, "\n"))
			}
		}
	}
	// Several statements in one Query message, and a transaction block.
	for _, tenant := range []string{a, b} {
		out, err := p.Psql(t, tenant, "-c",
			"begin; select string_agg(item, ',' order by id) from iso_orders; select current_schema(); commit")
		if err != nil {
			t.Fatalf("psql as %s: %v\n%s", tenant, err, out)
		}
		var items []string
		for _, r := range isoWantFor(tenant) {
			items = append(items, r[strings.IndexByte(r, '|')+1:])
		}
		// psql 15 prints every statement's result, command tags included.
		want := "BEGIN\n" + strings.Join(items, ",") + "\n" + tenant + "\nCOMMIT"
		if out != want {
			t.Fatalf("psql multi-statement as %s: got %q, want %q", tenant, out, want)
		}
	}
}

func TestIsolationSameTableNamesPgx(t *testing.T) {
	t.Parallel()
	a, b := isoTenants(t, "isopgx")
	// A pool of one: every query of both tenants runs on the same backend
	// connection, which is re-pinned between them.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple", pgx.QueryExecModeSimpleProtocol},
		{"exec", pgx.QueryExecModeExec},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			conns := map[string]*pgx.Conn{
				a: p.Connect(t, a, m.mode),
				b: p.Connect(t, b, m.mode),
			}
			pids := map[uint32]bool{}
			for round := 0; round < 5; round++ {
				for _, tenant := range []string{a, b, a, a, b, b} {
					conn := conns[tenant]
					var schema string
					var pid uint32
					if err := conn.QueryRow(ctx, "select current_schema(), pg_backend_pid()").Scan(&schema, &pid); err != nil {
						t.Fatalf("%s: %v", tenant, err)
					}
					pids[pid] = true
					if schema != tenant {
						t.Fatalf("%s: current_schema() = %q", tenant, schema)
					}
					got := isoRows(t, ctx, conn, tenant)
					if strings.Join(got, "\n") != strings.Join(isoWantFor(tenant), "\n") {
						t.Fatalf("%s (round %d): rows %q, want %q", tenant, round, got, isoWantFor(tenant))
					}
					// A parameterised lookup (a real Bind in exec mode).
					var item string
					err := conn.QueryRow(ctx, "select item from iso_orders where id = $1", 1).Scan(&item)
					if err != nil {
						t.Fatalf("%s: %v", tenant, err)
					}
					if want := isoWantFor(tenant)[0][2:]; item != want {
						t.Fatalf("%s: id 1 is %q, want %q", tenant, item, want)
					}
					// Row 3 exists only for globex.
					var n int
					if err := conn.QueryRow(ctx, "select count(*) from iso_orders where id = $1", 3).Scan(&n); err != nil {
						t.Fatalf("%s: %v", tenant, err)
					}
					if want := map[bool]int{true: 1, false: 0}[tenant == b]; n != want {
						t.Fatalf("%s: %d rows with id 3, want %d", tenant, n, want)
					}
				}
			}
			if len(pids) != 1 {
				t.Fatalf("pool of 1 used %d backends: %v", len(pids), pids)
			}
		})
	}
}

func isoRows(t *testing.T, ctx context.Context, conn *pgx.Conn, tenant string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, "select id, item from iso_orders order by id")
	if err != nil {
		t.Fatalf("%s: %v", tenant, err)
	}
	var got []string
	for rows.Next() {
		var id int
		var item string
		if err := rows.Scan(&id, &item); err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		got = append(got, fmt.Sprintf("%d|%s", id, item))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", tenant, err)
	}
	return got
}

// TestIsolationTableOnlyInOtherTenant: a tenant whose schema lacks a table
// that another tenant has gets 42P01, not the other tenant's rows.
func TestIsolationTableOnlyInOtherTenant(t *testing.T) {
	t.Parallel()
	createTenant(t, "isomiss_has", "CREATE TABLE iso_secret (v text)", "INSERT INTO iso_secret VALUES ('has')")
	createTenant(t, "isomiss_lacks")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	has := p.Connect(t, "isomiss_has", pgx.QueryExecModeSimpleProtocol)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		lacks := p.Connect(t, "isomiss_lacks", mode)
		var v string
		// The owner's query runs first, so the shared backend was last
		// pinned to isomiss_has.
		if err := has.QueryRow(ctx, "select v from iso_secret").Scan(&v); err != nil || v != "has" {
			t.Fatalf("isomiss_has: %q, %v", v, err)
		}
		err := lacks.QueryRow(ctx, "select v from iso_secret").Scan(&v)
		if sqlState(err) != "42P01" {
			t.Fatalf("isomiss_lacks (mode %v): want 42P01 undefined_table, got value %q, err %v", mode, v, err)
		}
	}
	out, err := p.Psql(t, "isomiss_lacks", "-c", "select v from iso_secret")
	if err == nil || !strings.Contains(out, `relation "iso_secret" does not exist`) {
		t.Fatalf("psql isomiss_lacks: want relation does not exist, got %q, %v", out, err)
	}
}

// TestIsolationWritesLandInOwnSchema: rows written through pgtenant by
// tenant A, with unqualified table names, are in A's table and not in B's,
// as a direct connection sees them.
func TestIsolationWritesLandInOwnSchema(t *testing.T) {
	t.Parallel()
	a, b := isoTenants(t, "isowr")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// psql: autocommit INSERT, and one in a transaction block.
	if out, err := p.Psql(t, a, "-c", "insert into iso_orders values (100, 'acme psql')"); err != nil {
		t.Fatalf("psql insert: %v\n%s", err, out)
	}
	if out, err := p.Psql(t, a, "-c", "begin", "-c", "insert into iso_orders values (101, 'acme psql tx')", "-c", "commit"); err != nil {
		t.Fatalf("psql insert in tx: %v\n%s", err, out)
	}
	// pgx, both protocols; b's clients are busy at the same time.
	connA := map[pgx.QueryExecMode]*pgx.Conn{
		pgx.QueryExecModeSimpleProtocol: p.Connect(t, a, pgx.QueryExecModeSimpleProtocol),
		pgx.QueryExecModeExec:           p.Connect(t, a, pgx.QueryExecModeExec),
	}
	connB := p.Connect(t, b, pgx.QueryExecModeExec)
	id := 200
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		c := connA[mode]
		if _, err := c.Exec(ctx, "insert into iso_orders values ($1, $2)", id, fmt.Sprintf("acme pgx %v", mode)); err != nil {
			t.Fatalf("pgx insert (%v): %v", mode, err)
		}
		if _, err := connB.Exec(ctx, "update iso_orders set item = item where id = $1", 1); err != nil {
			t.Fatal(err)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "insert into iso_orders values ($1, $2)", id+1, fmt.Sprintf("acme pgx tx %v", mode)); err != nil {
			t.Fatalf("pgx insert in tx (%v): %v", mode, err)
		}
		if _, err := tx.Exec(ctx, "update iso_orders set item = item || ' (updated)' where id = $1", id+1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		id += 10
	}

	d := direct(t)
	wantA := []string{
		"1|acme anvil", "2|acme rocket", "100|acme psql", "101|acme psql tx",
		"200|acme pgx simple protocol", "201|acme pgx tx simple protocol (updated)",
		"210|acme pgx exec", "211|acme pgx tx exec (updated)",
	}
	if got := directRows(t, ctx, d, a+".iso_orders"); strings.Join(got, "\n") != strings.Join(wantA, "\n") {
		t.Fatalf("%s.iso_orders seen directly:\n%s\nwant\n%s", a, strings.Join(got, "\n"), strings.Join(wantA, "\n"))
	}
	if got := directRows(t, ctx, d, b+".iso_orders"); strings.Join(got, "\n") != strings.Join(isoWantFor(b), "\n") {
		t.Fatalf("%s.iso_orders changed: %q", b, got)
	}
	var inPublic bool
	if err := d.QueryRow(ctx, "select to_regclass('public.iso_orders') is not null").Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic {
		t.Fatal("a table public.iso_orders exists")
	}

	// A table created through pgtenant lands in the tenant's schema too.
	if _, err := connA[pgx.QueryExecModeSimpleProtocol].Exec(ctx, "create table iso_created (v int)"); err != nil {
		t.Fatal(err)
	}
	var schemas []string
	rows, err := d.Query(ctx, "select table_schema from information_schema.tables where table_name = 'iso_created'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		schemas = append(schemas, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(schemas) != 1 || schemas[0] != a {
		t.Fatalf("iso_created is in schemas %q, want [%s]", schemas, a)
	}
}

// directRows reads id|item rows of a table through a direct connection.
func directRows(t *testing.T, ctx context.Context, d *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := d.Query(ctx, "select id, item from "+table+" order by id")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id int
		var item string
		if err := rows.Scan(&id, &item); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d|%s", id, item))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}
