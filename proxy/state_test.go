package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy/sqlscan"
	"github.com/pgtenant/pgtenant/router"
)

// newTestSession is a session of tenant "acme" (schema acme) in
// transaction pooling, with no backend and a client connection nobody
// reads, and "shared" as a shared schema.
func newTestSession(t testing.TB) *session {
	t.Helper()
	cfg := config.Default()
	cfg.SharedSchemas = []string{"shared"}
	nc, peer := net.Pipe()
	t.Cleanup(func() { nc.Close(); peer.Close() })
	s := &session{
		srv: &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		nc:  nc,
		tr: tracker{
			tenant:   router.Tenant{Name: "acme", Schema: "acme", Active: true},
			shared:   cfg.SharedSchemas,
			stmts:    map[string]*clientStmt{},
			settings: map[string]string{},
		},
		mode: config.PoolTransaction,
		link: link{status: 'I'},
	}
	s.cond = sync.NewCond(&s.mu)
	s.tr.pin = buildPin(pinOwner(s.tr.tenant.Name, s.tr.user), s.tr.tenant.Schema, nil)
	return s
}

// scanWant is the part of a scanResult a classify case checks.
type scanWant struct {
	changes    []change
	refuse     string // SQLSTATE, "" for none
	unpoolable string
	drop       bool
	params     []paramChange
}

func checkScan(t *testing.T, text string, got scanResult, want scanWant) {
	t.Helper()
	code := ""
	if got.refuse != nil {
		code = got.refuse.Code
	}
	if code != want.refuse {
		msg := ""
		if got.refuse != nil {
			msg = got.refuse.Message
		}
		t.Errorf("%q: refuse %q (%s), want %q", text, code, msg, want.refuse)
	}
	if want.refuse != "" {
		return // the rest does not matter: the text never runs
	}
	if len(got.changes) != 0 || len(want.changes) != 0 {
		if !reflect.DeepEqual(got.changes, want.changes) {
			t.Errorf("%q: changes %+v, want %+v", text, got.changes, want.changes)
		}
	}
	if got.unpoolable != want.unpoolable {
		t.Errorf("%q: unpoolable %q, want %q", text, got.unpoolable, want.unpoolable)
	}
	if got.dropStatements != want.drop {
		t.Errorf("%q: dropStatements %v, want %v", text, got.dropStatements, want.drop)
	}
	if len(got.params) != 0 || len(want.params) != 0 {
		if !reflect.DeepEqual(got.params, want.params) {
			t.Errorf("%q: params %+v, want %+v", text, got.params, want.params)
		}
	}
}

func set(name, value string) change { return change{name: name, value: value} }
func reset(name string) change      { return change{name: name} }

const (
	refused   = codeInsufficientPriv   // 42501: search_path
	unsafeLex = codeFeatureUnsupported // 0A000: lexerSafe
)

func TestScanTextSettings(t *testing.T) {
	tests := []struct {
		text string
		want scanWant
	}{
		{"SET statement_timeout = 5000", scanWant{changes: []change{set("statement_timeout", "5000")}}},
		{"SET statement_timeout TO '5s'", scanWant{changes: []change{set("statement_timeout", "'5s'")}}},
		{"set Statement_Timeout to -1", scanWant{changes: []change{set("statement_timeout", "-1")}}},
		{"SET SESSION application_name = myapp", scanWant{changes: []change{set("application_name", "'myapp'")}}},
		{"SET DateStyle TO ISO, MDY", scanWant{changes: []change{set("datestyle", "'iso', 'mdy'")}}},
		{`SET application_name = "MyApp"`, scanWant{changes: []change{set("application_name", `"MyApp"`)}}},
		{`SET application_name = 'it''s'`, scanWant{changes: []change{set("application_name", "'it''s'")}}},
		{`SET application_name = E'back\\slash'`, scanWant{changes: []change{set("application_name", `E'back\\slash'`)}}},
		{"SET enable_seqscan = off", scanWant{changes: []change{set("enable_seqscan", "'off'")}}},
		{"SET app.user_id = 42", scanWant{changes: []change{set("app.user_id", "42")}}},
		{"SET work_mem TO DEFAULT", scanWant{changes: []change{reset("work_mem")}}},
		{"SET LOCAL statement_timeout = 0", scanWant{}},
		{"SET LOCAL ROLE reader", scanWant{}},
		{"RESET statement_timeout", scanWant{changes: []change{reset("statement_timeout")}}},
		{"RESET ALL", scanWant{changes: []change{{all: true}}}},
		{"SET ROLE reader", scanWant{changes: []change{set("role", "'reader'")}}},
		{"SET SESSION ROLE reader", scanWant{changes: []change{set("role", "'reader'")}}},
		{"SET ROLE NONE", scanWant{changes: []change{reset("role")}}},
		{"RESET ROLE", scanWant{changes: []change{reset("role")}}},
		{"SET SESSION AUTHORIZATION bob", scanWant{changes: []change{set("session_authorization", "'bob'")}}},
		{"SET SESSION AUTHORIZATION DEFAULT", scanWant{changes: []change{reset("session_authorization")}}},
		{"SET TIME ZONE 'Europe/Paris'", scanWant{changes: []change{set("timezone", "'Europe/Paris'")}}},
		{"SET TIME ZONE LOCAL", scanWant{changes: []change{reset("timezone")}}},
		{"SET TIME ZONE -7", scanWant{changes: []change{set("timezone", "-7")}}},
		{"SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", scanWant{unpoolable: "SET timezone with a value pgtenant cannot track"}},
		{"SET work_mem FROM CURRENT", scanWant{unpoolable: "SET work_mem with a value pgtenant cannot track"}},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", scanWant{}},
		{"SET a = 1; RESET b; SET LOCAL c = 2; RESET ALL; SET d = 'x'", scanWant{changes: []change{
			set("a", "1"), reset("b"), {all: true}, set("d", "'x'")}}},

		// set_config
		{"SELECT set_config('app.user', 'bob', false)", scanWant{changes: []change{set("app.user", "'bob'")}}},
		{"SELECT set_config('App.User', 'it''s', false)", scanWant{changes: []change{set("app.user", "'it''s'")}}},
		{"select pg_catalog.set_config('work_mem', '64MB', 'off')", scanWant{changes: []change{set("work_mem", "'64MB'")}}},
		{"SELECT set_config('app.user', 'bob', NULL)", scanWant{changes: []change{set("app.user", "'bob'")}}},
		{"SELECT set_config('app.user', $1, false)", scanWant{params: []paramChange{{name: "app.user", param: 1}}}},
		{"SELECT set_config('app.user', $2::text, false), set_config('b', $1, false)", scanWant{params: []paramChange{
			{name: "app.user", param: 2}, {name: "b", param: 1}}}},
		{"SELECT set_config('app.user', 'bob', true)", scanWant{}},
		{"SELECT set_config('app.user', $1, true)", scanWant{}},
		{"SELECT set_config('app.user', 'bob', $1)", scanWant{unpoolable: "set_config with an is_local pgtenant cannot read"}},
		// A name pgtenant cannot read could be search_path: refused.
		{"SELECT set_config(name, 'bob', false) FROM t", scanWant{refuse: "0A000"}},
		{"SELECT set_config($1, 'bob', false)", scanWant{refuse: "0A000"}},
		{"SELECT set_config($1, 'bob', true)", scanWant{refuse: "0A000"}},
		{"SELECT set_config('app.user', 'bob', is_local)", scanWant{unpoolable: "set_config with an is_local pgtenant cannot read"}},
		{"SELECT set_config('search_path', 'globex', is_local)", scanWant{refuse: "42501"}},
		{"SELECT set_config('app.user', upper('bob'), false)", scanWant{unpoolable: "set_config with a value pgtenant cannot track"}},

		// DISCARD and DEALLOCATE
		{"DISCARD ALL", scanWant{changes: []change{{all: true, discard: true}}, drop: true}},
		{"discard all;", scanWant{changes: []change{{all: true, discard: true}}, drop: true}},
		{"DISCARD PLANS", scanWant{}},
		{"DISCARD TEMP", scanWant{}},
		{"DEALLOCATE ALL", scanWant{drop: true}},
		{"DEALLOCATE PREPARE ALL", scanWant{drop: true}},
		{"DEALLOCATE stranger", scanWant{}},

		// Features that stay on one backend.
		{"LISTEN chan", scanWant{unpoolable: "LISTEN"}},
		{"UNLISTEN *", scanWant{}},
		{"PREPARE p AS SELECT 1", scanWant{unpoolable: "PREPARE"}},
		{"PREPARE TRANSACTION 'x'", scanWant{}},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", scanWant{unpoolable: "DECLARE ... WITH HOLD"}},
		{"DECLARE c CURSOR FOR SELECT 1", scanWant{}},
		{"CREATE TEMP TABLE t (a int)", scanWant{unpoolable: "temporary table"}},
		{"create temporary view v as select 1", scanWant{unpoolable: "temporary table"}},
		{"CREATE TABLE pg_temp.t (a int)", scanWant{unpoolable: "temporary table"}},
		{"SELECT pg_advisory_lock(1)", scanWant{unpoolable: "pg_advisory_lock"}},
		{"SELECT pg_try_advisory_lock_shared(1, 2)", scanWant{unpoolable: "pg_try_advisory_lock_shared"}},
		{"SELECT pg_advisory_xact_lock(1)", scanWant{}},
		{"LOAD 'auto_explain'", scanWant{unpoolable: "LOAD"}},
		{"LISTEN a; PREPARE p AS SELECT 1", scanWant{unpoolable: "LISTEN"}},
		{"SET x = 1; LISTEN a", scanWant{changes: []change{set("x", "1")}, unpoolable: "LISTEN"}},

		// The words inside strings, comments, dollar quotes, identifiers.
		{"SELECT 'SET search_path = other'", scanWant{}},
		{"SELECT 'LISTEN x; DISCARD ALL'", scanWant{}},
		{"-- SET search_path = other\nSELECT 1", scanWant{}},
		{"/* LISTEN x; /* nested */ SET standard_conforming_strings = off */ SELECT 1", scanWant{}},
		{"SELECT $$ SET search_path = other $$", scanWant{}},
		{"SELECT $tag$ $$ DISCARD ALL $$ $tag$", scanWant{}},
		{`SELECT E'\' SET search_path = other; '`, scanWant{}},
		{"SELECT 'pg_advisory_lock(1)', 'set_config(''search_path'', ''other'', false)'", scanWant{}},
		{`SELECT "set_config"`, scanWant{}},
		{"SELECT 1 AS reset_count, settings FROM listener", scanWant{}},
		// Unterminated: the server refuses all of it, so nothing runs.
		{"SET search_path = other; SELECT 'oops", scanWant{}},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		checkScan(t, tt.text, s.tr.scanText(tt.text), tt.want)
	}
}

func TestScanTextSearchPath(t *testing.T) {
	tests := []struct {
		text string
		want scanWant
	}{
		{"SET search_path = acme", scanWant{changes: []change{set("search_path", "'acme'")}}},
		{"SET search_path TO acme, public", scanWant{changes: []change{set("search_path", "'acme', 'public'")}}},
		{"SET search_path = pg_catalog, pg_temp, shared, acme", scanWant{changes: []change{
			set("search_path", "'pg_catalog', 'pg_temp', 'shared', 'acme'")}}},
		{"set SEARCH_PATH = ACME", scanWant{changes: []change{set("search_path", "'acme'")}}},
		{`SET "Search_Path" TO acme`, scanWant{changes: []change{set("search_path", "'acme'")}}},
		{`SET search_path = "acme", "public"`, scanWant{changes: []change{set("search_path", `"acme", "public"`)}}},
		{"SET search_path TO DEFAULT", scanWant{changes: []change{reset("search_path")}}},
		{"RESET search_path", scanWant{changes: []change{reset("search_path")}}},
		{"SET search_path = 'acme'", scanWant{changes: []change{set("search_path", "'acme'")}}},
		{"SET search_path = 'acme', 'public'", scanWant{changes: []change{set("search_path", "'acme', 'public'")}}},
		{"SET search_path = other", scanWant{refuse: refused}},
		{"SET search_path = acme, other", scanWant{refuse: refused}},
		{"SET SESSION search_path = other", scanWant{refuse: refused}},
		{`SET search_path = "ACME"`, scanWant{refuse: refused}},
		{`SET search_path = "acme "`, scanWant{refuse: refused}},
		{"SET search_path = 'acme, other'", scanWant{refuse: refused}},
		{"SET search_path = 'other'", scanWant{refuse: refused}},
		{`SET search_path = '"Other"'`, scanWant{refuse: refused}},
		{"SET search_path = on", scanWant{refuse: refused}},
		{"SET search_path = 1", scanWant{refuse: refused}},
		{"SET SCHEMA 'other'", scanWant{refuse: refused}},
		{"SET SCHEMA 'acme'", scanWant{changes: []change{set("search_path", "'acme'")}}},
		{"SET LOCAL search_path = other", scanWant{refuse: refused}},
		{"SET LOCAL search_path = acme, public", scanWant{}},
		{"SET LOCAL search_path TO DEFAULT", scanWant{}},
		{"SELECT 1; SET search_path = other; LISTEN x", scanWant{refuse: refused}},

		// set_config takes the value as search_path's own list syntax.
		{"SELECT set_config('search_path', 'acme, public', false)", scanWant{changes: []change{set("search_path", "'acme, public'")}}},
		{"SELECT set_config('search_path', 'ACME,PUBLIC', false)", scanWant{changes: []change{set("search_path", "'ACME,PUBLIC'")}}},
		{`SELECT set_config('search_path', '"acme", "public", shared', false)`, scanWant{changes: []change{
			set("search_path", `'"acme", "public", shared'`)}}},
		{"SELECT set_config('search_path', '', false)", scanWant{changes: []change{set("search_path", "''")}}},
		{"SELECT set_config('search_path', 'acme, other', false)", scanWant{refuse: refused}},
		{"SELECT set_config('SEARCH_PATH', 'other', false)", scanWant{refuse: refused}},
		{`SELECT set_config('search_path', '"ACME"', false)`, scanWant{refuse: refused}},
		{`SELECT set_config('search_path', '"acme, public"', false)`, scanWant{refuse: refused}},
		{"SELECT set_config('search_path', 'other', true)", scanWant{refuse: refused}},
		{"SELECT set_config('Search_Path', 'public, other', true)", scanWant{refuse: refused}},
		{"SELECT set_config('search_path', 'acme', true)", scanWant{}},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		res := s.tr.scanText(tt.text)
		checkScan(t, tt.text, res, tt.want)
		if res.refuse != nil && !strings.Contains(res.refuse.Message, `"acme"`) {
			t.Errorf("%q: refusal does not name the tenant: %q", tt.text, res.refuse.Message)
		}
	}
}

// A NULL value resets the parameter (set_config is not strict, and
// set_config_by_name passes NULL on as "reset"): it must be tracked as a
// reset, never as the empty string, which for search_path would pin an
// empty path instead of the tenant's.
func TestSetConfigNullIsReset(t *testing.T) {
	for _, name := range []string{"app.user", "search_path"} {
		text := "SELECT set_config('" + name + "', NULL, false)"
		s := newTestSession(t)
		checkScan(t, text, s.tr.scanText(text), scanWant{changes: []change{reset(name)}})
	}
}

// In SET, each string item is one schema name taken as written:
// PostgreSQL quotes it as an identifier (search_path is GUC_LIST_QUOTE, see
// flatten_set_variable_args), so SET search_path = 'ACME' names the schema
// "ACME", not acme, and 'acme, public' the one schema "acme, public".
// set_config, by contrast, takes its value in search_path's list syntax.
func TestSetSearchPathStringIsOneSchema(t *testing.T) {
	for _, text := range []string{
		"SET search_path = 'ACME'",
		"SET search_path = ' acme'",
		"SET search_path = 'acme, public'",
		"SET search_path = acme, 'Public'",
		"SET LOCAL search_path = 'ACME'",
	} {
		s := newTestSession(t)
		checkScan(t, text, s.tr.scanText(text), scanWant{refuse: refused})
	}
}

// PostgreSQL folds only ASCII letters of an unquoted name (in a multibyte
// server encoding): U+212A KELVIN SIGN stays itself, so "\u212aiosk" is not
// the schema kiosk, though Go's strings.ToLower makes it so.
func TestSearchPathFoldsASCIIOnly(t *testing.T) {
	for _, text := range []string{
		"SET search_path = \u212aiosk",
		"SELECT set_config('search_path', '\u212aIOSK', false)",
		"SELECT set_config('search_path', 'public, \u212aiosk', true)",
	} {
		s := newTestSession(t)
		s.tr.tenant = router.Tenant{Name: "kiosk", Schema: "kiosk"}
		res := s.tr.scanText(text)
		if res.refuse == nil || res.refuse.Code != refused {
			t.Errorf("%q: not refused (changes %+v)", text, res.changes)
		}
	}
	// The ASCII spelling is the tenant's own schema.
	s := newTestSession(t)
	s.tr.tenant = router.Tenant{Name: "kiosk", Schema: "kiosk"}
	if res := s.tr.scanText("SELECT set_config('search_path', 'KIOSK', false)"); res.refuse != nil {
		t.Errorf("KIOSK refused: %s", res.refuse.Message)
	}
}

func TestScanTextLexerSafety(t *testing.T) {
	tests := []struct {
		text string
		want scanWant
	}{
		{"SET standard_conforming_strings = off", scanWant{refuse: unsafeLex}},
		{"SET standard_conforming_strings TO false", scanWant{refuse: unsafeLex}},
		{"SET standard_conforming_strings = 0", scanWant{refuse: unsafeLex}},
		{"SET standard_conforming_strings = 'of'", scanWant{refuse: unsafeLex}},
		{"SET LOCAL standard_conforming_strings = off", scanWant{refuse: unsafeLex}},
		{"SELECT set_config('standard_conforming_strings', 'off', false)", scanWant{refuse: unsafeLex}},
		{"SELECT set_config('Standard_Conforming_Strings', 'no', true)", scanWant{refuse: unsafeLex}},
		{"SET standard_conforming_strings = on", scanWant{changes: []change{set("standard_conforming_strings", "'on'")}}},
		{"SET standard_conforming_strings = 'true'", scanWant{changes: []change{set("standard_conforming_strings", "'true'")}}},
		{"SET standard_conforming_strings = 1", scanWant{changes: []change{set("standard_conforming_strings", "1")}}},

		{"SET client_encoding = 'SJIS'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding TO 'Shift_JIS'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = sjis", scanWant{refuse: unsafeLex}},
		{"SET NAMES 'BIG5'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = GBK", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'win-936'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'UHC'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'GB18030'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'johab'", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'Windows_932'", scanWant{refuse: unsafeLex}},
		{"SET LOCAL client_encoding = 'BIG5'", scanWant{refuse: unsafeLex}},
		{"SELECT set_config('client_encoding', 'sjis', false)", scanWant{refuse: unsafeLex}},
		{"SELECT set_config('client_encoding', 'Big5', true)", scanWant{refuse: unsafeLex}},
		{"SET client_encoding = 'UTF8'", scanWant{changes: []change{set("client_encoding", "'UTF8'")}}},
		{"SET client_encoding = LATIN1", scanWant{changes: []change{set("client_encoding", "'latin1'")}}},
		{"SET NAMES 'EUC_JP'", scanWant{changes: []change{set("client_encoding", "'EUC_JP'")}}},
		{"SELECT set_config('client_encoding', 'UTF-8', false)", scanWant{changes: []change{set("client_encoding", "'UTF-8'")}}},

		{"SELECT 'SET client_encoding = SJIS'", scanWant{}},
		{"-- SET standard_conforming_strings = off\nSELECT 1", scanWant{}},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		checkScan(t, tt.text, s.tr.scanText(tt.text), tt.want)
	}
}

func TestLexerSafe(t *testing.T) {
	tests := []struct {
		name, value string
		refuse      bool
	}{
		{"standard_conforming_strings", "on", false},
		{"standard_conforming_strings", " ON ", false},
		{"standard_conforming_strings", "true", false},
		{"standard_conforming_strings", "yes", false},
		{"standard_conforming_strings", "1", false},
		{"standard_conforming_strings", "off", true},
		{"standard_conforming_strings", "false", true},
		{"standard_conforming_strings", "0", true},
		{"standard_conforming_strings", "nonsense", true},
		{"client_encoding", "SJIS", true},
		{"client_encoding", "Shift_JIS", true},
		{"client_encoding", "shift-jis-2004", true},
		{"client_encoding", "MsKanji", true},
		{"client_encoding", "BIG5", true},
		{"client_encoding", "win950", true},
		{"client_encoding", "GBK", true},
		{"client_encoding", "CP936", false}, // not an alias PostgreSQL knows
		{"client_encoding", "UTF8", false},
		{"client_encoding", "utf-8", false},
		{"client_encoding", "LATIN1", false},
		{"client_encoding", "SQL_ASCII", false},
		{"application_name", "SJIS", false},
		{"timezone", "off", false},
	}
	for _, tt := range tests {
		e := lexerSafe(tt.name, tt.value)
		if (e != nil) != tt.refuse {
			t.Errorf("lexerSafe(%q, %q) = %v, want refuse %v", tt.name, tt.value, e, tt.refuse)
		}
		if e != nil && (e.Code != codeFeatureUnsupported || e.Severity != "ERROR" || e.Hint == "") {
			t.Errorf("lexerSafe(%q, %q) = %+v", tt.name, tt.value, e)
		}
	}
}

// EXECUTE and DEALLOCATE of a statement the client prepared with Parse are
// found, with the name's place in the text.
func TestScanTextRefs(t *testing.T) {
	s := newTestSession(t)
	s.tr.stmts["foo"] = &clientStmt{name: "foo"}
	s.tr.stmts["Foo"] = &clientStmt{name: "Foo"}
	text := `SELECT 1; EXECUTE foo(1); execute "Foo"; DEALLOCATE PREPARE foo; EXECUTE bar; DEALLOCATE ALL`
	res := s.tr.scanText(text)
	var got []string
	for _, r := range res.refs {
		got = append(got, text[r.start:r.end]+"/"+r.name+map[bool]string{true: "/drop", false: ""}[r.drop])
	}
	want := []string{"foo/foo", `"Foo"/Foo`, "foo/foo/drop"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("refs %q, want %q", got, want)
	}
	if !res.dropStatements {
		t.Error("DEALLOCATE ALL not noticed")
	}
}

func TestRewriteRefs(t *testing.T) {
	s := newTestSession(t)
	s.link.be = testBackend(t, 0)
	rest := parseRest(t, "SELECT $1::int", 23)
	s.tr.stmts["foo"] = &clientStmt{name: "foo", key: statementKey("acme", rest), parse: rest}
	text := "EXECUTE foo(1); DEALLOCATE foo"
	res := s.tr.scanText(text)
	got := s.rewriteRefsLocked(text, res.refs)
	if want := `EXECUTE "pgt_1"(1); DEALLOCATE "pgt_1"`; got != want {
		t.Fatalf("rewritten to %q, want %q", got, want)
	}
	msgs := frontendMsgs(t, s.out)
	if len(msgs) != 1 || msgs[0].(*pgproto3.Parse).Name != "pgt_1" || msgs[0].(*pgproto3.Parse).Query != "SELECT $1::int" {
		t.Fatalf("statement prepared with %#v", msgs)
	}
	if _, ok := s.tr.stmts["foo"]; ok {
		t.Error("DEALLOCATE left the client's statement")
	}
	if _, _, ok := s.link.be.Statements.Lookup(statementKey("acme", rest)); ok {
		t.Error("DEALLOCATE left the backend's statement in the cache")
	}
	if got := s.rewriteRefsLocked("EXECUTE foo", nil); got != "" {
		t.Errorf("nothing to rewrite gave %q", got)
	}
}

func TestRenderValues(t *testing.T) {
	v := func(k sqlscan.ValueKind, text string) sqlscan.Value { return sqlscan.Value{Kind: k, Text: text} }
	tests := []struct {
		name string
		in   []sqlscan.Value
		want string
		ok   bool
	}{
		{"ident", []sqlscan.Value{v(sqlscan.Ident, "acme")}, "'acme'", true},
		{"string", []sqlscan.Value{v(sqlscan.String, "it's")}, "'it''s'", true},
		{"string with backslash", []sqlscan.Value{v(sqlscan.String, `a\b`)}, `E'a\\b'`, true},
		{"quoted ident", []sqlscan.Value{v(sqlscan.QuotedIdent, `My"App`)}, `"My""App"`, true},
		{"number", []sqlscan.Value{v(sqlscan.Number, "-1.5")}, "-1.5", true},
		{"boolean keyword", []sqlscan.Value{v(sqlscan.Keyword, "on")}, "'on'", true},
		{"default", []sqlscan.Value{v(sqlscan.Keyword, "default")}, "", true},
		{"local", []sqlscan.Value{v(sqlscan.Keyword, "local")}, "", true},
		{"none", []sqlscan.Value{v(sqlscan.Keyword, "none")}, "", true},
		{"list", []sqlscan.Value{v(sqlscan.Ident, "iso"), v(sqlscan.String, "MDY"), v(sqlscan.QuotedIdent, "X"), v(sqlscan.Number, "3")}, `'iso', 'MDY', "X", 3`, true},
		{"keyword in a list is a value", []sqlscan.Value{v(sqlscan.Keyword, "default"), v(sqlscan.Ident, "x")}, "'default', 'x'", true},
		{"opaque", []sqlscan.Value{v(sqlscan.Opaque, "from current")}, "", false},
		{"opaque in a list", []sqlscan.Value{v(sqlscan.Ident, "a"), v(sqlscan.Opaque, "$1")}, "", false},
		{"unknown kind", []sqlscan.Value{v(sqlscan.ValueKind(99), "x")}, "", false},
	}
	for _, tt := range tests {
		got, ok := renderValues(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: renderValues = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSettle(t *testing.T) {
	pending := []change{set("work_mem", "'64MB'"), reset("statement_timeout")}
	before := map[string]string{"statement_timeout": "5000", "timezone": "'UTC'"}
	committed := map[string]string{"work_mem": "'64MB'", "timezone": "'UTC'"}
	tests := []struct {
		name         string
		status       byte
		failed       bool
		lastRollback bool
		wantSettings map[string]string
		wantPending  bool
	}{
		{"commit at idle", 'I', false, false, committed, false},
		{"error in the segment", 'I', true, false, before, false},
		{"rolled back", 'I', false, true, before, false},
		{"error and rollback", 'I', true, true, before, false},
		{"still in a transaction", 'T', false, false, before, true},
		{"failed transaction", 'E', true, false, before, true},
		{"rollback tag inside a transaction", 'T', false, true, before, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t)
			for k, v := range before {
				s.tr.settings[k] = v
			}
			s.tr.rebuildPin()
			pinBefore := s.tr.pin
			s.tr.txnChanges = append(s.tr.txnChanges, pending...)
			s.tr.segmentFailed, s.tr.lastRollback = tt.failed, tt.lastRollback

			s.tr.settle(tt.status)

			if !reflect.DeepEqual(s.tr.settings, tt.wantSettings) {
				t.Errorf("settings %v, want %v", s.tr.settings, tt.wantSettings)
			}
			if got := len(s.tr.txnChanges) > 0; got != tt.wantPending {
				t.Errorf("tentative %+v, want pending %v", s.tr.txnChanges, tt.wantPending)
			}
			if s.tr.segmentFailed {
				t.Error("segmentFailed not consumed")
			}
			if tt.status == 'I' && s.tr.lastRollback {
				t.Error("lastRollback kept past the end of the transaction")
			}
			pinChanged := !bytes.Equal(s.tr.pin.msgs, pinBefore.msgs) || s.tr.pin.key != pinBefore.key
			if wantChanged := tt.status == 'I' && !tt.failed && !tt.lastRollback; pinChanged != wantChanged {
				t.Errorf("pin changed %v, want %v", pinChanged, wantChanged)
			}
		})
	}
}

// A transaction's life: changes wait through 'T' and 'E' and are decided
// at the 'I' that ends it.
func TestSettleSequences(t *testing.T) {
	type step struct {
		changes  []change // appended to tentative before the ReadyForQuery
		failed   bool     // an error in this segment
		rollback bool     // the last CommandComplete was ROLLBACK
		status   byte
	}
	tests := []struct {
		name  string
		steps []step
		want  map[string]string
	}{
		{"BEGIN; SET; SELECT; COMMIT", []step{
			{changes: []change{set("a", "1")}, status: 'T'},
			{status: 'T'},
			{status: 'I'},
		}, map[string]string{"a": "1"}},
		{"BEGIN; SET; error; ROLLBACK", []step{
			{changes: []change{set("a", "1")}, status: 'T'},
			{failed: true, status: 'E'},
			{rollback: true, status: 'I'},
		}, map[string]string{}},
		{"BEGIN; SET; error; COMMIT (tagged ROLLBACK)", []step{
			{changes: []change{set("a", "1")}, status: 'T'},
			{failed: true, status: 'E'},
			{rollback: true, status: 'I'},
		}, map[string]string{}},
		{"BEGIN; SET; error; ROLLBACK TO SAVEPOINT; COMMIT", []step{
			{changes: []change{set("a", "1")}, status: 'T'},
			{failed: true, status: 'E'},
			{rollback: true, status: 'T'},
			{status: 'I'},
		}, map[string]string{"a": "1"}},
		{"rolled back, then a new transaction commits", []step{
			{changes: []change{set("a", "1")}, status: 'T'},
			{rollback: true, status: 'I'},
			{changes: []change{set("b", "2")}, status: 'I'},
		}, map[string]string{"b": "2"}},
		{"ROLLBACK with nothing pending does not leak into the next", []step{
			{rollback: true, status: 'I'},
			{changes: []change{set("b", "2")}, status: 'I'},
		}, map[string]string{"b": "2"}},
		{"SET then RESET then SET again", []step{
			{changes: []change{set("a", "1"), reset("a"), set("a", "3")}, status: 'I'},
		}, map[string]string{"a": "3"}},
		{"RESET ALL clears earlier settings", []step{
			{changes: []change{set("a", "1"), set("b", "2")}, status: 'I'},
			{changes: []change{{all: true}, set("c", "3")}, status: 'I'},
		}, map[string]string{"c": "3"}},
		{"RESET x deletes", []step{
			{changes: []change{set("a", "1"), set("b", "2")}, status: 'I'},
			{changes: []change{reset("a")}, status: 'I'},
		}, map[string]string{"b": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSession(t)
			for _, st := range tt.steps {
				s.tr.txnChanges = append(s.tr.txnChanges, st.changes...)
				s.tr.segmentFailed = st.failed
				s.tr.lastRollback = st.rollback
				s.tr.settle(st.status)
			}
			if !reflect.DeepEqual(s.tr.settings, tt.want) {
				t.Errorf("settings %v, want %v", s.tr.settings, tt.want)
			}
			if len(s.tr.txnChanges) != 0 {
				t.Errorf("tentative left: %+v", s.tr.txnChanges)
			}
		})
	}
}

// commitText runs text's changes through a committed transaction.
func commitText(t *testing.T, s *session, text string) {
	t.Helper()
	res := s.tr.scanText(text)
	if res.refuse != nil {
		t.Fatalf("%q refused: %s", text, res.refuse.Message)
	}
	s.tr.txnChanges = append(s.tr.txnChanges, res.changes...)
	s.tr.settle('I')
}

func TestSettleRebuildsPin(t *testing.T) {
	s := newTestSession(t)
	s.tr.params = []startupParam{{Name: "application_name", Value: "psql"}, {Name: "datestyle", Value: "ISO"}}
	s.tr.pin = buildPin(pinOwner(s.tr.tenant.Name, s.tr.user), s.tr.tenant.Schema, s.tr.params)

	commitText(t, s, "SET ROLE reader; SET statement_timeout = 5000; SET SESSION AUTHORIZATION bob; SET datestyle = German")
	sp, sets := pinParts(t, s.tr.pin)
	if want := `"acme", public`; sp != want {
		t.Errorf("search_path %q, want %q", sp, want)
	}
	// session_authorization first, then by name; the client's datestyle
	// overrides the startup one. SET SESSION AUTHORIZATION ended the SET
	// ROLE before it, as in PostgreSQL, so no role is set.
	want := []string{`SET "session_authorization" TO 'bob'`, `SET "application_name" TO 'psql'`,
		`SET "datestyle" TO 'german'`, `SET "statement_timeout" TO 5000`}
	if !reflect.DeepEqual(sets, want) {
		t.Errorf("settings\n %q\nwant\n %q", sets, want)
	}

	// The client's search_path replaces the tenant default, and is not
	// among the settings.
	commitText(t, s, "SET search_path = public, acme")
	sp, sets = pinParts(t, s.tr.pin)
	if want := `'public', 'acme'`; sp != want {
		t.Errorf("search_path %q, want %q", sp, want)
	}
	if strings.Contains(strings.Join(sets, ";"), "search_path") {
		t.Errorf("search_path among the settings: %q", sets)
	}
	keyWithPath := s.tr.pin.key

	// RESET puts the startup value back, RESET search_path the tenant's.
	commitText(t, s, "RESET datestyle; RESET search_path; RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; RESET statement_timeout")
	sp, sets = pinParts(t, s.tr.pin)
	if want := `"acme", public`; sp != want {
		t.Errorf("search_path %q, want %q", sp, want)
	}
	if want := []string{`SET "application_name" TO 'psql'`, `SET "datestyle" TO 'ISO'`}; !reflect.DeepEqual(sets, want) {
		t.Errorf("settings %q, want %q", sets, want)
	}
	if s.tr.pin.key == keyWithPath {
		t.Error("pin key did not change with the state")
	}
	if fresh := buildPin(pinOwner(s.tr.tenant.Name, s.tr.user), s.tr.tenant.Schema, s.tr.params); s.tr.pin.key != fresh.key || !bytes.Equal(s.tr.pin.msgs, fresh.msgs) {
		t.Errorf("back to the startup state, the pin differs from the startup pin")
	}

	// Nothing at all: no settings.
	s.tr.params = nil
	commitText(t, s, "RESET ALL")
	if _, sets := pinParts(t, s.tr.pin); len(sets) != 0 {
		t.Errorf("empty state pin: %q", sets)
	}
}

// RESET ALL leaves role and session_authorization alone in PostgreSQL
// (GUC_NO_RESET_ALL), so the pin must keep them; DISCARD ALL includes SET
// SESSION AUTHORIZATION DEFAULT, which ends both.
func TestSettleResetAllKeepsIdentity(t *testing.T) {
	s := newTestSession(t)
	commitText(t, s, "SET SESSION AUTHORIZATION bob; SET ROLE reader; SET work_mem = '64MB'")
	commitText(t, s, "RESET ALL")
	want := map[string]string{"session_authorization": "'bob'", "role": "'reader'"}
	if !reflect.DeepEqual(s.tr.settings, want) {
		t.Errorf("after RESET ALL settings %v, want %v", s.tr.settings, want)
	}

	s = newTestSession(t)
	commitText(t, s, "SET SESSION AUTHORIZATION bob; SET ROLE reader; SET work_mem = '64MB'")
	commitText(t, s, "DISCARD ALL")
	if len(s.tr.settings) != 0 {
		t.Errorf("after DISCARD ALL settings %v, want none", s.tr.settings)
	}
}

// SET SESSION AUTHORIZATION (and its RESET) makes the session user the
// current user: a role set before it is no longer in effect, and the pin
// must not bring it back.
func TestSettleSessionAuthorizationEndsRole(t *testing.T) {
	tests := []struct {
		text string
		want map[string]string
	}{
		{"SET ROLE reader; SET SESSION AUTHORIZATION bob", map[string]string{"session_authorization": "'bob'"}},
		{"SET ROLE reader; SET SESSION AUTHORIZATION DEFAULT", map[string]string{}},
		{"SET SESSION AUTHORIZATION bob; SET ROLE reader", map[string]string{"session_authorization": "'bob'", "role": "'reader'"}},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		commitText(t, s, tt.text)
		if !reflect.DeepEqual(s.tr.settings, tt.want) {
			t.Errorf("%q: settings %v, want %v", tt.text, s.tr.settings, tt.want)
		}
	}
}

// bindBody encodes a Bind and returns its body.
func bindBody(t testing.TB, b *pgproto3.Bind) []byte {
	t.Helper()
	msg, err := b.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg[5:]
}

// bindParamText is parameter n of a Bind body, as the tracker reads it.
func bindParamText(body []byte, n int) (string, bool) { return paramText(bindParams(body), n) }

func TestBindParamText(t *testing.T) {
	body := bindBody(t, &pgproto3.Bind{
		DestinationPortal:    "portal",
		PreparedStatement:    "stmt",
		ParameterFormatCodes: []int16{0, 1, 0, 0},
		Parameters:           [][]byte{[]byte("alpha"), nil, []byte(""), []byte("it's \x00 binary")},
		ResultFormatCodes:    []int16{1},
	})
	tests := []struct {
		n    int
		want string
		ok   bool
	}{
		{1, "alpha", true},
		{2, "", false}, // NULL
		{3, "", true},  // empty, not NULL
		{4, "it's \x00 binary", true},
		{0, "", false},
		{-1, "", false},
		{5, "", false},
		{65536, "", false},
	}
	for _, tt := range tests {
		got, ok := bindParamText(body, tt.n)
		if got != tt.want || ok != tt.ok {
			t.Errorf("param %d = %q, %v; want %q, %v", tt.n, got, ok, tt.want, tt.ok)
		}
	}

	// No format codes, one format code for all, unnamed portal and
	// statement.
	for _, formats := range [][]int16{nil, {0}, {1}} {
		b := bindBody(t, &pgproto3.Bind{ParameterFormatCodes: formats, Parameters: [][]byte{[]byte("x"), []byte("yz")}})
		if got, ok := bindParamText(b, 2); got != "yz" || !ok {
			t.Errorf("formats %v: param 2 = %q, %v", formats, got, ok)
		}
	}
	if _, ok := bindParamText(bindBody(t, &pgproto3.Bind{}), 1); ok {
		t.Error("a Bind without parameters has parameter 1")
	}

	// Every truncation: no panic, and never a value that is not the
	// parameter's.
	for cut := 0; cut < len(body); cut++ {
		for n := 1; n <= 4; n++ {
			got, ok := bindParamText(body[:cut], n)
			if !ok {
				continue
			}
			if full, _ := bindParamText(body, n); got != full {
				t.Errorf("cut at %d: param %d = %q, want %q or nothing", cut, n, got, full)
			}
		}
	}

	// Malformed lengths.
	malformed := map[string][]byte{
		"no portal terminator": []byte("portal"),
		"no statement":         []byte("p\x00s"),
		"format count too big": []byte("\x00\x00\xff\xff\x00\x00"),
		"param count, no data": []byte("\x00\x00\x00\x00\x00\x02"),
		"length past the end":  []byte("\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09abc"),
		"huge length":          []byte("\x00\x00\x00\x00\x00\x01\x7f\xff\xff\xffabc"),
		"negative length":      []byte("\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfeabc"),
	}
	for name, b := range malformed {
		if got, ok := bindParamText(b, 1); ok {
			t.Errorf("%s: param 1 = %q, ok", name, got)
		}
	}
	// A negative length other than -1 before the wanted parameter is
	// never a step backwards: the server rejects such a Bind (no portal
	// is made), and nothing is read of it.
	odd := []byte("\x00\x00\x00\x00\x00\x02\xff\xff\xff\xfe\x00\x00\x00\x02ok\x00\x00")
	if got, ok := bindParamText(odd, 2); ok {
		t.Errorf("after a negative length: %q, %v", got, ok)
	}
}

func FuzzBindParamText(f *testing.F) {
	f.Add(bindBody(f, &pgproto3.Bind{Parameters: [][]byte{[]byte("a"), nil, []byte("bc")}}), 3)
	f.Add(bindBody(f, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{[]byte("x")}}), 1)
	f.Add([]byte("\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff\x00\x00"), 1)
	f.Add([]byte("\x00\x00\x00\x00\x00\x01\x7f\xff\xff\xff"), 1)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		got, ok := bindParamText(body, n)
		if !ok {
			if got != "" {
				t.Fatalf("not ok but %q", got)
			}
		} else if !bytes.Contains(body, []byte(got)) {
			t.Fatalf("value %q is not in the body", got)
		}
		// Where pgproto3 reads the message, both agree.
		var b pgproto3.Bind
		if err := b.Decode(body); err != nil {
			return
		}
		var want string
		wantOK := n >= 1 && n <= len(b.Parameters) && b.Parameters[n-1] != nil
		if wantOK {
			want = string(b.Parameters[n-1])
		}
		if got != want || ok != wantOK {
			t.Fatalf("param %d = %q, %v; pgproto3 reads %q, %v", n, got, ok, want, wantOK)
		}
	})
}

// set_config values that come as bind parameters: for the parameters
// pgtenant must check (search_path, client_encoding,
// standard_conforming_strings) the statement is refused up front, since the
// value arrives only at Bind; for others the value is tracked from the Bind.
func TestBindParamChangesAreChecked(t *testing.T) {
	for _, q := range []string{
		"SELECT set_config('search_path', $1, false)",
		"SELECT set_config('client_encoding', $1, false)",
		"SELECT set_config('standard_conforming_strings', $1, true)",
	} {
		res := newTestSession(t).tr.scanText(q)
		if res.refuse == nil || res.refuse.Code != codeFeatureUnsupported || len(res.params) != 0 {
			t.Errorf("%q: refuse %+v, params %+v; want 0A000 and nothing tracked", q, res.refuse, res.params)
		}
	}
	tests := []struct {
		query string
		value string
		keep  bool
	}{
		{"SELECT set_config('app.user', $1, false)", "bob", true},
		{"SELECT set_config('app.user', $1, false)", "it's", true},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		res := s.tr.scanText(tt.query)
		if len(res.params) != 1 {
			t.Fatalf("%q: params %+v", tt.query, res.params)
		}
		s.tr.unnamed = stmtEffects{params: res.params}
		m := clientMsg{typ: 'B', whole: bindBody(t, &pgproto3.Bind{Parameters: [][]byte{[]byte(tt.value)}})}
		m.n = len(m.whole)
		m.nameEnd = 2
		s.link.be = testBackend(t, 0)
		s.mu.Lock()
		s.accountLocked(&m)
		// The portal's changes count once its Execute completes.
		s.tr.txnChanges = append(s.tr.txnChanges, s.tr.portalFx[""].changes...)
		s.tr.settle('I')
		s.mu.Unlock()
		name := res.params[0].name
		_, kept := s.tr.settings[name]
		if kept != tt.keep {
			t.Errorf("%q with $1 = %q: settings %v, want kept %v", tt.query, tt.value, s.tr.settings, tt.keep)
		}
		if q := pinQueries(t, s.tr.pin.msgs); !tt.keep && strings.Contains(strings.Join(q, ";"), tt.value) {
			t.Errorf("%q with $1 = %q: the pin applies it: %q", tt.query, tt.value, q)
		}
	}
}

func TestNameRange(t *testing.T) {
	tests := []struct {
		text string
		want string // the name as written, "" for not found
	}{
		{"EXECUTE foo", "foo"},
		{"EXECUTE foo(1, 'x')", "foo"},
		{`execute "Foo"(1,2)`, `"Foo"`},
		{`EXECUTE "a""b"`, `"a""b"`},
		{"EXECUTE\n\tfoo\n", "foo"},
		{"EXECUTE FOO", "FOO"},
		{"EXECUTE föö(1)", "föö"},
		{"EXECUTE foo/* c */(1)", "foo"},
		{"DEALLOCATE PREPARE foo", "foo"},
		{"deallocate   foo", "foo"},
		{"Deallocate Prepare\r\nfoo", "foo"},
		{`DEALLOCATE "prepare"`, `"prepare"`},
		{"EXECUTE /* c */ foo", ""},
		{"EXECUTE -- c\n foo", ""},
		{"DEALLOCATE /* c */ PREPARE foo", ""},
		{"DEALLOCATE PREPARE /* c */ foo", ""},
		{"DEALLOCATE PREPARE", ""},
	}
	for _, tt := range tests {
		stmts, err := sqlscan.Scan(tt.text)
		if err != nil || len(stmts) != 1 {
			t.Fatalf("%q: scan %v, %v", tt.text, stmts, err)
		}
		start, end, ok := nameRange(tt.text, &stmts[0])
		got := ""
		if ok {
			if start < 0 || end > len(tt.text) || start > end {
				t.Fatalf("%q: range %d:%d out of the text", tt.text, start, end)
			}
			got = tt.text[start:end]
		}
		if got != tt.want {
			t.Errorf("%q: name %q (ok %v), want %q", tt.text, got, ok, tt.want)
		}
	}

	// Offsets are into the whole text, with statements around it.
	text := "SELECT 1; /* x */ EXECUTE foo ; SELECT 2"
	stmts, err := sqlscan.Scan(text)
	if err != nil || len(stmts) != 3 {
		t.Fatalf("scan %v, %v", stmts, err)
	}
	if start, end, ok := nameRange(text, &stmts[1]); !ok || text[start:end] != "foo" {
		t.Errorf("second statement: %d:%d %v", start, end, ok)
	}
	// Statements of other kinds have no name range.
	if _, _, ok := nameRange(text, &stmts[0]); ok {
		t.Error("SELECT has a name range")
	}
}

// A U&"..." name is one token. nameRange may give up on it, but a range
// covering only part of it would be rewritten into nonsense: EXECUTE
// "pgt_1"&"foo".
func TestNameRangeUnicodeEscapedName(t *testing.T) {
	for _, text := range []string{`EXECUTE U&"foo"`, `execute u&"foo"(1)`, `DEALLOCATE U&"foo"`} {
		stmts, err := sqlscan.Scan(text)
		if err != nil || len(stmts) != 1 {
			t.Fatalf("%q: scan %v, %v", text, stmts, err)
		}
		start, end, ok := nameRange(text, &stmts[0])
		if ok && !strings.EqualFold(text[start:end], `U&"foo"`) {
			t.Errorf("%q: name range %q, want the whole U&\"foo\" or none", text, text[start:end])
		}
	}

	// What it means for a client that prepared "foo" with Parse.
	s := newTestSession(t)
	s.link.be = testBackend(t, 0)
	rest := parseRest(t, "SELECT 1")
	s.tr.stmts["foo"] = &clientStmt{name: "foo", key: statementKey("acme", rest), parse: rest}
	text := `EXECUTE U&"foo"`
	res := s.tr.scanText(text)
	if got := s.rewriteRefsLocked(text, res.refs); got != "" && got != `EXECUTE "pgt_1"` {
		t.Errorf("%q rewritten to %q", text, got)
	}
}

// raiseChecks asserts that sql is one DO statement that nothing in the
// message can break out of.
func raiseChecks(t *testing.T, e *pgError, sql string) {
	t.Helper()
	const tag = "$pgtenant_refused$"
	if !strings.HasPrefix(sql, "DO "+tag) || !strings.HasSuffix(sql, tag) || strings.Count(sql, tag) != 2 {
		t.Fatalf("not one dollar-quoted DO block: %q", sql)
	}
	if strings.ContainsRune(sql, 0) {
		t.Fatalf("NUL in %q", sql)
	}
	// Followed by another statement, the DO block is exactly the first
	// one: the dollar quote ends where it should.
	stmts, err := sqlscan.Scan(sql + "; SET x = 1")
	if err != nil {
		t.Fatalf("scan of %q: %v", sql, err)
	}
	if len(stmts) != 2 || stmts[0].Start != 0 || stmts[0].End != len(sql) || stmts[1].Kind != sqlscan.Set || stmts[1].Name != "x" {
		t.Fatalf("%q does not scan as one statement: %+v", sql, stmts)
	}
	// The PL/pgSQL body: its literals end where they should too.
	body := sql[len("DO "+tag) : len(sql)-len(tag)]
	stmts, err = sqlscan.Scan(body + "; SET y = 1")
	if err != nil {
		t.Fatalf("scan of body %q: %v", body, err)
	}
	if len(stmts) != 3 || stmts[2].Kind != sqlscan.Set || stmts[2].Name != "y" || strings.TrimSpace(body[stmts[1].Start:stmts[1].End]) != "END" {
		t.Fatalf("body %q does not scan as RAISE; END: %+v", body, stmts)
	}
	raise := body[stmts[0].Start:stmts[0].End]
	if !strings.Contains(raise, "ERRCODE = '"+e.Code+"'") {
		t.Fatalf("code %q missing from %q", e.Code, raise)
	}
}

func nastyMessages() []string {
	return []string{
		`pgtenant: tenant "acme" may not put schema "other" on its search_path`,
		`$pgtenant_refused$; DROP TABLE t; --`,
		`$pgtenant_refused$`,
		`x$pgtenant_refused$y`,
		`$$ $ $$$`,
		`it's '' '`,
		`back\slash\' and \\`,
		`E'\''`,
		`"; END; $pgtenant_refused$; SELECT 1; DO $pgtenant_refused$ BEGIN`,
		"new\nline\r\ttab\x00nul",
		`/* unterminated comment`,
		`-- line comment`,
		"ünïcödé ✓ \u2028",
		"\xff\xfe invalid utf-8",
		"",
	}
}

func TestRaiseSQL(t *testing.T) {
	for _, msg := range nastyMessages() {
		e := &pgError{Severity: "ERROR", Code: codeInsufficientPriv, Message: msg, Hint: msg}
		raiseChecks(t, e, raiseSQL(e))
	}
	// A plain refusal keeps its words.
	s := newTestSession(t)
	e := s.tr.searchPathError("other")
	sql := raiseSQL(e)
	raiseChecks(t, e, sql)
	if !strings.Contains(sql, "MESSAGE = "+quoteLiteral(e.Message)) {
		t.Errorf("message changed: %q", sql)
	}
	if !strings.Contains(sql, "HINT = "+quoteLiteral(e.Hint)) {
		t.Errorf("hint changed: %q", sql)
	}
}

func FuzzRaiseSQL(f *testing.F) {
	for _, msg := range nastyMessages() {
		f.Add(msg, msg)
	}
	f.Fuzz(func(t *testing.T, msg, hint string) {
		e := &pgError{Severity: "ERROR", Code: codeFeatureUnsupported, Message: msg, Hint: hint}
		raiseChecks(t, e, raiseSQL(e))
	})
}

// After an error in the extended protocol, the entries up to the next Sync
// are dropped, and the client's Parses among them forgotten (skippedLocked).
func TestSkipToSync(t *testing.T) {
	s := newTestSession(t)
	s.link.be = testBackend(t, 0)
	keyOwn := statementKey("acme", parseRest(t, "SELECT 1"))
	keyClient := statementKey("acme", parseRest(t, "SELECT 2"))
	keyAnswered := statementKey("acme", parseRest(t, "SELECT 3"))
	for _, k := range []string{keyOwn, keyClient, keyAnswered} {
		s.link.be.Statements.Add(k, 0)
	}
	own := &clientStmt{name: "own", key: keyOwn}
	client := &clientStmt{name: "client", key: keyClient}
	answered := &clientStmt{name: "answered", key: keyAnswered, answered: true}
	replaced := &clientStmt{name: "replaced"}
	s.tr.stmts["own"], s.tr.stmts["client"], s.tr.stmts["answered"] = own, client, answered
	s.tr.stmts["replaced"] = &clientStmt{name: "replaced"} // redefined since

	s.expectLocked(entry{kind: replyBind}) // the one that fails
	s.expectLocked(entry{kind: replyParse, own: true, key: keyOwn, clientName: "own", stmt: own})
	s.expectLocked(entry{kind: replyParse, key: keyClient, clientName: "client", stmt: client})
	s.expectLocked(entry{kind: replyParse, own: true, key: keyAnswered, clientName: "answered", stmt: answered})
	s.expectLocked(entry{kind: replyParse, clientName: "replaced", stmt: replaced})
	s.expectLocked(entry{kind: replyClose, own: true})
	s.expectLocked(entry{kind: replyParse}) // unnamed
	s.expectLocked(entry{kind: replySync})
	s.expectLocked(entry{kind: replyParse, key: "later"})
	s.expectLocked(entry{kind: replySync})

	v, err := s.link.rm.reply('E', s.skippedLocked)
	if err != nil || !v.failed || v.e.kind != replyBind {
		t.Fatalf("error reply: %+v, %v", v, err)
	}

	if s.link.rm.len() != 3 || s.link.rm.front().kind != replySync {
		t.Fatalf("queue after skip: len %d front %+v", s.link.rm.len(), s.link.rm.front())
	}
	if s.link.rm.own != 0 {
		t.Errorf("own = %d after the own entries were dropped", s.link.rm.own)
	}
	if s.link.rm.clientWait != 2 {
		t.Errorf("clientWait = %d, want 2", s.link.rm.clientWait)
	}
	for _, k := range []string{keyOwn, keyClient, keyAnswered} {
		if _, _, ok := s.link.be.Statements.Lookup(k); ok {
			t.Errorf("backend still lists %q", k)
		}
	}
	// A Parse pgtenant sent to prepare the client's statement again on this
	// backend undefines nothing when skipped: the client's own Parse had
	// succeeded before (only the backend's copy is gone, above).
	if s.tr.stmts["own"] != own {
		t.Error("statement pgtenant re-prepared for the client was forgotten when that Parse was skipped")
	}
	if _, ok := s.tr.stmts["client"]; ok {
		t.Error("statement whose Parse failed still defined")
	}
	if s.tr.stmts["answered"] != answered {
		t.Error("statement pgtenant answered for was forgotten")
	}
	if s.tr.stmts["replaced"] == nil || s.tr.stmts["replaced"] == replaced {
		t.Error("a newer definition of the name was touched")
	}

	// An error at a Sync (the implicit transaction failed to commit)
	// drops nothing: the ReadyForQuery follows.
	if v, err := s.link.rm.reply('E', s.skippedLocked); err != nil || v.failed || s.link.rm.len() != 3 {
		t.Errorf("error at a Sync: %+v, %v, len %d", v, err, s.link.rm.len())
	}
}

// sessionEffectsLocked: refusal, pinning, dropped statements, tentative.
func TestSessionEffects(t *testing.T) {
	s := newTestSession(t)
	s.link.be = testBackend(t, 0)
	s.link.be.Statements.Add("k", 0)
	s.tr.stmts["a"] = &clientStmt{name: "a"}

	res := s.tr.scanText("SET search_path = other")
	if e := s.sessionEffectsLocked(&res); e == nil || e.Code != codeInsufficientPriv {
		t.Fatalf("refusal not returned: %v", e)
	}

	res = s.tr.scanText("SET a = 1; LISTEN x")
	if e := s.sessionEffectsLocked(&res); e != nil {
		t.Fatalf("unexpected refusal %v", e)
	}
	if s.link.pinReason != "LISTEN" || !reflect.DeepEqual(res.changes, []change{set("a", "1")}) {
		t.Fatalf("pinned %q changes %+v", s.link.pinReason, res.changes)
	}

	res = s.tr.scanText("DISCARD ALL")
	if e := s.sessionEffectsLocked(&res); e != nil {
		t.Fatal(e)
	}
	if s.link.be.Statements.Len() != 0 || len(s.tr.stmts) != 0 {
		t.Fatalf("DISCARD ALL left statements: backend %d client %d", s.link.be.Statements.Len(), len(s.tr.stmts))
	}

	// --unpoolable=refuse
	s = newTestSession(t)
	s.srv.cfg.Unpoolable = config.UnpoolableRefuse
	res = s.tr.scanText("SELECT pg_advisory_lock(1)")
	if e := s.sessionEffectsLocked(&res); e == nil || e.Code != codeFeatureUnsupported || !strings.Contains(e.Message, "pg_advisory_lock") {
		t.Fatalf("unpoolable not refused: %v", e)
	}
	if s.link.pinReason != "" {
		t.Fatal("refused and pinned")
	}
	// Session pooling keeps the backend anyway.
	s.mode = config.PoolSession
	if e := s.sessionEffectsLocked(&res); e != nil || s.link.pinReason != "" {
		t.Fatalf("session pooling: %v, pinned %q", e, s.link.pinReason)
	}
}
