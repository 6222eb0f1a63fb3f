package proxy

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestCheckParams(t *testing.T) {
	name63 := "a" + strings.Repeat("b", 62)
	tests := []struct {
		name    string
		startup map[string]string
		want    []startupParam
		code    string // SQLSTATE of the expected refusal
	}{
		{name: "nil", startup: nil, want: []startupParam{}},
		{name: "routing values skipped", startup: map[string]string{"user": "bob", "database": "acme"}, want: []startupParam{}},
		{
			name:    "plain parameters",
			startup: map[string]string{"user": "bob", "application_name": "psql", "client_encoding": "UTF8"},
			want:    []startupParam{{"application_name", "psql"}, {"client_encoding", "UTF8"}},
		},
		{
			name:    "options expanded",
			startup: map[string]string{"options": "-c statement_timeout=5s --lock-timeout=1s"},
			want:    []startupParam{{"lock_timeout", "1s"}, {"statement_timeout", "5s"}},
		},
		{name: "empty options", startup: map[string]string{"options": ""}, want: []startupParam{}},
		{name: "malformed options", startup: map[string]string{"options": "-x"}, code: codeProtocolViolation},
		{name: "options name case folded", startup: map[string]string{"options": "-c DateStyle=ISO"}, want: []startupParam{{"datestyle", "ISO"}}},
		{name: "case folding", startup: map[string]string{"TimeZone": "UTC"}, want: []startupParam{{"timezone", "UTC"}}},
		{name: "dotted name", startup: map[string]string{"myapp.tenant_hint": "x"}, want: []startupParam{{"myapp.tenant_hint", "x"}}},
		{name: "63-byte name", startup: map[string]string{name63: "x"}, want: []startupParam{{name63, "x"}}},
		{name: "protocol extension ignored", startup: map[string]string{"_pq_.compression": "on", "user": "bob"}, want: []startupParam{}},
		{
			name:    "sorted",
			startup: map[string]string{"work_mem": "1MB", "application_name": "a", "datestyle": "ISO", "timezone": "UTC", "extra_float_digits": "3"},
			want: []startupParam{
				{"application_name", "a"}, {"datestyle", "ISO"}, {"extra_float_digits", "3"},
				{"timezone", "UTC"}, {"work_mem", "1MB"},
			},
		},
		{name: "replication off", startup: map[string]string{"replication": "false"}, want: []startupParam{}},
		{name: "replication 0", startup: map[string]string{"replication": "0"}, want: []startupParam{}},
		{name: "replication empty", startup: map[string]string{"replication": ""}, want: []startupParam{}},
		{name: "replication true", startup: map[string]string{"replication": "true"}, code: codeFeatureUnsupported},
		{name: "replication database", startup: map[string]string{"replication": "database"}, code: codeFeatureUnsupported},
		{name: "replication on", startup: map[string]string{"replication": "on"}, code: codeFeatureUnsupported},
		{name: "search_path", startup: map[string]string{"search_path": "other"}, code: codeInsufficientPriv},
		{name: "search_path mixed case", startup: map[string]string{"Search_Path": "other"}, code: codeInsufficientPriv},
		{name: "search_path through options", startup: map[string]string{"options": "-c search_path=other"}, code: codeInsufficientPriv},
		{name: "search_path through long option", startup: map[string]string{"options": "--search-path=other"}, code: codeInsufficientPriv},
		{name: "role", startup: map[string]string{"role": "postgres"}, code: codeInsufficientPriv},
		{name: "role through options", startup: map[string]string{"options": "-crole=postgres"}, code: codeInsufficientPriv},
		{name: "session_authorization", startup: map[string]string{"session_authorization": "postgres"}, code: codeInsufficientPriv},
		{name: "SESSION_AUTHORIZATION", startup: map[string]string{"SESSION_AUTHORIZATION": "postgres"}, code: codeInsufficientPriv},
		{name: "dash in name", startup: map[string]string{"statement-timeout": "5s"}, code: codeInvalidParameter},
		{name: "leading digit", startup: map[string]string{"1abc": "x"}, code: codeInvalidParameter},
		{name: "empty name", startup: map[string]string{"": "x"}, code: codeInvalidParameter},
		{name: "two dots", startup: map[string]string{"a.b.c": "x"}, code: codeInvalidParameter},
		{name: "quote in name", startup: map[string]string{`a"b`: "x"}, code: codeInvalidParameter},
		{name: "space in name", startup: map[string]string{"a b": "x"}, code: codeInvalidParameter},
		{name: "semicolon in name", startup: map[string]string{"a;b": "x"}, code: codeInvalidParameter},
		{name: "trailing newline in name", startup: map[string]string{"timezone\n": "x"}, code: codeInvalidParameter},
		{name: "64-byte name", startup: map[string]string{name63 + "c": "x"}, code: codeInvalidParameter},
		{name: "bad name through options", startup: map[string]string{"options": `-c a\ b=c`}, code: codeInvalidParameter},
		{name: "NUL in value", startup: map[string]string{"application_name": "a\x00b"}, code: codeInvalidParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, perr := checkParams(tt.startup)
			if tt.code != "" {
				if perr == nil {
					t.Fatalf("checkParams = %q, want refusal %s", got, tt.code)
				}
				wantPgError(t, perr, tt.code)
				return
			}
			if perr != nil {
				t.Fatalf("checkParams: %v (%s)", perr, perr.Code)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("checkParams = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCheckParamsPrecedence: a parameter given both directly and in options
// (or twice, in two spellings) must come out the same on every call. The
// proxy validates it once at startup and then re-applies it at every pin, so
// a result that depends on Go's map iteration order would be a session whose
// settings change under the client. PostgreSQL applies options first and the
// startup packet's own parameters after them, so the direct value wins.
func TestCheckParamsPrecedence(t *testing.T) {
	t.Run("direct parameter beats options", func(t *testing.T) {
		startup := map[string]string{"timezone": "UTC", "options": "-c timezone=Asia/Tokyo"}
		for i := 0; i < 100; i++ {
			got, perr := checkParams(startup)
			if perr != nil {
				t.Fatalf("checkParams: %v", perr)
			}
			want := []startupParam{{"timezone", "UTC"}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("call %d: checkParams = %q, want %q", i, got, want)
			}
		}
	})
	t.Run("case variants are deterministic", func(t *testing.T) {
		startup := map[string]string{"TimeZone": "UTC", "timezone": "PST8PDT"}
		first, perr := checkParams(startup)
		for i := 0; i < 100; i++ {
			got, perr2 := checkParams(startup)
			if (perr == nil) != (perr2 == nil) || !reflect.DeepEqual(got, first) {
				t.Fatalf("call %d: checkParams = %q, %v; first call gave %q, %v", i, got, perr2, first, perr)
			}
		}
	})
}

// pinQueries splits the pin's bytes into its statements, checking that
// each is a Parse, Bind and Execute of the unnamed statement and portal with
// nothing else (no Sync: the pin's failure must make the server skip the
// client's messages), and decoding them with pgproto3, as the server would.
func pinQueries(t *testing.T, msgs []byte) []string {
	t.Helper()
	var out []string
	next := func(typ byte) []byte {
		t.Helper()
		if len(msgs) < 5 || msgs[0] != typ {
			t.Fatalf("pin: want message %q, have %q", typ, msgs)
		}
		n := int(binary.BigEndian.Uint32(msgs[1:5]))
		if n < 4 || 1+n > len(msgs) {
			t.Fatalf("pin message length %d does not fit %d bytes", n, len(msgs))
		}
		body := msgs[5 : 1+n]
		msgs = msgs[1+n:]
		return body
	}
	if !bytes.HasSuffix(msgs, flushMsg) {
		t.Fatalf("pin does not end with a Flush: %q", msgs)
	}
	msgs = msgs[:len(msgs)-len(flushMsg)]
	for len(msgs) > 0 {
		var p pgproto3.Parse
		if err := p.Decode(next('P')); err != nil || p.Name != "" || len(p.ParameterOIDs) != 0 {
			t.Fatalf("pin Parse: %v %+v", err, p)
		}
		var b pgproto3.Bind
		if err := b.Decode(next('B')); err != nil || b.DestinationPortal != "" || b.PreparedStatement != "" || len(b.Parameters) != 0 {
			t.Fatalf("pin Bind: %v %+v", err, b)
		}
		var e pgproto3.Execute
		if err := e.Decode(next('E')); err != nil || e.Portal != "" || e.MaxRows != 0 {
			t.Fatalf("pin Execute: %v %+v", err, e)
		}
		out = append(out, p.Query)
	}
	return out
}

// pinParts checks the pin's fixed frame (resetStatements, search_path,
// cleanupStatements, the client's settings, COMMIT) and returns the
// search_path value and the settings' statements.
func pinParts(t *testing.T, p pin) (searchPath string, sets []string) {
	t.Helper()
	got := pinQueries(t, p.msgs)
	if len(got) != p.statements {
		t.Fatalf("pin has %d statements, says %d", len(got), p.statements)
	}
	fixed := len(resetStatements) + 1 + len(cleanupStatements)
	if len(got) < fixed+1 {
		t.Fatalf("pin too short: %q", got)
	}
	if !reflect.DeepEqual(got[:len(resetStatements)], resetStatements) {
		t.Fatalf("pin does not start with the reset: %q", got)
	}
	sp := got[len(resetStatements)]
	if !strings.HasPrefix(sp, "SET search_path TO ") {
		t.Fatalf("search_path is not set right after the reset: %q", got)
	}
	if !reflect.DeepEqual(got[len(resetStatements)+1:fixed], cleanupStatements) {
		t.Fatalf("pin cleanup: %q", got)
	}
	if got[len(got)-1] != "COMMIT" {
		t.Fatalf("pin does not end with COMMIT: %q", got)
	}
	return strings.TrimPrefix(sp, "SET search_path TO "), got[fixed : len(got)-1]
}

func TestBuildPin(t *testing.T) {
	// The reset and cleanup around are the pin's own business (pinParts
	// checks them); what these cases check is how the schema and the
	// client's values are quoted.
	tests := []struct {
		name       string
		schema     string
		params     []startupParam
		searchPath string
		sets       []string
		key        string
	}{
		{
			name:       "no parameters",
			schema:     "acme",
			searchPath: `"acme", public`,
			key:        "acme\x00u\x00\"acme\", public",
		},
		{
			name:       "schema with a double quote",
			schema:     `we"ird`,
			searchPath: `"we""ird", public`,
			key:        "acme\x00u\x00\"we\"\"ird\", public",
		},
		{
			name:       "schema that tries to close the identifier",
			schema:     `x", pg_catalog; DROP TABLE t; --`,
			searchPath: `"x"", pg_catalog; DROP TABLE t; --", public`,
		},
		{
			name:       "parameters",
			schema:     "acme",
			params:     []startupParam{{"application_name", "psql"}, {"timezone", "UTC"}},
			searchPath: `"acme", public`,
			sets:       []string{`SET "application_name" TO 'psql'`, `SET "timezone" TO 'UTC'`},
			key:        "acme\x00u\x00\"acme\", public\x00application_name='psql'\x00timezone='UTC'",
		},
		{
			name:       "value with a single quote",
			schema:     "acme",
			params:     []startupParam{{"application_name", "it's"}},
			searchPath: `"acme", public`,
			sets:       []string{`SET "application_name" TO 'it''s'`},
		},
		{
			name:       "value with a backslash",
			schema:     "acme",
			params:     []startupParam{{"application_name", `C:\dir`}},
			searchPath: `"acme", public`,
			sets:       []string{`SET "application_name" TO E'C:\\dir'`},
		},
		{
			name:       "value with both",
			schema:     "acme",
			params:     []startupParam{{"application_name", `\'; DROP TABLE t; --`}},
			searchPath: `"acme", public`,
			sets:       []string{`SET "application_name" TO E'\\''; DROP TABLE t; --'`},
		},
		{
			name:       "dotted name",
			schema:     "acme",
			params:     []startupParam{{"myapp.flag", ""}},
			searchPath: `"acme", public`,
			sets:       []string{`SET "myapp.flag" TO ''`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := buildPin(pinOwner("acme", "u"), tt.schema, tt.params)
			sp, sets := pinParts(t, p)
			if sp != tt.searchPath {
				t.Errorf("search_path %q, want %q", sp, tt.searchPath)
			}
			if len(sets) == 0 {
				sets = nil
			}
			if !reflect.DeepEqual(sets, tt.sets) {
				t.Errorf("pin settings =\n%q\nwant\n%q", sets, tt.sets)
			}
			if tt.key != "" && p.key != tt.key {
				t.Errorf("key %q, want %q", p.key, tt.key)
			}
			// The key is an opaque label: what matters is that it is the
			// same for the same state (here) and differs between states
			// (TestBuildPinKeyDistinguishesStates).
			if again := buildPin(pinOwner("acme", "u"), tt.schema, tt.params); again.key != p.key {
				t.Errorf("key not deterministic: %q then %q", p.key, again.key)
			}
		})
	}
}

// TestBuildPinKeyDistinguishesStates: two different sets of parameters must
// never share a key, or a backend would be taken as already pinned for a
// client whose settings it does not have.
func TestBuildPinKeyDistinguishesStates(t *testing.T) {
	// The same schema and settings for two tenants, or two users of one
	// tenant, are different states too: reuse never crosses them.
	pins := []struct {
		owner, schema string
		params        []startupParam
	}{
		{pinOwner("acme", "u"), "acme", nil},
		{pinOwner("acme", "u"), "acme", []startupParam{{"a", ""}}},
		{pinOwner("acme", "u"), "acme", []startupParam{{"a", "b"}}},
		{pinOwner("acme", "u"), "acme", []startupParam{{"a", "b=c"}}},
		{pinOwner("acme", "u"), "acme", []startupParam{{"a", "b"}, {"c", ""}}},
		{pinOwner("acme", "u"), "acme", []startupParam{{"a", "b"}, {"c", "d"}}},
		{pinOwner("acme", "u"), "acme2", nil},
		{pinOwner("globex", "u"), "acme", nil},
		{pinOwner("acme", "v"), "acme", nil},
		{pinOwner("acme\x00u", ""), "acme", nil},
	}
	seen := map[string]int{}
	for i, p := range pins {
		k := buildPin(p.owner, p.schema, p.params).key
		if j, ok := seen[k]; ok {
			t.Fatalf("pins %d and %d share key %q", j, i, k)
		}
		seen[k] = i
	}
}

// lexString scans one SQL string constant at the start of s the way
// PostgreSQL's scanner does (scan.l: xq, xe, xqdouble), with
// standard_conforming_strings on or off, and returns its value and length.
// ok is false when s does not start with a complete string constant.
func lexString(s string, standardConformingStrings bool) (val string, n int, ok bool) {
	i := 0
	escapes := !standardConformingStrings
	if i < len(s) && (s[i] == 'E' || s[i] == 'e') {
		escapes = true
		i++
	}
	if i >= len(s) || s[i] != '\'' {
		return "", 0, false
	}
	i++
	var b strings.Builder
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\'':
			if i+1 < len(s) && s[i+1] == '\'' {
				b.WriteByte('\'')
				i += 2
				continue
			}
			return b.String(), i + 1, true
		case c == '\\' && escapes:
			if i+1 >= len(s) {
				return "", 0, false
			}
			switch e := s[i+1]; e {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				// Octal, hex and unicode escapes all start with a
				// character that is not a backslash or a quote; any of
				// them here means a backslash was left undoubled.
				if (e >= '0' && e <= '7') || e == 'x' || e == 'u' || e == 'U' {
					return "", 0, false
				}
				b.WriteByte(e)
			}
			i += 2
		default:
			b.WriteByte(c)
			i++
		}
	}
	return "", 0, false // unterminated
}

// lexIdent scans one quoted identifier at the start of s.
func lexIdent(s string) (val string, n int, ok bool) {
	if s == "" || s[0] != '"' {
		return "", 0, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String(), i + 1, true
		}
		b.WriteByte(s[i])
	}
	return "", 0, false
}

// nastyValues are inputs meant to break out of a quoted literal or
// identifier, plus every short string over the characters that matter.
func nastyValues() []string {
	vals := []string{
		"", `'`, `''`, `\`, `\\`, `\'`, `'\`, `\''`, `'\'`, `E'`, `e'\'`,
		`'; DROP TABLE t; --`, `\'; DROP TABLE t; --`, `\\'; SELECT 1; --`,
		`$$`, `$x$'$x$`, `"`, `""`, `"; DROP TABLE t; --`, `abc\`, `\x27`, `\047`, `\u0027`,
		"line\nbreak'", "tab\t\\", "é'\\ü", "\xff\xfe'", "' || pg_sleep(1) || '",
		"/*'*/", "-- '", "a'\n'b", // adjacent string constants continue across newlines
	}
	alphabet := []byte{'\'', '\\', '"', 'E', ';', '\n', 'a'}
	var gen func(prefix []byte, depth int)
	gen = func(prefix []byte, depth int) {
		vals = append(vals, string(prefix))
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix[:len(prefix):len(prefix)], c), depth-1)
		}
	}
	gen(nil, 4)
	return vals
}

// TestQuoteLiteralIsOneToken is the pin's safety property: whatever a client
// puts in a parameter value, the quoted value is exactly one string constant
// meaning that value, under either setting of standard_conforming_strings,
// and what follows it in the pin is still parsed as SQL of ours.
func TestQuoteLiteralIsOneToken(t *testing.T) {
	for _, v := range nastyValues() {
		q := quoteLiteral(v)
		for _, scs := range []bool{true, false} {
			stmt := q + "; SET x TO 'y'"
			got, n, ok := lexString(stmt, scs)
			if !ok || n != len(q) || got != v {
				t.Fatalf("quoteLiteral(%q) = %s: with standard_conforming_strings=%v it scans as %q over %d bytes (ok=%v), want the value over %d bytes",
					v, q, scs, got, n, ok, len(q))
			}
		}
	}
}

func TestQuoteIdentIsOneToken(t *testing.T) {
	for _, v := range nastyValues() {
		q := quoteIdent(v)
		got, n, ok := lexIdent(q + `, public`)
		if !ok || n != len(q) || got != v {
			t.Fatalf("quoteIdent(%q) = %s scans as %q over %d bytes (ok=%v)", v, q, got, n, ok)
		}
	}
}

// TestLexStringCatchesBadQuoting makes sure the tokenizer above would notice
// a quoting mistake, so the property tests cannot pass vacuously.
func TestLexStringCatchesBadQuoting(t *testing.T) {
	naive := func(s string) string { return "'" + s + "'" }
	noBackslashDoubling := func(s string) string { return "E'" + strings.ReplaceAll(s, "'", "''") + "'" }
	plainWithBackslash := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, tc := range []struct {
		quote func(string) string
		v     string
		scs   bool
	}{
		{naive, "it's", true},
		{noBackslashDoubling, `\'; DROP TABLE t; --`, true},
		{plainWithBackslash, `\'; DROP TABLE t; --`, false},
	} {
		q := tc.quote(tc.v)
		got, n, ok := lexString(q+"; SET x TO 'y'", tc.scs)
		if ok && n == len(q) && got == tc.v {
			t.Errorf("tokenizer accepted bad quoting %s of %q", q, tc.v)
		}
	}
}
