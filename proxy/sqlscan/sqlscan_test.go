package sqlscan

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func id(s string) Value  { return Value{Text: s, Kind: Ident} }
func qid(s string) Value { return Value{Text: s, Kind: QuotedIdent} }
func str(s string) Value { return Value{Text: s, Kind: String} }
func num(s string) Value { return Value{Text: s, Kind: Number} }
func kw(s string) Value  { return Value{Text: s, Kind: Keyword} }
func opq(s string) Value { return Value{Text: s, Kind: Opaque} }

func stmt(k Kind, name string, vals ...Value) Statement {
	return Statement{Kind: k, Name: name, Values: vals}
}

// other is an Other statement with nothing to act on.
var other = Statement{}

func withConfigs(st Statement, scs ...SetConfig) Statement {
	st.SetConfigs = scs
	return st
}

func withLocks(st Statement, funcs ...string) Statement {
	st.SessionLockFuncs = funcs
	return st
}

// known is a set_config call with three literal arguments.
func known(name, value string, local bool) SetConfig {
	return SetConfig{Name: name, Value: value, Local: local, NameKnown: true, ValueKnown: true, LocalKnown: true}
}

type scanCase struct {
	name string
	sql  string
	want []Statement // Start and End are not compared; see texts
	// texts, when set, are sql[Start:End] of each statement.
	texts []string
	err   error
}

var scanCases = []scanCase{
	// SET, generic form.
	{name: "search_path list", sql: `SET search_path TO acme, 'public', "Weird"`,
		want: []Statement{stmt(Set, "search_path", id("acme"), str("public"), qid("Weird"))}},
	{name: "search_path default", sql: `SET search_path = DEFAULT`,
		want: []Statement{stmt(Set, "search_path", kw("default"))}},
	{name: "quoted default is a name", sql: `SET search_path = "default"`,
		want: []Statement{stmt(Set, "search_path", qid("default"))}},
	{name: "mixed case", sql: `sEt SeArCh_PaTh To AcMe, "AcMe"`,
		want: []Statement{stmt(Set, "search_path", id("acme"), qid("AcMe"))}},
	{name: "number", sql: `set statement_timeout to 5000`,
		want: []Statement{stmt(Set, "statement_timeout", num("5000"))}},
	{name: "signed numbers", sql: `SET x = -1, +1.5, - 2, .5, 1e-3, 1_000`,
		want: []Statement{stmt(Set, "x", num("-1"), num("+1.5"), num("-2"), num(".5"), num("1e-3"), num("1_000"))}},
	{name: "operator lexing keeps = apart", sql: `SET x =-1`,
		want: []Statement{stmt(Set, "x", num("-1"))}},
	{name: "semicolon in string", sql: `SET application_name = 'a;b'`,
		want: []Statement{stmt(Set, "application_name", str("a;b"))}, texts: []string{`SET application_name = 'a;b'`}},
	{name: "SET LOCAL", sql: `SET LOCAL x = 1`, want: []Statement{stmt(SetLocal, "x", num("1"))}},
	{name: "SET SESSION", sql: `SET SESSION x = 1`, want: []Statement{stmt(Set, "x", num("1"))}},
	{name: "parameter named local", sql: `SET local = 1`, want: []Statement{stmt(Set, "local", num("1"))}},
	{name: "parameter named session", sql: `SET session TO 'x'`, want: []Statement{stmt(Set, "session", str("x"))}},
	{name: "SET LOCAL of a quoted name", sql: `SET LOCAL "x" = 1`, want: []Statement{stmt(SetLocal, "x", num("1"))}},
	{name: "dotted name", sql: `SET app.user_id = '42'`, want: []Statement{stmt(Set, "app.user_id", str("42"))}},
	{name: "names fold even when quoted", sql: `SET "App"."User_ID" = 42`,
		want: []Statement{stmt(Set, "app.user_id", num("42"))}},
	{name: "quoted search_path is search_path", sql: `SET "Search_Path" TO evil`,
		want: []Statement{stmt(Set, "search_path", id("evil"))}},
	{name: "escaped name", sql: `SET U&"search\005fpath" TO evil`,
		want: []Statement{stmt(Set, "search_path", id("evil"))}},
	{name: "escaped name with UESCAPE", sql: `SET U&"search!005fpath" UESCAPE '!' TO evil`,
		want: []Statement{stmt(Set, "search_path", id("evil"))}},
	{name: "boolean keywords", sql: `SET x TO on, off, TRUE, False, local`,
		want: []Statement{stmt(Set, "x", kw("on"), kw("off"), kw("true"), kw("false"), id("local"))}},
	{name: "from current", sql: `SET search_path FROM CURRENT`,
		want: []Statement{stmt(Set, "search_path", opq("from current"))}},
	{name: "string forms", sql: `SET search_path TO E'o\'brien', U&'d\0061t\+000061', $$dol;lar$$, $q$x$$y$q$, 'it''s', e'\x41\101\u0042\\'`,
		want: []Statement{stmt(Set, "search_path", str("o'brien"), str("data"), str("dol;lar"), str("x$$y"), str("it's"), str(`AAB\`))}},
	{name: "U& string with UESCAPE", sql: `SET x TO U&'d!0061t!+000061!!' UESCAPE '!'`,
		want: []Statement{stmt(Set, "x", str("data!"))}},
	{name: "U& identifier", sql: `SET search_path TO U&"d\0061ta", U&"a""b"`,
		want: []Statement{stmt(Set, "search_path", qid("data"), qid(`a"b`))}},
	{name: "surrogate pair", sql: `SET x TO U&'\D83D\DE00', E'\uD83D\uDE00'`,
		want: []Statement{stmt(Set, "x", str("😀"), str("😀"))}},
	{name: "string continuation", sql: "SET search_path TO 'ac'\n'me'",
		want: []Statement{stmt(Set, "search_path", str("acme"))}},
	{name: "string continuation over comments", sql: "SET search_path TO 'a' -- one\n  -- two\n 'b'\r\n'c'",
		want: []Statement{stmt(Set, "search_path", str("abc"))}},
	{name: "no continuation on one line", sql: "SET search_path TO 'a' 'b'",
		want: []Statement{stmt(Set, "search_path", opq("'a' 'b'"))}},
	{name: "escape string continuation", sql: "SET x TO E'a\\'b'\n'\\n'",
		want: []Statement{stmt(Set, "x", str("a'b\n"))}},
	{name: "bit string is opaque", sql: `SET x TO B'101', X'1F'`,
		want: []Statement{stmt(Set, "x", opq("B'101'"), opq("X'1F'"))}},
	{name: "national string is opaque", sql: `SET x TO N'abc'`,
		want: []Statement{stmt(Set, "x", opq("N'abc'"))}},
	{name: "expression is opaque", sql: `SET x = 'a' || 'b', f(1, 2), y`,
		want: []Statement{stmt(Set, "x", opq("'a' || 'b'"), opq("f(1, 2)"), id("y"))}},
	{name: "parameter is opaque", sql: `SET x = $1`, want: []Statement{stmt(Set, "x", opq("$1"))}},
	{name: "rejected escapes are opaque", sql: `SET x = E'\x00', U&'\wxyz', E'\u12', U&'\D83D'`,
		want: []Statement{stmt(Set, "x", opq(`E'\x00'`), opq(`U&'\wxyz'`), opq(`E'\u12'`), opq(`U&'\D83D'`))}},
	{name: "bad UESCAPE is opaque", sql: `SET x = U&'a' UESCAPE 'a'`,
		want: []Statement{stmt(Set, "x", opq(`U&'a' UESCAPE 'a'`))}},
	{name: "long identifier truncated", sql: "SET x TO " + strings.Repeat("A", 70),
		want: []Statement{stmt(Set, "x", id(strings.Repeat("a", 63)))}},
	{name: "truncation at a character boundary", sql: "SET x TO " + strings.Repeat("a", 62) + "éé",
		want: []Statement{stmt(Set, "x", id(strings.Repeat("a", 62)))}},
	{name: "not SET syntax", sql: `SET`, want: []Statement{stmt(Set, "")}},
	{name: "not SET syntax with rest", sql: `SET 'x' = 1`, want: []Statement{stmt(Set, "", opq("'x' = 1"))}},
	{name: "missing TO", sql: `SET x 1`, want: []Statement{stmt(Set, "x", opq("1"))}},
	{name: "newlines", sql: "SET\nsearch_path\n=\n'x'\n", want: []Statement{stmt(Set, "search_path", str("x"))},
		texts: []string{"SET\nsearch_path\n=\n'x'"}},
	{name: "comments around and inside", sql: "/* lead */ -- line\n SET /* mid */ search_path -- c\n TO x -- trailing",
		want: []Statement{stmt(Set, "search_path", id("x"))}, texts: []string{"SET /* mid */ search_path -- c\n TO x"}},

	// SET, special forms.
	{name: "time zone", sql: `SET TIME ZONE 'UTC'`, want: []Statement{stmt(Set, "timezone", str("UTC"))}},
	{name: "time zone local", sql: `set time zone local`, want: []Statement{stmt(Set, "timezone", kw("local"))}},
	{name: "time zone default", sql: `SET TIME ZONE DEFAULT`, want: []Statement{stmt(Set, "timezone", kw("default"))}},
	{name: "time zone number", sql: `SET TIME ZONE -7`, want: []Statement{stmt(Set, "timezone", num("-7"))}},
	{name: "time zone interval", sql: `SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE`,
		want: []Statement{stmt(Set, "timezone", opq("INTERVAL '+00:00' HOUR TO MINUTE"))}},
	{name: "local time zone", sql: `SET LOCAL TIME ZONE 'UTC'`, want: []Statement{stmt(SetLocal, "timezone", str("UTC"))}},
	{name: "parameter named time", sql: `SET time TO 1`, want: []Statement{stmt(Set, "time", num("1"))}},
	{name: "schema", sql: `SET SCHEMA 'x'`, want: []Statement{stmt(Set, "search_path", str("x"))}},
	{name: "names", sql: `SET NAMES 'UTF8'`, want: []Statement{stmt(Set, "client_encoding", str("UTF8"))}},
	{name: "names default", sql: `SET NAMES`, want: []Statement{stmt(Set, "client_encoding", kw("default"))}},
	{name: "xml option", sql: `SET XML OPTION DOCUMENT`, want: []Statement{stmt(Set, "xmloption", kw("document"))}},
	{name: "catalog always fails", sql: `SET CATALOG 'x'`},

	// Roles.
	{name: "role", sql: `SET ROLE admin`, want: []Statement{stmt(SetRole, "role", id("admin"))}},
	{name: "role none", sql: `SET ROLE NONE`, want: []Statement{stmt(SetRole, "role", kw("none"))}},
	{name: "session role quoted", sql: `SET SESSION ROLE "Admin"`, want: []Statement{stmt(SetRole, "role", qid("Admin"))}},
	{name: "role as a parameter", sql: `set role = 'x'`, want: []Statement{stmt(SetRole, "role", str("x"))}},
	{name: "local role", sql: `SET LOCAL ROLE x`, want: []Statement{stmt(SetLocal, "role", id("x"))}},
	{name: "session authorization", sql: `SET SESSION AUTHORIZATION bob`,
		want: []Statement{stmt(SetSessionAuthorization, "session_authorization", id("bob"))}},
	{name: "session authorization default", sql: `SET SESSION AUTHORIZATION DEFAULT`,
		want: []Statement{stmt(SetSessionAuthorization, "session_authorization", kw("default"))}},
	{name: "session session authorization", sql: `SET SESSION SESSION AUTHORIZATION 'bob'`,
		want: []Statement{stmt(SetSessionAuthorization, "session_authorization", str("bob"))}},
	{name: "session_authorization parameter", sql: `SET session_authorization = bob`,
		want: []Statement{stmt(SetSessionAuthorization, "session_authorization", id("bob"))}},
	{name: "local session authorization", sql: `SET LOCAL SESSION AUTHORIZATION bob`,
		want: []Statement{stmt(SetLocal, "session_authorization", id("bob"))}},

	// Transactions.
	{name: "set constraints", sql: `SET CONSTRAINTS ALL DEFERRED`, want: []Statement{stmt(SetTransaction, "")}},
	{name: "set transaction", sql: `SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`, want: []Statement{stmt(SetTransaction, "")}},
	{name: "set transaction snapshot", sql: `SET TRANSACTION SNAPSHOT '00000003-0000001B-1'`, want: []Statement{stmt(SetTransaction, "")}},
	{name: "session characteristics", sql: `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`,
		want: []Statement{stmt(SetTransaction, "")}},
	{name: "local transaction", sql: `SET LOCAL TRANSACTION READ ONLY`, want: []Statement{stmt(SetTransaction, "")}},
	{name: "begin set local commit", sql: "begin; set local statement_timeout = 0; commit",
		want:  []Statement{other, stmt(SetLocal, "statement_timeout", num("0")), other},
		texts: []string{"begin", "set local statement_timeout = 0", "commit"}},

	// RESET.
	{name: "reset", sql: `RESET search_path`, want: []Statement{stmt(Reset, "search_path")}},
	{name: "reset all", sql: `reset ALL`, want: []Statement{stmt(ResetAll, "")}},
	{name: "reset time zone", sql: `RESET TIME ZONE`, want: []Statement{stmt(Reset, "timezone")}},
	{name: "reset session authorization", sql: `RESET SESSION AUTHORIZATION`,
		want: []Statement{stmt(Reset, "session_authorization")}},
	{name: "reset role", sql: `RESET ROLE`, want: []Statement{stmt(Reset, "role")}},
	{name: "reset isolation", sql: `RESET TRANSACTION ISOLATION LEVEL`, want: []Statement{stmt(Reset, "transaction_isolation")}},
	{name: "reset dotted", sql: `RESET "App".X`, want: []Statement{stmt(Reset, "app.x")}},

	// LISTEN and UNLISTEN.
	{name: "listen", sql: `LISTEN Chan`, want: []Statement{stmt(Listen, "chan")}},
	{name: "listen quoted", sql: `listen "Chan"`, want: []Statement{stmt(Listen, "Chan")}},
	{name: "unlisten", sql: `UNLISTEN chan`, want: []Statement{stmt(Unlisten, "chan")}},
	{name: "unlisten star", sql: `UNLISTEN *`, want: []Statement{stmt(Unlisten, "*")}},

	// Prepared statements.
	{name: "prepare", sql: `PREPARE Q(int) AS SELECT $1`, want: []Statement{stmt(Prepare, "q")}},
	{name: "prepare with set_config", sql: `PREPARE p AS SELECT set_config('a', 'b', false)`,
		want: []Statement{withConfigs(stmt(Prepare, "p"), known("a", "b", false))}},
	{name: "prepare transaction", sql: `PREPARE TRANSACTION 'gid'`},
	{name: "statement named transaction", sql: `PREPARE transaction AS SELECT 1`, want: []Statement{stmt(Prepare, "transaction")}},
	{name: "execute", sql: `EXECUTE q(1, 'a')`, want: []Statement{stmt(Execute, "q")}},
	{name: "execute quoted", sql: `EXECUTE "Q"`, want: []Statement{stmt(Execute, "Q")}},
	{name: "deallocate", sql: `DEALLOCATE q`, want: []Statement{stmt(Deallocate, "q")}},
	{name: "deallocate prepare", sql: `DEALLOCATE PREPARE q`, want: []Statement{stmt(Deallocate, "q")}},
	{name: "deallocate all", sql: `DEALLOCATE ALL`, want: []Statement{stmt(Deallocate, "all")}},
	{name: "deallocate prepare all", sql: `deallocate prepare all`, want: []Statement{stmt(Deallocate, "all")}},
	{name: "statement named prepare", sql: `DEALLOCATE prepare`, want: []Statement{stmt(Deallocate, "prepare")}},

	// Cursors.
	{name: "with hold", sql: `DECLARE c CURSOR WITH HOLD FOR select 1`, want: []Statement{stmt(DeclareWithHold, "c")}},
	{name: "without hold", sql: `declare c cursor for select 1`},
	{name: "explicit without hold", sql: `DECLARE c BINARY INSENSITIVE SCROLL CURSOR WITHOUT HOLD FOR SELECT 1`},
	{name: "no scroll with hold", sql: `DECLARE "C" NO SCROLL CURSOR WITH HOLD FOR SELECT 1`,
		want: []Statement{stmt(DeclareWithHold, "C")}},

	// Databases: a test runner's CREATE DATABASE and DROP DATABASE.
	{name: "create database", sql: `CREATE DATABASE "test_t1"`, want: []Statement{stmt(CreateDatabase, "test_t1")}},
	{name: "create database options", sql: `create database Test_T1 WITH TEMPLATE template0 ENCODING 'UTF8'`,
		want: []Statement{stmt(CreateDatabase, "test_t1")}},
	{name: "drop database", sql: `DROP DATABASE "test_t1"`, want: []Statement{stmt(DropDatabase, "test_t1")}},
	{name: "drop database if exists", sql: `DROP DATABASE IF EXISTS x WITH (FORCE)`, want: []Statement{stmt(DropDatabase, "x")}},
	{name: "database named exists", sql: `DROP DATABASE if`, want: []Statement{stmt(DropDatabase, "if")}},
	{name: "create database second", sql: `SELECT 1; CREATE DATABASE d`, want: []Statement{other, stmt(CreateDatabase, "d")}},
	{name: "database in a string", sql: `SELECT 'CREATE DATABASE x'`},
	{name: "database in a comment", sql: `/* DROP DATABASE x */ SELECT 1; -- CREATE DATABASE y`},
	{name: "database in a dollar quote", sql: `DO $$ BEGIN EXECUTE 'CREATE DATABASE x'; END $$`},
	{name: "database as a column", sql: `SELECT database FROM t`},
	{name: "drop table", sql: `DROP TABLE database`},
	{name: "create table named database", sql: `CREATE TABLE database (a int)`},
	{name: "alter database", sql: `ALTER DATABASE d SET work_mem = '1MB'`},

	// Temporary objects.
	{name: "create temporary table", sql: `create temporary table t(a int)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create temp sequence", sql: `CREATE TEMP SEQUENCE s`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create global temporary", sql: `CREATE GLOBAL TEMPORARY TABLE t (a int)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create local temp", sql: `CREATE LOCAL TEMP TABLE t (a int)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create or replace temp view", sql: `CREATE OR REPLACE TEMP VIEW v AS SELECT 1`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create table in pg_temp", sql: `create table pg_temp.t(a int)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "create unlogged in pg_temp", sql: `CREATE UNLOGGED TABLE PG_TEMP . t (a int)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "quoted pg_temp", sql: `CREATE TABLE "pg_temp".t ()`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "pg_temp_N", sql: `CREATE TABLE pg_temp_3.t ()`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "escaped pg_temp", sql: `CREATE TABLE U&"pg\005ftemp".t ()`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "temp function", sql: `CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'`,
		want: []Statement{stmt(CreateTemp, "")}},
	{name: "plain create table", sql: `create table t (a int)`},
	{name: "upper-case quoted PG_TEMP", sql: `CREATE TABLE "PG_TEMP".t ()`},
	{name: "not pg_temp", sql: `CREATE TABLE pg_temporary.t (); CREATE TABLE pg_temp_x.t (); CREATE TABLE s.pg_temp ()`},
	{name: "select into temp", sql: `SELECT * INTO TEMP TABLE t FROM x`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "select into pg_temp", sql: `SELECT 1 AS a INTO pg_temp.t`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "with select into", sql: `WITH a AS (SELECT 1) SELECT * INTO LOCAL TEMPORARY t FROM a`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "insert into table named temp", sql: `WITH a AS (SELECT 1) INSERT INTO temp SELECT * FROM a`},
	{name: "select into plain table", sql: `SELECT * INTO t FROM temp_x`},
	{name: "select from pg_temp", sql: `SELECT * FROM pg_temp.t`},
	{name: "parenthesized select into", sql: `(SELECT 1 AS a INTO TEMP t)`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "explain analyze select into", sql: `EXPLAIN ANALYZE VERBOSE SELECT 1 AS a INTO TEMP t`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "explain create temp", sql: `EXPLAIN (ANALYZE, COSTS OFF) CREATE TEMP TABLE t AS SELECT 1`, want: []Statement{stmt(CreateTemp, "")}},
	{name: "explain execute", sql: `EXPLAIN EXECUTE q(1)`},
	{name: "explain set_config", sql: `EXPLAIN (ANALYZE) WITH x AS (SELECT set_config('a', 'b', true)) SELECT 1`,
		want: []Statement{withConfigs(other, known("a", "b", true))}},

	// DISCARD and LOAD.
	{name: "discard all", sql: `DISCARD ALL`, want: []Statement{stmt(Discard, "all")}},
	{name: "discard plans", sql: `discard Plans`, want: []Statement{stmt(Discard, "plans")}},
	{name: "discard sequences", sql: `DISCARD SEQUENCES`, want: []Statement{stmt(Discard, "sequences")}},
	{name: "discard temp", sql: `DISCARD TEMP`, want: []Statement{stmt(Discard, "temp")}},
	{name: "discard temporary", sql: `DISCARD TEMPORARY`, want: []Statement{stmt(Discard, "temporary")}},
	{name: "load", sql: `LOAD 'auto_explain'`, want: []Statement{stmt(Load, "auto_explain")}},

	// set_config.
	{name: "set_config literal and params", sql: `SELECT set_config('search_path', 'globex', false), set_config($1, $2, $3)`,
		want: []Statement{withConfigs(other, known("search_path", "globex", false),
			SetConfig{NameParam: 1, ValueParam: 2, LocalParam: 3})}},
	{name: "set_config any case", sql: `select SET_CONFIG('Search_Path', 'Globex', TRUE)`,
		want: []Statement{withConfigs(other, known("search_path", "Globex", true))}},
	{name: "set_config qualified", sql: `SELECT pg_catalog.set_config('a', 'b', false)`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "set_config quoted", sql: `SELECT "pg_catalog"."set_config"('a','b','f')`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "set_config three-part name", sql: `SELECT db.pg_catalog.set_config('a', 'b', false)`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "quoted set_config is the function", sql: `SELECT "set_config"('a','b',false)`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "escaped set_config", sql: `SELECT U&"set!005fconfig" UESCAPE '!' ('a', 'b', false)`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "upper-case quoted SET_CONFIG is another function", sql: `SELECT "SET_CONFIG"('a','b',false)`},
	{name: "set_config of another schema", sql: `select myschema.set_config('a', 'b', false)`},
	{name: "set_config column", sql: `SELECT x.set_config('a', 'b', false), set_config FROM t`},
	{name: "set_config cast parameter", sql: `SELECT set_config('a', $1::text, false)`,
		want: []Statement{withConfigs(other, SetConfig{Name: "a", NameKnown: true, ValueParam: 1, LocalKnown: true})}},
	{name: "set_config cast literals", sql: `SELECT set_config('a'::pg_catalog.text, 'x'::character varying, 'on'::bool)`,
		want: []Statement{withConfigs(other, known("a", "x", true))}},
	{name: "set_config boolean strings", sql: `SELECT set_config('a', 'b', ' Yes '), set_config('a', 'b', 'of'), set_config('a', 'b', 'o')`,
		want: []Statement{withConfigs(other, known("a", "b", true), known("a", "b", false),
			SetConfig{Name: "a", Value: "b", NameKnown: true, ValueKnown: true})}},
	{name: "set_config null", sql: `SELECT set_config('a', NULL, NULL)`,
		want: []Statement{withConfigs(other, SetConfig{Name: "a", NameKnown: true, ValueKnown: true, ValueNull: true, LocalKnown: true})}},
	{name: "set_config length cast is not known", sql: `SELECT set_config('a', 'xyz'::varchar(1), false)`,
		want: []Statement{withConfigs(other, SetConfig{Name: "a", NameKnown: true, LocalKnown: true})}},
	{name: "set_config expressions", sql: `SELECT set_config('a' || 'b', current_user, (false))`,
		want: []Statement{withConfigs(other, SetConfig{})}},
	{name: "set_config named arguments", sql: `SELECT set_config(new_value => 'v', is_local := true, setting_name => 'N')`,
		want: []Statement{withConfigs(other, known("n", "v", true))}},
	{name: "set_config mixed notation", sql: `SELECT set_config($1, is_local => $3::boolean, new_value => $2)`,
		want: []Statement{withConfigs(other, SetConfig{NameParam: 1, ValueParam: 2, LocalParam: 3})}},
	{name: "nested set_config", sql: `SELECT set_config('a', set_config('b', 'c', false), false)`,
		want: []Statement{withConfigs(other, SetConfig{Name: "a", NameKnown: true, LocalKnown: true}, known("b", "c", false))}},
	{name: "set_config string forms", sql: `SELECT set_config(E'a\\b', $$x;y$$, 'yes')`,
		want: []Statement{withConfigs(other, known(`a\b`, "x;y", true))}},
	{name: "set_config spacing and comments", sql: "SELECT set_config /* c */ (\n'a' -- c\n, 'b', false)",
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "set_config too few arguments", sql: `SELECT set_config('a')`,
		want: []Statement{withConfigs(other, SetConfig{Name: "a", NameKnown: true})}},
	{name: "set_config no arguments", sql: `SELECT set_config()`, want: []Statement{withConfigs(other, SetConfig{})}},
	{name: "set_config in a string", sql: `SELECT 'set_config(''a'',''b'',false)'`},
	{name: "set_config in a comment", sql: `SELECT 1 /* set_config('a','b',false) */ -- set_config('a','b',false)`},
	{name: "set_config in a CTE", sql: `WITH x AS (SELECT set_config('a','b',false)) SELECT 1`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "set_config under EXPLAIN", sql: `EXPLAIN ANALYZE SELECT set_config('a','b',false)`,
		want: []Statement{withConfigs(other, known("a", "b", false))}},
	{name: "set_config second statement", sql: `SELECT 1; SELECT set_config('a','b',false); SELECT 2`,
		want: []Statement{other, withConfigs(other, known("a", "b", false)), other}},

	// Advisory locks.
	{name: "advisory lock", sql: `select pg_advisory_lock(1)`, want: []Statement{withLocks(other, "pg_advisory_lock")}},
	{name: "xact advisory lock", sql: `select pg_advisory_xact_lock(1)`},
	{name: "advisory unlock", sql: `select pg_advisory_unlock(1), pg_advisory_unlock_all()`},
	{name: "all session lock functions", sql: `SELECT PG_TRY_ADVISORY_LOCK(1), pg_catalog.pg_advisory_lock_shared(1, 2), pg_try_advisory_lock_shared(3), "pg_advisory_lock"(4)`,
		want: []Statement{withLocks(other, "pg_try_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock_shared", "pg_advisory_lock")}},
	{name: "advisory lock without call", sql: `SELECT pg_advisory_lock FROM t`},
	{name: "escaped advisory lock", sql: `SELECT U&"pg_\0061dvisory_lock"(1)`, want: []Statement{withLocks(other, "pg_advisory_lock")}},
	{name: "advisory lock of another schema", sql: `SELECT s.pg_advisory_lock(1)`},

	// Statements whose SET or set_config is not the session's.
	{name: "function SET clause", sql: `CREATE FUNCTION f() RETURNS int SET search_path = evil LANGUAGE sql AS 'select 1'`},
	{name: "alter role set", sql: `ALTER ROLE bob SET search_path = x; ALTER DATABASE d RESET ALL`},
	{name: "DO block", sql: `DO $$ BEGIN PERFORM set_config('a', 'b', false); SET x = 1; END $$`},
	{name: "BEGIN ATOMIC body is split", sql: `CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT set_config('a', 'b', false); SELECT 'x'; END`,
		want:  []Statement{withConfigs(other, known("a", "b", false)), other, other},
		texts: []string{`CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT set_config('a', 'b', false)`, `SELECT 'x'`, `END`}},

	// Lexing: what must not fool the scanner.
	{name: "SET in a string", sql: `SELECT 'set x=1'`},
	{name: "SET in a block comment", sql: `SELECT 1 /* ; SET x = 1 */`},
	{name: "SET in a line comment", sql: "SELECT 1 -- ; SET x = 1\n"},
	{name: "nested block comment", sql: `/* /* */ ; SET x = 1 */ SELECT 1`},
	{name: "after nested block comment", sql: `/* /* */ */ SET x = 1`, want: []Statement{stmt(Set, "x", num("1"))}},
	{name: "comment delimiters inside operators", sql: "SELECT 1 +/* ; SET x = 1 */ 2 *-- ; SET y = 1\n 3"},
	{name: "SET in a dollar quote", sql: `SELECT $$ ; SET x = 1 $$`},
	{name: "dollar quote with tag", sql: `SELECT $a$ $$ ; SET x = 1 $b$ $a$; SET y = 2`,
		want: []Statement{other, stmt(Set, "y", num("2"))}},
	{name: "parameter is not a dollar quote", sql: `SELECT $1; SET x = 1; SELECT $2`,
		want: []Statement{other, stmt(Set, "x", num("1")), other}},
	{name: "dollar inside an identifier", sql: `SELECT a$$b; SET x = 1; SELECT 'c$$'`,
		want: []Statement{other, stmt(Set, "x", num("1")), other}},
	{name: "lone dollar", sql: `SELECT $a; SET x = 1`, want: []Statement{other, stmt(Set, "x", num("1"))}},
	{name: "semicolon in quoted identifier", sql: `SELECT "a;b"; SET x = 1`, want: []Statement{other, stmt(Set, "x", num("1"))}},
	{name: "quoted identifier with quotes", sql: `SELECT "a"";SET x = 1"`},
	{name: "escape string hides", sql: `SELECT E'\'; SET x = 1; --'`},
	{name: "standard string does not", sql: `SELECT 'a\'; SET x = 1; --'`, want: []Statement{other, stmt(Set, "x", num("1"))}},
	{name: "doubled quote", sql: `SELECT 'a''; SET x = 1; --'`},
	{name: "continuation hides", sql: "SELECT 'a'\n'b; SET x = 1'"},
	{name: "continuation over a comment hides", sql: "SELECT 'a'\n-- c\n'; SET x = 1'"},
	{name: "prefix only at token start", sql: `SELECT abe'\'; SET x = 1; --'`, want: []Statement{other, stmt(Set, "x", num("1"))}},
	{name: "number then escape string", sql: `SELECT 1e'\'; SET x = 1; --'`},
	{name: "semicolon in parentheses", sql: `SELECT (1; SET x = 1)`},
	{name: "rule actions", sql: `CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SET x = 1)`},
	{name: "keyword not at start", sql: `UPDATE t SET x = 1; SELECT 1 FROM reset`},
	{name: "empty statements", sql: ";; SET x = 1 ;; /* c */ ; -- c\n;", want: []Statement{stmt(Set, "x", num("1"))},
		texts: []string{"SET x = 1"}},
	{name: "only comments", sql: "/* set */ -- set\n;"},
	{name: "long s is not s", sql: "\u017fET x = 1; SELECT 1"},

	// Unterminated text.
	{name: "unterminated string", sql: `SET x = 'abc`, err: ErrUnterminated},
	{name: "unterminated after a statement", sql: `SET x = 1; SELECT "abc`, want: []Statement{stmt(Set, "x", num("1"))}, err: ErrUnterminated},
	{name: "unterminated nested comment", sql: `SET x = 1; /* /* */`, want: []Statement{stmt(Set, "x", num("1"))}, err: ErrUnterminated},
	{name: "unterminated dollar quote", sql: `SET x = $a$ x $b$`, err: ErrUnterminated},
	{name: "unterminated escape string", sql: `SET x = E'\'`, err: ErrUnterminated},
	{name: "unterminated doubled quote", sql: `SET x = 'a''`, err: ErrUnterminated},
	{name: "unterminated U& identifier", sql: `SET U&"x`, err: ErrUnterminated},
}

func TestScan(t *testing.T) {
	for _, tc := range scanCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Scan(tc.sql)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Scan(%q) error = %v, want %v", tc.sql, err, tc.err)
			}
			checkOffsets(t, tc.sql, got)
			if tc.texts != nil {
				if len(got) != len(tc.texts) {
					t.Fatalf("Scan(%q) = %d statements, want %d", tc.sql, len(got), len(tc.texts))
				}
				for i, st := range got {
					if text := tc.sql[st.Start:st.End]; text != tc.texts[i] {
						t.Errorf("statement %d text = %q, want %q", i, text, tc.texts[i])
					}
				}
			}
			for i := range got {
				got[i].Start, got[i].End = 0, 0
				got[i].NameStart, got[i].NameEnd = 0, 0 // TestNameRange
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Scan(%q) =\n%s\nwant\n%s", tc.sql, format(got), format(tc.want))
			}
		})
	}
}

func format(sts []Statement) string {
	if sts == nil {
		return "  nil"
	}
	var b strings.Builder
	for _, st := range sts {
		fmt.Fprintf(&b, "  %v %q %v configs=%+v locks=%q\n", st.Kind, st.Name, st.Values, st.SetConfigs, st.SessionLockFuncs)
	}
	return b.String()
}

// checkOffsets checks that statements lie within sql, in order, apart.
func checkOffsets(t *testing.T, sql string, sts []Statement) {
	t.Helper()
	prev := 0
	for i, st := range sts {
		if st.Start < prev || st.End <= st.Start || st.End > len(sql) {
			t.Fatalf("statement %d of %q at [%d:%d] after %d", i, sql, st.Start, st.End, prev)
		}
		prev = st.End
	}
}

// TestInterestingCoversScan checks that Interesting is true whenever a full
// scan, without the Interesting shortcut, finds anything to act on.
func TestInterestingCoversScan(t *testing.T) {
	for _, tc := range scanCases {
		sts, _ := scan(tc.sql)
		if len(sts) > 0 && !Interesting(tc.sql) {
			t.Errorf("Interesting(%q) = false, scan found %s", tc.sql, format(sts))
		}
	}
}

func TestInteresting(t *testing.T) {
	for _, sql := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
		"SELECT * FROM settings OFFSET 10",
		"SELECT dataset, asset, reset_val, settled FROM t",
		"SELECT pg_advisory_xact_lock(1)",
		"SELECT attempt, contemporary FROM t",
		"SELECT xset_config('a', 'b', false)",
		"BEGIN",
		"",
	} {
		if Interesting(sql) {
			t.Errorf("Interesting(%q) = true", sql)
		}
	}
	for _, sql := range []string{
		"set x = 1",
		"\"set_config\"(",
		"u&\"x\"",
		"create TEMPorary",
		"1set", // a number then an identifier
		"$set",
		"pg_temp_3.t",
		"UPDATE t SET a = 1",
	} {
		if !Interesting(sql) {
			t.Errorf("Interesting(%q) = false", sql)
		}
	}
}

// TestStatementAlone checks that a statement scanned on its own reads the
// same as in its query string.
func TestStatementAlone(t *testing.T) {
	for _, tc := range scanCases {
		sts, _ := scan(tc.sql)
		for _, st := range sts {
			checkAlone(t, tc.sql, st)
		}
	}
}

func checkAlone(t *testing.T, sql string, st Statement) {
	t.Helper()
	alone, err := scan(sql[st.Start:st.End])
	if !st.interesting() {
		if err != nil || len(alone) != 0 {
			t.Fatalf("statement %q of %q alone = %s, %v", sql[st.Start:st.End], sql, format(alone), err)
		}
		return
	}
	if err != nil || len(alone) != 1 {
		t.Fatalf("statement %q of %q alone = %s, %v", sql[st.Start:st.End], sql, format(alone), err)
	}
	a := alone[0]
	a.Start, a.End = a.Start+st.Start, a.End+st.Start
	if !reflect.DeepEqual(a, st) {
		t.Fatalf("statement %q of %q alone =\n%s\nin place\n%s", sql[st.Start:st.End], sql, format(alone), format([]Statement{st}))
	}
}

const (
	pgbenchSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	pgbenchUpdate = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"
	setQuery      = "SET search_path TO acme, public"
)

func TestNoAllocations(t *testing.T) {
	for _, sql := range []string{pgbenchSelect, pgbenchUpdate, "SELECT count(*) FROM t; SELECT COUNT(*), 'set' FROM u"} {
		if n := testing.AllocsPerRun(100, func() { _ = Interesting(sql) }); n != 0 {
			t.Errorf("Interesting(%q) allocates %v times", sql, n)
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = Scan(sql) }); n != 0 {
			t.Errorf("Scan(%q) allocates %v times", sql, n)
		}
	}
}

func TestKindString(t *testing.T) {
	if s := SetSessionAuthorization.String(); s != "SetSessionAuthorization" {
		t.Errorf("String() = %q", s)
	}
	if s := Kind(200).String(); s != "Kind(200)" {
		t.Errorf("String() = %q", s)
	}
	if s := Opaque.String(); s != "Opaque" {
		t.Errorf("String() = %q", s)
	}
}

func FuzzScan(f *testing.F) {
	for _, tc := range scanCases {
		f.Add(tc.sql)
	}
	f.Add(pgbenchSelect)
	f.Add(pgbenchUpdate)
	f.Fuzz(func(t *testing.T, sql string) {
		sts, err := scan(sql)
		if err != nil && !errors.Is(err, ErrUnterminated) {
			t.Fatalf("scan(%q) error %v", sql, err)
		}
		checkOffsets(t, sql, sts)
		if len(sts) > 0 && !Interesting(sql) {
			t.Fatalf("Interesting(%q) = false, scan found %s", sql, format(sts))
		}
		public, perr := Scan(sql)
		if Interesting(sql) && (!reflect.DeepEqual(public, sts) || perr != err) {
			t.Fatalf("Scan(%q) = %s, %v; scan = %s, %v", sql, format(public), perr, format(sts), err)
		}
		if !Interesting(sql) && (public != nil || perr != nil) {
			t.Fatalf("Scan(%q) = %s, %v for uninteresting text", sql, format(public), perr)
		}
		for _, st := range sts {
			checkAlone(t, sql, st)
		}
	})
}

func BenchmarkScanPgbenchSelect(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Scan(pgbenchSelect)
	}
}

func BenchmarkScanPgbenchUpdate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Scan(pgbenchUpdate)
	}
}

func BenchmarkScanSet(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Scan(setQuery)
	}
}

// NameStart and NameEnd place the statement name of EXECUTE and
// DEALLOCATE as written, comments and all around it, and are 0 where the
// name is not one plain or quoted identifier.
func TestNameRange(t *testing.T) {
	tests := []struct{ text, want string }{
		{"EXECUTE foo", "foo"},
		{`execute "Fo""o"(1, 2)`, `"Fo""o"`},
		{"EXECUTE /* c */ foo", "foo"},
		{"DEALLOCATE PREPARE -- c\n Foo", "Foo"},
		{"DEALLOCATE foo", "foo"},
		{"DEALLOCATE PREPARE", "PREPARE"},
		{"DEALLOCATE ALL", ""},
		{`EXECUTE U&"foo"`, ""},
		{"EXECUTE", ""},
	}
	for _, tt := range tests {
		stmts, err := Scan("SELECT 1; " + tt.text)
		if err != nil || len(stmts) != 2 {
			t.Fatalf("%q: %v, %v", tt.text, stmts, err)
		}
		st := stmts[1]
		got := ""
		if st.NameEnd != 0 {
			got = ("SELECT 1; " + tt.text)[st.NameStart:st.NameEnd]
		}
		if got != tt.want {
			t.Errorf("%q: name as written %q, want %q", tt.text, got, tt.want)
		}
	}
}
