package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// The parameter tests check that run-time parameters a client sends at
// startup (application_name, TimeZone, DateStyle, extra_float_digits,
// client_encoding, options) hold for every statement it runs, in both pool
// modes, while clients with other settings share the same few backends;
// and that parameters pgtenant owns or the server rejects are refused at
// connect.

var prmModes = []config.PoolMode{config.PoolTransaction, config.PoolSession}

// prmProfile is one client's startup parameters and what it must see.
type prmProfile struct {
	app, timeZone, dateStyle, efd, encoding, options string
	// What the client must see.
	statementTimeout string // SHOW statement_timeout
	hour             string // to_char(2024-01-01 12:00 UTC, 'HH24') in timeZone
	date             string // date '2024-03-05'::text in dateStyle
	third            string // (1.0/3)::float8::text with efd
}

var prmProfiles = []prmProfile{
	{
		app: "prm_ny", timeZone: "America/New_York", dateStyle: "SQL, DMY", efd: "1", encoding: "UTF8",
		options: "-c statement_timeout=123", statementTimeout: "123ms",
		hour: "07", date: "05/03/2024", third: "0.3333333333333333",
	},
	{
		app: "prm_tokyo", timeZone: "Asia/Tokyo", dateStyle: "German, DMY", efd: "0", encoding: "LATIN1",
		options: "", statementTimeout: "0",
		hour: "21", date: "05.03.2024", third: "0.333333333333333",
	},
	{
		app: "prm_kolkata", timeZone: "Asia/Kolkata", dateStyle: "ISO, MDY", efd: "-3", encoding: "UTF8",
		options: `-c statement_timeout=5min --lock-timeout=2s`, statementTimeout: "5min",
		hour: "17", date: "2024-03-05", third: "0.333333333333",
	},
	{
		app: "prm_utc", timeZone: "UTC", dateStyle: "Postgres, MDY", efd: "2", encoding: "WIN1252",
		options: "", statementTimeout: "0",
		hour: "12", date: "03-05-2024", third: "0.3333333333333333",
	},
}

func (pr prmProfile) runtimeParams() map[string]string {
	m := map[string]string{
		"application_name":   pr.app,
		"TimeZone":           pr.timeZone,
		"DateStyle":          pr.dateStyle,
		"extra_float_digits": pr.efd,
		"client_encoding":    pr.encoding,
	}
	if pr.options != "" {
		m["options"] = pr.options
	}
	return m
}

// prmConnect connects with pr's startup parameters.
func prmConnect(t testing.TB, p *Proxy, tenant string, pr prmProfile) (*pgx.Conn, error) {
	return fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
		// pgx refuses the simple protocol unless client_encoding is UTF8;
		// the extended protocol with unnamed statements works with any.
		c.DefaultQueryExecMode = pgx.QueryExecModeExec
		for k, v := range pr.runtimeParams() {
			c.RuntimeParams[k] = v
		}
	})
}

// prmCheck runs the profile's checks once on conn; it returns a
// description of the first mismatch, or "".
func prmCheck(ctx context.Context, conn *pgx.Conn, tenant string, pr prmProfile, inTx bool) (string, error) {
	q := `select current_setting('application_name'), current_setting('TimeZone'),
		current_setting('DateStyle'), current_setting('extra_float_digits'),
		current_setting('client_encoding'), current_setting('statement_timeout'),
		to_char(timestamptz '2024-01-01 12:00:00+00', 'HH24'), date '2024-03-05'::text,
		(1.0/3)::float8::text, current_schema()`
	var got [10]string
	scan := func(row pgx.Row) error {
		return row.Scan(&got[0], &got[1], &got[2], &got[3], &got[4], &got[5], &got[6], &got[7], &got[8], &got[9])
	}
	var shows [3]string
	if inTx {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return "", err
		}
		defer tx.Rollback(ctx)
		if err := scan(tx.QueryRow(ctx, q)); err != nil {
			return "", err
		}
		for i, name := range []string{"TimeZone", "DateStyle", "statement_timeout"} {
			if err := tx.QueryRow(ctx, "SHOW "+name).Scan(&shows[i]); err != nil {
				return "", err
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return "", err
		}
	} else {
		if err := scan(conn.QueryRow(ctx, q)); err != nil {
			return "", err
		}
		for i, name := range []string{"TimeZone", "DateStyle", "statement_timeout"} {
			if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&shows[i]); err != nil {
				return "", err
			}
		}
	}
	want := [10]string{pr.app, pr.timeZone, pr.dateStyle, pr.efd, pr.encoding, pr.statementTimeout,
		pr.hour, pr.date, pr.third, tenant}
	if got != want {
		return fmt.Sprintf("got %q, want %q", got, want), nil
	}
	if wantShows := [3]string{pr.timeZone, pr.dateStyle, pr.statementTimeout}; shows != wantShows {
		return fmt.Sprintf("SHOW: got %q, want %q", shows, wantShows), nil
	}
	return "", nil
}

func TestParamsStartupHonoured(t *testing.T) {
	t.Parallel()
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tenant := "prm_honour_" + string(mode)[:4]
			fltTenant(t, tenant)
			p := startProxy(t, func(c *config.Config) {
				c.PoolMode = mode
				c.PoolSize = 2
				c.QueryWaitTimeout = 30 * time.Second
			})

			// Four clients, two backends: in transaction mode they take
			// turns on the backends all the time; in session mode two wait
			// for two to leave, and get backends someone else used.
			const rounds = 30
			var wg sync.WaitGroup
			errs := make(chan string, len(prmProfiles))
			for _, pr := range prmProfiles {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := prmConnect(t, p, tenant, pr)
					if err != nil {
						errs <- fmt.Sprintf("%s: connect: %v", pr.app, err)
						return
					}
					defer conn.Close(context.Background())
					ps := conn.PgConn()
					for name, want := range map[string]string{
						"application_name": pr.app, "TimeZone": pr.timeZone,
						"DateStyle": pr.dateStyle, "client_encoding": pr.encoding,
					} {
						if got := ps.ParameterStatus(name); got != want {
							errs <- fmt.Sprintf("%s: ParameterStatus %s = %q, want %q", pr.app, name, got, want)
							return
						}
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					for i := 0; i < rounds; i++ {
						bad, err := prmCheck(ctx, conn, tenant, pr, i%2 == 0)
						if err != nil {
							errs <- fmt.Sprintf("%s, round %d: %v", pr.app, i, err)
							return
						}
						if bad != "" {
							errs <- fmt.Sprintf("%s, round %d: %s", pr.app, i, bad)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
}

func TestParamsStatementTimeoutOption(t *testing.T) {
	t.Parallel()
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tenant := "prm_opts_" + string(mode)[:4]
			fltTenant(t, tenant)
			p := startProxy(t, func(c *config.Config) { c.PoolMode = mode; c.PoolSize = 1 })
			conn, err := fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
				c.RuntimeParams["options"] = "-c statement_timeout=123"
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				var v string
				if err := conn.QueryRow(fltCtx(t), "SHOW statement_timeout").Scan(&v); err != nil || v != "123ms" {
					t.Fatalf("SHOW statement_timeout: %q, %v; want 123ms", v, err)
				}
				// And it is in force.
				_, err := conn.Exec(fltCtx(t), "select pg_sleep(5)")
				pe := fltPgError(t, err, "pg_sleep(5) under statement_timeout=123ms")
				if pe.Code != "57014" || !strings.Contains(pe.Message, "statement timeout") {
					t.Fatalf("pg_sleep(5): %s %q, want 57014 statement timeout", pe.Code, pe.Message)
				}
			}
			fltCheckSchema(t, conn, tenant)
		})
	}
}

func TestParamsOptionsNotInherited(t *testing.T) {
	t.Parallel()
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tenant := "prm_inherit_" + string(mode)[:4]
			fltTenant(t, tenant)
			d := direct(t)
			var defTZ, defDS string
			if err := d.QueryRow(fltCtx(t), "select current_setting('TimeZone'), current_setting('DateStyle')").Scan(&defTZ, &defDS); err != nil {
				t.Fatal(err)
			}
			p := startProxy(t, func(c *config.Config) { c.PoolMode = mode; c.PoolSize = 1 })
			first, err := prmConnect(t, p, tenant, prmProfiles[0])
			if err != nil {
				t.Fatal(err)
			}
			if bad, err := prmCheck(fltCtx(t), first, tenant, prmProfiles[0], false); err != nil || bad != "" {
				t.Fatalf("first client: %s %v", bad, err)
			}
			if err := first.Close(fltCtx(t)); err != nil {
				t.Fatal(err)
			}
			// Same single backend, no parameters: the server's defaults.
			conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
			var app, tz, ds, st string
			err = conn.QueryRow(fltCtx(t), `select current_setting('application_name'), current_setting('TimeZone'),
				current_setting('DateStyle'), current_setting('statement_timeout')`).Scan(&app, &tz, &ds, &st)
			if err != nil {
				t.Fatal(err)
			}
			// application_name falls back to the pool's own login value.
			if app == prmProfiles[0].app || tz != defTZ || ds != defDS || st != "0" {
				t.Fatalf("second client inherited settings: application_name %q, TimeZone %q (default %q), DateStyle %q (default %q), statement_timeout %q",
					app, tz, defTZ, ds, defDS, st)
			}
			if got := conn.PgConn().ParameterStatus("TimeZone"); got != defTZ {
				t.Fatalf("second client's ParameterStatus TimeZone %q, want %q", got, defTZ)
			}
		})
	}
}

func TestParamsRejectedAtStartup(t *testing.T) {
	t.Parallel()
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tenant := "prm_reject_" + string(mode)[:4]
			fltTenant(t, tenant)
			p := startProxy(t, func(c *config.Config) { c.PoolMode = mode; c.PoolSize = 1 })

			for _, c := range []struct {
				name, key, value, code, msg string
			}{
				{"invalid TimeZone", "TimeZone", "Mars/Olympus_Mons", "22023", `invalid value for parameter "TimeZone"`},
				{"invalid DateStyle", "DateStyle", "Klingon", "22023", `invalid value for parameter "DateStyle"`},
				{"search_path", "search_path", "public", "42501", "search_path"},
				{"search_path in options", "options", "-c search_path=prm_other", "42501", "search_path"},
				{"role", "role", "postgres", "42501", "role"},
				{"unknown parameter", "no_such_parameter", "1", "42704", "no_such_parameter"},
			} {
				_, err := fltConnect(t, p, tenant, func(cfg *pgx.ConnConfig) { cfg.RuntimeParams[c.key] = c.value })
				if err == nil {
					t.Errorf("%s: connect succeeded", c.name)
					continue
				}
				pe := fltPgError(t, err, c.name)
				if pe.Code != c.code || !strings.Contains(pe.Message, c.msg) {
					t.Errorf("%s: got %s %s %q, want %s containing %q", c.name, pe.Severity, pe.Code, pe.Message, c.code, c.msg)
				}
			}
			// The single backend is fine for the next client, which gets its
			// own schema and the default search_path behind it.
			conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
			fltCheckSchema(t, conn, tenant)
			var sp, tz string
			if err := conn.QueryRow(fltCtx(t), "select current_setting('search_path'), current_setting('TimeZone')").Scan(&sp, &tz); err != nil {
				t.Fatal(err)
			}
			if sp != `"`+tenant+`", public` && sp != tenant+", public" {
				t.Fatalf("search_path %q", sp)
			}
			if strings.Contains(tz, "Mars") {
				t.Fatalf("TimeZone %q left over from a refused client", tz)
			}
		})
	}
}
