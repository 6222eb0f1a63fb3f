package sqlscan

import (
	"errors"
	"strconv"
)

// Kind is what a statement does to session state.
type Kind uint8

const (
	// Other is every statement not listed below.
	Other Kind = iota
	// Set is SET [SESSION] name {TO|=} value[, value...], SET name {TO|=}
	// DEFAULT, SET name FROM CURRENT, SET TIME ZONE value (Name
	// "timezone"), SET SCHEMA 'x' (Name "search_path"), SET NAMES 'x'
	// (Name "client_encoding") and SET XML OPTION x (Name "xmloption").
	Set
	// SetLocal is SET LOCAL in any of its forms, including SET LOCAL ROLE
	// (Name "role") and SET LOCAL SESSION AUTHORIZATION (Name
	// "session_authorization"): it lasts until the end of the transaction.
	SetLocal
	// Reset is RESET name, with RESET TIME ZONE named "timezone", RESET
	// SESSION AUTHORIZATION "session_authorization" and RESET TRANSACTION
	// ISOLATION LEVEL "transaction_isolation".
	Reset
	// ResetAll is RESET ALL.
	ResetAll
	// SetRole is SET [SESSION] ROLE name|NONE, and SET [SESSION] role
	// {TO|=} value. Name is "role".
	SetRole
	// SetSessionAuthorization is SET [SESSION] SESSION AUTHORIZATION
	// name|DEFAULT, and SET [SESSION] session_authorization {TO|=} value.
	// Name is "session_authorization".
	SetSessionAuthorization
	// SetTransaction is SET [LOCAL|SESSION] TRANSACTION ..., SET SESSION
	// CHARACTERISTICS AS TRANSACTION ... and SET CONSTRAINTS ...; none is
	// parsed further.
	SetTransaction
	// Listen is LISTEN channel.
	Listen
	// Unlisten is UNLISTEN channel or UNLISTEN * (Name "*").
	Unlisten
	// Prepare is PREPARE name [(types)] AS statement. PREPARE TRANSACTION
	// is Other.
	Prepare
	// Execute is EXECUTE name [(args)].
	Execute
	// Deallocate is DEALLOCATE [PREPARE] name|ALL (Name "all").
	Deallocate
	// DeclareWithHold is DECLARE name ... CURSOR WITH HOLD FOR ....
	// Cursors without HOLD end with their transaction and are Other.
	DeclareWithHold
	// CreateTemp is a statement that creates a temporary object: CREATE
	// [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} ..., any CREATE statement
	// that names something in pg_temp (or pg_temp_N), SELECT ... INTO
	// [GLOBAL|LOCAL] {TEMP|TEMPORARY} ... or INTO pg_temp.name in a
	// statement that starts with SELECT, WITH or '(', and either under
	// EXPLAIN.
	CreateTemp
	// Discard is DISCARD ALL|PLANS|SEQUENCES|TEMP|TEMPORARY; Name is the
	// target as written, lower-cased.
	Discard
	// Load is LOAD 'file'; Name is the file name.
	Load
	// CreateDatabase is CREATE DATABASE name ...; Name is the database.
	CreateDatabase
	// DropDatabase is DROP DATABASE [IF EXISTS] name ...; Name is the
	// database.
	DropDatabase
)

var kindNames = [...]string{
	Other:                   "Other",
	Set:                     "Set",
	SetLocal:                "SetLocal",
	Reset:                   "Reset",
	ResetAll:                "ResetAll",
	SetRole:                 "SetRole",
	SetSessionAuthorization: "SetSessionAuthorization",
	SetTransaction:          "SetTransaction",
	Listen:                  "Listen",
	Unlisten:                "Unlisten",
	Prepare:                 "Prepare",
	Execute:                 "Execute",
	Deallocate:              "Deallocate",
	DeclareWithHold:         "DeclareWithHold",
	CreateTemp:              "CreateTemp",
	Discard:                 "Discard",
	Load:                    "Load",
	CreateDatabase:          "CreateDatabase",
	DropDatabase:            "DropDatabase",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one item of a SET value list.
type Value struct {
	// Text is the item's content: an identifier folded to lower case
	// unless double-quoted, a string literal with its quoting and escapes
	// undone, a number as written (with its sign, "-1", "+1.5"), a keyword
	// lower-cased, and for Opaque the item's text as written.
	Text string
	Kind ValueKind
}

// ValueKind is the lexical form of a Value.
type ValueKind uint8

const (
	// Ident is an unquoted word that is not a Keyword.
	Ident ValueKind = iota
	// QuotedIdent is a "quoted" or U&"quoted" identifier.
	QuotedIdent
	// String is a string literal: '...', E'...', U&'...' or $$...$$.
	String
	// Number is a numeric literal with an optional sign.
	Number
	// Keyword is an unquoted word PostgreSQL treats specially at that
	// place: DEFAULT and the boolean words ON, OFF, TRUE, FALSE anywhere;
	// LOCAL in SET TIME ZONE; NONE in SET ROLE; DOCUMENT and CONTENT in
	// SET XML OPTION.
	Keyword
	// Opaque is anything else: an expression, a parameter, a typed or
	// bit-string literal, FROM CURRENT (Text "from current"), a literal
	// with an escape PostgreSQL would reject, or text that is not valid
	// SET syntax at all.
	Opaque
)

var valueKindNames = [...]string{
	Ident:       "Ident",
	QuotedIdent: "QuotedIdent",
	String:      "String",
	Number:      "Number",
	Keyword:     "Keyword",
	Opaque:      "Opaque",
}

func (k ValueKind) String() string {
	if int(k) < len(valueKindNames) {
		return valueKindNames[k]
	}
	return "ValueKind(" + strconv.Itoa(int(k)) + ")"
}

// SetConfig is a call set_config(name, value, is_local) found anywhere in
// a statement, in any case, unqualified or qualified by pg_catalog, with
// positional or named (=>, :=) arguments.
type SetConfig struct {
	// Name (lower-cased: PostgreSQL compares parameter names ignoring case)
	// and Value are the literal arguments, when NameKnown and ValueKnown.
	Name, Value string
	// NameParam, ValueParam and LocalParam are n when the argument is the
	// bind parameter $n (possibly cast to text, varchar or boolean), else 0.
	NameParam, ValueParam, LocalParam int
	// NameKnown, ValueKnown and LocalKnown report that the argument is a
	// plain literal: a string (possibly cast to text or varchar), or for
	// is_local TRUE, FALSE or a string boolin accepts ('t', 'off'...). NULL
	// is known too: a NULL value resets the parameter (ValueNull), a NULL
	// is_local means false.
	NameKnown, ValueKnown, LocalKnown bool
	// Local is the value of is_local when LocalKnown.
	Local bool
	// ValueNull reports that the value argument is NULL, which resets the
	// parameter to its default; Value is then "".
	ValueNull bool
}

// Statement is one top-level statement of a query string.
type Statement struct {
	Kind Kind
	// Name is the parameter name, lower-cased, for Set, SetLocal, Reset,
	// SetRole and SetSessionAuthorization (a dotted name such as
	// "app.user_id" is kept whole; "" when the statement does not follow
	// SET or RESET syntax); the channel for Listen and Unlisten ("*" for
	// UNLISTEN *); the statement name for Prepare, Execute and Deallocate
	// ("all" for DEALLOCATE ALL); the cursor name for DeclareWithHold; the
	// target for Discard; the file for Load. Identifiers other than
	// parameter names are folded to lower case unless quoted.
	Name string
	// Values is the value list of Set, SetLocal, SetRole and
	// SetSessionAuthorization. SET x TO DEFAULT gives one Keyword
	// "default", SET x FROM CURRENT one Opaque "from current".
	Values []Value
	// SetConfigs is every set_config call in the statement, in order.
	SetConfigs []SetConfig
	// SessionLockFuncs names (lower-case, without schema) every call of a
	// session-level advisory lock function in the statement:
	// pg_advisory_lock, pg_advisory_lock_shared, pg_try_advisory_lock and
	// pg_try_advisory_lock_shared.
	SessionLockFuncs []string
	// Start and End are the statement's byte offsets in the query string,
	// from its first token to the end of its last; comments and whitespace
	// around it and the ';' after it are outside.
	Start, End int
	// NameStart and NameEnd are the byte offsets of the statement name of
	// Execute and Deallocate as written (quotes included), so a caller can
	// replace it; both are 0 when the name is not one plain or quoted
	// identifier (a U&"..." name, ALL, or none).
	NameStart, NameEnd int
}

// interesting reports whether a caller must act on st.
func (st *Statement) interesting() bool {
	return st.Kind != Other || len(st.SetConfigs) > 0 || len(st.SessionLockFuncs) > 0
}

// ErrUnterminated is returned by Scan for text that ends inside a quoted
// string, quoted identifier, dollar quote or block comment. PostgreSQL
// rejects such text as a whole, so none of it runs.
var ErrUnterminated = errors.New("sqlscan: unterminated quote, comment or dollar quote")

// Scan splits a query string into top-level statements (on ';' outside
// quotes, comments, dollar quotes and parentheses) and classifies each.
// Empty statements are omitted.
//
// Scan returns nil, nil when the text holds nothing a caller must act on:
// when Interesting(sql) is false, and when every statement is Other with
// no set_config or advisory lock call. It allocates nothing then.
// Otherwise it returns every statement, Other ones included.
//
// Text that ends inside a quote, comment or dollar quote returns the
// statements before the one that holds it, and ErrUnterminated.
func Scan(sql string) ([]Statement, error) {
	if !Interesting(sql) {
		return nil, nil
	}
	return scan(sql)
}

// scan is Scan without the Interesting shortcut.
func scan(sql string) ([]Statement, error) {
	var out []Statement
	skipped := false // an uninteresting statement is missing from out
	lx := lexer{src: sql}
	for {
		start, end, more, err := nextStatement(&lx)
		if err != nil {
			return out, err
		}
		if start < end {
			st := classify(sql[:end], start)
			st.Start, st.End = start, end
			switch {
			case out != nil:
				out = append(out, st)
			case st.interesting():
				// Only now is the list worth allocating: fill in the
				// statements skipped so far by splitting the text again.
				if skipped {
					out = appendOthers(out, sql[:start])
				}
				out = append(out, st)
			default:
				skipped = true
			}
		}
		if !more {
			return out, nil
		}
	}
}

// appendOthers appends the statements of sql as Other.
func appendOthers(out []Statement, sql string) []Statement {
	lx := lexer{src: sql}
	for {
		start, end, more, _ := nextStatement(&lx)
		if start < end {
			out = append(out, Statement{Start: start, End: end})
		}
		if !more {
			return out
		}
	}
}

// nextStatement reads up to the next top-level ';' or the end of the text
// and returns the offsets of the first and last tokens of the statement it
// read (start == end when it was empty). more is false at the end.
//
// The server splits at the same places: a ';' may sit inside parentheses
// only in CREATE RULE ... DO (a; b), and anywhere else inside parentheses
// it is a syntax error, which fails the whole query string. (A BEGIN
// ATOMIC function body is split here where the server does not: that
// only adds statements, it never hides one.)
func nextStatement(lx *lexer) (start, end int, more bool, err error) {
	start, end = -1, -1
	depth := 0
	for {
		t := lx.next()
		switch t.kind {
		case tBad:
			return 0, 0, false, ErrUnterminated
		case tEOF:
			if start < 0 {
				return 0, 0, false, nil
			}
			return start, end, false, nil
		case tOp:
			switch lx.src[t.start] {
			case ';':
				if depth == 0 {
					if start < 0 {
						return 0, 0, true, nil
					}
					return start, end, true, nil
				}
			case '(':
				depth++
			case ')':
				if depth > 0 {
					depth--
				}
			}
		}
		if start < 0 {
			start = t.start
		}
		end = t.end
	}
}

// Interesting reports, without allocating, whether Scan could return
// anything but Other statements with no set_config or advisory lock calls.
// It looks for the words those statements cannot do without, in any case,
// anywhere in the text (comments and literals included): SET, RESET,
// LISTEN, UNLISTEN, PREPARE, EXECUTE, DEALLOCATE, DISCARD, LOAD, DECLARE
// as whole words; set_config, pg_advisory_lock, pg_try_advisory_lock,
// pg_temp, a word starting with temp; and U& (an escaped identifier may
// spell any name). It has false positives (UPDATE ... SET) but no false
// negatives.
func Interesting(sql string) bool {
	for i := 0; i < len(sql); i++ {
		switch sql[i] | 0x20 {
		case 's':
			if startsWord(sql, i) && (isWordAt(sql, i, "set") || hasPrefixFoldASCII(sql[i:], "set_config")) {
				return true
			}
		case 'r':
			if isWordAt(sql, i, "reset") {
				return true
			}
		case 'l':
			if isWordAt(sql, i, "listen") || isWordAt(sql, i, "load") {
				return true
			}
		case 'u':
			if (i+1 < len(sql) && sql[i+1] == '&') || isWordAt(sql, i, "unlisten") {
				return true
			}
		case 'p':
			rest := sql[i:]
			if isWordAt(sql, i, "prepare") || hasPrefixFoldASCII(rest, "pg_temp") ||
				hasPrefixFoldASCII(rest, "pg_advisory_lock") || hasPrefixFoldASCII(rest, "pg_try_advisory_lock") {
				return true
			}
		case 'e':
			if isWordAt(sql, i, "execute") {
				return true
			}
		case 'd':
			if isWordAt(sql, i, "deallocate") || isWordAt(sql, i, "discard") || isWordAt(sql, i, "declare") ||
				isWordAt(sql, i, "database") {
				return true
			}
		case 't':
			if startsWord(sql, i) && hasPrefixFoldASCII(sql[i:], "temp") {
				return true
			}
		}
	}
	return false
}

// startsWord reports whether a word may start at sql[i]: the lexer never
// starts a token right after a letter, '_' or a byte >= 0x80, because it
// would have continued the identifier (digits and '$' may end a number, a
// parameter or a lone '$').
func startsWord(sql string, i int) bool {
	return i == 0 || !isIdentStart(sql[i-1])
}

// isWordAt reports whether the identifier token at sql[i] is word, a
// lower-case keyword, in any case.
func isWordAt(sql string, i int, word string) bool {
	j := i + len(word)
	return startsWord(sql, i) && hasPrefixFoldASCII(sql[i:], word) && (j == len(sql) || !isIdentCont(sql[j]))
}
