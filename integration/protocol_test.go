package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
)

// The protocol tests check that what PostgreSQL's wire protocol can carry
// passes through pgtenant intact: COPY both ways, large results and large
// messages, notices and errors, the extended protocol with unnamed
// statements, several statements in one Query, the empty query, and
// session pool mode.

// prtPsql runs psql against pgtenant for tenant with stdin as its input;
// it returns combined output. Errors are reported with their SQLSTATE.
func prtPsql(t testing.TB, p *Proxy, tenant, stdin string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-At",
		"-h", p.Host, "-p", fmt.Sprint(p.Port), "-U", "app", "-d", tenant}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", full...)
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// prtRows returns the rows of a query on a direct connection, each as its
// columns joined by '|', as psql -At prints them.
func prtRows(t testing.TB, d *pgx.Conn, sql string) string {
	t.Helper()
	rows, err := d.Query(fltCtx(t), sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := rows.RawValues()
		cols := make([]string, len(vals))
		for i, v := range vals {
			cols[i] = string(v)
		}
		out = append(out, strings.Join(cols, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return strings.Join(out, "\n")
}

func TestProtocolCopyPsql(t *testing.T) {
	t.Parallel()
	const tenant = "prt_copy_psql"
	fltTenant(t, tenant, "create table prt_items (id int primary key, name text)")
	p := startProxy(t)
	d := direct(t)

	// \copy: psql runs COPY FROM STDIN and feeds it its own stdin.
	out, err := prtPsql(t, p, tenant, "1\tanvil\n2\trocket\n", "-c", `\copy prt_items from stdin`)
	if err != nil {
		t.Fatalf("\\copy from stdin: %v\n%s", err, out)
	}
	// COPY ... FROM STDIN inline in a script, as pg_dump writes it.
	script := "COPY prt_items (id, name) FROM STDIN;\n3\tbird seed\n4\t\\N\n\\.\nselect count(*) from prt_items;\n"
	out, err = prtPsql(t, p, tenant, script, "-f", "-")
	if err != nil {
		t.Fatalf("COPY FROM STDIN script: %v\n%s", err, out)
	}
	if !strings.HasSuffix(out, "4") {
		t.Fatalf("count after COPY FROM STDIN script: %q, want 4", out)
	}
	if got, want := prtRows(t, d, "select id, coalesce(name, 'NULL') from prt_copy_psql.prt_items order by id"),
		"1|anvil\n2|rocket\n3|bird seed\n4|NULL"; got != want {
		t.Fatalf("rows in the tenant's schema:\n%s\nwant\n%s", got, want)
	}

	// COPY TO STDOUT, both ways.
	out, err = prtPsql(t, p, tenant, "", "-c", "copy (select id, name from prt_items order by id) to stdout")
	if err != nil || out != "1\tanvil\n2\trocket\n3\tbird seed\n4\t\\N" {
		t.Fatalf("COPY TO STDOUT: %v\n%q", err, out)
	}
	out, err = prtPsql(t, p, tenant, "", "-c", `\copy (select id from prt_items where id < 3 order by id) to stdout`)
	if err != nil || out != "1\n2" {
		t.Fatalf("\\copy to stdout: %v\n%q", err, out)
	}

	// Bad data: 22P02, nothing of it lands, and psql's next command in the
	// same session (without ON_ERROR_STOP) runs.
	out, err = prtPsql(t, p, tenant, "5\tok\nfive\tbad\n6\tok\n",
		"-v", "ON_ERROR_STOP=0", "-c", `\copy prt_items from stdin`, "-c", "select 'after', count(*) from prt_items")
	if !strings.Contains(out, "22P02") || !strings.Contains(out, `invalid input syntax for type integer: "five"`) {
		t.Fatalf("COPY with bad data: want 22P02 invalid input syntax, got %v\n%s", err, out)
	}
	if !strings.HasSuffix(out, "after|4") {
		t.Fatalf("the session after a failed COPY: %q, want it to end with after|4", out)
	}
}

func TestProtocolCopyPgx(t *testing.T) {
	t.Parallel()
	const tenant = "prt_copy_pgx"
	fltTenant(t, tenant, "create table prt_items (id int primary key, name text, price numeric)")
	// A tenant with the same table, to make sure rows land in the right one.
	fltTenant(t, "prt_copy_pgx_other", "create table prt_items (id int primary key, name text, price numeric)")
	// One backend: after each COPY it must be free for the other tenant's
	// client, who would otherwise wait QueryWaitTimeout and get 57014.
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 1
		c.QueryWaitTimeout = 3 * time.Second
	})
	d := direct(t)

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			if _, err := d.Exec(fltCtx(t), "truncate prt_copy_pgx.prt_items"); err != nil {
				t.Fatal(err)
			}
			conn := p.Connect(t, tenant, mode)
			other := p.Connect(t, "prt_copy_pgx_other", pgx.QueryExecModeSimpleProtocol)
			// released checks that conn's COPY left the backend to the pool.
			released := func(after string) {
				t.Helper()
				var n int
				if err := other.QueryRow(fltCtx(t), "select count(*) from prt_items").Scan(&n); err != nil || n != 0 {
					t.Errorf("another tenant's client after %s: %d rows, %v", after, n, err)
				}
			}
			const n = 10000
			rows := make([][]any, n)
			for i := range rows {
				rows[i] = []any{i + 1, fmt.Sprintf("item %d", i+1), fmt.Sprintf("%d.25", i)}
			}
			copied, err := conn.CopyFrom(fltCtx(t), pgx.Identifier{"prt_items"}, []string{"id", "name", "price"}, pgx.CopyFromRows(rows))
			if err != nil || copied != n {
				t.Fatalf("CopyFrom: %d rows, %v", copied, err)
			}
			if got := prtRows(t, d, "select count(*), sum(id), sum(price), max(name) from prt_copy_pgx.prt_items"); got != "10000|50005000|49997500.00|item 9999" {
				t.Fatalf("rows copied into the tenant's schema: %s", got)
			}
			if got := prtRows(t, d, "select count(*) from prt_copy_pgx_other.prt_items"); got != "0" {
				t.Fatalf("rows landed in another tenant's table: %s", got)
			}
			released("pgx CopyFrom")

			// CopyTo: the rows back out, through the same client.
			var buf bytes.Buffer
			tag, err := conn.PgConn().CopyTo(fltCtx(t), &buf, "copy (select id, name from prt_items where id <= 3 order by id) to stdout")
			if err != nil || tag.RowsAffected() != 3 {
				t.Fatalf("CopyTo: %v, %v", tag, err)
			}
			if buf.String() != "1\titem 1\n2\titem 2\n3\titem 3\n" {
				t.Fatalf("CopyTo output %q", buf.String())
			}
			// A big COPY TO, streamed through pgtenant's buffers.
			buf.Reset()
			tag, err = conn.PgConn().CopyTo(fltCtx(t), &buf, "copy prt_items to stdout")
			if err != nil || tag.RowsAffected() != n || strings.Count(buf.String(), "\n") != n {
				t.Fatalf("CopyTo all: %v rows, %d lines, %v", tag, strings.Count(buf.String(), "\n"), err)
			}
			released("CopyTo")

			// COPY (simple protocol) with bad data in the first row and much
			// data behind it: the server fails early and ignores the rest.
			var in strings.Builder
			in.WriteString("x1\tbad\t1\n")
			for i := 0; i < 50000; i++ {
				fmt.Fprintf(&in, "%d\tmore\t1\n", 100000+i)
			}
			_, err = conn.PgConn().CopyFrom(fltCtx(t), strings.NewReader(in.String()), "copy prt_items from stdin")
			if code := sqlState(err); code != "22P02" {
				t.Fatalf("COPY with bad data: want 22P02, got %v", err)
			}
			released("a failed COPY")
			// A small bad COPY too.
			_, err = conn.PgConn().CopyFrom(fltCtx(t), strings.NewReader("7\tok\t1\n8\tok\tnot a number\n"), "copy prt_items from stdin")
			if code := sqlState(err); code != "22P02" {
				t.Fatalf("COPY with a bad numeric: want 22P02, got %v", err)
			}
			if conn.PgConn().TxStatus() != 'I' {
				t.Fatalf("tx status after failed COPY: %q", conn.PgConn().TxStatus())
			}
			var count int
			if err := conn.QueryRow(fltCtx(t), "select count(*) from prt_items").Scan(&count); err != nil || count != n {
				t.Fatalf("after the failed COPYs: %d rows, %v; want %d", count, err, n)
			}
			fltCheckSchema(t, conn, tenant)
			// And a good COPY after them still works.
			tag, err = conn.PgConn().CopyFrom(fltCtx(t), strings.NewReader("20001\tlast\t2.5\n"), "copy prt_items from stdin")
			if err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("COPY after failures: %v, %v", tag, err)
			}
			released("a text COPY")
			if got := prtRows(t, d, "select name, price from prt_copy_pgx.prt_items where id = 20001"); got != "last|2.5" {
				t.Fatalf("row from the last COPY: %q", got)
			}
		})
	}
}

func TestProtocolLargeResults(t *testing.T) {
	t.Parallel()
	const tenant = "prt_large"
	fltTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			conn := p.Connect(t, tenant, mode)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			rows, err := conn.Query(ctx, "select generate_series(1, 2000000)")
			if err != nil {
				t.Fatal(err)
			}
			var count, sum, v int64
			for rows.Next() {
				if err := rows.Scan(&v); err != nil {
					t.Fatal(err)
				}
				count++
				sum += v
				if v != count {
					t.Fatalf("row %d has value %d", count, v)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if count != 2000000 || sum != 2000001000000 {
				t.Fatalf("generate_series: %d rows, sum %d", count, sum)
			}

			rows, err = conn.Query(ctx, "select i, repeat(chr(64 + i), 1000000) from generate_series(1, 50) i")
			if err != nil {
				t.Fatal(err)
			}
			count = 0
			for rows.Next() {
				var i int
				var s string
				if err := rows.Scan(&i, &s); err != nil {
					t.Fatal(err)
				}
				count++
				want := strings.Repeat(string(rune(64+i)), 1000000)
				if i != int(count) || s != want {
					t.Fatalf("row %d: i=%d, %d bytes, right content %v", count, i, len(s), s == want)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if count != 50 {
				t.Fatalf("1 MB rows: got %d, want 50", count)
			}

			// A large message the other way: a 5 MB parameter (extended) or
			// literal (simple).
			big := strings.Repeat("abcdefghij", 500000)
			var n int
			var md5 string
			if err := conn.QueryRow(ctx, "select length($1::text), md5($1::text)", big).Scan(&n, &md5); err != nil {
				t.Fatal(err)
			}
			var wantMD5 string
			if err := direct(t).QueryRow(ctx, "select md5(repeat('abcdefghij', 500000))").Scan(&wantMD5); err != nil {
				t.Fatal(err)
			}
			if n != len(big) || md5 != wantMD5 {
				t.Fatalf("5 MB parameter: length %d, md5 %s; want %d, %s", n, md5, len(big), wantMD5)
			}
			fltCheckSchema(t, conn, tenant)
		})
	}
}

func TestProtocolNoticesAndErrors(t *testing.T) {
	t.Parallel()
	const tenant = "prt_errors"
	fltTenant(t, tenant, "create table prt_t (id int)")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			var mu sync.Mutex
			var notices []string
			conn, err := fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
				c.DefaultQueryExecMode = mode
				c.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
					mu.Lock()
					notices = append(notices, n.Severity+" "+n.Code+" "+n.Message)
					mu.Unlock()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := fltCtx(t)

			if _, err := conn.Exec(ctx, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$"); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			got := strings.Join(notices, "\n")
			mu.Unlock()
			if got != "NOTICE 00000 hello 42" {
				t.Fatalf("notices: %q, want NOTICE 00000 hello 42", got)
			}

			for _, c := range []struct{ sql, code, msg string }{
				{"select * from no_such_table", "42P01", `relation "no_such_table" does not exist`},
				{"select 1/0", "22012", "division by zero"},
				{"select 'x'::int", "22P02", "invalid input syntax for type integer"},
			} {
				_, err := conn.Exec(ctx, c.sql)
				pe := fltPgError(t, err, c.sql)
				if pe.Code != c.code || !strings.Contains(pe.Message, c.msg) || pe.Severity != "ERROR" {
					t.Fatalf("%s: got %s %s %q, want ERROR %s %q", c.sql, pe.Severity, pe.Code, pe.Message, c.code, c.msg)
				}
				fltCheckSchema(t, conn, tenant)
			}

			// An error inside a transaction aborts it until ROLLBACK.
			if _, err := conn.Exec(ctx, "begin"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "insert into prt_t values (1)"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "select 1/0"); sqlState(err) != "22012" {
				t.Fatalf("error in transaction: %v", err)
			}
			if s := conn.PgConn().TxStatus(); s != 'E' {
				t.Fatalf("tx status after error in transaction: %q, want E", s)
			}
			_, err = conn.Exec(ctx, "select 1")
			if pe := fltPgError(t, err, "statement in aborted transaction"); pe.Code != "25P02" {
				t.Fatalf("statement in aborted transaction: %s %q, want 25P02", pe.Code, pe.Message)
			}
			if _, err := conn.Exec(ctx, "rollback"); err != nil {
				t.Fatal(err)
			}
			if s := conn.PgConn().TxStatus(); s != 'I' {
				t.Fatalf("tx status after rollback: %q, want I", s)
			}
			var n int
			if err := conn.QueryRow(ctx, "select count(*) from prt_t").Scan(&n); err != nil || n != 0 {
				t.Fatalf("rows of the rolled-back transaction: %d, %v", n, err)
			}
			fltCheckSchema(t, conn, tenant)
		})
	}
}

func TestProtocolExtendedUnnamed(t *testing.T) {
	t.Parallel()
	const tenant = "prt_ext"
	fltTenant(t, tenant, "create table prt_vals (id int primary key, t text, f float8, b bool, ts timestamptz, raw bytea, arr int[], n numeric)")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	d := direct(t)
	conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
	ctx := fltCtx(t)

	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	text := `it's "quoted" \ and ünïcødé ✓`
	raw := []byte{0, 1, 2, 255, 'x'}
	arr := []int32{3, 1, 4, 1, 5}
	for i := 1; i <= 3; i++ {
		tag, err := conn.Exec(ctx, "insert into prt_vals values ($1, $2, $3, $4, $5, $6, $7, $8)",
			i, text, float64(i)+0.5, i%2 == 1, ts, raw, arr, fmt.Sprintf("%d.000001", i))
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("insert %d: %v, %v", i, tag, err)
		}
	}
	// A NULL parameter.
	if _, err := conn.Exec(ctx, "insert into prt_vals (id, t) values ($1, $2)", 4, nil); err != nil {
		t.Fatal(err)
	}

	var (
		gotText string
		gotF    float64
		gotB    bool
		gotTS   time.Time
		gotRaw  []byte
		gotArr  []int32
		gotN    string
	)
	err := conn.QueryRow(ctx, "select t, f, b, ts, raw, arr, n::text from prt_vals where id = $1 and t = $2", 3, text).
		Scan(&gotText, &gotF, &gotB, &gotTS, &gotRaw, &gotArr, &gotN)
	if err != nil {
		t.Fatal(err)
	}
	if gotText != text || gotF != 3.5 || !gotB || !gotTS.Equal(ts) || !bytes.Equal(gotRaw, raw) ||
		fmt.Sprint(gotArr) != fmt.Sprint(arr) || gotN != "3.000001" {
		t.Fatalf("round trip: %q %v %v %v %v %v %q", gotText, gotF, gotB, gotTS, gotRaw, gotArr, gotN)
	}
	var isNull bool
	if err := conn.QueryRow(ctx, "select t is null from prt_vals where id = $1", 4).Scan(&isNull); err != nil || !isNull {
		t.Fatalf("NULL parameter: %v, %v", isNull, err)
	}
	// What landed, checked on the server directly.
	if got := prtRows(t, d, "select count(*), sum(f), count(*) filter (where b), sum(array_length(arr, 1)) from prt_ext.prt_vals"); got != "4|7.5|2|15" {
		t.Fatalf("rows in the tenant's schema: %s", got)
	}
	// Many queries with parameters in a row, across backend hand-offs.
	for i := 0; i < 200; i++ {
		var s string
		var sum int64
		if err := conn.QueryRow(ctx, "select $1::text || current_schema(), $2::bigint + $3::int", "s:", int64(i)<<33, i).Scan(&s, &sum); err != nil {
			t.Fatal(err)
		}
		if s != "s:"+tenant || sum != int64(i)<<33+int64(i) {
			t.Fatalf("query %d: %q, %d", i, s, sum)
		}
	}
	// An error in the extended protocol, then on.
	if _, err := conn.Exec(ctx, "select $1::int / 0", 1); sqlState(err) != "22012" {
		t.Fatalf("extended error: %v", err)
	}
	fltCheckSchema(t, conn, tenant)
}

func TestProtocolMultiStatementAndEmpty(t *testing.T) {
	t.Parallel()
	const tenant = "prt_multi"
	fltTenant(t, tenant, "create table prt_t (id int)")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	d := direct(t)
	conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	pc := conn.PgConn()
	ctx := fltCtx(t)

	results, err := pc.Exec(ctx, "select 1; select 'two', current_schema(); select 3").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range results {
		for _, row := range r.Rows {
			var cols []string
			for _, c := range row {
				cols = append(cols, string(c))
			}
			got = append(got, strings.Join(cols, "|"))
		}
	}
	if strings.Join(got, ",") != "1,two|prt_multi,3" || len(results) != 3 {
		t.Fatalf("multi-statement results: %d results %v", len(results), got)
	}

	// The statements of one Query share an implicit transaction: an error
	// in the middle undoes the ones before it.
	_, err = pc.Exec(ctx, "insert into prt_t values (1); select 1/0; insert into prt_t values (2)").ReadAll()
	if sqlState(err) != "22012" {
		t.Fatalf("multi-statement with error: %v", err)
	}
	if got := prtRows(t, d, "select count(*) from prt_multi.prt_t"); got != "0" {
		t.Fatalf("rows after a failed multi-statement query: %s, want 0", got)
	}
	if _, err := pc.Exec(ctx, "insert into prt_t values (1); insert into prt_t values (2)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if got := prtRows(t, d, "select string_agg(id::text, ',' order by id) from prt_multi.prt_t"); got != "1,2" {
		t.Fatalf("rows after a multi-statement insert: %s", got)
	}
	// BEGIN and COMMIT in one Query, then a transaction left open across
	// Queries.
	if _, err := pc.Exec(ctx, "begin; insert into prt_t values (3); commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Exec(ctx, "begin; insert into prt_t values (4)").ReadAll(); err != nil || pc.TxStatus() != 'T' {
		t.Fatalf("open transaction: %v, status %q", err, pc.TxStatus())
	}
	if _, err := pc.Exec(ctx, "insert into prt_t values (5); commit").ReadAll(); err != nil || pc.TxStatus() != 'I' {
		t.Fatalf("commit: %v, status %q", err, pc.TxStatus())
	}
	if got := prtRows(t, d, "select string_agg(id::text, ',' order by id) from prt_multi.prt_t"); got != "1,2,3,4,5" {
		t.Fatalf("rows: %s", got)
	}

	// Empty queries: simple protocol (EmptyQueryResponse), a lone
	// semicolon, a comment, and the extended protocol.
	for _, q := range []string{"", ";", "  -- nothing\n"} {
		results, err := pc.Exec(ctx, q).ReadAll()
		if err != nil {
			t.Fatalf("empty query %q: %v", q, err)
		}
		for _, r := range results {
			if len(r.Rows) != 0 || r.Err != nil {
				t.Fatalf("empty query %q: %+v", q, r)
			}
		}
	}
	rr := pc.ExecParams(ctx, "", nil, nil, nil, nil).Read()
	if rr.Err != nil || len(rr.Rows) != 0 {
		t.Fatalf("empty extended query: %+v", rr)
	}
	fltCheckSchema(t, conn, tenant)

	// psql sends several statements in one Query too.
	out, err := prtPsql(t, p, tenant, "", "-c", "select 1; select 2 + 2; select current_schema()")
	if err != nil || out != "1\n4\nprt_multi" {
		t.Fatalf("psql multi-statement: %v\n%q", err, out)
	}
}

func TestProtocolSessionMode(t *testing.T) {
	t.Parallel()
	const a, b = "prt_sess_a", "prt_sess_b"
	fltTenant(t, a)
	fltTenant(t, b)
	d := direct(t)
	var defaultWorkMem string
	if err := d.QueryRow(fltCtx(t), "show work_mem").Scan(&defaultWorkMem); err != nil {
		t.Fatal(err)
	}

	t.Run("settings persist", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.PoolMode = config.PoolSession
			c.PoolSize = 2
		})
		// Session mode: pgx's default mode (named, cached statements) works.
		ca := p.Connect(t, a, pgx.QueryExecModeCacheStatement)
		cb := p.Connect(t, b, pgx.QueryExecModeCacheStatement)
		ctx := fltCtx(t)
		if _, err := ca.Exec(ctx, "set work_mem = '7MB'"); err != nil {
			t.Fatal(err)
		}
		var pidA uint32
		if err := ca.QueryRow(ctx, "select pg_backend_pid()").Scan(&pidA); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			tx, err := ca.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var schema, mem string
			var pid uint32
			if err := tx.QueryRow(ctx, "select current_schema(), current_setting('work_mem'), pg_backend_pid()").Scan(&schema, &mem, &pid); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if schema != a || mem != "7MB" || pid != pidA {
				t.Fatalf("client a, transaction %d: schema %q, work_mem %q, pid %d (first %d)", i, schema, mem, pid, pidA)
			}
			// b, concurrently on the other backend, keeps its own state.
			if err := cb.QueryRow(ctx, "select current_schema(), current_setting('work_mem'), pg_backend_pid()").Scan(&schema, &mem, &pid); err != nil {
				t.Fatal(err)
			}
			if schema != b || mem != defaultWorkMem || pid == pidA {
				t.Fatalf("client b: schema %q, work_mem %q, pid %d (a has %d)", schema, mem, pid, pidA)
			}
		}
		var mem string
		if err := ca.QueryRow(ctx, "show work_mem").Scan(&mem); err != nil || mem != "7MB" {
			t.Fatalf("client a after its transactions: %q, %v", mem, err)
		}
	})

	t.Run("reset after client leaves", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.PoolMode = config.PoolSession
			c.PoolSize = 1
		})
		ctx := fltCtx(t)
		ca := p.Connect(t, a, pgx.QueryExecModeCacheStatement)
		var pidA uint32
		if err := ca.QueryRow(ctx, "select pg_backend_pid()").Scan(&pidA); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"set work_mem = '9MB'",
			"set application_name = 'prt_left_behind'",
			"prepare prt_stmt as select 1",
			"create temp table prt_tmp (x int)",
			"listen prt_channel",
		} {
			if _, err := ca.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := ca.Close(ctx); err != nil {
			t.Fatal(err)
		}

		cb := p.Connect(t, b, pgx.QueryExecModeSimpleProtocol)
		var (
			pid                 uint32
			schema, mem, app    string
			prepared, listening int
			tmp                 *string
		)
		err := cb.QueryRow(ctx, `select pg_backend_pid(), current_schema(), current_setting('work_mem'),
			current_setting('application_name'), (select count(*) from pg_prepared_statements),
			(select count(*) from pg_listening_channels()), to_regclass('pg_temp.prt_tmp')::text`).
			Scan(&pid, &schema, &mem, &app, &prepared, &listening, &tmp)
		if err != nil {
			t.Fatal(err)
		}
		if pid != pidA {
			t.Fatalf("with one backend the next client should get the same one: pid %d, was %d", pid, pidA)
		}
		if schema != b || mem != defaultWorkMem || app == "prt_left_behind" || prepared != 0 || listening != 0 || tmp != nil {
			t.Fatalf("state left by the previous client: schema %q, work_mem %q, application_name %q, %d prepared, %d listening, temp table %v",
				schema, mem, app, prepared, listening, tmp)
		}
	})

	t.Run("pool full", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.PoolMode = config.PoolSession
			c.PoolSize = 1
			c.QueryWaitTimeout = 300 * time.Millisecond
		})
		ca := p.Connect(t, a, pgx.QueryExecModeCacheStatement)
		_, err := fltConnect(t, p, b, nil)
		if err == nil {
			t.Fatal("a second client got a backend in session mode with pool size 1")
		}
		pe := fltPgError(t, err, "second client")
		// At connect there is no statement to fail: the client is refused
		// as PostgreSQL refuses one it has no room for (README, Failures).
		if pe.Code != "53300" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "query-wait-timeout") {
			t.Fatalf("second client: %s %s %q, want FATAL 53300 about query-wait-timeout", pe.Severity, pe.Code, pe.Message)
		}
		fltCheckSchema(t, ca, a)
		if err := ca.Close(fltCtx(t)); err != nil {
			t.Fatal(err)
		}
		var cb *pgx.Conn
		eventually(t, 10*time.Second, "the second client to get the backend", func() bool {
			c, err := fltConnect(t, p, b, nil)
			if err != nil {
				if sqlState(err) != "53300" {
					t.Fatalf("connect: %v", err)
				}
				return false
			}
			cb = c
			return true
		})
		fltCheckSchema(t, cb, b)
	})
}
