package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// sessionSnapshot is what a client can observe of its backend session.
type sessionSnapshot struct {
	Pid                                          uint32
	Schema, SearchPath, User, SessionUser        string
	WorkMem, StatementTimeout, AppName, TimeZone string
	DateStyle, Rows                              string
	InTransaction                                bool
}

func (s sessionSnapshot) withoutPid() sessionSnapshot { s.Pid = 0; return s }

// snapshot reads the session state and the rows of txl_rows (which each
// txl tenant has, holding its own name).
func snapshot(t *testing.T, ctx context.Context, conn *pgx.Conn) sessionSnapshot {
	t.Helper()
	var s sessionSnapshot
	err := conn.QueryRow(ctx, `select pg_backend_pid(), current_schema(), current_setting('search_path'),
		current_user, session_user, current_setting('work_mem'), current_setting('statement_timeout'),
		current_setting('application_name'), current_setting('TimeZone'), current_setting('DateStyle'),
		(select coalesce(string_agg(v, ',' order by v), '') from txl_rows),
		txid_current_if_assigned() is not null`).Scan(
		&s.Pid, &s.Schema, &s.SearchPath, &s.User, &s.SessionUser, &s.WorkMem, &s.StatementTimeout,
		&s.AppName, &s.TimeZone, &s.DateStyle, &s.Rows, &s.InTransaction)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return s
}

// TestTransactionSessionStateDoesNotLeak: whatever a client changes in its
// backend session (search_path within what its tenant may reach, settings,
// role), the next client of another tenant on the same backend connection
// starts from a clean session in its own schema, whether the first client is
// still connected or gone. (Moving to another tenant's schema is refused
// outright: see sessionstate_test.go.)
func TestTransactionSessionStateDoesNotLeak(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"txl_a", "txl_b", "txl_c"} {
		createTenant(t, n, "CREATE TABLE txl_rows (v text)", fmt.Sprintf("INSERT INTO txl_rows VALUES ('%s row')", n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := direct(t)
	if _, err := d.Exec(ctx, "DO $$BEGIN CREATE ROLE txl_role; EXCEPTION WHEN duplicate_object THEN NULL; END$$"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Exec(ctx, "GRANT USAGE ON SCHEMA txl_b TO txl_role"); err != nil {
		t.Fatal(err)
	}
	var defaultWorkMem string
	if err := d.QueryRow(ctx, "select reset_val || coalesce(unit, '') from pg_settings where name = 'work_mem'").Scan(&defaultWorkMem); err != nil {
		t.Fatal(err)
	}
	var serverWorkMem string
	if err := d.QueryRow(ctx, "show work_mem").Scan(&serverWorkMem); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		// psql: run the statements with psql, else with pgx (simple
		// protocol), one Exec each.
		psql  bool
		stmts []string
	}{
		{"set search_path", false, []string{"SET search_path TO public"}},
		{"set_config search_path", false, []string{"select set_config('search_path', 'public', false)"}},
		{"set search_path psql", true, []string{"SET search_path TO public"}},
		{"set_config search_path in transaction", false, []string{"BEGIN", "select set_config('search_path', 'public', false)", "COMMIT"}},
		{"settings", false, []string{"SET statement_timeout = '1234s'", "SET work_mem = '7777kB'", "SET application_name = 'leaker'",
			"SET TimeZone = 'Pacific/Chatham'", "SET DateStyle = 'SQL, DMY'"}},
		{"settings psql", true, []string{"SET statement_timeout = '1234s'", "SET work_mem = '7777kB'", "SET application_name = 'leaker'"}},
		{"set_config settings", false, []string{"select set_config('work_mem', '6666kB', false), set_config('statement_timeout', '4321s', false)"}},
		{"set role", false, []string{"SET ROLE txl_role", "SET search_path TO public"}},
		{"set session authorization", false, []string{"SET SESSION AUTHORIZATION txl_role", "SET search_path TO public"}},
	}
	for _, tc := range cases {
		for _, stays := range []bool{false, true} {
			if tc.psql && stays {
				continue
			}
			variant := "leaves"
			if stays {
				variant = "stays connected"
			}
			t.Run(tc.name+"/"+variant, func(t *testing.T) {
				// One backend connection: the victim is necessarily served
				// by the connection the other client changed.
				p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
				victim := p.Connect(t, "txl_c", pgx.QueryExecModeSimpleProtocol)
				before := snapshot(t, ctx, victim)
				if before.Schema != "txl_c" || before.Rows != "txl_c row" || before.WorkMem != serverWorkMem {
					t.Fatalf("fresh client of txl_c: %+v", before)
				}

				if tc.psql {
					args := []string{"-c", "select pg_backend_pid()"}
					for _, s := range tc.stmts {
						args = append(args, "-c", s)
					}
					out, err := p.Psql(t, "txl_a", args...)
					if err != nil {
						t.Fatalf("psql: %v\n%s", err, out)
					}
					if first := strings.SplitN(out, "\n", 2)[0]; first != fmt.Sprint(before.Pid) {
						t.Fatalf("psql ran on backend %s, not %d", first, before.Pid)
					}
				} else {
					leaver := p.Connect(t, "txl_a", pgx.QueryExecModeSimpleProtocol)
					var pid uint32
					if err := leaver.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
						t.Fatal(err)
					}
					if pid != before.Pid {
						t.Fatalf("leaver on backend %d, victim on %d, with a pool of 1", pid, before.Pid)
					}
					for _, s := range tc.stmts {
						if _, err := leaver.Exec(ctx, s); err != nil {
							t.Fatalf("%s: %v", s, err)
						}
					}
					if !stays {
						if err := leaver.Close(ctx); err != nil {
							t.Fatal(err)
						}
					}
				}

				after := snapshot(t, ctx, victim)
				if after.Pid != before.Pid {
					t.Fatalf("victim moved from backend %d to %d with a pool of 1", before.Pid, after.Pid)
				}
				if after != before {
					t.Errorf("session state leaked to the next client of another tenant:\nbefore: %+v\nafter:  %+v", before, after)
				}
				var show string
				if err := victim.QueryRow(ctx, "show work_mem").Scan(&show); err != nil || show != serverWorkMem {
					t.Errorf("SHOW work_mem = %q (%v), want the server default %q (%s)", show, err, serverWorkMem, defaultWorkMem)
				}

				// A new client of the tenant that made the change is back in
				// its own schema too.
				fresh := p.Connect(t, "txl_a", pgx.QueryExecModeExec)
				s := snapshot(t, ctx, fresh)
				want := before
				want.Schema, want.SearchPath, want.Rows = "txl_a", "txl_a, public", "txl_a row"
				if s.withoutPid() != want.withoutPid() {
					t.Errorf("new client of txl_a:\n got  %+v\n want %+v", s, want)
				}
			})
		}
	}
}

// TestTransactionSessionObjectsDoNotLeak: session-level objects a client
// leaves behind on a backend connection (temporary tables, which come
// first on every search_path, and SQL prepared statements) must not reach
// the next client of another tenant: pgtenant must refuse them, or pin the
// client to the connection and DISCARD ALL when it leaves (DESIGN.md:
// "never silent misbehaviour").
func TestTransactionSessionObjectsDoNotLeak(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"txo_a", "txo_c"} {
		createTenant(t, n, "CREATE TABLE txl_rows (v text)", fmt.Sprintf("INSERT INTO txl_rows VALUES ('%s row')", n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("temp table", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
		leaver := p.Connect(t, "txo_a", pgx.QueryExecModeSimpleProtocol)
		_, err := leaver.Exec(ctx, "CREATE TEMP TABLE txl_rows AS SELECT 'txo_a temp row'::text AS v")
		if err != nil {
			t.Logf("CREATE TEMP TABLE refused: %v (sqlstate %s)", err, sqlState(err))
		}
		leaver.Close(ctx)
		victim := p.Connect(t, "txo_c", pgx.QueryExecModeSimpleProtocol)
		var rows string
		if err := victim.QueryRow(ctx, "select string_agg(v, ',') from txl_rows").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != "txo_c row" {
			t.Errorf("client of txo_c reads txl_rows = %q, want %q: another tenant's temporary table shadows its table", rows, "txo_c row")
		}
	})
	t.Run("prepared statement", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
		leaver := p.Connect(t, "txo_a", pgx.QueryExecModeSimpleProtocol)
		_, err := leaver.Exec(ctx, "PREPARE txo_q AS SELECT string_agg(v, ',') FROM txl_rows")
		if err != nil {
			t.Logf("PREPARE refused: %v (sqlstate %s)", err, sqlState(err))
		}
		leaver.Close(ctx)
		victim := p.Connect(t, "txo_c", pgx.QueryExecModeSimpleProtocol)
		var rows string
		err = victim.QueryRow(ctx, "EXECUTE txo_q").Scan(&rows)
		if err == nil {
			t.Errorf("client of txo_c can EXECUTE another tenant's prepared statement; it returns %q", rows)
		} else if sqlState(err) != "26000" {
			t.Errorf("EXECUTE of an unknown statement: %v, want SQLSTATE 26000", err)
		}
		if _, err := victim.Exec(ctx, "PREPARE txo_q AS SELECT 1"); err != nil {
			t.Errorf("client of txo_c cannot PREPARE a name another tenant's client used: %v (sqlstate %s)", err, sqlState(err))
		}
	})
}

// TestTransactionStaysOnOneBackend: the statements of a BEGIN … COMMIT run
// on one backend connection in one transaction, while other clients keep
// the pool busy; a COMMIT makes all of it visible, a ROLLBACK (or an error
// followed by ROLLBACK) leaves nothing.
func TestTransactionStaysOnOneBackend(t *testing.T) {
	t.Parallel()
	const (
		poolSize   = 4
		txClients  = 4
		loadTenant = 3
		loadConns  = 8
		rounds     = 24
	)
	createTenant(t, "txone_main", "CREATE TABLE txone_rows (client int, round int, step text)")
	for i := 0; i < loadTenant; i++ {
		createTenant(t, fmt.Sprintf("txone_load%d", i), "CREATE TABLE txone_rows (client int, round int, step text)")
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = poolSize; c.QueryWaitTimeout = 30 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Load: other tenants' clients run short autocommit queries until the
	// transactions under test are done.
	stop := make(chan struct{})
	var loadWG sync.WaitGroup
	var loadQueries atomic.Int64
	loadErrs := make(chan error, loadConns)
	for i := 0; i < loadConns; i++ {
		tenant := fmt.Sprintf("txone_load%d", i%loadTenant)
		mode := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec}[i%2]
		conn := p.Connect(t, tenant, mode)
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var schema string
				if err := conn.QueryRow(ctx, "select current_schema() where $1::int >= 0", i).Scan(&schema); err != nil {
					loadErrs <- err
					return
				}
				if schema != tenant {
					loadErrs <- fmt.Errorf("load client of %s in schema %q", tenant, schema)
					return
				}
				loadQueries.Add(1)
			}
		}()
	}

	type outcome struct {
		client, round int
		commit        bool
	}
	var mu sync.Mutex
	var outcomes []outcome
	var txWG sync.WaitGroup
	errs := make(chan error, txClients)
	for c := 0; c < txClients; c++ {
		mode := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec}[c%2]
		conn := p.Connect(t, "txone_main", mode)
		txWG.Add(1)
		go func() {
			defer txWG.Done()
			for r := 0; r < rounds; r++ {
				commit, failing := r%3 == 0, r%3 == 2
				if err := oneBackendTx(ctx, conn, c, r, commit, failing); err != nil {
					errs <- fmt.Errorf("client %d (%v) round %d: %w", c, mode, r, err)
					return
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{c, r, commit})
				mu.Unlock()
			}
		}()
	}
	txWG.Wait()
	close(stop)
	loadWG.Wait()
	close(errs)
	close(loadErrs)
	for err := range errs {
		t.Error(err)
	}
	for err := range loadErrs {
		t.Errorf("load: %v", err)
	}
	t.Logf("%d transactions checked; %d load queries ran meanwhile", len(outcomes), loadQueries.Load())
	if len(outcomes) != txClients*rounds {
		t.Fatalf("%d transactions completed, want %d", len(outcomes), txClients*rounds)
	}

	d := direct(t)
	for _, o := range outcomes {
		var steps string
		err := d.QueryRow(ctx, "select coalesce(string_agg(step, ',' order by step), '') from txone_main.txone_rows where client = $1 and round = $2",
			o.client, o.round).Scan(&steps)
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if o.commit {
			want = "first,second,third"
		}
		if steps != want {
			t.Errorf("client %d round %d (commit %v): rows %q, want %q", o.client, o.round, o.commit, steps, want)
		}
	}
	for i := 0; i < loadTenant; i++ {
		var n int
		if err := d.QueryRow(ctx, "select count(*) from "+pgx.Identifier{fmt.Sprintf("txone_load%d", i), "txone_rows"}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("txone_load%d.txone_rows has %d rows written by txone_main's transactions", i, n)
		}
	}
}

// oneBackendTx runs one transaction of several statements, checking that
// each runs on the same backend in the same transaction, and ends it with
// COMMIT or ROLLBACK; failing makes a statement fail first (then ROLLBACK).
func oneBackendTx(ctx context.Context, conn *pgx.Conn, client, round int, commit, failing bool) error {
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return err
	}
	type where struct {
		pid  uint32
		xid  int64
		path string
	}
	var seen []where
	look := func() error {
		var w where
		if err := conn.QueryRow(ctx, "select pg_backend_pid(), txid_current(), current_schema() where $1::int >= 0", round).Scan(&w.pid, &w.xid, &w.path); err != nil {
			return err
		}
		seen = append(seen, w)
		return nil
	}
	for _, step := range []string{"first", "second", "third"} {
		if _, err := conn.Exec(ctx, "insert into txone_rows values ($1, $2, $3)", client, round, step); err != nil {
			return err
		}
		if err := look(); err != nil {
			return err
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from txone_rows where client = $1 and round = $2", client, round).Scan(&n); err != nil {
		return err
	}
	if n != 3 {
		return fmt.Errorf("inside the transaction %d of its 3 rows are visible", n)
	}
	if failing {
		_, err := conn.Exec(ctx, "select 1/($1::int - $1::int)", round)
		if sqlState(err) != "22012" {
			return fmt.Errorf("division by zero: got %v, want SQLSTATE 22012", err)
		}
		// Still on the same backend, in the same failed transaction.
		_, err = conn.Exec(ctx, "select $1::int", round)
		if sqlState(err) != "25P02" {
			return fmt.Errorf("statement after an error in a transaction: got %v, want SQLSTATE 25P02 (in_failed_sql_transaction)", err)
		}
	}
	if err := look(); err != nil && !failing {
		return err
	}
	for _, w := range seen[1:] {
		if w != seen[0] {
			return fmt.Errorf("one transaction ran on several backends or transactions: %+v", seen)
		}
	}
	if seen[0].path != "txone_main" {
		return fmt.Errorf("transaction in schema %q", seen[0].path)
	}
	end := "ROLLBACK"
	if commit {
		end = "COMMIT"
	}
	tag, err := conn.Exec(ctx, end)
	if err != nil {
		return err
	}
	if commit && tag.String() != "COMMIT" {
		return fmt.Errorf("COMMIT answered %q", tag)
	}
	return nil
}

// TestTransactionClientKilled: a client that vanishes inside a transaction
// leaves nothing committed and no transaction open on the backend, and the
// next client (of another tenant, with a pool of one) gets an answer in a
// clean session of its own schema.
func TestTransactionClientKilled(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"txk_a", "txk_b"} {
		createTenant(t, n, "CREATE TABLE txk_rows (v text)", fmt.Sprintf("INSERT INTO txk_rows VALUES ('%s row')", n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := direct(t)

	// waitState polls until a backend whose last statement carries marker
	// is in state (say "idle in transaction"), and returns its pid.
	waitState := func(t *testing.T, marker, state string) uint32 {
		var pid uint32
		eventually(t, 20*time.Second, fmt.Sprintf("a backend %q with %s", state, marker), func() bool {
			err := d.QueryRow(ctx, `select pid from pg_stat_activity where state = $1 and query like '%' || $2 || '%'
				and pid <> pg_backend_pid()`, state, marker).Scan(&pid)
			return err == nil
		})
		return pid
	}

	cases := []struct {
		name string
		// kill starts a client of txk_a, has it insert a row with marker
		// in an open transaction, and kills it.
		kill func(t *testing.T, p *Proxy, marker string)
	}{
		{"pgx idle in transaction", func(t *testing.T, p *Proxy, marker string) {
			c := p.Connect(t, "txk_a", pgx.QueryExecModeSimpleProtocol)
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "INSERT INTO txk_rows VALUES ('"+marker+"')"); err != nil {
				t.Fatal(err)
			}
			waitState(t, marker, "idle in transaction")
			if err := c.PgConn().Conn().Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"pgx extended protocol, failed transaction", func(t *testing.T, p *Proxy, marker string) {
			c := p.Connect(t, "txk_a", pgx.QueryExecModeExec)
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			// The marker is in the statement text too, for pg_stat_activity.
			if _, err := c.Exec(ctx, "INSERT INTO txk_rows VALUES ($1) /* "+marker+" */", marker); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "select 1/0 where $1 <> '' /* "+marker+" */", marker); sqlState(err) != "22012" {
				t.Fatalf("want 22012, got %v", err)
			}
			waitState(t, marker, "idle in transaction (aborted)")
			if err := c.PgConn().Conn().Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"pgx with a query running", func(t *testing.T, p *Proxy, marker string) {
			c := p.Connect(t, "txk_a", pgx.QueryExecModeSimpleProtocol)
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "INSERT INTO txk_rows VALUES ('"+marker+"')"); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := c.Exec(ctx, "select pg_sleep(60) /* "+marker+" */")
				done <- err
			}()
			waitState(t, marker, "active")
			if err := c.PgConn().Conn().Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err == nil {
				t.Fatal("pg_sleep returned without error from a closed connection")
			}
		}},
		{"psql kill -9", func(t *testing.T, p *Proxy, marker string) {
			cmd := exec.CommandContext(ctx, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
				"-h", p.Host, "-p", fmt.Sprint(p.Port), "-U", "app", "-d", "txk_a")
			cmd.Env = cleanEnv()
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			outDone := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(bufio.NewReader(stdout))
				outDone <- string(b)
			}()
			if _, err := io.WriteString(stdin, "BEGIN;\nINSERT INTO txk_rows VALUES ('"+marker+"');\n"); err != nil {
				t.Fatal(err)
			}
			// stdin stays open: psql waits for more, inside the transaction.
			waitState(t, marker, "idle in transaction")
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			stdin.Close()
			out := <-outDone
			if strings.Contains(out, "COMMIT") {
				t.Fatalf("psql committed: %q", out)
			}
			if cmd.ProcessState.ExitCode() != -1 {
				t.Fatalf("psql was not killed: %v, stderr %q", cmd.ProcessState, stderr.String())
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
			marker := "killed " + strings.ReplaceAll(tc.name, " ", "_")
			tc.kill(t, p, marker)

			// No backend is left in the dead client's transaction.
			eventually(t, 20*time.Second, "the dead client's transaction to end", func() bool {
				var n int
				err := d.QueryRow(ctx, `select count(*) from pg_stat_activity where state <> 'idle'
					and query like '%' || $1 || '%' and pid <> pg_backend_pid()`, marker).Scan(&n)
				return err == nil && n == 0
			})

			// The pool of one still serves, promptly, a clean session.
			nextCtx, nextCancel := context.WithTimeout(ctx, 20*time.Second)
			defer nextCancel()
			next := p.Connect(t, "txk_b", pgx.QueryExecModeSimpleProtocol)
			var schema, rows, iso string
			var xidAssigned bool
			err := next.QueryRow(nextCtx, `select current_schema(), (select string_agg(v, ',') from txk_rows),
				txid_current_if_assigned() is not null, current_setting('transaction_isolation')`).Scan(&schema, &rows, &xidAssigned, &iso)
			if err != nil {
				t.Fatalf("next client after the kill: %v", err)
			}
			if schema != "txk_b" || rows != "txk_b row" || xidAssigned || iso != "read committed" {
				t.Fatalf("next client after the kill: schema %q rows %q xid assigned %v isolation %q", schema, rows, xidAssigned, iso)
			}
			if st := next.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("next client's transaction status %q, want I", st)
			}
			var show string
			if err := next.QueryRow(nextCtx, "show transaction_isolation").Scan(&show); err != nil || show != "read committed" {
				t.Fatalf("SHOW transaction_isolation: %q, %v", show, err)
			}

			// Nothing of the dead client's transaction was committed.
			var n int
			if err := d.QueryRow(ctx, "select count(*) from txk_a.txk_rows where v = $1", marker).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("the killed client's INSERT was committed (%d rows)", n)
			}
			// And a client of the same tenant carries on.
			again := p.Connect(t, "txk_a", pgx.QueryExecModeExec)
			if err := again.QueryRow(nextCtx, "select string_agg(v, ',') from txk_rows where $1::int = 1", 1).Scan(&rows); err != nil || rows != "txk_a row" {
				t.Fatalf("client of txk_a after the kill: %q, %v", rows, err)
			}
		})
	}
}
