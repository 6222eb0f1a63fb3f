package proxy

import (
	lru "github.com/hashicorp/golang-lru/v2"
	"regexp"
	"sort"
	"strings"
)

// The pin puts a backend connection into one client's session state before
// that client's first message of a transaction runs on it. It is written in
// the same write as that message, so it costs no round trip; its replies are
// swallowed by the relay and never reach the client.
//
// Whatever the previous holder changed is undone by the pin itself rather
// than by a separate reset at release: settings go back to the connection's
// login values, and session objects the previous holder left are dropped.
// That is DISCARD ALL taken apart, because DISCARD ALL may not run inside a
// transaction. Folding the reset into the next pin means a released
// connection is free for the next client at once, and nothing of one
// tenant's session (a temporary table, which would shadow the next tenant's
// table of the same name since pg_temp is searched first; a prepared
// statement; a WITH HOLD cursor; a LISTEN; an advisory lock) is ever visible
// to another.
//
// Two rules hold whatever the previous holder did, including what it did
// inside functions that pgtenant cannot see:
//
//   - No client message runs unless the whole pin succeeded. The pin is
//     extended-protocol messages (Parse, Bind, Execute of the unnamed
//     statement, one statement each) with no Sync of its own, sent ahead of
//     the client's messages. When one of its statements fails, the server
//     skips every message up to the next Sync, the client's included: they
//     never run. The relay then closes that server connection and tells the
//     client (relay.go, failPin); it lets no message of the client's past
//     its first Sync or Query go out before the pin is confirmed, because
//     the server would run those after the Sync. The statements run in one
//     transaction (BEGIN ... COMMIT), so the pin is applied whole or not at
//     all, and is committed before anything of the client's starts: a
//     client's ROLLBACK cannot undo it.
//   - The pin cannot be subverted by what it resets. search_path is set
//     before anything that resolves a name, and every function it calls is
//     schema-qualified (pg_catalog), so no function or operator a tenant
//     created can run inside it. Its own lock_timeout and statement_timeout
//     (local to its transaction) bound it: a previous holder that arranged
//     for DISCARD TEMP to wait on a lock makes the pin fail, not hang.

// pin is a client's session state, rendered once per client.
type pin struct {
	// msgs are the encoded messages (Parse, Bind, Execute per statement).
	msgs []byte
	// statements is how many statements msgs holds.
	statements int
	// key identifies the state the pin leaves, stored on the backend
	// connection (pool.Conn.State). It starts with the tenant and the user,
	// so a backend is only ever reused without a pin by a client of the
	// same tenant and user.
	key string
}

// resetStatements undo a previous holder's session, in order. SET SESSION
// AUTHORIZATION DEFAULT comes first because RESET ALL leaves the session
// user and role alone; search_path is set (by the pin, right after these)
// before any statement that resolves a name; CLOSE ALL comes before DISCARD
// TEMP because an open cursor would keep a temporary table in use.
//
// Named prepared statements are not deallocated here: protocol-level ones
// belong to pgtenant's per-backend cache (stmt.go), which is dropped with
// DEALLOCATE ALL when the backend changes tenants (deallocatePin); SQL-level
// PREPARE pins its client to the backend, which DISCARD ALL cleans when the
// client leaves.
var resetStatements = []string{
	"BEGIN",
	"SET SESSION AUTHORIZATION DEFAULT",
	"RESET ALL",
}

// cleanupStatements run once search_path is the client's: its own timeouts first
// (local to the pin's transaction), then the session objects a previous
// holder may have left.
//
// What the server spends on the pin is mostly what it spends per
// statement, and a SELECT costs several times a utility statement: parse
// analysis and function lookup, a plan, an executor and a snapshot, where
// SET is parsed and applied (BenchmarkPinServerCPU: a SELECT of the two
// set_config calls and pg_advisory_unlock_all took about 20 µs of server
// CPU, the two SET LOCAL and a SELECT of the one function about 7). So
// what has a utility form is sent in it, and the one SELECT calls only
// what has none. SET LOCAL resolves no name, like the schema-qualified
// call it replaces.
var cleanupStatements = []string{
	"SET LOCAL lock_timeout = '" + pinLockTimeout + "'",
	"SET LOCAL statement_timeout = '" + pinStatementTimeout + "'",
	"SELECT pg_catalog.pg_advisory_unlock_all()",
	"CLOSE ALL",
	"UNLISTEN *",
	"DISCARD TEMP",
	// lastval() and currval() would tell the next holder the previous
	// one's sequence values.
	"DISCARD SEQUENCES",
}

// The pin's own bounds. A pin waits on a lock only when a previous holder
// arranged it (a temporary object that a DISCARD TEMP cannot drop while
// another session holds a lock on something that depends on it).
const (
	pinLockTimeout      = "2s"
	pinStatementTimeout = "5s"
)

// deallocatePin drops every prepared statement on the server. It goes in
// front of the pin when the backend last served another tenant, so that no
// tenant ever sees or runs another tenant's statements: not through
// pg_prepared_statements, and not through a statement a hostile client
// replaced with its own under pgtenant's name (DEALLOCATE and PREPARE from a
// DO block, which pgtenant cannot see).
var deallocatePin = appendStatement(nil, "DEALLOCATE ALL")

// appendStatement appends Parse, Bind and Execute of text as the unnamed
// statement and portal.
func appendStatement(dst []byte, text string) []byte {
	dst = appendParse(dst, "", append(append([]byte(text), 0), 0, 0))
	dst = append(dst, bindUnnamed...)
	return append(dst, executeUnnamed...)
}

// paramName is what pgtenant accepts as a run-time parameter name from a
// client: a plain or dotted (extension) GUC name.
var paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// reservedParams are parameters a client may not set at startup, because
// pgtenant owns them (search_path pins the tenant) or because they change
// who the session is.
var reservedParams = map[string]string{
	"search_path":           "pgtenant pins search_path to the tenant's schema",
	"session_authorization": "the pool logs in with its own role",
	"role":                  "the pool logs in with its own role",
}

// renderedSetting is one SET the pin applies: a lower-case parameter name
// and its value already rendered as SQL.
type renderedSetting struct{ name, sql string }

// buildPin renders the pin for a client of a tenant (name and schema) and
// its startup parameters. params must already be validated by checkParams.
func buildPin(owner, schema string, params []startupParam) pin {
	sets := make([]renderedSetting, len(params))
	for i, p := range params {
		sets[i] = renderedSetting{name: p.Name, sql: quoteLiteral(p.Value)}
	}
	return buildPinSQL(owner, schema, "", sets)
}

// pinOwner is the part of a pin key that says whose it is: the tenant and
// the user. Two clients share a key only when both agree.
func pinOwner(tenant, user string) string {
	return tenant + "\x00" + user
}

// buildPinSQL renders the pin: the reset, search_path (the tenant's default
// when searchPath is empty, else the client's own, already checked), the
// cleanup, then the settings in order, in one transaction.
func buildPinSQL(owner, schema, searchPath string, sets []renderedSetting) pin {
	if searchPath == "" {
		searchPath = quoteIdent(schema) + ", public"
	}
	var key strings.Builder
	key.WriteString(owner)
	key.WriteByte(0)
	key.WriteString(searchPath)
	for _, st := range sets {
		key.WriteByte(0)
		key.WriteString(st.name)
		key.WriteByte('=')
		key.WriteString(st.sql)
	}
	// The key says everything the messages do: clients with the same key
	// share one pin, which is never written after it is built, so an idle
	// client holds no pin of its own.
	if p, ok := pinCache.Get(key.String()); ok {
		return p
	}
	var p pin
	add := func(text string) {
		p.msgs = appendStatement(p.msgs, text)
		p.statements++
	}
	for _, st := range resetStatements {
		add(st)
	}
	add("SET search_path TO " + searchPath)
	for _, st := range cleanupStatements {
		add(st)
	}
	for _, st := range sets {
		add("SET " + quoteIdent(st.name) + " TO " + st.sql)
	}
	add("COMMIT")
	// The server buffers replies to extended-protocol messages until a
	// Sync or Flush. Without this Flush the pin's replies would wait
	// behind the client's first command, however long it runs, and with
	// them the confirmation that a cancel (startCancel) and the client's
	// pipelined messages (waitPin) wait for.
	p.msgs = append(p.msgs, flushMsg...)
	p.key = key.String()
	pinCache.Add(p.key, p)
	return p
}

// pinCacheSize bounds the pins kept for sharing (see buildPinSQL): one per
// distinct tenant, user and settings in use, a few hundred bytes each.
const pinCacheSize = 4096

var pinCache = func() *lru.Cache[string, pin] {
	c, err := lru.New[string, pin](pinCacheSize)
	if err != nil {
		panic(err)
	}
	return c
}()

// checkParams turns the startup message's run-time parameters into the
// sorted, de-duplicated list the pin sets. Routing values (user, database),
// options (expanded) and protocol switches are not parameters.
//
// Precedence is PostgreSQL's: values in options are applied first and the
// packet's own parameters override them. Names are case-insensitive; if a
// packet holds the same name in two spellings, the one that sorts last
// wins, so the outcome never depends on map order.
func checkParams(startup map[string]string) ([]startupParam, *pgError) {
	byName := map[string]string{}
	if opts, ok := startup["options"]; ok {
		parsed, err := parseOptions(opts)
		if err != nil {
			return nil, fatalf(codeProtocolViolation, "invalid startup options: %v", err)
		}
		for _, o := range parsed {
			byName[strings.ToLower(o.Name)] = o.Value
		}
	}
	names := make([]string, 0, len(startup))
	for name := range startup {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		value := startup[name]
		switch name {
		case "user", "database":
			continue
		case "replication":
			if value != "" && value != "false" && value != "off" && value != "0" {
				return nil, fatalf(codeFeatureUnsupported, "pgtenant does not support replication connections")
			}
			continue
		case "options":
			continue // applied first, above
		}
		if strings.HasPrefix(name, "_pq_.") {
			continue // protocol extensions: none supported, ignored as PostgreSQL does when negotiating
		}
		byName[strings.ToLower(name)] = value
	}
	params := make([]startupParam, 0, len(byName))
	for name, value := range byName {
		if !paramName.MatchString(name) || len(name) > 63 {
			return nil, fatalf(codeInvalidParameter, "invalid run-time parameter name %q", name)
		}
		if why, ok := reservedParams[name]; ok {
			return nil, fatalf(codeInsufficientPriv, "parameter %q cannot be set by a client: %s", name, why)
		}
		if strings.IndexByte(value, 0) >= 0 {
			return nil, fatalf(codeInvalidParameter, "invalid value for parameter %q", name)
		}
		if e := lexerSafe(name, value); e != nil {
			e.Severity = "FATAL"
			return nil, e
		}
		params = append(params, startupParam{Name: name, Value: value})
	}
	sort.Slice(params, func(i, j int) bool { return params[i].Name < params[j].Name })
	return params, nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes an SQL string literal so that it means the same
// whatever standard_conforming_strings is: a value with a backslash is
// written as an escape string with the backslashes doubled.
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}
