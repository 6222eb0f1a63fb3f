package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// The red-team suite (issue 11 E): a client of acme that controls its SQL,
// functions and timing attacks globex, through pgtenant deployed as the
// README's production recipe says, in both isolation modes. Every case
// states its outcome per mode and asserts the real one: a SQLSTATE, or,
// for what a mode allows, that the attack really worked. The README's
// table of escapes ("Security model") is rendered from rtCases and kept
// equal to it by TestRedTeamREADMETable.

// Outcomes. A refusal is "blocked" and its SQLSTATE; rtBlocked is an attack
// that ran but reached nothing of globex's (checked as the superuser);
// rtAllowed is an attack that worked, which the README lists.
const (
	rtAllowed  = "allowed"
	rtBlocked  = "blocked"
	rtRefusing = "refuses to start"
)

func rtRefused(code string) string { return "blocked " + code }

// rtEnv is one mode's deployment: the tenants, the superuser's connection
// to their database, and the config of a pgtenant serving them.
type rtEnv struct {
	mode         string
	acme, globex string
	su           *pgx.Conn
	mods         []func(*config.Config)
}

// proxy starts a pgtenant of this deployment with a pool of size
// backends. Each case gets its own, so no case inherits another's backends.
func (e *rtEnv) proxy(t *testing.T, size int) *Proxy {
	t.Helper()
	return startProxy(t, append(append([]func(*config.Config){}, e.mods...), func(c *config.Config) { c.PoolSize = size })...)
}

func (e *rtEnv) conn(t *testing.T, p *Proxy, tenant string) *pgx.Conn {
	t.Helper()
	return p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
}

// sql fills in {acme}, {globex} and {db}.
func (e *rtEnv) sql(q string) string {
	return strings.NewReplacer("{acme}", e.acme, "{globex}", e.globex, "{db}", recipeDB).Replace(q)
}

// count runs a count query as the superuser.
func (e *rtEnv) count(t *testing.T, q string) int {
	t.Helper()
	var n int
	if err := e.su.QueryRow(context.Background(), e.sql(q)).Scan(&n); err != nil {
		t.Fatalf("%s: %v", e.sql(q), err)
	}
	return n
}

// outcomeOf is the outcome of a statement that either fails or works.
func outcomeOf(err error) string {
	if err == nil {
		return rtAllowed
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return rtRefused(pe.Code)
	}
	return "failed without a SQLSTATE: " + err.Error()
}

func rtCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rtCase is one attack. item is the escape of issue 11 it belongs to (a
// variant shares its number).
type rtCase struct {
	item         string
	name         string
	attack       string // for the README's table
	schema, role string // the outcome in each mode
	run          func(t *testing.T, e *rtEnv) string
}

// rtStatement runs one statement as acme: for attacks every mode refuses.
func rtStatement(q string) func(t *testing.T, e *rtEnv) string {
	return func(t *testing.T, e *rtEnv) string {
		a := e.conn(t, e.proxy(t, 2), e.acme)
		_, err := a.Exec(rtCtx(t), e.sql(q))
		return outcomeOf(err)
	}
}

var rtCases = []rtCase{
	{"1", "pin-half-fail", "arm a backend (search_path, `pg_temp` trigger) and make the next pin wait on a lock, so globex's INSERT runs in acme's state",
		rtBlocked, rtBlocked, rtPinHalfFail},
	{"2", "statement-hijack", "replace pgtenant's prepared statements `pgt_N` from a DO block, so globex's cached INSERT runs acme's SQL",
		rtBlocked, rtBlocked, rtStatementHijack},
	{"2", "execute-pgt", "`EXECUTE pgt_1(...)`, naming pgtenant's statements",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`EXECUTE pgt_1('x')`)},
	{"2", "prepared-statements", "read globex's statements in `pg_prepared_statements`",
		rtBlocked, rtBlocked, rtPreparedStatements},
	{"3", "shared-pin-key", "same search_path as globex, a setting changed inside a function: globex runs with it",
		rtBlocked, rtBlocked, rtSharedPinKey},
	{"4", "grant-all-tenants", "`INSERT INTO pgtenant.tenant_users VALUES ('alice', NULL)`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`INSERT INTO pgtenant.tenant_users (user_name, tenant) VALUES ('alice', NULL)`)},
	{"4", "move-tenant", "`UPDATE pgtenant.tenants SET schema_name = ...`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`UPDATE pgtenant.tenants SET schema_name = '{acme}' WHERE name = '{globex}'`)},
	{"4", "registry-from-do", "the same from a DO block",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`DO $$ BEGIN UPDATE pgtenant.tenants SET schema_name = '{acme}' WHERE name = '{globex}'; END $$`)},
	{"4", "replace-user-secret", "`CREATE OR REPLACE FUNCTION pgtenant.user_secret` (the auth query's function)",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`CREATE OR REPLACE FUNCTION pgtenant.user_secret(p_user text)
			RETURNS TABLE (rolname text, rolpassword text) LANGUAGE sql AS $$ SELECT p_user, 'forged' $$`)},
	{"4", "read-registry", "`SELECT * FROM pgtenant.tenants`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`SELECT * FROM pgtenant.tenants`)},
	{"4", "create-in-registry", "`CREATE TABLE pgtenant.x`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`CREATE TABLE pgtenant.planted (x int)`)},
	{"5", "alter-role-current-user", "`ALTER ROLE CURRENT_USER SET search_path / default_transaction_read_only` from a DO block, to reach globex's next backend",
		rtBlocked, rtBlocked, rtRoleSettings},
	{"5", "shadow-pin-function", "`acme.pg_advisory_unlock_all()` ahead of `pg_catalog` on the search_path, to run inside the next pin",
		rtBlocked, rtBlocked, rtShadowPinFunction},
	{"5", "alter-other-role", "`ALTER ROLE pgtenant_admin SET ...`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`ALTER ROLE pgtenant_admin SET search_path = public`)},
	{"5", "alter-database", "`ALTER DATABASE ... SET ...` from a DO block",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = ''64kB''', current_database()); END $$`)},
	{"5", "set-role", "`SET ROLE pgtenant_admin` from a DO block",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`DO $$ BEGIN EXECUTE 'SET ROLE pgtenant_admin'; END $$`)},
	{"5", "set-session-authorization", "`SET SESSION AUTHORIZATION pgtenant_admin` from a DO block",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`DO $$ BEGIN EXECUTE 'SET SESSION AUTHORIZATION pgtenant_admin'; END $$`)},
	{"5", "reset-role", "`RESET ROLE` and `SET SESSION AUTHORIZATION DEFAULT` from a DO block, to shed the tenant's role",
		rtBlocked, rtBlocked, rtResetRole},
	{"5", "set-search-path", "`SET search_path TO globex`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`SET search_path TO {globex}`)},
	{"5", "plant-in-public", "`CREATE FUNCTION public.f()`, to be found by other tenants' unqualified names",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'`)},
	{"6", "read-qualified", "`SELECT * FROM globex.secrets`",
		rtAllowed, rtRefused("42501"), rtReadQualified},
	{"6", "write-qualified", "`INSERT INTO globex.orders ...`",
		rtAllowed, rtRefused("42501"), rtWriteQualified},
	{"6", "create-in-other-schema", "`CREATE TABLE globex.x`",
		rtAllowed, rtRefused("42501"), rtCreateInOther},
	{"6", "trigger-on-other", "`CREATE TRIGGER` on `globex.orders` that copies each new row to acme",
		rtAllowed, rtRefused("42501"), rtTriggerOnOther},
	{"6", "catalogs", "read globex's table names, columns, row estimates and function sources in the catalogs",
		rtAllowed, rtAllowed, rtCatalogs},
	{"6", "query-texts", "read globex's query texts and literals in `pg_stat_activity`",
		rtAllowed, rtBlocked, rtQueryTexts},
	{"6", "cancel-backend", "`pg_cancel_backend` of globex's backend",
		rtAllowed, rtRefused("42501"), rtCancelBackend},
	{"6", "terminate-backend", "`pg_terminate_backend` of globex's backend",
		rtAllowed, rtRefused("42501"), rtTerminateBackend},
	{"6", "large-object", "`lo_get` of globex's large object",
		rtAllowed, rtRefused("42501"), rtLargeObject},
	{"6", "lastval", "`lastval()` on the backend globex used last",
		rtRefused("55000"), rtRefused("55000"), rtLastval},
	{"6", "listen", "`LISTEN` on globex's channel",
		rtAllowed, rtAllowed, rtListen},
	{"6", "notify-registry", "`NOTIFY pgtenant_tenants` (the registry's channel: makes every proxy drop its cache)",
		rtAllowed, rtAllowed, rtNotifyRegistry},
	{"6", "advisory-lock", "take the advisory lock globex uses",
		rtAllowed, rtAllowed, rtAdvisoryLock},
	{"7", "functioncall-set-config", "FunctionCall message (oid 2078, `set_config('search_path', 'globex')`)",
		rtRefused("0A000"), rtRefused("0A000"), rtFunctionCall},
	{"8", "registry-lock", "hold the registry's advisory lock, so `tenant create`/`grant`/`revoke` wait",
		rtBlocked, rtBlocked, rtRegistryLock},
	{"8", "parse-flood", "named statements parsed and never closed, to grow pgtenant's memory (`--max-client-statements`, `--max-client-statement-bytes`)",
		rtRefused("53400"), rtRefused("53400"), rtParseFlood},
	{"8", "stalled-startups", "connections that never finish their startup, to fill `--max-client-conn`",
		rtRefused("53300"), rtRefused("53300"), rtStalledStartups},
	{"9", "superuser-backend", "a superuser `--backend` (with `--allow-privileged-backend` it serves and warns)",
		rtRefusing, rtRefusing, rtSuperuserBackend},
	{"9", "copy-to-program", "`COPY ... TO PROGRAM`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`COPY (SELECT 1) TO PROGRAM 'true'`)},
	{"9", "copy-from-file", "`COPY ... FROM '/etc/passwd'`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`COPY {acme}.loot FROM '/etc/passwd'`)},
	{"9", "pg-read-file", "`pg_read_file('/etc/passwd')`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`SELECT pg_read_file('/etc/passwd')`)},
	{"9", "lo-import", "server-side `lo_import('/etc/passwd')`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`SELECT lo_import('/etc/passwd')`)},
	{"9", "pg-ls-dir", "`pg_ls_dir('.')`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`SELECT pg_ls_dir('.')`)},
	{"9", "alter-system", "`ALTER SYSTEM SET ...`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`ALTER SYSTEM SET log_statement = 'none'`)},
	{"9", "event-trigger", "`CREATE EVENT TRIGGER`, to run in every tenant's DDL",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`DO $$ BEGIN
			EXECUTE 'CREATE FUNCTION {acme}.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN END $f$';
			EXECUTE 'CREATE EVENT TRIGGER on_ddl ON ddl_command_start EXECUTE FUNCTION {acme}.on_ddl()';
		END $$`)},
	{"9", "create-extension", "`CREATE EXTENSION dblink`",
		rtRefused("42501"), rtRefused("42501"), rtStatement(`CREATE EXTENSION dblink`)},
}

// Tenants: globex has secrets and orders; acme has orders and loot.
var (
	rtGlobexSQL = []string{
		`CREATE TABLE IF NOT EXISTS secrets (s text)`,
		`INSERT INTO secrets VALUES ('globex plans')`,
		`CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)`,
	}
	rtAcmeSQL = []string{
		`CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)`,
		`CREATE TABLE IF NOT EXISTS loot (item text)`,
	}
)

func TestRedTeam(t *testing.T) {
	recipe(t)
	su := recipeSuperuser(t)
	envs := []*rtEnv{
		{mode: config.IsolationSchema, acme: "rts_acme", globex: "rts_globex", su: su, mods: []func(*config.Config){withRecipe}},
		{mode: config.IsolationRole, acme: "rtr_acme", globex: "rtr_globex", su: su, mods: []func(*config.Config){withRecipe, roleMode(2)}},
	}
	for _, e := range envs {
		t.Run(e.mode, func(t *testing.T) {
			// A tenant already given its role (by an earlier -count) is
			// no longer the admin's to set up.
			if e.mode == config.IsolationSchema || e.count(t, `SELECT count(*) FROM pg_roles WHERE rolname = 'pgt_{globex}'`) == 0 {
				recipeTenant(t, e.acme, rtAcmeSQL...)
				recipeTenant(t, e.globex, rtGlobexSQL...)
			}
			if e.mode == config.IsolationRole {
				// As `pgtenant tenant isolate` does, with a superuser:
				// the recipe's admin has no CREATEROLE.
				requireSCRAMForTenantRoles(t)
				ctx := rtCtx(t)
				for _, name := range []string{e.acme, e.globex} {
					if err := router.EnsureTenantRole(ctx, su, router.Tenant{Name: name}, roleSecret); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, c := range rtCases {
				want := c.schema
				if e.mode == config.IsolationRole {
					want = c.role
				}
				t.Run(c.item+"-"+c.name, func(t *testing.T) {
					if got := c.run(t, e); got != want {
						t.Errorf("%s mode, escape %s (%s): %s, want %s", e.mode, c.item, c.attack, got, want)
					}
				})
			}
		})
	}
}

// Escape 1; TestHostilePinCannotHalfFail has more of it in schema mode.
func rtPinHalfFail(t *testing.T, e *rtEnv) string {
	p := e.proxy(t, 2)
	ctx := rtCtx(t)
	victim := e.conn(t, p, e.globex)
	holder := e.conn(t, p, e.acme)
	tx := holdShareLock(t, ctx, holder, e.acme+".orders")
	armPinTrap(t, ctx, e.conn(t, p, e.acme), e.acme, "steal")
	acmeBefore := e.count(t, `SELECT count(*) FROM {acme}.orders`)
	before := e.count(t, `SELECT count(*) FROM {globex}.orders`)
	_, err := victim.Exec(ctx, `INSERT INTO orders (item) VALUES ('globex order')`)
	if rerr := tx.Rollback(ctx); rerr != nil {
		t.Fatal(rerr)
	}
	if n := e.count(t, `SELECT count(*) FROM {acme}.orders`); n != acmeBefore {
		return "escaped: globex's INSERT ran in acme's state"
	}
	if err != nil {
		if sqlState(err) != "08006" {
			return fmt.Sprintf("globex was told %v", err)
		}
		if n := e.count(t, `SELECT count(*) FROM {globex}.orders`); n != before {
			return "escaped: globex was told its INSERT did not run, but it did"
		}
		if _, err := victim.Exec(ctx, `INSERT INTO orders (item) VALUES ('globex order')`); err != nil {
			return fmt.Sprintf("globex's retry: %v", err)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM {globex}.orders`); n != before+1 {
		return fmt.Sprintf("globex.orders went from %d to %d rows, want one more", before, n)
	}
	return rtBlocked
}

// Escape 2; TestHostilePreparedStatementHijack has more of it.
func rtStatementHijack(t *testing.T, e *rtEnv) string {
	p := e.proxy(t, 1)
	ctx := rtCtx(t)
	victim := p.Connect(t, e.globex, pgx.QueryExecModeCacheStatement)
	if _, err := victim.Exec(ctx, `INSERT INTO orders (item) VALUES ($1)`, "first"); err != nil {
		t.Fatal(err)
	}
	attacker := e.conn(t, p, e.acme)
	if _, err := attacker.Exec(ctx, e.sql(`DO $$ DECLARE i int; BEGIN
		FOR i IN 1..50 LOOP
			BEGIN EXECUTE 'DEALLOCATE pgt_' || i; EXCEPTION WHEN OTHERS THEN NULL; END;
			EXECUTE 'PREPARE pgt_' || i || ' (text) AS INSERT INTO {acme}.loot VALUES ($1)';
		END LOOP;
	END $$`)); err != nil {
		t.Fatalf("attack: %v", err)
	}
	loot := e.count(t, `SELECT count(*) FROM {acme}.loot`)
	before := e.count(t, `SELECT count(*) FROM {globex}.orders`)
	if _, err := victim.Exec(ctx, `INSERT INTO orders (item) VALUES ($1)`, "second"); err != nil {
		return fmt.Sprintf("globex after the attack: %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM {acme}.loot`); n != loot {
		return "escaped: globex's statement ran acme's SQL"
	}
	if n := e.count(t, `SELECT count(*) FROM {globex}.orders`); n != before+1 {
		return "globex's INSERT did not land"
	}
	return rtBlocked
}

func rtPreparedStatements(t *testing.T, e *rtEnv) string {
	p := e.proxy(t, 1)
	ctx := rtCtx(t)
	victim := p.Connect(t, e.globex, pgx.QueryExecModeCacheStatement)
	var s string
	if err := victim.QueryRow(ctx, `SELECT s FROM secrets WHERE s <> $1`, "x").Scan(&s); err != nil {
		t.Fatal(err)
	}
	attacker := e.conn(t, p, e.acme)
	var seen int
	if err := attacker.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%secrets%'`).Scan(&seen); err != nil {
		return outcomeOf(err)
	}
	if seen > 0 {
		return rtAllowed
	}
	return rtBlocked
}

// Escape 3; TestHostilePinKeyNotShared.
func rtSharedPinKey(t *testing.T, e *rtEnv) string {
	p := e.proxy(t, 1)
	ctx := rtCtx(t)
	a := e.conn(t, p, e.acme)
	g := e.conn(t, p, e.globex)
	for _, c := range []*pgx.Conn{a, g} {
		if _, err := c.Exec(ctx, `SET search_path TO public`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Exec(ctx, `DO $$ BEGIN PERFORM pg_catalog.set_config('application_name', 'acme-was-here', false); END $$`); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := g.QueryRow(ctx, `SHOW application_name`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name == "acme-was-here" {
		return "escaped: globex runs with acme's setting"
	}
	return rtBlocked
}

// Escape 5: the settings are written (a role may set its own defaults),
// but reach no backend of globex's: a fresh pgtenant's new backends.
func rtRoleSettings(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	a := e.conn(t, e.proxy(t, 2), e.acme)
	var role string
	if err := a.QueryRow(ctx, `SELECT current_user`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ident := pgx.Identifier{role}.Sanitize()
		if _, err := e.su.Exec(context.Background(), `ALTER ROLE `+ident+` RESET ALL; ALTER ROLE `+ident+` IN DATABASE `+recipeDB+` RESET ALL`); err != nil {
			t.Error(err)
		}
	})
	_, err := a.Exec(ctx, e.sql(`DO $$ BEGIN
		EXECUTE 'ALTER ROLE CURRENT_USER SET search_path = {acme}, pg_catalog';
		EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET default_transaction_read_only = on', current_database());
	END $$`))
	if err != nil {
		return outcomeOf(err)
	}
	g := e.conn(t, e.proxy(t, 2), e.globex)
	var readOnly, resetPath string
	if err := g.QueryRow(ctx, `SELECT current_setting('default_transaction_read_only'),
		(SELECT reset_val FROM pg_settings WHERE name = 'search_path')`).Scan(&readOnly, &resetPath); err != nil {
		t.Fatal(err)
	}
	if readOnly != "off" || strings.Contains(resetPath, e.acme) {
		return fmt.Sprintf("escaped: globex's backend has default_transaction_read_only=%s and resets search_path to %q", readOnly, resetPath)
	}
	if _, err := g.Exec(ctx, `INSERT INTO orders (item) VALUES ('after alter role')`); err != nil {
		return fmt.Sprintf("globex cannot write: %v", err)
	}
	return rtBlocked
}

// The pin calls pg_catalog's functions by qualified name and sets
// search_path first, so a function of acme's named like one of them never
// runs inside globex's pin.
func rtShadowPinFunction(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 1)
	a := e.conn(t, p, e.acme)
	t.Cleanup(func() {
		_, _ = e.su.Exec(context.Background(), e.sql(`DROP FUNCTION IF EXISTS {acme}.pg_advisory_unlock_all()`))
	})
	if _, err := a.Exec(ctx, e.sql(`CREATE FUNCTION {acme}.pg_advisory_unlock_all() RETURNS void LANGUAGE sql
		AS $$ INSERT INTO {acme}.loot VALUES ('ran in a pin as ' || current_user || ' for ' || current_setting('application_name')) $$`)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, e.sql(`DO $$ BEGIN PERFORM pg_catalog.set_config('search_path', '{acme}, pg_catalog', false); END $$`)); err != nil {
		t.Fatal(err)
	}
	before := e.count(t, `SELECT count(*) FROM {acme}.loot`)
	g := e.conn(t, p, e.globex)
	for range 2 {
		if _, err := g.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM {acme}.loot`); n != before {
		return "escaped: acme's function ran inside globex's pin"
	}
	return rtBlocked
}

func rtResetRole(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	a := e.conn(t, e.proxy(t, 2), e.acme)
	var before, after string
	if err := a.QueryRow(ctx, `SELECT current_user`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, `DO $$ BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'SET SESSION AUTHORIZATION DEFAULT'; END $$`); err != nil {
		return outcomeOf(err)
	}
	if err := a.QueryRow(ctx, `SELECT current_user`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		return fmt.Sprintf("escaped: acme runs as %s instead of %s", after, before)
	}
	return rtBlocked
}

func rtReadQualified(t *testing.T, e *rtEnv) string {
	a := e.conn(t, e.proxy(t, 2), e.acme)
	var s string
	if err := a.QueryRow(rtCtx(t), e.sql(`SELECT s FROM {globex}.secrets`)).Scan(&s); err != nil {
		return outcomeOf(err)
	}
	if s != "globex plans" {
		return fmt.Sprintf("read %q", s)
	}
	return rtAllowed
}

func rtWriteQualified(t *testing.T, e *rtEnv) string {
	a := e.conn(t, e.proxy(t, 2), e.acme)
	t.Cleanup(func() {
		_, _ = e.su.Exec(context.Background(), e.sql(`DELETE FROM {globex}.orders WHERE item = 'stolen'`))
	})
	if _, err := a.Exec(rtCtx(t), e.sql(`INSERT INTO {globex}.orders (item) VALUES ('stolen')`)); err != nil {
		return outcomeOf(err)
	}
	if e.count(t, `SELECT count(*) FROM {globex}.orders WHERE item = 'stolen'`) != 1 {
		return "the INSERT reported success but wrote nothing"
	}
	return rtAllowed
}

func rtCreateInOther(t *testing.T, e *rtEnv) string {
	a := e.conn(t, e.proxy(t, 2), e.acme)
	t.Cleanup(func() { _, _ = e.su.Exec(context.Background(), e.sql(`DROP TABLE IF EXISTS {globex}.planted`)) })
	if _, err := a.Exec(rtCtx(t), e.sql(`CREATE TABLE {globex}.planted (x int)`)); err != nil {
		return outcomeOf(err)
	}
	if e.count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = '{globex}' AND tablename = 'planted'`) != 1 {
		return "CREATE TABLE reported success but made nothing"
	}
	return rtAllowed
}

// A trigger of acme's on globex's table runs as whoever inserts: globex's
// own rows are copied to acme as they are written.
func rtTriggerOnOther(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	a := e.conn(t, p, e.acme)
	t.Cleanup(func() {
		_, _ = e.su.Exec(context.Background(), e.sql(`DROP TRIGGER IF EXISTS copy_out ON {globex}.orders; DROP FUNCTION IF EXISTS {acme}.copy_out()`))
	})
	if _, err := a.Exec(ctx, e.sql(`CREATE FUNCTION {acme}.copy_out() RETURNS trigger LANGUAGE plpgsql
		AS $$ BEGIN INSERT INTO {acme}.loot VALUES (NEW.item); RETURN NEW; END $$`)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, e.sql(`CREATE TRIGGER copy_out AFTER INSERT ON {globex}.orders
		FOR EACH ROW EXECUTE FUNCTION {acme}.copy_out()`)); err != nil {
		return outcomeOf(err)
	}
	g := e.conn(t, p, e.globex)
	before := e.count(t, `SELECT count(*) FROM {acme}.loot WHERE item = 'globex private order'`)
	if _, err := g.Exec(ctx, `INSERT INTO orders (item) VALUES ('globex private order')`); err != nil {
		return fmt.Sprintf("globex's INSERT: %v", err)
	}
	if e.count(t, `SELECT count(*) FROM {acme}.loot WHERE item = 'globex private order'`) != before+1 {
		return "the trigger was made but copied nothing"
	}
	return rtAllowed
}

// The catalogs are readable by every role: globex's table and column
// names, its row estimates and the source of its functions.
func rtCatalogs(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	t.Cleanup(func() {
		_, _ = e.su.Exec(context.Background(), e.sql(`DROP FUNCTION IF EXISTS {globex}.pricing()`))
	})
	g := e.conn(t, e.proxy(t, 2), e.globex)
	if _, err := g.Exec(ctx, `CREATE FUNCTION pricing() RETURNS int LANGUAGE sql AS 'SELECT 4711 /* globex margin */'`); err != nil {
		t.Fatal(err)
	}
	a := e.conn(t, e.proxy(t, 2), e.acme)
	var tables, columns, sources int
	if err := a.QueryRow(ctx, e.sql(`SELECT
		(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{globex}' AND c.relname = 'secrets'),
		(SELECT count(*) FROM pg_attribute WHERE attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = '{globex}' AND c.relname = 'secrets') AND attname = 's'),
		(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{globex}' AND p.prosrc LIKE '%globex margin%')`)).Scan(&tables, &columns, &sources); err != nil {
		return outcomeOf(err)
	}
	if tables == 1 && columns == 1 && sources == 1 {
		return rtAllowed
	}
	return fmt.Sprintf("saw %d tables, %d columns, %d function sources of globex's", tables, columns, sources)
}

// rtGlobexInTx gives globex's client a transaction it holds (so its backend
// stays its own) and returns that backend's pid; the transaction is rolled
// back when the case ends.
func rtGlobexInTx(t *testing.T, e *rtEnv, p *Proxy) (*pgx.Conn, uint32) {
	t.Helper()
	ctx := rtCtx(t)
	g := e.conn(t, p, e.globex)
	if _, err := g.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	var pid uint32
	if err := g.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return g, pid
}

func rtQueryTexts(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	g, _ := rtGlobexInTx(t, e, p)
	if _, err := g.Exec(ctx, `SELECT 'globex-literal-4711'`); err != nil {
		t.Fatal(err)
	}
	a := e.conn(t, p, e.acme)
	var n int
	if err := a.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE query LIKE '%' || 'globex-lit' || 'eral-4711' || '%'`).Scan(&n); err != nil {
		return outcomeOf(err)
	}
	if n > 0 {
		return rtAllowed
	}
	// The superuser does see it: the check can fail.
	if e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || 'globex-lit' || 'eral-4711' || '%'`) != 1 {
		t.Fatal("globex's query text is not in pg_stat_activity at all")
	}
	return rtBlocked
}

func rtCancelBackend(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	g, pid := rtGlobexInTx(t, e, p)
	slept := make(chan error, 1)
	go func() {
		_, err := g.Exec(ctx, `SELECT pg_sleep(30)`)
		slept <- err
	}()
	eventually(t, 20*time.Second, "globex's pg_sleep runs", func() bool {
		return e.count(t, fmt.Sprintf(`SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active' AND query LIKE '%%pg_sleep%%'`, pid)) == 1
	})
	a := e.conn(t, p, e.acme)
	var ok bool
	err := a.QueryRow(ctx, `SELECT pg_cancel_backend($1)`, pid).Scan(&ok)
	if err != nil || !ok {
		// Let globex's sleep end.
		if _, cerr := e.su.Exec(ctx, `SELECT pg_cancel_backend($1)`, pid); cerr != nil {
			t.Error(cerr)
		}
		<-slept
		if err == nil {
			return "pg_cancel_backend returned false"
		}
		return outcomeOf(err)
	}
	if err := <-slept; sqlState(err) != "57014" {
		return fmt.Sprintf("globex's query ended with %v, not cancelled", err)
	}
	return rtAllowed
}

func rtTerminateBackend(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	_, pid := rtGlobexInTx(t, e, p)
	a := e.conn(t, p, e.acme)
	var ok bool
	if err := a.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil {
		return outcomeOf(err)
	}
	if !ok {
		return "pg_terminate_backend returned false"
	}
	eventually(t, 20*time.Second, "globex's backend ends", func() bool {
		return e.count(t, fmt.Sprintf(`SELECT count(*) FROM pg_stat_activity WHERE pid = %d`, pid)) == 0
	})
	return rtAllowed
}

func rtLargeObject(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	g := e.conn(t, p, e.globex)
	var loid uint32
	if err := g.QueryRow(ctx, `SELECT lo_from_bytea(0, 'globex blob')`).Scan(&loid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.su.Exec(context.Background(), `SELECT lo_unlink($1)`, loid) })
	a := e.conn(t, p, e.acme)
	var blob []byte
	if err := a.QueryRow(ctx, fmt.Sprintf(`SELECT lo_get(%d)`, loid)).Scan(&blob); err != nil {
		return outcomeOf(err)
	}
	if string(blob) != "globex blob" {
		return fmt.Sprintf("read %q", blob)
	}
	return rtAllowed
}

// lastval() is per backend session: acme gets globex's backend next (a
// pool of one) and asks. The pin's DISCARD SEQUENCES forgets it in schema
// mode; in role mode acme never gets globex's backend.
func rtLastval(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 1)
	g := e.conn(t, p, e.globex)
	var id int64
	if err := g.QueryRow(ctx, `INSERT INTO orders (item) VALUES ('numbered') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	a := e.conn(t, p, e.acme)
	var got int64
	if err := a.QueryRow(ctx, `SELECT lastval()`).Scan(&got); err != nil {
		return outcomeOf(err)
	}
	if got != id {
		return fmt.Sprintf("lastval() = %d, not globex's %d", got, id)
	}
	return rtAllowed
}

func rtListen(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	a := e.conn(t, p, e.acme)
	if _, err := a.Exec(ctx, e.sql(`LISTEN {globex}_events`)); err != nil {
		return outcomeOf(err)
	}
	g := e.conn(t, p, e.globex)
	if _, err := g.Exec(ctx, e.sql(`NOTIFY {globex}_events, 'globex payload'`)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := a.WaitForNotification(wctx)
	if err != nil {
		return fmt.Sprintf("no notification: %v", err)
	}
	if n.Payload != "globex payload" {
		return fmt.Sprintf("notification %q", n.Payload)
	}
	return rtAllowed
}

func rtNotifyRegistry(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	listener, err := pgx.Connect(ctx, recipeDSN(recipeAdmin))
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, `LISTEN `+router.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	a := e.conn(t, e.proxy(t, 2), e.acme)
	if _, err := a.Exec(ctx, `SELECT pg_notify($1, $2)`, router.NotifyChannel, e.globex); err != nil {
		return outcomeOf(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil {
		return fmt.Sprintf("no notification: %v", err)
	}
	if n.Payload != e.globex {
		return fmt.Sprintf("notification %q", n.Payload)
	}
	return rtAllowed
}

func rtAdvisoryLock(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	p := e.proxy(t, 2)
	a := e.conn(t, p, e.acme)
	g := e.conn(t, p, e.globex)
	if _, err := a.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	defer a.Exec(ctx, `ROLLBACK`)
	if _, err := a.Exec(ctx, `SELECT pg_advisory_xact_lock(4711)`); err != nil {
		return outcomeOf(err)
	}
	var got bool
	if err := g.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(4711)`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got {
		return rtBlocked
	}
	return rtAllowed
}

// rtRegistryLockKey is router's registryLockKey: "pgtenant" in ASCII.
const rtRegistryLockKey int64 = 0x706774656e616e74

// Escape 8 (in part): any session may take the advisory lock that once
// serialised the registry's changes; they now serialise on a lock of
// pgtenant.tenants, which tenant traffic has no privilege to take, so an
// admin change goes through while acme holds the old key.
func rtRegistryLock(t *testing.T, e *rtEnv) string {
	ctx := rtCtx(t)
	a := e.conn(t, e.proxy(t, 2), e.acme)
	if _, err := a.Exec(ctx, `SELECT pg_advisory_lock($1)`, rtRegistryLockKey); err != nil {
		return outcomeOf(err)
	}
	defer a.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	admin, err := pgx.Connect(ctx, recipeDSN(recipeAdmin))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SET lock_timeout = '300ms'`); err != nil {
		t.Fatal(err)
	}
	switch err := router.EnsureRegistry(ctx, admin); {
	case sqlState(err) == "55P03":
		return rtAllowed
	case err == nil:
		return rtBlocked
	default:
		return fmt.Sprintf("the registry change failed: %v", err)
	}
}

// Escape 8 (in part): the named statements one client keeps, which
// pgtenant holds to prepare them again on any backend, are capped in count
// and in bytes; one more is refused with 53400 and the client goes on.
func rtParseFlood(t *testing.T, e *rtEnv) string {
	const maxStmts, maxBytes = 20, 64 << 10
	p := startProxy(t, append(append([]func(*config.Config){}, e.mods...), func(c *config.Config) {
		c.PoolSize, c.MaxClientStatements, c.MaxClientStatementBytes = 2, maxStmts, maxBytes
	})...)
	ctx := rtCtx(t)
	a := e.conn(t, p, e.acme)
	for i := range maxStmts {
		if _, err := a.Prepare(ctx, fmt.Sprintf("flood_%d", i), fmt.Sprintf("SELECT %d", i)); err != nil {
			return fmt.Sprintf("statement %d, under the cap: %v", i+1, err)
		}
	}
	_, err := a.Prepare(ctx, "flood_over", "SELECT 'one too many'")
	if sqlState(err) != "53400" {
		return fmt.Sprintf("statement %d, over the cap: %s", maxStmts+1, outcomeOf(err))
	}
	// Room for one more statement, but not for its bytes.
	if err := a.Deallocate(ctx, "flood_0"); err != nil {
		t.Fatal(err)
	}
	_, err = a.Prepare(ctx, "flood_big", "SELECT '"+strings.Repeat("x", 2*maxBytes)+"'")
	if sqlState(err) != "53400" {
		return fmt.Sprintf("a statement over the byte cap: %s", outcomeOf(err))
	}
	var n int
	if err := a.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		return fmt.Sprintf("acme's client after the refusals: %v", err)
	}
	return rtRefused("53400")
}

// Escape 8 (in part): silent connections from one address get 53300 once
// they hold --max-startup-per-addr startup slots, and do not count toward
// --max-client-conn, so a client from elsewhere still gets in
// (TestLimitsStartupConnections has more).
func rtStalledStartups(t *testing.T, e *rtEnv) string {
	const perAddr = 3
	p := startProxy(t, append(append([]func(*config.Config){}, e.mods...), func(c *config.Config) {
		c.MaxStartupPerAddr, c.MaxClientConn, c.StartupTimeout = perAddr, perAddr-1, time.Minute
	})...)
	for range perAddr {
		rawDial(t, p) // silent: no startup packet
	}
	nc := rawDial(t, p)
	er := rawExpectError(t, nc, false)
	if er.Code != "53300" {
		return fmt.Sprintf("connection %d over the limit: %s %s", perAddr+1, er.Code, er.Message)
	}
	cfg, err := pgx.ParseConfig(p.DSN(e.globex))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	g, err := pgx.ConnectConfig(rtCtx(t), cfg)
	if err != nil {
		return fmt.Sprintf("globex from another address was refused: %v", err)
	}
	defer g.Close(context.Background())
	if _, err := g.Exec(rtCtx(t), `SELECT 1`); err != nil {
		return fmt.Sprintf("globex from another address: %v", err)
	}
	return rtRefused(er.Code)
}

// Escape 7; TestHostileFunctionCallSetConfig.
func rtFunctionCall(t *testing.T, e *rtEnv) string {
	p := e.proxy(t, 2)
	nc := rawDial(t, p)
	fe := rawStartup(t, nc, e.acme)
	rawSend(t, nc, &pgproto3.FunctionCall{Function: 2078, ArgFormatCodes: []uint16{0},
		Arguments: [][]byte{[]byte("search_path"), []byte(e.globex), []byte("false")}, ResultFormatCode: 0})
	var code string
	ran := false
	for done := false; !done; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			code = m.Code
		case *pgproto3.FunctionCallResponse:
			ran = true
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	if got := rawQueryOne(t, nc, fe, "select current_schema()"); got != e.acme {
		return fmt.Sprintf("escaped: current_schema() = %q", got)
	}
	if ran {
		return rtAllowed
	}
	return rtRefused(code)
}

// Escape 9: serve refuses a superuser --backend unless told
// (--allow-privileged-backend, which warns; TestPrivsServeRefusesPrivilegedBackend).
func rtSuperuserBackend(t *testing.T, e *rtEnv) string {
	cfg := config.Default()
	for _, m := range e.mods {
		m(&cfg)
	}
	cfg.Backend = pg.DSN(recipeDB) // the cluster's superuser
	err := runExpectingRefusal(t, cfg)
	var pe *router.PrivilegedBackendError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "is a superuser") {
		return fmt.Sprintf("served or failed otherwise: %v", err)
	}
	// Told to, it serves, and warns.
	p := startProxy(t, append(append([]func(*config.Config){}, e.mods...), func(c *config.Config) {
		c.Backend, c.AllowPrivilegedBackend = pg.DSN(recipeDB), true
	})...)
	eventually(t, 20*time.Second, "pgtenant serving, having warned about the superuser", func() bool {
		logs := p.Logs()
		return strings.Contains(logs, "pgtenant serving") && strings.Contains(logs, "level=WARN") && strings.Contains(logs, "is a superuser") &&
			strings.Contains(logs, "--allow-privileged-backend")
	})
	return rtRefusing
}

// The README's table of escapes is rtCases rendered: this test keeps the
// two equal. PGTENANT_UPDATE_README=1 rewrites the table in README.md.
func TestRedTeamREADMETable(t *testing.T) {
	var b strings.Builder
	b.WriteString("\n| # | acme's attack on globex | schema mode | role mode |\n|---|---|---|---|\n")
	for _, c := range rtCases {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.item, c.attack, rtCell(c.schema), rtCell(c.role))
	}
	want := b.String()
	if got := readmeSection(t, rtTableMarkers); got != want {
		if os.Getenv("PGTENANT_UPDATE_README") == "" {
			t.Fatalf("README.md's table of escapes differs from rtCases; run with PGTENANT_UPDATE_README=1 to rewrite it. Want:\n%s", want)
		}
		readme, err := os.ReadFile("../README.md")
		if err != nil {
			t.Fatal(err)
		}
		updated := strings.Replace(string(readme), rtTableMarkers[0]+got+rtTableMarkers[1], rtTableMarkers[0]+want+rtTableMarkers[1], 1)
		if err := os.WriteFile("../README.md", []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var rtTableMarkers = [2]string{"<!-- redteam table: begin (TestRedTeamREADMETable) -->", "<!-- redteam table: end -->"}

func rtCell(outcome string) string {
	switch {
	case outcome == rtAllowed:
		return "**allowed**"
	case strings.HasPrefix(outcome, "blocked "):
		return "blocked (" + strings.TrimPrefix(outcome, "blocked ") + ")"
	default:
		return outcome
	}
}
