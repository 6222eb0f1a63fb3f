package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// The session-state tests check that in transaction pooling a client's
// session settings behave as on a server of its own: what it SETs (in any
// protocol) holds for all its later transactions, whichever backend serves
// them, and never shows in another client's; SET LOCAL, rolled-back SETs
// and set_config(…, true) do not persist; RESET and RESET ALL go back to
// the server defaults and the client's startup values; and search_path may
// name only the tenant's own schema, public and --shared-schemas.

// sstVals is what a client's session shows.
type sstVals struct {
	TZ, Timeout, WorkMem, Schema string
}

// sstQuerier is a *pgx.Conn or a pgx.Tx.
type sstQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// sstRead reads the session's values with one query in the given mode.
func sstRead(ctx context.Context, q sstQuerier, mode pgx.QueryExecMode) (sstVals, error) {
	var v sstVals
	err := q.QueryRow(ctx,
		"select current_setting('TimeZone'), current_setting('statement_timeout'), current_setting('work_mem'), current_schema()",
		mode).Scan(&v.TZ, &v.Timeout, &v.WorkMem, &v.Schema)
	return v, err
}

// sstShow reads the values with SHOW, one statement each, in the given mode.
func sstShow(ctx context.Context, q sstQuerier, mode pgx.QueryExecMode) (sstVals, error) {
	var v sstVals
	for _, s := range []struct {
		sql string
		dst *string
	}{
		{"SHOW TimeZone", &v.TZ}, {"SHOW statement_timeout", &v.Timeout},
		{"SHOW work_mem", &v.WorkMem}, {"select current_schema()", &v.Schema},
	} {
		if err := q.QueryRow(ctx, s.sql, mode).Scan(s.dst); err != nil {
			return v, fmt.Errorf("%s: %w", s.sql, err)
		}
	}
	return v, nil
}

var sstModes = []pgx.QueryExecMode{
	pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec,
}

// sstOnce runs transaction number i of a client that must see want: in
// autocommit or an explicit transaction, in one of the exec modes.
func sstOnce(ctx context.Context, conn *pgx.Conn, want sstVals, i int) error {
	mode := sstModes[i%len(sstModes)]
	var got sstVals
	var err error
	if i%2 == 0 {
		got, err = sstRead(ctx, conn, mode)
	} else {
		var tx pgx.Tx
		tx, err = conn.Begin(ctx)
		if err != nil {
			return err
		}
		got, err = sstShow(ctx, tx, mode)
		if err != nil {
			tx.Rollback(ctx)
			return err
		}
		err = tx.Commit(ctx)
	}
	if err != nil {
		return fmt.Errorf("transaction %d (%v): %w", i, mode, err)
	}
	if got != want {
		return fmt.Errorf("transaction %d (%v): session shows %+v, want %+v", i, mode, got, want)
	}
	return nil
}

// sstCheck runs n transactions of conn, each of which must see want.
func sstCheck(t *testing.T, ctx context.Context, conn *pgx.Conn, want sstVals, n int, what string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := sstOnce(ctx, conn, want, i); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// sstConnect connects with startup parameters.
func sstConnect(t *testing.T, p *Proxy, tenant string, mode pgx.QueryExecMode, params map[string]string) *pgx.Conn {
	t.Helper()
	conn, err := fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
		c.DefaultQueryExecMode = mode
		for k, v := range params {
			c.RuntimeParams[k] = v
		}
	})
	if err != nil {
		t.Fatalf("connect as %s: %v", tenant, err)
	}
	return conn
}

// sstExec runs a statement in the given mode; unlike pgx's Exec without
// arguments, which always uses the simple protocol, an extended mode sends
// Parse/Bind/Execute (a named statement in CacheStatement mode).
func sstExec(ctx context.Context, conn *pgx.Conn, sql string, mode pgx.QueryExecMode) error {
	rows, err := conn.Query(ctx, sql, mode)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// sstMust runs statements in mode or fails the test.
func sstMust(t *testing.T, ctx context.Context, conn *pgx.Conn, mode pgx.QueryExecMode, sqls ...string) {
	t.Helper()
	for _, sql := range sqls {
		if err := sstExec(ctx, conn, sql, mode); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// sstNoise runs a client of another tenant with settings of its own in the
// background until the returned stop is called, so that backends change
// hands and carry a different state between the checked client's
// transactions; stop reports the client's own mismatches.
func sstNoise(t *testing.T, p *Proxy, tenant string) (stop func()) {
	t.Helper()
	conn := sstConnect(t, p, tenant, pgx.QueryExecModeExec, map[string]string{"TimeZone": "Pacific/Auckland"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET work_mem = '1MB'", "SET statement_timeout = '2s'")
	want := sstVals{TZ: "Pacific/Auckland", Timeout: "2s", WorkMem: "1MB", Schema: tenant}
	done := make(chan error, 1)
	quit := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			// At least 20 transactions, so that some interleave with the
			// checked client's even when its checks are quick.
			if i >= 20 {
				select {
				case <-quit:
					done <- nil
					return
				default:
				}
			}
			if err := sstOnce(ctx, conn, want, i); err != nil {
				done <- fmt.Errorf("noise client %s: %w", tenant, err)
				return
			}
		}
	}()
	return func() {
		t.Helper()
		close(quit)
		err := <-done
		cancel()
		if err != nil {
			t.Error(err)
		}
	}
}

// TestSessionState: the tenants sst_a, sst_b and sst_c share a pool of 2.
func TestSessionState(t *testing.T) {
	t.Parallel()
	const a, b, c = "sst_a", "sst_b", "sst_c"
	for _, tenant := range []string{a, b, c} {
		fltTenant(t, tenant, "CREATE TABLE sst_where (v text NOT NULL)",
			fmt.Sprintf("INSERT INTO sst_where VALUES ('%s')", tenant))
	}
	ctx := prpCtx(t, 10*time.Minute)
	d := direct(t)
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS public.sst_where (v text NOT NULL)",
		"TRUNCATE public.sst_where",
		"INSERT INTO public.sst_where VALUES ('public')",
		"CREATE SCHEMA IF NOT EXISTS sst_shared",
		"CREATE TABLE IF NOT EXISTS sst_shared.sst_common (v text NOT NULL)",
		"TRUNCATE sst_shared.sst_common",
		"INSERT INTO sst_shared.sst_common VALUES ('shared')",
	} {
		if _, err := d.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The server's defaults, as the pool's connections log in.
	var def sstVals
	if err := d.QueryRow(ctx, "select current_setting('TimeZone'), current_setting('statement_timeout'), current_setting('work_mem')").
		Scan(&def.TZ, &def.Timeout, &def.WorkMem); err != nil {
		t.Fatal(err)
	}
	if def.TZ == "Asia/Tokyo" || def.Timeout != "0" || def.WorkMem == "8MB" {
		t.Fatalf("unexpected server defaults %+v", def)
	}
	with := func(v sstVals, f func(*sstVals)) sstVals { f(&v); return v }
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2; c.LogLevel = "info" })

	t.Run("concurrent clients keep their own settings", func(t *testing.T) {
		x := sstConnect(t, p, a, pgx.QueryExecModeCacheStatement, nil)
		// One SET as a named prepared statement, one in the simple protocol.
		sstMust(t, ctx, x, pgx.QueryExecModeCacheStatement, "SET TimeZone TO 'Asia/Tokyo'")
		sstMust(t, ctx, x, pgx.QueryExecModeSimpleProtocol, "SET statement_timeout = '7s'")
		wantX := sstVals{TZ: "Asia/Tokyo", Timeout: "7s", WorkMem: def.WorkMem, Schema: a}

		type other struct {
			tenant string
			mode   pgx.QueryExecMode
			params map[string]string
			sets   []string
			setIn  pgx.QueryExecMode
			want   sstVals
		}
		utc := map[string]string{"TimeZone": "UTC"}
		others := []other{
			{b, pgx.QueryExecModeExec, utc, nil, pgx.QueryExecModeSimpleProtocol,
				sstVals{"UTC", def.Timeout, def.WorkMem, b}},
			{b, pgx.QueryExecModeCacheStatement, utc, []string{"SET statement_timeout='3s'"}, pgx.QueryExecModeSimpleProtocol,
				sstVals{"UTC", "3s", def.WorkMem, b}},
			{b, pgx.QueryExecModeSimpleProtocol, nil, []string{"SET work_mem='8MB'"}, pgx.QueryExecModeExec,
				sstVals{def.TZ, def.Timeout, "8MB", b}},
			{c, pgx.QueryExecModeExec, map[string]string{"TimeZone": "America/Lima"},
				[]string{"SET statement_timeout='3s'", "SET work_mem='8MB'"}, pgx.QueryExecModeCacheStatement,
				sstVals{"America/Lima", "3s", "8MB", c}},
			{c, pgx.QueryExecModeCacheStatement, utc, []string{"SET work_mem='8MB'"}, pgx.QueryExecModeCacheStatement,
				sstVals{"UTC", def.Timeout, "8MB", c}},
			{c, pgx.QueryExecModeSimpleProtocol, nil, []string{"SET TimeZone TO 'Europe/Berlin'"}, pgx.QueryExecModeSimpleProtocol,
				sstVals{"Europe/Berlin", def.Timeout, def.WorkMem, c}},
		}
		conns := make([]*pgx.Conn, len(others))
		for i, o := range others {
			conns[i] = sstConnect(t, p, o.tenant, o.mode, o.params)
			sstMust(t, ctx, conns[i], o.setIn, o.sets...)
		}

		var wg sync.WaitGroup
		errs := make(chan error, len(others)+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := sstOnce(ctx, x, wantX, i); err != nil {
					errs <- fmt.Errorf("client X (%s): %w", a, err)
					return
				}
			}
		}()
		for i, o := range others {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 100; j++ {
					if err := sstOnce(ctx, conns[i], o.want, j+i); err != nil {
						errs <- fmt.Errorf("client %d (%s): %w", i, o.tenant, err)
						return
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

	t.Run("SET LOCAL does not persist", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, nil)
		base := sstVals{def.TZ, def.Timeout, def.WorkMem, a}
		for _, mode := range sstModes {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, sql := range []string{"SET LOCAL statement_timeout = '5s'", "select set_config('work_mem', '5MB', true)"} {
				if _, err := tx.Exec(ctx, sql, mode); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			got, err := sstRead(ctx, tx, mode)
			if err != nil {
				t.Fatal(err)
			}
			if want := with(base, func(v *sstVals) { v.Timeout, v.WorkMem = "5s", "5MB" }); got != want {
				t.Fatalf("inside the transaction (%v): %+v, want %+v", mode, got, want)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			sstCheck(t, ctx, conn, base, 4, fmt.Sprintf("after SET LOCAL (%v) committed", mode))
		}
	})

	t.Run("SET in a transaction persists only if it commits", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, nil)
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET work_mem = '6MB'")
		six := sstVals{def.TZ, def.Timeout, "6MB", a}
		sstCheck(t, ctx, conn, six, 3, "after an autocommit SET")

		// Rolled back.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET work_mem = '9MB'"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET TimeZone TO 'Asia/Tokyo'", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		if got, err := sstRead(ctx, tx, pgx.QueryExecModeExec); err != nil || got.WorkMem != "9MB" || got.TZ != "Asia/Tokyo" {
			t.Fatalf("inside the transaction: %+v, %v", got, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		sstCheck(t, ctx, conn, six, 4, "after SET in a rolled-back transaction")

		// Failed, then COMMIT (which rolls back).
		for _, mode := range sstModes {
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := sstExec(ctx, conn, "SET work_mem = '9MB'", mode); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "select 1/0", mode); sqlState(err) != "22012" {
				t.Fatalf("select 1/0: %v", err)
			}
			// The server answers COMMIT of a failed transaction with
			// ROLLBACK, which pgx reports as ErrTxCommitRollback.
			if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
				t.Fatalf("COMMIT of a failed transaction: want ROLLBACK, got %v", err)
			}
			sstCheck(t, ctx, conn, six, 3, fmt.Sprintf("after SET in a failed transaction (%v)", mode))
		}

		// Committed.
		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET work_mem = '10MB'"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		sstCheck(t, ctx, conn, with(six, func(v *sstVals) { v.WorkMem = "10MB" }), 6, "after SET in a committed transaction")

		// Committed, in the extended protocol as a named statement.
		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := sstExec(ctx, conn, "SET work_mem = '11MB'", pgx.QueryExecModeCacheStatement); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		sstCheck(t, ctx, conn, with(six, func(v *sstVals) { v.WorkMem = "11MB" }), 6, "after a prepared SET in a committed transaction")
	})

	t.Run("RESET and RESET ALL", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, map[string]string{"TimeZone": "America/Lima", "application_name": "sst_app"})
		startup := sstVals{"America/Lima", def.Timeout, def.WorkMem, a}
		sstCheck(t, ctx, conn, startup, 3, "startup values")

		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET statement_timeout = '4s'")
		sstCheck(t, ctx, conn, with(startup, func(v *sstVals) { v.Timeout = "4s" }), 3, "after SET statement_timeout")
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "RESET statement_timeout")
		sstCheck(t, ctx, conn, startup, 4, "after RESET statement_timeout")

		sstMust(t, ctx, conn, pgx.QueryExecModeExec, "SET statement_timeout = '4s'")
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol,
			"SET TimeZone TO 'Asia/Tokyo'", "SET work_mem = '12MB'", "SET application_name = 'sst_changed'")
		sstCheck(t, ctx, conn, sstVals{"Asia/Tokyo", "4s", "12MB", a}, 3, "after SETs")
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "RESET ALL")
		sstCheck(t, ctx, conn, startup, 4, "after RESET ALL")
		var app string
		if err := conn.QueryRow(ctx, "select current_setting('application_name')").Scan(&app); err != nil || app != "sst_app" {
			t.Fatalf("application_name after RESET ALL: %q, %v; want the startup value sst_app", app, err)
		}

		// RESET ALL as a prepared statement.
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET TimeZone TO 'Asia/Tokyo'")
		sstMust(t, ctx, conn, pgx.QueryExecModeCacheStatement, "RESET ALL")
		sstCheck(t, ctx, conn, startup, 4, "after a prepared RESET ALL")
	})

	t.Run("set_config", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, nil)
		base := sstVals{def.TZ, def.Timeout, def.WorkMem, a}
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "select set_config('work_mem', '16MB', false)")
		sixteen := with(base, func(v *sstVals) { v.WorkMem = "16MB" })
		sstCheck(t, ctx, conn, sixteen, 4, "after set_config(work_mem, 16MB, false)")
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "select set_config('work_mem', '32MB', true)")
		sstCheck(t, ctx, conn, sixteen, 4, "after set_config(work_mem, 32MB, true) in autocommit")
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "select set_config('work_mem', '32MB', true)", pgx.QueryExecModeCacheStatement); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		sstCheck(t, ctx, conn, sixteen, 4, "after set_config(work_mem, 32MB, true) in a transaction")

		// The value as a bind parameter, in both extended modes.
		for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheStatement} {
			v := fmt.Sprintf("%dMB", 20+i)
			var got string
			if err := conn.QueryRow(ctx, "select set_config('work_mem', $1, false)", mode, v).Scan(&got); err != nil || got != v {
				t.Fatalf("set_config(work_mem, $1 = %s, false) (%v): %q, %v", v, mode, got, err)
			}
			sstCheck(t, ctx, conn, with(base, func(s *sstVals) { s.WorkMem = v }), 4, "after set_config(work_mem, $1, false) = "+v)
		}
	})

	t.Run("search_path outside the tenant is refused", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, nil)
		base := sstVals{def.TZ, def.Timeout, def.WorkMem, a}
		for _, tc := range []struct {
			sql  string
			mode pgx.QueryExecMode
		}{
			{"SET search_path TO sst_b", pgx.QueryExecModeSimpleProtocol},
			{"SET search_path TO sst_b", pgx.QueryExecModeExec},
			{"SET search_path TO sst_b", pgx.QueryExecModeCacheStatement},
			{"SET search_path = 'sst_b','public'", pgx.QueryExecModeSimpleProtocol},
			{"SET search_path TO sst_a, sst_c", pgx.QueryExecModeSimpleProtocol},
			{"SET search_path TO sst_a, sst_shared, public", pgx.QueryExecModeSimpleProtocol},
			{"select set_config('search_path', 'sst_b', false)", pgx.QueryExecModeSimpleProtocol},
			{"SET SESSION search_path TO \"sst_b\"", pgx.QueryExecModeSimpleProtocol},
		} {
			err := sstExec(ctx, conn, tc.sql, tc.mode)
			if sqlState(err) != "42501" {
				// Not fatal: the other forms are still worth checking.
				t.Errorf("%s (%v): want 42501 insufficient_privilege, got %v", tc.sql, tc.mode, err)
			}
			sstCheck(t, ctx, conn, base, 3, "after the refused "+tc.sql)
			var v string
			if err := conn.QueryRow(ctx, "select v from sst_where").Scan(&v); err != nil || v != a {
				t.Fatalf("after the refused %s: sst_where says %q, %v; want %s", tc.sql, v, err, a)
			}
		}
		// Refused inside a transaction: the transaction is aborted, as by
		// any error, and the search_path is the tenant's after it.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET search_path TO sst_b"); sqlState(err) != "42501" {
			t.Fatalf("SET search_path TO sst_b in a transaction: want 42501, got %v", err)
		}
		tx.Rollback(ctx)
		sstCheck(t, ctx, conn, base, 3, "after the refused SET in a transaction")
	})

	t.Run("search_path within the tenant is allowed", func(t *testing.T) {
		defer sstNoise(t, p, b)()
		conn := sstConnect(t, p, a, pgx.QueryExecModeExec, nil)
		base := sstVals{def.TZ, def.Timeout, def.WorkMem, a}
		where := func(want string) {
			t.Helper()
			for i, mode := range sstModes {
				var v string
				if err := conn.QueryRow(ctx, "select v from sst_where", mode).Scan(&v); err != nil || v != want {
					t.Fatalf("unqualified sst_where (%d, %v): %q, %v; want %s's", i, mode, v, err, want)
				}
			}
		}
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET search_path TO sst_a, public")
		sstCheck(t, ctx, conn, base, 3, "after SET search_path TO sst_a, public")
		where(a)

		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET search_path TO public")
		sstCheck(t, ctx, conn, with(base, func(v *sstVals) { v.Schema = "public" }), 4, "after SET search_path TO public")
		where("public")

		sstMust(t, ctx, conn, pgx.QueryExecModeExec, `SET search_path TO "sst_a"`)
		sstCheck(t, ctx, conn, base, 3, "after SET search_path TO sst_a")
		where(a)

		// django-tenants sets it this way at the start of each request.
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET search_path TO public", "SET search_path = 'sst_a','public'")
		sstCheck(t, ctx, conn, base, 4, "after SET search_path = 'sst_a','public'")
		where(a)
		var sp string
		if err := conn.QueryRow(ctx, "select array_to_string(current_schemas(false), ',')").Scan(&sp); err != nil || sp != "sst_a,public" {
			t.Fatalf("current_schemas after SET search_path = 'sst_a','public': %q, %v", sp, err)
		}
	})

	t.Run("shared schemas", func(t *testing.T) {
		ps := startProxy(t, func(c *config.Config) {
			c.PoolSize = 2
			c.LogLevel = "info"
			c.SharedSchemas = []string{"sst_shared"}
		})
		defer sstNoise(t, ps, b)()
		conn := sstConnect(t, ps, a, pgx.QueryExecModeExec, nil)
		base := sstVals{def.TZ, def.Timeout, def.WorkMem, a}
		sstMust(t, ctx, conn, pgx.QueryExecModeSimpleProtocol, "SET search_path TO sst_a, sst_shared, public")
		sstCheck(t, ctx, conn, base, 4, "after SET search_path TO sst_a, sst_shared, public")
		for i, mode := range sstModes {
			var v, w string
			if err := conn.QueryRow(ctx, "select (select v from sst_common), (select v from sst_where)", mode).Scan(&v, &w); err != nil || v != "shared" || w != a {
				t.Fatalf("unqualified sst_common, sst_where (%d, %v): %q, %q, %v", i, mode, v, w, err)
			}
		}
		if err := sstExec(ctx, conn, "SET search_path TO sst_a, sst_b", pgx.QueryExecModeSimpleProtocol); sqlState(err) != "42501" {
			t.Fatalf("SET search_path TO sst_a, sst_b with shared schemas: want 42501, got %v", err)
		}
		sstCheck(t, ctx, conn, base, 3, "after the refused SET")
	})
}
