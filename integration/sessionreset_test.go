package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
)

// Issue 17: session state a client can trust. Each test runs the same
// sequence through pgtenant (pool of one backend, so every step is
// deterministic) and directly against PostgreSQL on a connection set up as
// pgtenant promises a tenant's client: its search_path the tenant's, its
// startup parameters its own. The two must answer alike.

// rstTarget is where a client of tenant connects with startup params.
type rstTarget struct {
	name    string
	connect func(t *testing.T, tenant string, mode pgx.QueryExecMode, params map[string]string) *pgx.Conn
}

func rstTargets(t *testing.T, p *Proxy) []rstTarget {
	return []rstTarget{
		{"pgtenant", func(t *testing.T, tenant string, mode pgx.QueryExecMode, params map[string]string) *pgx.Conn {
			return sstConnect(t, p, tenant, mode, params)
		}},
		{"direct", func(t *testing.T, tenant string, mode pgx.QueryExecMode, params map[string]string) *pgx.Conn {
			t.Helper()
			cfg, err := pgx.ParseConfig(backendDSN())
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			cfg.RuntimeParams["search_path"] = pgx.Identifier{tenant}.Sanitize() + ", public"
			for k, v := range params {
				cfg.RuntimeParams[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			return conn
		}},
	}
}

func rstCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rstState is what a client sees of its session.
func rstState(t *testing.T, ctx context.Context, q sstQuerier, mode pgx.QueryExecMode) string {
	t.Helper()
	var schema, app, workMem string
	var own string
	err := q.QueryRow(ctx, "select coalesce(current_schema(), '(none)'), current_setting('application_name'), current_setting('work_mem'), (select v from rst_t)", mode).
		Scan(&schema, &app, &workMem, &own)
	if err != nil {
		return "error " + sqlState(err)
	}
	return fmt.Sprintf("schema=%s app=%s work_mem=%s rst_t=%s", schema, app, workMem, own)
}

// Items 1 and 4: RESET ALL, RESET x and SET x TO DEFAULT return to the
// client's defaults (its tenant's search_path, the values it connected
// with), in the same batch and afterwards, in every pgx query mode,
// including statements pgx has cached.
func TestSessionResetGivesClientDefaults(t *testing.T) {
	t.Parallel()
	const tenant = "rst_defaults"
	createTenant(t, tenant, "CREATE TABLE rst_t (v text)", "INSERT INTO rst_t VALUES ('own row')")
	rstOther(t)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rstCtx(t)
	params := map[string]string{"application_name": "rst_app"}
	resets := []string{
		"RESET ALL", "RESET search_path", "SET search_path TO DEFAULT", "SET search_path = DEFAULT",
		"RESET application_name", "SET application_name TO DEFAULT",
		"select set_config('search_path', NULL, false)", "DISCARD ALL",
	}
	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec}
	for _, mode := range modes {
		for _, reset := range resets {
			got := map[string][]string{}
			for _, tg := range rstTargets(t, p) {
				conn := tg.connect(t, tenant, mode, params)
				var seen []string
				// Twice on one connection: the second time the statements
				// are pgx's cached ones, bound without a new Parse.
				for round := 0; round < 2; round++ {
					for _, q := range []string{"SET work_mem = '3MB'", "SET application_name = 'changed'", "SET search_path TO public"} {
						if err := sstExec(ctx, conn, q, mode); err != nil {
							// DISCARD ALL drops pgx's cached statements,
							// directly as through pgtenant.
							seen = append(seen, q+": error "+sqlState(err))
						}
					}
					seen = append(seen, rstState(t, ctx, conn, mode))
					if err := sstExec(ctx, conn, reset, mode); err != nil {
						seen = append(seen, "reset error "+sqlState(err))
					}
					seen = append(seen, rstState(t, ctx, conn, mode))
					// In one batch with the reset: the statement behind it
					// already sees the defaults.
					b := &pgx.Batch{}
					b.Queue("SET search_path TO public")
					b.Queue(reset)
					b.Queue("select coalesce(current_schema(), '(none)') || ' ' || current_setting('application_name')")
					br := conn.SendBatch(ctx, b)
					var inBatch string
					_, err1 := br.Exec()
					_, err2 := br.Exec()
					err3 := br.QueryRow().Scan(&inBatch)
					if err := br.Close(); err != nil || err1 != nil || err2 != nil || err3 != nil {
						inBatch = fmt.Sprintf("batch errors %v %v %v %v", err1, err2, err3, err)
					}
					seen = append(seen, "batch: "+inBatch)
					// Another client of another tenant takes the backend in
					// between, so the next check runs on a re-pinned one.
					other := p.Connect(t, "rst_other", pgx.QueryExecModeSimpleProtocol)
					if tg.name == "pgtenant" {
						sstMust(t, ctx, other, pgx.QueryExecModeSimpleProtocol, "SET application_name = 'other'")
					}
					seen = append(seen, rstState(t, ctx, conn, mode))
				}
				got[tg.name] = seen
			}
			if fmt.Sprint(got["pgtenant"]) != fmt.Sprint(got["direct"]) {
				t.Errorf("%v, %q:\n pgtenant %q\n direct   %q", mode, reset, got["pgtenant"], got["direct"])
			}
		}
	}
}

// Item 2: a schema named after the pool's role is never reached through
// "$user" by a client that resets its search_path.
func TestSessionResetNeverReachesUserSchema(t *testing.T) {
	t.Parallel()
	const tenant = "rst_user"
	createTenant(t, tenant, "CREATE TABLE rst_leak (v text)", "INSERT INTO rst_leak VALUES ('own row')")
	ctx := rstCtx(t)
	d := direct(t)
	var role string
	if err := d.QueryRow(ctx, "select current_user").Scan(&role); err != nil {
		t.Fatal(err)
	}
	// The schema "$user" names for the pool's role: made by hand, as
	// tenant create refuses it.
	schema := pgx.Identifier{role}.Sanitize()
	if _, err := d.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema+"; CREATE TABLE IF NOT EXISTS "+schema+
		".rst_leak (v text); TRUNCATE "+schema+".rst_leak; INSERT INTO "+schema+".rst_leak VALUES ('LEAKED')"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = d.Exec(context.Background(), "DROP TABLE IF EXISTS "+schema+".rst_leak") })
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		for _, reset := range []string{"RESET ALL", "RESET search_path", "SET search_path TO DEFAULT"} {
			conn := p.Connect(t, tenant, mode)
			sstMust(t, ctx, conn, mode, reset)
			var v string
			if err := conn.QueryRow(ctx, "select v from rst_leak", mode).Scan(&v); err != nil || v != "own row" {
				t.Errorf("%v, after %s: rst_leak gave %q, %v; want the tenant's own row", mode, reset, v, err)
			}
			// Another client of the tenant, after this one's reset, on
			// the same backend.
			next := p.Connect(t, tenant, mode)
			if err := next.QueryRow(ctx, "select v from rst_leak", mode).Scan(&v); err != nil || v != "own row" {
				t.Errorf("%v, the next client after %s: rst_leak gave %q, %v", mode, reset, v, err)
			}
		}
	}
}

// Item 3: a setting changed by a statement the client prepared earlier and
// now only binds marks the backend for a reset: the next client with the
// same tenant and settings does not inherit it.
func TestSessionCachedStatementChangeIsNoted(t *testing.T) {
	t.Parallel()
	const tenant = "rst_cached"
	createTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rstCtx(t)
	params := map[string]string{"application_name": "rst_same"}
	for _, tc := range []struct{ name, keep, evil string }{
		{"application_name", "rst_same", "rst_evil"},
		{"work_mem", "4MB", "7MB"},
	} {
		stmt := "select set_config('" + tc.name + "', $1, false)"
		c1 := sstConnect(t, p, tenant, pgx.QueryExecModeCacheStatement, params)
		// The first run is parsed (and scanned); the second only bound.
		for _, v := range []string{tc.keep, tc.evil} {
			rows, err := c1.Query(ctx, stmt, v)
			if err == nil {
				rows.Close()
				err = rows.Err()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		c2 := sstConnect(t, p, tenant, pgx.QueryExecModeSimpleProtocol, params)
		var app, workMem string
		if err := c2.QueryRow(ctx, "select current_setting('application_name'), current_setting('work_mem')").Scan(&app, &workMem); err != nil {
			t.Fatal(err)
		}
		if app != "rst_same" || workMem != "4MB" {
			t.Errorf("%s: the next client with the same settings sees application_name %q, work_mem %q; want rst_same, 4MB", stmt, app, workMem)
		}
		// And the client that changed it keeps its own value.
		var mine string
		if err := c1.QueryRow(ctx, "select current_setting('"+tc.name+"')", pgx.QueryExecModeSimpleProtocol).Scan(&mine); err != nil || mine != tc.evil {
			t.Errorf("%s: the changing client sees %q, %v; want %q", stmt, mine, err, tc.evil)
		}
	}
}

// Item 5: each Sync-delimited segment of a pipeline settles its own
// setting changes: a SET in a segment after a failed one is kept, and a SET
// in a failed segment is not.
func TestSessionPipelineSegments(t *testing.T) {
	t.Parallel()
	const tenant = "rst_pipe"
	createTenant(t, tenant, "CREATE TABLE rst_t (v text)", "INSERT INTO rst_t VALUES ('own row')")
	rstOther(t)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rstCtx(t)
	type seg struct {
		sqls []string
	}
	cases := []struct {
		name string
		segs []seg
	}{
		{"failed segment, then a SET", []seg{{[]string{"select 1/0"}}, {[]string{"SET work_mem = '7MB'"}}}},
		{"SET in a failed segment", []seg{{[]string{"SET work_mem = '6MB'", "select 1/0"}}, {[]string{"select 1"}}}},
		{"SET, then a failed segment", []seg{{[]string{"SET work_mem = '5MB'"}}, {[]string{"select 1/0"}}}},
		{"SET never run after an error", []seg{{[]string{"select 1/0", "SET work_mem = '9MB'"}}, {[]string{"select 2"}}}},
		{"RESET in a later segment", []seg{{[]string{"SET work_mem = '5MB'"}}, {[]string{"RESET work_mem"}}, {[]string{"select 3"}}}},
	}
	for _, tc := range cases {
		got := map[string]string{}
		for _, tg := range rstTargets(t, p) {
			conn := tg.connect(t, tenant, pgx.QueryExecModeExec, map[string]string{"application_name": "rst_pipe"})
			pl := conn.PgConn().StartPipeline(ctx)
			for _, sg := range tc.segs {
				for _, q := range sg.sqls {
					pl.SendQueryParams(q, nil, nil, nil, nil)
				}
				if err := pl.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			var outcome []string
			for range tc.segs {
				for {
					res, err := pl.GetResults()
					if err != nil {
						outcome = append(outcome, "error "+sqlState(err))
						continue
					}
					if _, ok := res.(*pgconn.PipelineSync); ok {
						break
					}
					if rr, ok := res.(*pgconn.ResultReader); ok {
						_, err := rr.Close()
						if err != nil {
							outcome = append(outcome, "error "+sqlState(err))
						} else {
							outcome = append(outcome, "ok")
						}
					}
				}
			}
			if err := pl.Close(); err != nil {
				t.Fatalf("%s: pipeline close: %v", tc.name, err)
			}
			if tg.name == "pgtenant" {
				// The backend serves another tenant in between.
				sstMust(t, ctx, p.Connect(t, "rst_other", pgx.QueryExecModeSimpleProtocol), pgx.QueryExecModeSimpleProtocol, "SET work_mem = '1MB'")
			}
			got[tg.name] = fmt.Sprint(outcome, " ", rstState(t, ctx, conn, pgx.QueryExecModeSimpleProtocol))
		}
		if got["pgtenant"] != got["direct"] {
			t.Errorf("%s:\n pgtenant %s\n direct   %s", tc.name, got["pgtenant"], got["direct"])
		}
	}
}

// rstOther creates, once, the tenant that takes the backend between steps.
func rstOther(t *testing.T) {
	t.Helper()
	rstOtherOnce.Do(func() { createTenant(t, "rst_other") })
}

var rstOtherOnce sync.Once
