package proxy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/proxy/sqlscan"
)

// Session state in transaction pooling.
//
// A client's SET, RESET, RESET ALL, SET ROLE, SET SESSION AUTHORIZATION and
// set_config(name, value, false) are recognised in its Query and Parse
// messages (package sqlscan) and kept as the client's own settings, which
// the pin applies to every backend that serves it (after resetting whatever
// the previous holder left). As in PostgreSQL, a change takes effect for
// good only if its transaction commits: changes are held as tentative and
// committed at the ReadyForQuery 'I' that ends their transaction, unless
// that transaction failed or rolled back. SET LOCAL and set_config(…, true)
// last until the end of the transaction, which they do on their own.
//
// search_path is the tenant boundary: a client may put only its tenant's
// schema, public, pg_catalog, pg_temp and --shared-schemas on it; anything
// else is refused with 42501 before it reaches the server.
//
// Features whose state lives on one backend for the rest of the session
// (LISTEN, session advisory locks, WITH HOLD cursors, temporary tables, SQL
// PREPARE, LOAD) either pin the client to its backend until it disconnects
// or are refused, as --unpoolable says.

// change is one tentative change to the client's settings.
type change struct {
	all     bool   // RESET ALL, or DISCARD ALL with discard set
	discard bool   // DISCARD ALL: also ends role and session authorization
	name    string // lower-case parameter name
	value   string // rendered SQL value; "" means RESET
}

// scanResult is what a statement text means for the session.
type scanResult struct {
	changes []change
	// refuse, when set, replaces the text: the server raises it.
	refuse *pgError
	// unpoolable names the first session feature found ("" if none).
	unpoolable string
	// dropStatements: DEALLOCATE ALL or DISCARD ALL, which drop every
	// prepared statement on the server, pgtenant's too.
	dropStatements bool
	// deallocateAllOnly: the text is DEALLOCATE ALL and nothing else, which
	// pgtenant carries out for the client alone in transaction pooling.
	deallocateAllOnly bool
	// resets are the statements that reset settings to the server's
	// defaults, where pgtenant restores the client's (restoreSQL);
	// discardAlone: the text is DISCARD ALL alone, which cannot be
	// followed by anything in the same Query.
	resets       []resetAt
	discardAlone bool
	// params lists set_config calls whose value is a bind parameter, to
	// be resolved at Bind.
	params []paramChange
	// createDatabase is the database a refused CREATE DATABASE names, which
	// the session may answer as already existing when it is a tenant
	// (createDatabaseLocked).
	createDatabase string
	// refs are EXECUTE and DEALLOCATE naming a statement the client
	// prepared with a Parse message, which PostgreSQL allows: the name is
	// rewritten to the backend's (see rewriteRefsLocked).
	refs []nameRef
}

// resetAt is a statement that resets settings: where it ends in the text,
// and its changes.
type resetAt struct {
	end     int
	changes []change
}

// nameRef is where a statement name stands in a text.
type nameRef struct {
	start, end int
	name       string
	drop       bool // DEALLOCATE
}

// paramChange is a set_config(name, $n, false) whose value comes at Bind.
type paramChange struct {
	name  string
	param int
}

// scanText classifies a Query or Parse text. It costs one quick pass over
// the text when nothing in it can change the session.
func (t *tracker) scanText(text string) scanResult {
	var res scanResult
	if !sqlscan.Interesting(text) {
		return res
	}
	stmts, err := sqlscan.Scan(text)
	if err != nil {
		// An unterminated quote: the server will refuse the text; nothing
		// in it runs.
		return res
	}
	for _, st := range stmts {
		n := len(res.changes)
		t.classify(text, &st, &res)
		if res.refuse != nil {
			return res
		}
		for _, c := range res.changes[n:] {
			if c.all || c.value == "" {
				res.resets = append(res.resets, resetAt{end: st.End, changes: res.changes[n:len(res.changes):len(res.changes)]})
				break
			}
		}
	}
	res.discardAlone = len(stmts) == 1 && stmts[0].Kind == sqlscan.Discard && stmts[0].Name == "all"
	res.deallocateAllOnly = len(stmts) == 1 && stmts[0].Kind == sqlscan.Deallocate && stmts[0].Name == "all"
	return res
}

// classify adds what one statement of text means for the session to res.
func (t *tracker) classify(text string, st *sqlscan.Statement, res *scanResult) {
	switch st.Kind {
	case sqlscan.Set, sqlscan.SetRole, sqlscan.SetSessionAuthorization:
		value, ok := renderValues(st.Values)
		if !ok {
			res.unpoolableOnce("SET " + st.Name + " with a value pgtenant cannot track")
			break
		}
		if len(st.Values) == 1 && value != "" {
			if e := lexerSafe(st.Name, st.Values[0].Text); e != nil {
				res.refuse = e
				return
			}
		}
		if st.Name == "search_path" && value != "" {
			if e := t.checkSearchPath(st.Values); e != nil {
				res.refuse = e
				return
			}
		}
		res.changes = append(res.changes, change{name: st.Name, value: value})
	case sqlscan.SetLocal:
		if len(st.Values) == 1 && !(st.Values[0].Kind == sqlscan.Keyword && st.Values[0].Text == "default") {
			if e := lexerSafe(st.Name, st.Values[0].Text); e != nil {
				res.refuse = e
				return
			}
		}
		if st.Name == "search_path" {
			if e := t.checkSearchPath(st.Values); e != nil {
				res.refuse = e
				return
			}
		}
	case sqlscan.Reset:
		res.changes = append(res.changes, change{name: st.Name})
	case sqlscan.ResetAll:
		res.changes = append(res.changes, change{all: true})
	case sqlscan.Discard:
		if st.Name == "all" {
			res.changes = append(res.changes, change{all: true, discard: true})
			res.dropStatements = true
		}
	case sqlscan.Deallocate:
		if st.Name == "all" {
			res.dropStatements = true
			break
		}
		fallthrough
	case sqlscan.Execute:
		if _, ok := t.stmts[st.Name]; ok {
			if start, end, ok := nameRange(text, st); ok {
				res.refs = append(res.refs, nameRef{start: start, end: end, name: st.Name, drop: st.Kind == sqlscan.Deallocate})
			}
		} else if e := reservedStmtName(st.Name); e != nil {
			res.refuse = e
			return
		}
	case sqlscan.Listen:
		res.unpoolableOnce("LISTEN")
	case sqlscan.Prepare:
		if e := reservedStmtName(st.Name); e != nil {
			res.refuse = e
			return
		}
		res.unpoolableOnce("PREPARE")
	case sqlscan.DeclareWithHold:
		res.unpoolableOnce("DECLARE ... WITH HOLD")
	case sqlscan.CreateTemp:
		res.unpoolableOnce("temporary table")
	case sqlscan.Load:
		res.unpoolableOnce("LOAD")
	case sqlscan.CreateDatabase, sqlscan.DropDatabase:
		// A database made or dropped through pgtenant is one no client can
		// reach through it (a database name names a tenant), and with a
		// privileged pool role it would stay behind on the server. Test
		// runners (Django's manage.py test) send these.
		res.refuse = databaseError(st.Kind)
		if st.Kind == sqlscan.CreateDatabase {
			res.createDatabase = st.Name
		}
		return
	}
	if len(st.SessionLockFuncs) > 0 {
		res.unpoolableOnce(st.SessionLockFuncs[0])
	}
	for _, sc := range st.SetConfigs {
		if !sc.NameKnown {
			// The name could be search_path: it must be readable.
			res.refuse = &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
				Message: "pgtenant: set_config needs a literal parameter name",
				Hint:    "pgtenant checks some parameters (search_path) before they reach the server."}
			return
		}
		name := strings.ToLower(sc.Name)
		if checkedParams[name] {
			switch {
			case sc.ValueNull:
			case !sc.ValueKnown:
				// The value would come only at Bind, too late to refuse
				// the statement.
				res.refuse = &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
					Message: fmt.Sprintf("pgtenant: set_config(%q, ...) needs a literal value", name),
					Hint:    "pgtenant checks this parameter before it reaches the server."}
				return
			default:
				if e := lexerSafe(name, sc.Value); e != nil {
					res.refuse = e
					return
				}
				if name == "search_path" {
					if e := t.checkSearchPathText(sc.Value); e != nil {
						res.refuse = e
						return
					}
				}
			}
		}
		if sc.LocalKnown && sc.Local {
			continue // ends with the transaction on its own
		}
		if !sc.LocalKnown {
			// is_local comes at Bind or is an expression: pgtenant cannot
			// tell whether the change outlives the transaction.
			res.unpoolableOnce("set_config with an is_local pgtenant cannot read")
			continue
		}
		switch {
		case sc.ValueNull:
			// set_config(name, NULL, false) resets name.
			res.changes = append(res.changes, change{name: name})
		case sc.ValueParam != 0:
			res.params = append(res.params, paramChange{name: name, param: sc.ValueParam})
		case sc.ValueKnown:
			res.changes = append(res.changes, change{name: name, value: quoteLiteral(sc.Value)})
		default:
			res.unpoolableOnce("set_config with a value pgtenant cannot track")
		}
	}
}

func (r *scanResult) unpoolableOnce(what string) {
	if r.unpoolable == "" {
		r.unpoolable = what
	}
}

// reservedStmtName refuses an SQL-level PREPARE, EXECUTE or DEALLOCATE of a
// name in pgtenant's own namespace (pool.StatementPrefix), where the
// statements it prepares for every client of a tenant live: no client may
// run, drop or replace them.
func reservedStmtName(name string) *pgError {
	if !strings.HasPrefix(name, pool.StatementPrefix) {
		return nil
	}
	return &pgError{Severity: "ERROR", Code: codeInsufficientPriv,
		Message: fmt.Sprintf("pgtenant: prepared statement names beginning with %q are reserved for pgtenant", pool.StatementPrefix),
		Hint:    "Name your statement differently."}
}

// databaseError is what CREATE DATABASE and DROP DATABASE get.
func databaseError(k sqlscan.Kind) *pgError {
	what := "CREATE DATABASE"
	if k == sqlscan.DropDatabase {
		what = "DROP DATABASE"
	}
	return &pgError{Severity: "ERROR", Code: codeInsufficientPriv,
		Message: "pgtenant: " + what + " is not allowed through pgtenant; create or drop a tenant instead",
		Hint:    "Run pgtenant tenant create NAME (or tenant drop NAME), or connect to PostgreSQL directly to manage databases."}
}

// existingTenantDatabaseError is what CREATE DATABASE gets when it names
// a tenant the client could connect to: PostgreSQL's "already exists",
// which a test runner told to keep its database (manage.py test --keepdb)
// takes as leave to go on.
func existingTenantDatabaseError(name string) *pgError {
	return &pgError{Severity: "ERROR", Code: codeDuplicateDatabase,
		Message: fmt.Sprintf("pgtenant: database %q already exists: it is a tenant", name),
		Hint:    "pgtenant does not create databases; its tenants are reached by database name."}
}

// renderValues renders a SET value list as SQL; "" means the default
// (RESET). ok is false for a value pgtenant cannot reproduce.
func renderValues(vals []sqlscan.Value) (string, bool) {
	if len(vals) == 1 && vals[0].Kind == sqlscan.Keyword {
		switch vals[0].Text {
		case "default", "local", "none":
			return "", true
		}
	}
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		switch v.Kind {
		case sqlscan.Ident, sqlscan.String, sqlscan.Keyword:
			b.WriteString(quoteLiteral(v.Text))
		case sqlscan.QuotedIdent:
			b.WriteString(quoteIdent(v.Text))
		case sqlscan.Number:
			b.WriteString(v.Text)
		default:
			return "", false
		}
	}
	return b.String(), true
}

// reachable says whether a tenant's client may put schema on its
// search_path.
func (t *tracker) reachable(schema string) bool {
	switch schema {
	case t.tenant.Schema, "public", "pg_catalog", "pg_temp":
		return true
	}
	for _, sh := range t.shared {
		if schema == sh {
			return true
		}
	}
	return false
}

// checkSearchPath refuses a SET search_path value naming a schema the
// tenant may not reach.
func (t *tracker) checkSearchPath(vals []sqlscan.Value) *pgError {
	for _, v := range vals {
		if v.Kind == sqlscan.Keyword && v.Text == "default" {
			continue
		}
		switch v.Kind {
		case sqlscan.Ident, sqlscan.String, sqlscan.QuotedIdent:
			// In SET, each item names one schema as written: the lexer
			// already folded unquoted identifiers, and a string is one
			// name, not a list (unlike set_config's value).
			if !t.reachable(v.Text) {
				return t.searchPathError(v.Text)
			}
		default:
			return t.searchPathError(v.Text)
		}
	}
	return nil
}

// checkSearchPathText checks a search_path string ("acme, public").
func (t *tracker) checkSearchPathText(text string) *pgError {
	for _, item := range strings.Split(text, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.HasPrefix(item, `"`) && strings.HasSuffix(item, `"`) && len(item) >= 2 {
			item = strings.ReplaceAll(item[1:len(item)-1], `""`, `"`)
		} else {
			item = asciiLower(item) // PostgreSQL folds ASCII letters only
		}
		if !t.reachable(item) {
			return t.searchPathError(item)
		}
	}
	return nil
}

func (t *tracker) searchPathError(schema string) *pgError {
	allowed := []string{t.tenant.Schema, "public"}
	allowed = append(allowed, t.shared...)
	return &pgError{Severity: "ERROR", Code: codeInsufficientPriv,
		Message: fmt.Sprintf("pgtenant: tenant %q may not put schema %q on its search_path", t.tenant.Name, schema),
		Hint:    "Allowed: " + strings.Join(allowed, ", ") + ", pg_catalog, pg_temp.",
	}
}

// checkedParams are the parameters pgtenant checks before they reach the
// server: the tenant boundary and the lexer's preconditions.
var checkedParams = map[string]bool{
	"search_path": true, "client_encoding": true, "standard_conforming_strings": true,
}

// unpoolableError is what a client gets for a session feature under
// --unpoolable=refuse.
func unpoolableError(what string) *pgError {
	return &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
		Message: fmt.Sprintf("pgtenant: %s cannot be used with transaction pooling", what),
		Hint:    "Use session pooling for this client, or run pgtenant with --unpoolable=pin.",
	}
}

// raiseSQL is a statement that makes the server report e, so a refusal
// reaches the client in the right place among its other replies. Only
// characters that cannot end the dollar quote or the literal are kept of
// the message.
func raiseSQL(e *pgError) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
				strings.ContainsRune(` _-.,:;()"=*`, r):
				return r
			}
			return '?'
		}, s)
	}
	return "DO $pgtenant_refused$ BEGIN RAISE EXCEPTION USING ERRCODE = '" + e.Code +
		"', MESSAGE = " + quoteLiteral(clean(e.Message)) +
		", HINT = " + quoteLiteral(clean(e.Hint)) + "; END $pgtenant_refused$"
}

// sessionEffectsLocked applies what a scanned text means for the session
// when it is sent: tentative changes, pinning, dropped statements. It
// returns an error to raise instead of the text, if any.
func (s *session) sessionEffectsLocked(res *scanResult) *pgError {
	if res.refuse != nil {
		return res.refuse
	}
	if res.unpoolable != "" && s.mode == config.PoolTransaction && s.link.state != linkPinned {
		if s.srv.cfg.Unpoolable == config.UnpoolableRefuse {
			return unpoolableError(res.unpoolable)
		}
		s.pinLocked(res.unpoolable)
	}
	if res.dropStatements {
		s.tr.dropClientStmts()
		if !(res.deallocateAllOnly && s.link.state == linkAttached) {
			// The server drops pgtenant's statements on this backend
			// too. New ones get new names, so a failed DEALLOCATE ALL
			// leaves only unused leftovers, never a clash.
			s.link.be.Statements.Clear()
		}
	}
	return nil
}

// completed: a command of the client's (an Execute) completed without
// error; its changes are tentative until its transaction ends.
func (t *tracker) completed(changes []change) {
	t.txnChanges = append(t.txnChanges, changes...)
}

// commandFailed: the server reported an error in a command of the client's
// (query: in a Query, whose changes then do not count).
func (t *tracker) commandFailed(query bool) {
	t.segmentFailed = true
	if query {
		t.queryFailed = true
	}
}

// readyForQuery runs at each ReadyForQuery of the client's: a Query's
// changes count when it had no error, the last CommandComplete's ROLLBACK
// tag (when tagged) is noted, and the changes settle.
func (t *tracker) readyForQuery(status byte, query bool, changes []change, tagged, rollback bool) {
	if query {
		if !t.queryFailed {
			t.txnChanges = append(t.txnChanges, changes...)
		}
		t.queryFailed = false
	}
	if tagged {
		t.lastRollback = rollback
	}
	t.settle(status)
}

// backendLost: the backend died; the changes of the transaction it held
// are gone with it.
func (t *tracker) backendLost() {
	t.txnChanges = t.txnChanges[:0]
}

// settle runs at each ReadyForQuery the client gets. The changes of
// the commands that completed (txnChanges, kept in reply order, so each
// Sync-delimited segment of a pipeline has its own) become the client's
// settings when their transaction ends ('I') unless it failed or rolled
// back; a transaction still open ('T', 'E') keeps them for its end.
func (t *tracker) settle(status byte) {
	failed := t.segmentFailed
	t.segmentFailed = false
	if status != 'I' {
		return
	}
	if !failed && !t.lastRollback && len(t.txnChanges) > 0 {
		for _, c := range t.txnChanges {
			if c.name == "session_authorization" {
				// SET SESSION AUTHORIZATION also ends any SET ROLE.
				delete(t.settings, "role")
			}
			switch {
			case c.all && c.discard:
				clear(t.settings)
			case c.all:
				// RESET ALL leaves the session user and role alone.
				for name := range t.settings {
					if name != "role" && name != "session_authorization" {
						delete(t.settings, name)
					}
				}
			case c.value == "":
				delete(t.settings, c.name)
			default:
				if t.settings == nil {
					t.settings = map[string]string{}
				}
				t.settings[c.name] = c.value
			}
		}
		t.rebuildPin()
	}
	t.txnChanges = t.txnChanges[:0]
	t.lastRollback = false
}

// restoreSQL is the statement that brings back the client's own defaults
// after changes that reset settings to the server's ("" when none do). The
// server's defaults are the pool login's, not the client's: RESET ALL, RESET
// search_path or SET search_path TO DEFAULT would leave the server's
// search_path ("$user", public) in place of the tenant's, and RESET
// application_name the pool's name in place of the one the client connected
// with. Directly against PostgreSQL a reset returns to the values the client
// connected with; for a tenant's client, that is its tenant's search_path
// and its startup parameters. The names are schema-qualified so that a
// search_path of the client's cannot redirect them.
func (t *tracker) restoreSQL(changes []change) string {
	if len(changes) == 0 {
		return ""
	}
	all := false
	var names map[string]bool
	for _, c := range changes {
		switch {
		case c.all:
			all = true
		case c.value == "":
			if names == nil {
				names = map[string]bool{}
			}
			names[c.name] = true
		}
	}
	if !all && names == nil {
		return ""
	}
	var b strings.Builder
	// add sets name to the value of the SQL expression value.
	add := func(name, value string) {
		first := b.Len() == 0
		if first {
			b.WriteString("SELECT ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString("pg_catalog.set_config(")
		b.WriteString(quoteLiteral(name))
		b.WriteString(", ")
		b.WriteString(value)
		b.WriteString(", false)")
		if first {
			// Its result set is pgtenant's, told apart by this name when
			// it runs inside a client's Query (see restoreInline).
			b.WriteString(` AS "` + restoreColumn + `"`)
		}
	}
	if all || names["search_path"] {
		// quote_ident quotes as the pin's SET does when it displays the
		// value, so SHOW search_path reads the same after a reset as
		// before it.
		add("search_path", "pg_catalog.quote_ident("+quoteLiteral(t.tenant.Schema)+") || ', public'")
	}
	for _, d := range t.defaults() {
		if all || names[d.name] {
			add(d.name, d.sql)
		}
	}
	return b.String()
}

// defaults are the values a reset returns the client to, besides
// search_path, in the order the pin sets them: the tenant's session
// settings, the client's startup parameters over them, and the storage
// quota's read-only over everything.
func (t *tracker) defaults() []renderedSetting {
	var tenant []renderedSetting
	if t.conf != nil {
		tenant = t.conf.sets
	}
	if len(tenant) == 0 && (t.conf == nil || !t.conf.overQuota) {
		out := make([]renderedSetting, len(t.params))
		for i, p := range t.params {
			out[i] = renderedSetting{name: p.Name, sql: quoteLiteral(p.Value)}
		}
		return out
	}
	byName := map[string]string{}
	for _, st := range tenant {
		byName[st.name] = st.sql
	}
	for _, p := range t.params {
		byName[p.Name] = quoteLiteral(p.Value)
	}
	out := make([]renderedSetting, 0, len(byName)+1)
	for name, v := range byName {
		out = append(out, renderedSetting{name: name, sql: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	if t.conf != nil && t.conf.overQuota {
		out = append(out, quotaReadOnly)
	}
	return out
}

// quotaReadOnly is what the pin sets, last, for a tenant over its storage
// quota (quota.go).
var quotaReadOnly = renderedSetting{name: "default_transaction_read_only", sql: "'on'"}

// restoreColumn names the first column of restoreSQL's result.
const restoreColumn = "pgtenant.restore"

// inlineRestores inserts the restore statement after each statement of a
// Query text that resets settings, so the statements behind it in the same
// Query already run with the client's defaults. It returns "" when nothing
// needs restoring.
func (t *tracker) inlineRestores(text string, resets []resetAt) string {
	var b strings.Builder
	last := 0
	for _, r := range resets {
		restore := t.restoreSQL(r.changes)
		if restore == "" {
			continue
		}
		b.WriteString(text[last:r.end])
		b.WriteString("; ")
		b.WriteString(restore)
		last = r.end
	}
	if last == 0 {
		return ""
	}
	b.WriteString(text[last:])
	return b.String()
}

// rebuildPin renders the pin from the startup parameters and the
// client's settings.
//
// The tenant's session settings (tenant set NAME set.x=...) come first, as
// defaults: the client's startup parameters and its own settings override
// them, as a role's ALTER ROLE ... SET values are overridden. The storage
// quota's read-only comes last, over the client's own settings. All of them
// are part of the pin's key, so a backend pinned under other tenant
// settings, or another quota state, is pinned again.
func (t *tracker) rebuildPin() {
	searchPath := ""
	merged := map[string]string{}
	if t.conf != nil {
		for _, st := range t.conf.sets {
			merged[st.name] = st.sql
		}
	}
	for _, p := range t.params {
		merged[p.Name] = quoteLiteral(p.Value)
	}
	for name, v := range t.settings {
		if name == "search_path" {
			searchPath = v
			continue
		}
		merged[name] = v
	}
	names := make([]string, 0, len(merged))
	for name := range merged {
		names = append(names, name)
	}
	// SET SESSION AUTHORIZATION resets the role, so it goes first.
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "session_authorization") != (names[j] == "session_authorization") {
			return names[i] == "session_authorization"
		}
		return names[i] < names[j]
	})
	sets := make([]renderedSetting, len(names), len(names)+1)
	for i, name := range names {
		sets[i] = renderedSetting{name: name, sql: merged[name]}
	}
	if t.conf != nil && t.conf.overQuota {
		sets = append(sets, quotaReadOnly)
	}
	t.pin = buildPinSQL(pinOwner(t.tenant.Name, t.user), t.tenant.Schema, searchPath, sets)
}

// bindParams decodes the parameters of a Bind body with pgproto3's
// decoder; they point into body. It returns nil for a body the server
// would reject as malformed: such a Bind never creates a portal, so what
// its parameters say changes nothing.
func bindParams(body []byte) [][]byte {
	var b pgproto3.Bind
	if b.Decode(body) != nil {
		return nil
	}
	return b.Parameters
}

// paramText returns the text of parameter n (1-based), or false when there
// is none or it is NULL. A binary parameter is taken as it comes: set_config's
// value is text, whose binary form is the same bytes.
func paramText(params [][]byte, n int) (string, bool) {
	if n < 1 || n > len(params) || params[n-1] == nil {
		return "", false
	}
	return string(params[n-1]), true
}

// nameRange is where the statement name of an EXECUTE or DEALLOCATE
// [PREPARE] statement stands in text, as sqlscan found it. It gives up
// (false) where the re-lexer it replaces gave up, so that what is rewritten
// stays the same: a name sqlscan cannot place (U&"..."), a comment before
// the name, and DEALLOCATE PREPARE with nothing after it (which the server
// reads as the name "prepare"). The statement then goes to the server as
// written.
func nameRange(text string, st *sqlscan.Statement) (start, end int, ok bool) {
	if st.NameEnd == 0 || (st.Kind != sqlscan.Execute && st.Kind != sqlscan.Deallocate) {
		return 0, 0, false
	}
	before := text[st.Start:st.NameStart]
	if strings.Contains(before, "--") || strings.Contains(before, "/*") {
		return 0, 0, false
	}
	if st.Kind == sqlscan.Deallocate && strings.EqualFold(text[st.NameStart:st.NameEnd], "prepare") &&
		len(strings.Fields(before)) == 1 {
		return 0, 0, false
	}
	return st.NameStart, st.NameEnd, true
}

// rewriteRefsLocked rewrites EXECUTE and DEALLOCATE of the client's
// protocol-level statements to the backend's names, preparing them first
// where the backend lacks them. It returns the new text, or "" when nothing
// changed.
func (s *session) rewriteRefsLocked(text string, refs []nameRef) string {
	var b strings.Builder
	last := 0
	for _, r := range refs {
		cs, ok := s.tr.stmts[r.name]
		if !ok {
			continue
		}
		backendName, key := s.ensureStatementLocked(cs)
		b.WriteString(text[last:r.start])
		b.WriteString(quoteIdent(backendName))
		last = r.end
		if r.drop {
			s.link.be.Statements.Remove(key)
			s.tr.dropClientStmt(r.name)
		}
	}
	if last == 0 {
		return ""
	}
	b.WriteString(text[last:])
	return b.String()
}

// lexerSafe refuses the two settings under which pgtenant's statement lexer
// could read a text differently from the server: standard_conforming_strings
// off (a backslash would then escape a quote in an ordinary string), and the
// client encodings whose multibyte characters may contain the byte of a
// backslash or quote (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, and their
// aliases). The server never accepts those as its own encoding, only as a
// client's, so refusing them here closes the gap.
func lexerSafe(name, value string) *pgError {
	switch name {
	case "standard_conforming_strings":
		switch strings.ToLower(strings.TrimSpace(value)) {
		case "on", "true", "yes", "1", "t", "y", "o":
			return nil
		}
		return &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
			Message: "pgtenant: standard_conforming_strings must stay on",
			Hint:    "pgtenant reads statement texts to track session state, and reads them as the server does only with standard-conforming strings."}
	case "client_encoding":
		norm := strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
				return r
			case r >= 'A' && r <= 'Z':
				return r + 'a' - 'A'
			}
			return -1
		}, value)
		switch norm {
		case "sjis", "shiftjis", "mskanji", "win932", "windows932", "shiftjis2004",
			"big5", "win950", "windows950", "gbk", "win936", "windows936",
			"uhc", "win949", "windows949", "gb18030", "johab":
			return &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
				Message: fmt.Sprintf("pgtenant: client_encoding %s is not supported", value),
				Hint:    "Its multibyte characters can contain quote and backslash bytes, which would hide statements from pgtenant's session tracking; use UTF8 (the server converts)."}
		}
	}
	return nil
}

// asciiLower lower-cases ASCII letters only, as PostgreSQL folds unquoted
// identifiers.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
