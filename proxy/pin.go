package proxy

import (
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The pin puts a backend connection into one client's session state before
// that client's first message of a transaction runs on it. It is written in
// the same write as that message, so it costs no round trip; its replies are
// swallowed by the relay and never reach the client.
//
// Whatever the previous holder changed is undone by the pin itself rather
// than by a separate reset at release (resetSQL): settings go back to the
// connection's login values, and session objects the previous holder left
// are dropped. That is DISCARD ALL taken apart, because DISCARD ALL may not
// run inside the implicit transaction of a multi-statement Query. Each step
// costs next to nothing when there is nothing to undo. Folding the reset
// into the next pin means a released connection is free for the next client
// at once, and nothing of one tenant's session (a temporary table, which
// would shadow the next tenant's table of the same name since pg_temp is
// searched first; a prepared statement; a WITH HOLD cursor; a LISTEN; an
// advisory lock) is ever visible to another.
//
// The pin is two Query messages, not one, on purpose: the statements of one
// Query message share an implicit transaction, so a failure of a client
// parameter (say an invalid TimeZone) would roll back the search_path with
// it, and the client's own message, already sent behind the pin, would run
// with the previous holder's search_path. In the first message nothing can
// fail for a reason a client controls; the client's parameters follow in the
// second, and are checked once at startup before the client is admitted.

// pin is a client's session state, rendered once per client.
type pin struct {
	// msgs are the encoded Query messages.
	msgs []byte
	// queries is how many ReadyForQuery replies the pin produces.
	queries int
	// key identifies the state the pin leaves, stored on the backend
	// connection (pool.Conn.State).
	key string
}

// resetSQL undoes a previous holder's session. SET SESSION AUTHORIZATION
// DEFAULT comes first because RESET ALL leaves the session user and role
// alone; CLOSE ALL comes before DISCARD TEMP because an open cursor would
// keep a temporary table in use.
//
// Named prepared statements are not deallocated: protocol-level ones belong
// to pgtenant's per-backend cache (stmt.go), keyed by tenant schema so no
// tenant ever uses another's; SQL-level PREPARE pins its client to the
// backend, which DISCARD ALL cleans when the client leaves.
const resetSQL = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; " +
	"SELECT pg_advisory_unlock_all(); DISCARD TEMP; "

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

// buildPin renders the pin for a tenant schema and the client's startup
// parameters. params must already be validated by checkParams.
func buildPin(schema string, params []startupParam) pin {
	sets := make([]renderedSetting, len(params))
	for i, p := range params {
		sets[i] = renderedSetting{name: p.Name, sql: quoteLiteral(p.Value)}
	}
	return buildPinSQL(schema, "", sets)
}

// buildPinSQL renders the pin: the reset, search_path (the tenant's default
// when searchPath is empty, else the client's own, already checked), then
// the settings in order.
func buildPinSQL(schema, searchPath string, sets []renderedSetting) pin {
	var p pin
	if searchPath == "" {
		searchPath = quoteIdent(schema) + ", public"
	}
	p.msgs, _ = (&pgproto3.Query{String: resetSQL + "SET search_path TO " + searchPath}).Encode(p.msgs)
	p.queries = 1
	var key strings.Builder
	key.WriteString(searchPath)
	if len(sets) > 0 {
		var sb strings.Builder
		for i, st := range sets {
			if i > 0 {
				sb.WriteString("; ")
			}
			sb.WriteString("SET ")
			sb.WriteString(quoteIdent(st.name))
			sb.WriteString(" TO ")
			sb.WriteString(st.sql)
			key.WriteByte(0)
			key.WriteString(st.name)
			key.WriteByte('=')
			key.WriteString(st.sql)
		}
		p.msgs, _ = (&pgproto3.Query{String: sb.String()}).Encode(p.msgs)
		p.queries++
	}
	p.key = key.String()
	return p
}

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
