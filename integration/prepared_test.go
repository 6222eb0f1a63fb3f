package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// The prepared-statement tests check named prepared statements in
// transaction pooling: a client's statement names are mapped to per-backend
// names (stmt.go), re-prepared on a backend that lacks them, evicted from a
// backend's cache with Close, and never shared between tenants. Whatever the
// backend, the client must see what PostgreSQL itself would show it: the
// right rows, the right parameter and row descriptions, and the right
// SQLSTATE for a missing (26000) or duplicate (42P05) statement.

// prpCtx is a bounded context for one test.
func prpCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// prpRows turns a result's rows into strings ("" for NULL).
func prpRows(res *pgconn.Result) [][]string {
	var out [][]string
	for _, r := range res.Rows {
		row := make([]string, len(r))
		for i, v := range r {
			row[i] = string(v)
		}
		out = append(out, row)
	}
	return out
}

// prpExecPrepared runs a named statement with text parameters.
func prpExecPrepared(ctx context.Context, pgc *pgconn.PgConn, name string, args ...string) ([][]string, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := pgc.ExecPrepared(ctx, name, params, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	return prpRows(res), nil
}

// prpSimple runs sql with the simple protocol and returns the rows of its
// last statement.
func prpSimple(ctx context.Context, pgc *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := pgc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, nil
	}
	return prpRows(results[len(results)-1]), nil
}

// prpDescribe sends Describe of a named statement and Sync, as a driver
// does that prepared a statement earlier and describes it later, and
// returns what the server answered.
func prpDescribe(ctx context.Context, pgc *pgconn.PgConn, name string) (params []uint32, fields []pgproto3.FieldDescription, err error) {
	fe := pgc.Frontend()
	fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: name})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		return nil, nil, err
	}
	for {
		msg, rerr := pgc.ReceiveMessage(ctx)
		if rerr != nil {
			return nil, nil, rerr
		}
		switch m := msg.(type) {
		case *pgproto3.ParameterDescription:
			params = append([]uint32(nil), m.ParameterOIDs...)
		case *pgproto3.RowDescription:
			for _, f := range m.Fields {
				f.Name = append([]byte(nil), f.Name...)
				fields = append(fields, f)
			}
		case *pgproto3.ErrorResponse:
			err = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			return params, fields, err
		}
	}
}

// prpPgbench runs pgbench and returns its output and exit error; unlike
// runPgbench it may be called from any goroutine.
func prpPgbench(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPrpPgbench: pgbench -M prepared, extended and simple against two
// tenants at once, 30 clients on a pool of 4: no failure, every transaction
// processed; TPC-B writes land in each tenant's own tables only. The same
// select-only run directly against PostgreSQL is logged for comparison.
func TestPrpPgbench(t *testing.T) {
	t.Parallel()
	const acme, globex = "prp_acme", "prp_globex"
	fltTenant(t, acme)
	fltTenant(t, globex)
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 4
		c.LogLevel = "info"
		// Long enough for 40 clients on 4 connections, short enough
		// that a client stuck waiting fails the run soon.
		c.QueryWaitTimeout = 20 * time.Second
	})
	ctx := prpCtx(t, 10*time.Minute)
	hostArgs := []string{"-h", p.Host, "-p", fmt.Sprint(p.Port), "-U", "app"}

	for _, tenant := range []string{acme, globex} {
		out := runPgbench(t, cleanEnv(), append(append([]string{"-i", "-s", "1"}, hostArgs...), tenant)...)
		if !strings.Contains(out, "done in") {
			t.Fatalf("pgbench -i %s did not finish:\n%s", tenant, out)
		}
	}

	type run struct {
		tenant                string
		clients, threads, txs int
		args                  []string
	}
	// runAll runs pgbench for each run at the same time and checks each.
	runAll := func(label string, runs ...run) (tps, outs []string) {
		t.Helper()
		outs = make([]string, len(runs))
		errs := make([]error, len(runs))
		var wg sync.WaitGroup
		for i, r := range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				args := append([]string{"-c", fmt.Sprint(r.clients), "-j", fmt.Sprint(r.threads), "-t", fmt.Sprint(r.txs)}, r.args...)
				args = append(append(args, hostArgs...), r.tenant)
				outs[i], errs[i] = prpPgbench(cleanEnv(), args...)
			}()
		}
		wg.Wait()
		for i, r := range runs {
			what := fmt.Sprintf("pgbench %s %s via pgtenant", label, r.tenant)
			if errs[i] != nil {
				t.Errorf("%s: exit %v\n%s", what, errs[i], outs[i])
				continue
			}
			tps = append(tps, r.tenant+": "+checkPgbenchRun(t, what, outs[i], r.clients, r.txs))
		}
		return tps, outs
	}

	for _, mode := range []string{"prepared", "extended", "simple"} {
		label := "-S -M " + mode
		tps, _ := runAll(label,
			run{acme, 20, 2, 300, []string{"-S", "-M", mode}},
			run{globex, 20, 2, 300, []string{"-S", "-M", mode}})
		t.Logf("pgbench %s -c 20 -j 2 -t 300 per tenant, both tenants at once, via pgtenant (pool 4): %s", label, strings.Join(tps, " | "))
		if t.Failed() {
			t.FailNow()
		}
	}

	// TPC-B-like writes, a different number of transactions per tenant, so
	// a write in the wrong schema shows in the counts. pgbench empties
	// pgbench_history before each run (its initial vacuum step), so after a
	// run the table holds one row per transaction of that run, and the
	// accounts' balances changed by the sum of those rows' deltas.
	//
	// First with a thread per client, then with several clients per
	// thread: pgbench prepares each statement the first time a client runs
	// it, with a blocking PQprepare, so one client's Parse of BEGIN (outside
	// a transaction, so it needs a server connection) holds up the other
	// clients of its thread, which may hold server connections in open
	// transactions.
	d := direct(t)
	balances := func() map[string]int64 {
		m := map[string]int64{}
		for _, tenant := range []string{acme, globex} {
			var sum int64
			if err := d.QueryRow(ctx, fmt.Sprintf("select sum(abalance) from %s.pgbench_accounts",
				pgx.Identifier{tenant}.Sanitize())).Scan(&sum); err != nil {
				t.Fatal(err)
			}
			m[tenant] = sum
		}
		return m
	}
	tpcb := func(label string, runs ...run) {
		t.Helper()
		before := balances()
		tps, outs := runAll(label, runs...)
		t.Logf("pgbench %s via pgtenant: %s", label, strings.Join(tps, " | "))
		after := balances()
		for i, r := range runs {
			var processed int64 // no line: pgbench ran nothing
			if m := pgbenchProcessed.FindStringSubmatch(outs[i]); m != nil {
				fmt.Sscan(m[1], &processed)
			}
			var history, deltaSum int64
			err := d.QueryRow(ctx, fmt.Sprintf(
				"select count(*), coalesce(sum(delta), 0) from %s.pgbench_history",
				pgx.Identifier{r.tenant}.Sanitize())).Scan(&history, &deltaSum)
			if err != nil {
				t.Fatal(err)
			}
			if history != processed {
				t.Errorf("%s: %s.pgbench_history has %d rows, want %d (one per transaction pgbench processed for this tenant)",
					label, r.tenant, history, processed)
			}
			if got := after[r.tenant] - before[r.tenant]; got != deltaSum {
				t.Errorf("%s: %s's account balances changed by %d, its history deltas sum to %d", label, r.tenant, got, deltaSum)
			}
		}
	}
	tpcb("TPC-B -M prepared (acme -c 10 -j 10 -t 100, globex -c 5 -j 5 -t 60, at once)",
		run{acme, 10, 10, 100, []string{"-M", "prepared"}},
		run{globex, 5, 5, 60, []string{"-M", "prepared"}})
	tpcb("TPC-B -M prepared (acme -c 10 -j 2 -t 100, globex -c 5 -j 1 -t 60, at once)",
		run{acme, 10, 2, 100, []string{"-M", "prepared"}},
		run{globex, 5, 1, 60, []string{"-M", "prepared"}})
	var inPublic bool
	if err := d.QueryRow(ctx, "select to_regclass('public.pgbench_history') is not null").Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic {
		t.Error("a table public.pgbench_history exists")
	}

	// The same select-only prepared run straight at PostgreSQL.
	env := append(cleanEnv(), "PGOPTIONS=-c search_path="+acme)
	out := runPgbench(t, env, "-S", "-M", "prepared", "-c", "20", "-j", "2", "-t", "300",
		"-h", pg.Host, "-p", fmt.Sprint(pg.Port), "-U", pg.User, backendDB)
	directTPS := checkPgbenchRun(t, "pgbench -S -M prepared direct", out, 20, 300)
	t.Logf("pgbench -S -M prepared -c 20 -j 2 -t 300 directly against PostgreSQL (one tenant alone): %s", directTPS)
}

// TestPrpSameNameTwoTenants: two tenants prepare the same statement name
// with the same text on one backend (pool of 1); each always gets its own
// rows, because the backend holds only the statements of the tenant it
// serves (a backend that changes tenants drops them all).
func TestPrpSameNameTwoTenants(t *testing.T) {
	t.Parallel()
	const a, b = "prp_same_a", "prp_same_b"
	fltTenant(t, a, "CREATE TABLE items (name text NOT NULL)", "INSERT INTO items VALUES ('anvil'), ('rocket')")
	fltTenant(t, b, "CREATE TABLE items (name text NOT NULL)", "INSERT INTO items VALUES ('hammock'), ('laser'), ('zeppelin')")
	want := map[string]string{a: "anvil,rocket", b: "hammock,laser,zeppelin"}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := prpCtx(t, 2*time.Minute)
	const text = "select name from items order by name"

	conns := map[string]*pgconn.PgConn{
		a: p.Connect(t, a, pgx.QueryExecModeExec).PgConn(),
		b: p.Connect(t, b, pgx.QueryExecModeExec).PgConn(),
	}
	for _, tenant := range []string{a, b} {
		sd, err := conns[tenant].Prepare(ctx, "items_q", text, nil)
		if err != nil {
			t.Fatalf("%s: prepare: %v", tenant, err)
		}
		if len(sd.Fields) != 1 || sd.Fields[0].Name != "name" || sd.Fields[0].DataTypeOID != 25 || len(sd.ParamOIDs) != 0 {
			t.Fatalf("%s: prepare described %+v", tenant, sd)
		}
	}
	run := func(tenant string, round int) {
		t.Helper()
		pgc := conns[tenant]
		inTx := round%3 == 0
		if inTx {
			if _, err := prpSimple(ctx, pgc, "begin"); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := prpExecPrepared(ctx, pgc, "items_q")
		if err != nil {
			t.Fatalf("%s round %d: execute items_q: %v", tenant, round, err)
		}
		var names []string
		for _, r := range rows {
			names = append(names, r[0])
		}
		if got := strings.Join(names, ","); got != want[tenant] {
			t.Fatalf("%s round %d: items_q returned %q, want %q", tenant, round, got, want[tenant])
		}
		if inTx {
			if _, err := prpSimple(ctx, pgc, "commit"); err != nil {
				t.Fatal(err)
			}
		}
	}
	orders := [][]string{{a, b}, {b, a}, {a, a, b}, {b, b, a}}
	for round := 0; round < 40; round++ {
		for _, tenant := range orders[round%len(orders)] {
			run(tenant, round)
		}
	}

	// pg_prepared_statements is per session: read it through each client,
	// inside a transaction, on the one backend both use. Each sees its own
	// statement and not the other tenant's.
	for _, tenant := range []string{a, b} {
		pgc := conns[tenant]
		if _, err := prpSimple(ctx, pgc, "begin"); err != nil {
			t.Fatal(err)
		}
		if _, err := prpExecPrepared(ctx, pgc, "items_q"); err != nil {
			t.Fatal(err)
		}
		res := pgc.ExecParams(ctx, "select name from pg_prepared_statements where statement = $1 order by name",
			[][]byte{[]byte(text)}, nil, nil, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if _, err := prpSimple(ctx, pgc, "commit"); err != nil {
			t.Fatal(err)
		}
		rows := prpRows(res)
		if len(rows) != 1 {
			t.Fatalf("as %s: server statements with the text %q: %q; want one, the tenant's own", tenant, text, rows)
		}
		for _, r := range rows {
			if !strings.HasPrefix(r[0], "pgt_") {
				t.Fatalf("as %s: server statement named %q, want a pgt_ name", tenant, r[0])
			}
		}
	}
}

// TestPrpEviction: with at most 3 statements per backend, clients that use
// 10 (and another tenant's 5) in rotation on one backend always get the
// right results; the backend never holds more than 3.
func TestPrpEviction(t *testing.T) {
	t.Parallel()
	const a, b = "prp_evict_a", "prp_evict_b"
	fltTenant(t, a)
	fltTenant(t, b)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1; c.MaxPreparedStatements = 3 })
	ctx := prpCtx(t, 2*time.Minute)
	conns := map[string]*pgconn.PgConn{
		a: p.Connect(t, a, pgx.QueryExecModeExec).PgConn(),
		b: p.Connect(t, b, pgx.QueryExecModeExec).PgConn(),
	}
	count := map[string]int{a: 10, b: 5}
	text := func(i int) string { return fmt.Sprintf("select %d + $1::int, current_schema()", i*100) }
	for tenant, n := range count {
		for i := 0; i < n; i++ {
			if _, err := conns[tenant].Prepare(ctx, fmt.Sprintf("s%d", i), text(i), nil); err != nil {
				t.Fatalf("%s: prepare s%d: %v", tenant, i, err)
			}
		}
	}
	check := func(tenant string, i, arg int) {
		t.Helper()
		rows, err := prpExecPrepared(ctx, conns[tenant], fmt.Sprintf("s%d", i), fmt.Sprint(arg))
		if err != nil {
			t.Fatalf("%s: execute s%d: %v", tenant, i, err)
		}
		if want := []string{fmt.Sprint(i*100 + arg), tenant}; len(rows) != 1 || strings.Join(rows[0], "|") != strings.Join(want, "|") {
			t.Fatalf("%s: s%d(%d) returned %q, want %q", tenant, i, arg, rows, want)
		}
	}
	countOnBackend := func(tenant string, inTx ...int) {
		t.Helper()
		pgc := conns[tenant]
		if _, err := prpSimple(ctx, pgc, "begin"); err != nil {
			t.Fatal(err)
		}
		for _, i := range inTx {
			check(tenant, i, 7)
		}
		rows, err := prpSimple(ctx, pgc, "select count(*) from pg_prepared_statements")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := prpSimple(ctx, pgc, "commit"); err != nil {
			t.Fatal(err)
		}
		if n, err := strconv.Atoi(rows[0][0]); err != nil || n > 3 {
			t.Fatalf("the backend holds %s prepared statements, want at most 3", rows[0][0])
		}
	}
	calls := 0
	for round := 0; round < 5; round++ {
		for k := 0; k < 10; k++ {
			i := (k*7 + round) % 10
			check(a, i, round)
			if k%2 == 0 {
				check(b, (i+round)%5, round+1)
			}
			if calls++; calls%5 == 0 {
				countOnBackend(a)
			}
		}
	}
	// Four statements in one transaction: the fourth evicts the first
	// mid-transaction.
	countOnBackend(a, 1, 2, 3, 4)
	countOnBackend(b, 0, 1, 2, 3, 4, 0)

	// Six executions in one batch (one Sync), more statements than fit.
	batch := &pgconn.Batch{}
	order := []int{0, 1, 2, 3, 0, 4, 9, 8}
	for k, i := range order {
		batch.ExecPrepared(fmt.Sprintf("s%d", i), [][]byte{[]byte(fmt.Sprint(k))}, nil, nil)
	}
	results, err := conns[a].ExecBatch(ctx, batch).ReadAll()
	if err != nil {
		t.Fatalf("batch of prepared statements: %v", err)
	}
	if len(results) != len(order) {
		t.Fatalf("batch: %d results, want %d", len(results), len(order))
	}
	for k, i := range order {
		rows := prpRows(results[k])
		if want := fmt.Sprintf("%d|%s", i*100+k, a); len(rows) != 1 || strings.Join(rows[0], "|") != want {
			t.Fatalf("batch item %d (s%d): %q, want %q", k, i, rows, want)
		}
	}
	countOnBackend(a)
	countOnBackend(b)
}

// TestPrpDescribeAcrossBackends: a statement prepared on one backend and
// described or executed on another gives the same parameter and row
// descriptions; a Parse of a text the backend already holds (answered by
// pgtenant with a Describe) is described correctly too.
func TestPrpDescribeAcrossBackends(t *testing.T) {
	t.Parallel()
	const tenant = "prp_desc"
	fltTenant(t, tenant,
		"CREATE TABLE things (id int PRIMARY KEY, label text NOT NULL, price numeric(10,2))",
		"INSERT INTO things VALUES (1, 'one', 1.50), (2, 'two', 2.50), (3, 'three', 3.50)")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	ctx := prpCtx(t, 2*time.Minute)
	const pidCol = "pg_backend_pid"
	wantParams := []uint32{23, 25}
	wantFields := []string{"id/23", "label/25", "price/1700", pidCol + "/23"}
	textFor := func(tag string) string {
		return "select id, label, price, pg_backend_pid() from things where id = $1 and label <> $2 /* " + tag + " */"
	}
	fieldsOf := func(names [][]byte, oids []uint32) []string {
		var out []string
		for i := range names {
			out = append(out, fmt.Sprintf("%s/%d", names[i], oids[i]))
		}
		return out
	}
	checkSD := func(t *testing.T, what string, sd *pgconn.StatementDescription) {
		t.Helper()
		var names [][]byte
		var oids []uint32
		for _, f := range sd.Fields {
			names = append(names, []byte(f.Name))
			oids = append(oids, f.DataTypeOID)
		}
		if fmt.Sprint(sd.ParamOIDs) != fmt.Sprint(wantParams) || strings.Join(fieldsOf(names, oids), ",") != strings.Join(wantFields, ",") {
			t.Fatalf("%s: described params %v fields %v; want %v %v", what, sd.ParamOIDs, fieldsOf(names, oids), wantParams, wantFields)
		}
	}
	// Holders take one backend each in an open transaction, which steers
	// every other client's next transaction onto the other backend.
	h1 := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	h2 := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	hold := func(t *testing.T, h *pgx.Conn) (pgx.Tx, uint32) {
		t.Helper()
		tx, err := h.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var pid uint32
		if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return tx, pid
	}
	execPid := func(t *testing.T, what string, pgc *pgconn.PgConn, name, id string) string {
		t.Helper()
		rows, err := prpExecPrepared(ctx, pgc, name, id, "nothing")
		if err != nil {
			t.Fatalf("%s: execute %s: %v", what, name, err)
		}
		want := map[string]string{"1": "1|one|1.50", "2": "2|two|2.50", "3": "3|three|3.50"}[id]
		if len(rows) != 1 || strings.Join(rows[0][:3], "|") != want {
			t.Fatalf("%s: execute %s(%s): %q, want %s|<pid>", what, name, id, rows, want)
		}
		return rows[0][3]
	}
	c1 := p.Connect(t, tenant, pgx.QueryExecModeExec).PgConn()
	c2 := p.Connect(t, tenant, pgx.QueryExecModeExec).PgConn()
	c3 := p.Connect(t, tenant, pgx.QueryExecModeExec).PgConn()

	t.Run("describe and execute on a backend that lacks the statement", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			tx1, pid1 := hold(t, h1)
			sd, err := c1.Prepare(ctx, "qa", textFor(fmt.Sprintf("prp_desc a%d", i)), nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSD(t, "prepare", sd)
			pid2 := execPid(t, "first backend", c1, "qa", "1")
			if pid2 == fmt.Sprint(pid1) {
				t.Fatalf("the statement ran on backend %s, held by another client", pid2)
			}
			tx2, held := hold(t, h2)
			if fmt.Sprint(held) != pid2 {
				t.Fatalf("holder 2 got backend %d, want %s (the only free one)", held, pid2)
			}
			if err := tx1.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			// The only free backend now is pid1, which never saw the text.
			params, fields, err := prpDescribe(ctx, c1, "qa")
			if err != nil {
				t.Fatalf("describe qa on the other backend: %v", err)
			}
			var names [][]byte
			var oids []uint32
			for _, f := range fields {
				names = append(names, f.Name)
				oids = append(oids, f.DataTypeOID)
			}
			if fmt.Sprint(params) != fmt.Sprint(wantParams) || strings.Join(fieldsOf(names, oids), ",") != strings.Join(wantFields, ",") {
				t.Fatalf("describe on the other backend: params %v fields %v; want %v %v", params, fieldsOf(names, oids), wantParams, wantFields)
			}
			if got := execPid(t, "second backend", c1, "qa", "2"); got != fmt.Sprint(pid1) {
				t.Fatalf("second execution ran on backend %s, want %d", got, pid1)
			}
			if err := tx2.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c1.Deallocate(ctx, "qa"); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("parse of a text the backend already holds", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			text := textFor(fmt.Sprintf("prp_desc b%d", i))
			tx1, pid1 := hold(t, h1)
			sd, err := c1.Prepare(ctx, "qb", text, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSD(t, "first prepare", sd)
			// Same tenant, same text, another client and name: the
			// backend already holds it.
			sd, err = c2.Prepare(ctx, fmt.Sprintf("other_%d", i), text, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSD(t, "prepare of a text the backend holds", sd)
			res := c2.ExecParams(ctx, "select count(*), pg_backend_pid() from pg_prepared_statements where statement = $1",
				[][]byte{[]byte(text)}, nil, nil, nil).Read()
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			rows := prpRows(res)
			if rows[0][1] == fmt.Sprint(pid1) {
				t.Fatalf("c2 ran on the held backend %d", pid1)
			}
			if rows[0][0] != "1" {
				t.Fatalf("backend %s holds %s statements with the text, want 1 (shared by the tenant's clients)", rows[0][1], rows[0][0])
			}
			// The same inside a transaction, where the Parse goes to the
			// attached backend at once.
			if _, err := prpSimple(ctx, c3, "begin"); err != nil {
				t.Fatal(err)
			}
			sd, err = c3.Prepare(ctx, fmt.Sprintf("in_tx_%d", i), text, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSD(t, "prepare in a transaction of a text the backend holds", sd)
			if got := execPid(t, "c3 in its transaction", c3, fmt.Sprintf("in_tx_%d", i), "2"); got != rows[0][1] {
				t.Fatalf("c3 ran on backend %s, want %s", got, rows[0][1])
			}
			res = c3.ExecParams(ctx, "select count(*) from pg_prepared_statements where statement = $1",
				[][]byte{[]byte(text)}, nil, nil, nil).Read()
			if res.Err != nil || string(res.Rows[0][0]) != "1" {
				t.Fatalf("after c3's prepare in a transaction: %v, %q statements with the text, want 1", res.Err, prpRows(res))
			}
			if _, err := prpSimple(ctx, c3, "commit"); err != nil {
				t.Fatal(err)
			}
			if err := tx1.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			execPid(t, "c2", c2, fmt.Sprintf("other_%d", i), "3")
			execPid(t, "c1", c1, "qb", "1")
			if err := c1.Deallocate(ctx, "qb"); err != nil {
				t.Fatal(err)
			}
			// c1's Close leaves c2's statement working.
			execPid(t, "c2 after c1 closed its statement", c2, fmt.Sprintf("other_%d", i), "2")
		}
	})

	t.Run("many clients, statements moving between backends", func(t *testing.T) {
		const clients, rounds = 6, 30
		conns := make([]*pgx.Conn, clients)
		for i := range conns {
			conns[i] = p.Connect(t, tenant, pgx.QueryExecModeExec)
		}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for ci, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pgc := conn.PgConn()
				for r := 0; r < rounds; r++ {
					name := fmt.Sprintf("mv_%d", r%3)
					if r < 3 {
						sd, err := pgc.Prepare(ctx, name, textFor(fmt.Sprintf("prp_desc mv%d", r%3)), nil)
						if err != nil {
							errs <- fmt.Errorf("client %d prepare %s: %w", ci, name, err)
							return
						}
						if fmt.Sprint(sd.ParamOIDs) != fmt.Sprint(wantParams) || len(sd.Fields) != 4 || sd.Fields[2].DataTypeOID != 1700 {
							errs <- fmt.Errorf("client %d prepare %s described %+v", ci, name, sd)
							return
						}
					}
					id := fmt.Sprint(1 + (ci+r)%3)
					inTx := r%4 == 1
					if inTx {
						if _, err := prpSimple(ctx, pgc, "begin"); err != nil {
							errs <- err
							return
						}
					}
					rows, err := prpExecPrepared(ctx, pgc, name, id, "nothing")
					if err != nil {
						errs <- fmt.Errorf("client %d round %d execute %s: %w", ci, r, name, err)
						return
					}
					if len(rows) != 1 || rows[0][0] != id {
						errs <- fmt.Errorf("client %d round %d: %s(%s) returned %q", ci, r, name, id, rows)
						return
					}
					if inTx {
						if _, err := prpSimple(ctx, pgc, "commit"); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("deallocate", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
		pgc := conn.PgConn()
		one := func(name, want string) {
			t.Helper()
			rows, err := prpExecPrepared(ctx, pgc, name, "1")
			if err != nil {
				t.Fatalf("execute %s: %v", name, err)
			}
			if len(rows) != 1 || rows[0][0] != want {
				t.Fatalf("execute %s: %q, want %s", name, rows, want)
			}
		}
		missing := func(name string) {
			t.Helper()
			_, err := prpExecPrepared(ctx, pgc, name, "1")
			if sqlState(err) != "26000" {
				t.Fatalf("execute %s after it was deallocated: want 26000, got %v", name, err)
			}
			fltCheckSchema(t, conn, tenant)
		}
		if _, err := pgc.Prepare(ctx, "d1", "select 10 + $1::int", nil); err != nil {
			t.Fatal(err)
		}
		one("d1", "11")
		if err := pgc.Deallocate(ctx, "d1"); err != nil {
			t.Fatal(err)
		}
		missing("d1")
		// The name is free again, for another text.
		if _, err := pgc.Prepare(ctx, "d1", "select 20 + $1::int", nil); err != nil {
			t.Fatalf("prepare d1 again after deallocate: %v", err)
		}
		one("d1", "21")

		// DEALLOCATE ALL, as pgx's DeallocateAll sends it.
		if _, err := conn.Prepare(ctx, "d2", "select 30 + $1::int"); err != nil {
			t.Fatal(err)
		}
		one("d2", "31")
		if err := conn.DeallocateAll(ctx); err != nil {
			t.Fatal(err)
		}
		missing("d1")
		missing("d2")
		if _, err := conn.Prepare(ctx, "d2", "select 40 + $1::int"); err != nil {
			t.Fatalf("prepare d2 again after deallocate all: %v", err)
		}
		one("d2", "41")
	})

	t.Run("SQL DEALLOCATE of a protocol-level statement", func(t *testing.T) {
		// PostgreSQL lets DEALLOCATE name drop a statement prepared with a
		// Parse message (drivers such as psycopg do this).
		conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
		pgc := conn.PgConn()
		if _, err := pgc.Prepare(ctx, "d4", "select 50 + $1::int", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := prpSimple(ctx, pgc, "DEALLOCATE d4"); err != nil {
			t.Fatalf("DEALLOCATE d4: %v", err)
		}
		if _, err := prpExecPrepared(ctx, pgc, "d4", "1"); sqlState(err) != "26000" {
			t.Fatalf("execute d4 after DEALLOCATE d4: want 26000, got %v", err)
		}
		if _, err := pgc.Prepare(ctx, "d4", "select 60 + $1::int", nil); err != nil {
			t.Fatalf("prepare d4 again after DEALLOCATE d4: %v", err)
		}
	})

	t.Run("prepare of an existing name", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
		pgc := conn.PgConn()
		if _, err := pgc.Prepare(ctx, "dup", "select 70 + $1::int", nil); err != nil {
			t.Fatal(err)
		}
		for i, text := range []string{"select 80 + $1::int", "select 70 + $1::int"} {
			var tx pgx.Tx
			if i == 0 {
				// Hold the backend the statement was prepared on, so the
				// second Parse lands where the name is unknown.
				tx, _ = hold(t, h1)
			}
			_, err := pgc.Prepare(ctx, "dup", text, nil)
			if sqlState(err) != "42P05" {
				t.Fatalf("prepare dup again with %q: want 42P05 duplicate_prepared_statement, got %v", text, err)
			}
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Message != `prepared statement "dup" already exists` {
				t.Errorf("prepare dup again: message %q, want PostgreSQL's %q", pe.Message, `prepared statement "dup" already exists`)
			}
			if tx != nil {
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			rows, err := prpExecPrepared(ctx, pgc, "dup", "1")
			if err != nil || len(rows) != 1 || rows[0][0] != "71" {
				t.Fatalf("dup after the failed redefinition: %q, %v; want the original (71)", rows, err)
			}
		}
	})
}

// TestPrpUnknownStatementName: a client that executes a name it never
// prepared gets 26000, even when another tenant's client prepared that
// name, or the backend's own name for it, on the same backend.
func TestPrpUnknownStatementName(t *testing.T) {
	t.Parallel()
	const a, b = "prp_unk_a", "prp_unk_b"
	fltTenant(t, a)
	fltTenant(t, b)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := prpCtx(t, time.Minute)
	connA := p.Connect(t, a, pgx.QueryExecModeExec)
	connB := p.Connect(t, b, pgx.QueryExecModeExec)
	ca, cb := connA.PgConn(), connB.PgConn()
	const text = "select 'secret of a'::text, current_schema()"
	if _, err := ca.Prepare(ctx, "s1", text, nil); err != nil {
		t.Fatal(err)
	}
	aWorks := func() {
		t.Helper()
		rows, err := prpExecPrepared(ctx, ca, "s1")
		if err != nil || len(rows) != 1 || rows[0][1] != a {
			t.Fatalf("%s: s1 returned %q, %v", a, rows, err)
		}
	}
	aWorks()
	res := ca.ExecParams(ctx, "select name from pg_prepared_statements where statement = $1", [][]byte{[]byte(text)}, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("%s: server name of s1: %v, %d rows", a, res.Err, len(res.Rows))
	}
	serverName := string(res.Rows[0][0])

	for _, name := range []string{"s1", serverName} {
		rows, err := prpExecPrepared(ctx, cb, name)
		if sqlState(err) != "26000" {
			t.Fatalf("%s executes %q it never prepared: want 26000, got rows %q, err %v", b, name, rows, err)
		}
		// PostgreSQL's message names the client's statement.
		if want := fmt.Sprintf("prepared statement %q does not exist", name); err.(*pgconn.PgError).Message != want {
			t.Errorf("%s executes %q it never prepared: message %q, want %q", b, name, err.(*pgconn.PgError).Message, want)
		}
		fltCheckSchema(t, connB, b)
		if _, _, err := prpDescribe(ctx, cb, name); sqlState(err) != "26000" {
			t.Fatalf("%s describes %q it never prepared: want 26000, got %v", b, name, err)
		}
		fltCheckSchema(t, connB, b)
		// In a transaction: the error aborts it, the rollback ends it.
		if _, err := prpSimple(ctx, cb, "begin"); err != nil {
			t.Fatal(err)
		}
		if _, err := prpExecPrepared(ctx, cb, name); sqlState(err) != "26000" {
			t.Fatalf("%s executes %q in a transaction: want 26000, got %v", b, name, err)
		}
		if _, err := prpSimple(ctx, cb, "rollback"); err != nil {
			t.Fatal(err)
		}
		// Closing a name it does not have is no error, and does not touch
		// a's statement.
		if err := cb.Deallocate(ctx, name); err != nil {
			t.Fatalf("%s closes %q: %v", b, name, err)
		}
		aWorks()
	}
	// b's own s1, same name, another text, then a's again.
	if _, err := cb.Prepare(ctx, "s1", "select 'b own'::text, current_schema()", nil); err != nil {
		t.Fatal(err)
	}
	if rows, err := prpExecPrepared(ctx, cb, "s1"); err != nil || len(rows) != 1 || strings.Join(rows[0], "|") != "b own|"+b {
		t.Fatalf("%s: own s1 returned %q, %v", b, rows, err)
	}
	aWorks()
}

// TestPrpParseError: a Parse with a syntax error fails with 42601 and
// leaves the name undefined, as in PostgreSQL: the same name can then be
// prepared with a correct text. pgtenant may answer a Parse+Sync outside a
// transaction itself and prepare on a server at first use; then the error
// comes at first use, and the name must still be free afterwards.
func TestPrpParseError(t *testing.T) {
	t.Parallel()
	const tenant = "prp_parse_err"
	fltTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	ctx := prpCtx(t, time.Minute)
	conn := p.Connect(t, tenant, pgx.QueryExecModeExec)
	pgc := conn.PgConn()

	// pgx's Prepare: Parse, Describe, Sync.
	if _, err := pgc.Prepare(ctx, "bad", "selec 1", nil); sqlState(err) != "42601" {
		t.Fatalf("prepare a syntax error: want 42601, got %v", err)
	}
	if _, err := pgc.Prepare(ctx, "bad", "select 1", nil); err != nil {
		t.Errorf("prepare the name again with a correct text after the failed Parse: %v (PostgreSQL allows it: the failed Parse defined nothing)", err)
		// Go on with the rest: closing the name frees it.
		if err := pgc.Deallocate(ctx, "bad"); err != nil {
			t.Fatal(err)
		}
		if _, err := pgc.Prepare(ctx, "bad", "select 1", nil); err != nil {
			t.Fatalf("prepare after closing the name: %v", err)
		}
	}
	if rows, err := prpExecPrepared(ctx, pgc, "bad"); err != nil || len(rows) != 1 || rows[0][0] != "1" {
		t.Fatalf("execute the re-prepared statement: %q, %v", rows, err)
	}

	// libpq's PQprepare: Parse, Sync.
	parseSync := func(name, text string) error {
		fe := pgc.Frontend()
		fe.Send(&pgproto3.Parse{Name: name, Query: text})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			return err
		}
		var perr error
		for {
			msg, err := pgc.ReceiveMessage(ctx)
			if err != nil {
				return err
			}
			switch m := msg.(type) {
			case *pgproto3.ErrorResponse:
				perr = pgconn.ErrorResponseToPgError(m)
			case *pgproto3.ReadyForQuery:
				return perr
			}
		}
	}
	err := parseSync("bad2", "selec 2")
	if err == nil {
		t.Logf("Parse+Sync of a syntax error was answered ParseComplete (PostgreSQL answers 42601 at once); checking that the error comes at first use")
		if _, err := prpExecPrepared(ctx, pgc, "bad2"); sqlState(err) != "42601" {
			t.Fatalf("first use of a statement with a syntax error: want 42601, got %v", err)
		}
	} else if sqlState(err) != "42601" {
		t.Fatalf("Parse+Sync of a syntax error: want 42601, got %v", err)
	}
	fltCheckSchema(t, conn, tenant)
	if err := parseSync("bad2", "select 2"); err != nil {
		t.Errorf("Parse+Sync of the name again with a correct text: %v (PostgreSQL allows it)", err)
		if err := pgc.Deallocate(ctx, "bad2"); err != nil {
			t.Fatal(err)
		}
		if err := parseSync("bad2", "select 2"); err != nil {
			t.Fatalf("Parse+Sync after closing the name: %v", err)
		}
	}
	if rows, err := prpExecPrepared(ctx, pgc, "bad2"); err != nil || len(rows) != 1 || rows[0][0] != "2" {
		t.Fatalf("execute the re-prepared bad2: %q, %v", rows, err)
	}
}

// TestPrpReprepareInAbortedTransaction: a client's statement that pgtenant
// must prepare again on its backend (the backend served another tenant
// meanwhile, which drops every statement) meets an aborted transaction,
// where PostgreSQL refuses every Parse (25P02). The client hears 25P02, as
// it would directly; its statement is not forgotten, and after ROLLBACK it
// runs.
func TestPrpReprepareInAbortedTransaction(t *testing.T) {
	t.Parallel()
	const a, b = "prp_abort_a", "prp_abort_b"
	fltTenant(t, a)
	fltTenant(t, b)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := prpCtx(t, time.Minute)
	ca := p.Connect(t, a, pgx.QueryExecModeExec).PgConn()
	cb := p.Connect(t, b, pgx.QueryExecModeExec).PgConn()
	if _, err := ca.Prepare(ctx, "s", "select current_schema()", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := prpSimple(ctx, ca, "begin"); err != nil {
		t.Fatal(err)
	}
	// The backend goes to b in between: a's transaction must start on a
	// backend that lacks a's statement.
	if _, err := prpSimple(ctx, ca, "rollback"); err != nil {
		t.Fatal(err)
	}
	if _, err := prpSimple(ctx, cb, "select 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := prpSimple(ctx, ca, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := prpSimple(ctx, ca, "select 1/0"); sqlState(err) != "22012" {
		t.Fatalf("select 1/0: %v", err)
	}
	if _, err := prpExecPrepared(ctx, ca, "s"); sqlState(err) != "25P02" {
		t.Fatalf("statement in an aborted transaction: got %v, want 25P02", err)
	}
	if _, err := prpSimple(ctx, ca, "rollback"); err != nil {
		t.Fatal(err)
	}
	rows, err := prpExecPrepared(ctx, ca, "s")
	if err != nil {
		t.Fatalf("after ROLLBACK the client's statement is gone: %v", err)
	}
	if len(rows) != 1 || rows[0][0] != a {
		t.Fatalf("s returned %q, want %s", rows, a)
	}
}
