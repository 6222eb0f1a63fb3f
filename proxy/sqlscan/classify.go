package sqlscan

import "strings"

// The classifier reads a statement's first words with a stream of tokens
// and follows PostgreSQL's grammar (gram.y) only as far as the statements
// of interest need: VariableSetStmt, VariableResetStmt, ListenStmt and so
// on. Everything else is Other. It never fails: a statement that does not
// follow the syntax keeps the Kind its first word gives it, with whatever
// Name and Values could be read; PostgreSQL rejects such a statement, and
// with it the whole query string.

// stream is a lexer with one current token.
type stream struct {
	lx      lexer
	tok     token
	prevEnd int // end of the token before tok
}

func newStream(src string, pos int) stream {
	s := stream{lx: lexer{src: src, pos: pos}, prevEnd: pos}
	s.tok = s.lx.next()
	return s
}

func (s *stream) advance() {
	s.prevEnd = s.tok.end
	s.tok = s.lx.next()
}

func (s *stream) src() string { return s.lx.src }

// peek returns the token after the current one.
func (s *stream) peek() token {
	lx := s.lx
	return lx.next()
}

func (s *stream) atEnd() bool         { return s.tok.kind == tEOF }
func (s *stream) word(w string) bool  { return isWord(s.lx.src, s.tok, w) }
func (s *stream) op(o string) bool    { return isOp(s.lx.src, s.tok, o) }
func (s *stream) text(t token) string { return s.lx.src[t.start:t.end] }

func isIdentLike(k tokKind) bool { return k == tIdent || k == tQIdent || k == tUIdent }

func isStringLike(k tokKind) bool {
	return k == tString || k == tEString || k == tUString || k == tDollar
}

// isOp reports whether t is the punctuation or operator o.
func isOp(src string, t token, o string) bool {
	return t.kind == tOp && src[t.start:t.end] == o
}

// isWord reports whether t is the unquoted word w (lower-case), in any case.
func isWord(src string, t token, w string) bool {
	return t.kind == tIdent && equalFoldASCII(src[t.start:t.end], w)
}

// namePart is one identifier of a possibly qualified name: its token and,
// for U&"...", the escape character of its UESCAPE clause.
type namePart struct {
	tok token
	esc byte
}

// value decodes the identifier.
func (p namePart) value(src string) (string, bool) { return identValue(src, p.tok, p.esc) }

// is reports, without allocating for plain and quoted identifiers, whether
// the identifier is want (which holds no upper-case letter and no '"').
func (p namePart) is(src string, want string) bool {
	text := src[p.tok.start:p.tok.end]
	switch p.tok.kind {
	case tIdent:
		return equalFoldASCII(text, want)
	case tQIdent:
		return text[1:len(text)-1] == want
	}
	v, ok := p.value(src)
	return ok && v == want
}

// isTempSchema reports whether the identifier names the session's
// temporary schema: pg_temp, or pg_temp_N.
func (p namePart) isTempSchema(src string) bool {
	text := src[p.tok.start:p.tok.end]
	var v string
	switch p.tok.kind {
	case tIdent:
		if !hasPrefixFoldASCII(text, "pg_temp") {
			return false
		}
		v = text
	case tQIdent:
		v = text[1 : len(text)-1]
	default:
		var ok bool
		if v, ok = p.value(src); !ok {
			return false
		}
	}
	if p.tok.kind != tIdent && !strings.HasPrefix(v, "pg_temp") {
		return false
	}
	rest := v[len("pg_temp"):]
	if rest == "" {
		return true
	}
	if rest[0] != '_' || len(rest) == 1 {
		return false
	}
	for i := 1; i < len(rest); i++ {
		if !isDigit(rest[i]) {
			return false
		}
	}
	return true
}

// part reads an identifier, with the UESCAPE clause after a U&"...".
func (s *stream) part() (namePart, bool) {
	p := namePart{tok: s.tok}
	switch s.tok.kind {
	case tIdent, tQIdent:
		s.advance()
		return p, true
	case tUIdent:
		s.advance()
		esc, ok := s.uescape()
		p.esc = esc
		return p, ok
	}
	return p, false
}

// nameRange records where the statement name that follows stands in the
// text, when it is one plain or quoted identifier.
func (s *stream) nameRange(st *Statement) {
	if s.tok.kind == tIdent || s.tok.kind == tQIdent {
		st.NameStart, st.NameEnd = s.tok.start, s.tok.end
	}
}

// ident reads an identifier and returns its value.
func (s *stream) ident() (string, bool) {
	p, ok := s.part()
	if !ok {
		return "", false
	}
	return p.value(s.src())
}

// uescape reads the UESCAPE 'c' clause that may follow a U& token and
// returns the escape character, '\' without one.
func (s *stream) uescape() (byte, bool) {
	if !s.word("uescape") {
		return '\\', true
	}
	s.advance()
	t := s.tok
	if t.kind == tUString {
		return 0, false
	}
	v, ok := stringValue(s.src(), t, 0)
	if !ok || !validUEscape(v) {
		return 0, false
	}
	s.advance()
	return v[0], true
}

// stringLit reads a string literal and returns its value.
func (s *stream) stringLit() (string, bool) {
	t := s.tok
	switch t.kind {
	case tString, tEString, tDollar:
		s.advance()
		return stringValue(s.src(), t, 0)
	case tUString:
		s.advance()
		esc, ok := s.uescape()
		if !ok {
			return "", false
		}
		return stringValue(s.src(), t, esc)
	}
	return "", false
}

// rest reads the remaining tokens as one Opaque value.
func (s *stream) rest() []Value {
	if s.atEnd() {
		return nil
	}
	v := Value{Text: s.src()[s.tok.start:], Kind: Opaque}
	for !s.atEnd() {
		s.advance()
	}
	return []Value{v}
}

// scanMode says what scanCalls looks for besides function calls.
type scanMode uint8

const (
	scanPlain  scanMode = iota
	scanCreate          // a CREATE statement: names in pg_temp
	scanSelect          // a SELECT, WITH or (SELECT ...) statement: INTO TEMP
)

// classify classifies the statement that starts at src[start] and ends at
// the end of src.
func classify(src string, start int) Statement {
	var st Statement
	s := newStream(src, start)
	mode := scanPlain
	if s.tok.kind == tIdent {
		switch {
		case s.word("set"):
			s.advance()
			s.set(&st)
		case s.word("reset"):
			s.advance()
			s.reset(&st)
		case s.word("listen"):
			s.advance()
			st.Kind = Listen
			st.Name, _ = s.ident()
		case s.word("unlisten"):
			s.advance()
			st.Kind = Unlisten
			if s.op("*") {
				st.Name = "*"
			} else {
				st.Name, _ = s.ident()
			}
		case s.word("prepare"):
			s.advance()
			// PREPARE TRANSACTION 'gid' is two-phase commit.
			if !(s.word("transaction") && isStringLike(s.peek().kind)) {
				st.Kind = Prepare
				st.Name, _ = s.ident()
			}
		case s.word("execute"):
			s.advance()
			st.Kind = Execute
			s.nameRange(&st)
			st.Name, _ = s.ident()
		case s.word("deallocate"):
			s.advance()
			st.Kind = Deallocate
			if s.word("prepare") && s.peek().kind != tEOF {
				s.advance()
			}
			if s.word("all") {
				st.Name = "all"
			} else {
				s.nameRange(&st)
				st.Name, _ = s.ident()
			}
		case s.word("declare"):
			s.advance()
			s.declare(&st)
		case s.word("discard"):
			s.advance()
			st.Kind = Discard
			if s.tok.kind == tIdent {
				st.Name, _ = s.ident()
			}
		case s.word("load"):
			s.advance()
			st.Kind = Load
			st.Name, _ = s.stringLit()
		case s.word("create"):
			s.advance()
			s.create(&st)
			mode = scanCreate
		case s.word("drop"):
			s.advance()
			if s.word("database") {
				s.advance()
				if s.word("if") && isWord(s.src(), s.peek(), "exists") {
					s.advance()
					s.advance()
				}
				st.Kind = DropDatabase
				st.Name, _ = s.ident()
			}
		case s.word("select"), s.word("with"):
			mode = scanSelect
		case s.word("explain"):
			s.advance()
			mode = s.explain(&st)
		}
	} else if s.op("(") {
		mode = scanSelect
	}
	scanCalls(src, start, &st, mode)
	return st
}

// Keywords of SET values, by context.
func kwValue(w string) bool {
	switch w {
	case "default", "on", "off", "true", "false":
		return true
	}
	return false
}
func kwTimeZone(w string) bool { return w == "local" || kwValue(w) }
func kwRole(w string) bool     { return w == "none" || kwValue(w) }
func kwXML(w string) bool      { return w == "document" || w == "content" || kwValue(w) }

// set reads what follows SET:
//
//	SET [LOCAL|SESSION] name {TO|=} {value[, ...]|DEFAULT}
//	SET [LOCAL|SESSION] name FROM CURRENT
//	SET [LOCAL|SESSION] {TIME ZONE v|SCHEMA 'x'|NAMES ['x'|DEFAULT]|ROLE r|
//	    SESSION AUTHORIZATION a|XML OPTION x|TRANSACTION ...|CATALOG 'x'}
//	SET SESSION CHARACTERISTICS AS TRANSACTION ...
//	SET CONSTRAINTS ...
//
// LOCAL and SESSION are also valid parameter names; they are the scope
// when an identifier follows (SET local = 1 sets a parameter "local").
func (s *stream) set(st *Statement) {
	local := false
	if s.word("local") || s.word("session") {
		next := s.peek()
		if s.word("session") && (isWord(s.src(), next, "authorization") || isWord(s.src(), next, "characteristics")) {
			// SET SESSION AUTHORIZATION / SET SESSION CHARACTERISTICS
		} else if isIdentLike(next.kind) && !isWord(s.src(), next, "to") && !isWord(s.src(), next, "from") {
			local = s.word("local")
			s.advance()
		}
	}
	st.Kind = Set
	if local {
		st.Kind = SetLocal
	}

	// A special form's first word followed by TO, '=', '.' or FROM is a
	// parameter name instead: SET role = 'x', SET time.x = 1.
	next := s.peek()
	generic := isWord(s.src(), next, "to") || isOp(s.src(), next, "=") ||
		isOp(s.src(), next, ".") || isWord(s.src(), next, "from")
	if s.tok.kind == tIdent && !generic {
		switch {
		case s.word("transaction"), s.word("constraints"),
			s.word("session") && isWord(s.src(), next, "characteristics"):
			st.Kind = SetTransaction
			return
		case s.word("catalog"):
			// Always an error: "current database cannot be changed".
			st.Kind = Other
			return
		case s.word("time") && isWord(s.src(), next, "zone"):
			s.advance()
			s.advance()
			st.Name = "timezone"
			st.Values = s.values(kwTimeZone)
			return
		case s.word("schema"):
			s.advance()
			st.Name = "search_path"
			st.Values = s.values(kwValue)
			return
		case s.word("names"):
			s.advance()
			st.Name = "client_encoding"
			if s.atEnd() {
				st.Values = []Value{{Text: "default", Kind: Keyword}}
			} else {
				st.Values = s.values(kwValue)
			}
			return
		case s.word("role"):
			s.advance()
			st.Name = "role"
			st.Values = s.values(kwRole)
			if !local {
				st.Kind = SetRole
			}
			return
		case s.word("session") && isWord(s.src(), next, "authorization"):
			s.advance()
			s.advance()
			st.Name = "session_authorization"
			st.Values = s.values(kwValue)
			if !local {
				st.Kind = SetSessionAuthorization
			}
			return
		case s.word("xml") && isWord(s.src(), next, "option"):
			s.advance()
			s.advance()
			st.Name = "xmloption"
			st.Values = s.values(kwXML)
			return
		}
	}

	name, ok := s.varName()
	if !ok {
		st.Name = ""
		st.Values = s.rest()
		return
	}
	st.Name = name
	switch {
	case s.word("to") || s.op("="):
		s.advance()
		st.Values = s.values(kwValue)
	case s.word("from") && isWord(s.src(), s.peek(), "current"):
		s.advance()
		s.advance()
		st.Values = []Value{{Text: "from current", Kind: Opaque}}
		if !s.atEnd() {
			st.Values = append(st.Values, s.rest()...)
		}
	default:
		st.Values = s.rest()
	}
	if !local {
		switch name {
		case "role":
			st.Kind = SetRole
		case "session_authorization":
			st.Kind = SetSessionAuthorization
		}
	}
}

// varName reads a parameter name: identifiers joined by '.', all folded to
// lower case because PostgreSQL looks parameters up ignoring case.
func (s *stream) varName() (string, bool) {
	name, ok := s.ident()
	if !ok {
		return "", false
	}
	name = lowerASCII(name)
	for s.op(".") {
		s.advance()
		part, ok := s.ident()
		if !ok {
			return "", false
		}
		name += "." + lowerASCII(part)
	}
	return name, true
}

// values reads a comma-separated SET value list to the end of the
// statement. An item that is not a single literal, identifier or signed
// number becomes one Opaque value.
func (s *stream) values(kw func(string) bool) []Value {
	var vals []Value
	for !s.atEnd() {
		start := s.tok.start
		v, ok := s.value(kw)
		if !ok || !(s.atEnd() || s.op(",")) {
			end := s.skipItem()
			if end < start {
				end = start
			}
			v = Value{Text: s.src()[start:end], Kind: Opaque}
		}
		vals = append(vals, v)
		if s.op(",") {
			s.advance()
		}
	}
	return vals
}

// skipItem reads up to the next ',' outside parentheses or the end, and
// returns the end of the last token it or the item before it read.
func (s *stream) skipItem() int {
	depth := 0
	for !s.atEnd() {
		switch {
		case depth == 0 && s.op(","):
			return s.prevEnd
		case s.op("(") || s.op("["):
			depth++
		case (s.op(")") || s.op("]")) && depth > 0:
			depth--
		}
		s.advance()
	}
	return s.prevEnd
}

// value reads one SET value.
func (s *stream) value(kw func(string) bool) (Value, bool) {
	t := s.tok
	switch t.kind {
	case tString, tEString, tUString, tDollar:
		v, ok := s.stringLit()
		return Value{Text: v, Kind: String}, ok
	case tQIdent, tUIdent:
		v, ok := s.ident()
		return Value{Text: v, Kind: QuotedIdent}, ok
	case tIdent:
		v, _ := s.ident()
		if kw(v) {
			return Value{Text: v, Kind: Keyword}, true
		}
		return Value{Text: v, Kind: Ident}, true
	case tNumber:
		s.advance()
		return Value{Text: s.text(t), Kind: Number}, true
	case tOp:
		if n := s.peek(); (s.op("-") || s.op("+")) && n.kind == tNumber {
			s.advance()
			s.advance()
			text := s.text(t) + s.text(n)
			if t.end == n.start {
				text = s.src()[t.start:n.end]
			}
			return Value{Text: text, Kind: Number}, true
		}
	}
	return Value{}, false
}

// reset reads what follows RESET:
//
//	RESET {name|ALL|TIME ZONE|SESSION AUTHORIZATION|TRANSACTION ISOLATION LEVEL}
func (s *stream) reset(st *Statement) {
	st.Kind = Reset
	next := s.peek()
	switch {
	case s.word("all") && next.kind == tEOF:
		st.Kind = ResetAll
	case s.word("time") && isWord(s.src(), next, "zone"):
		st.Name = "timezone"
	case s.word("session") && isWord(s.src(), next, "authorization"):
		st.Name = "session_authorization"
	case s.word("transaction") && isWord(s.src(), next, "isolation"):
		st.Name = "transaction_isolation"
	default:
		st.Name, _ = s.varName()
	}
}

// declare reads what follows DECLARE:
//
//	DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR
//	    [{WITH|WITHOUT} HOLD] FOR query
func (s *stream) declare(st *Statement) {
	name, ok := s.ident()
	if !ok {
		return
	}
	for s.word("binary") || s.word("asensitive") || s.word("insensitive") || s.word("no") || s.word("scroll") {
		s.advance()
	}
	if !s.word("cursor") {
		return
	}
	s.advance()
	if s.word("with") && isWord(s.src(), s.peek(), "hold") {
		st.Kind = DeclareWithHold
		st.Name = name
	}
}

// create reads the start of a CREATE statement:
//
//	CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} ...
//
// scanCalls looks for names in pg_temp in the rest.
func (s *stream) create(st *Statement) {
	if s.word("database") {
		s.advance()
		st.Kind = CreateDatabase
		st.Name, _ = s.ident()
		return
	}
	if s.word("or") && isWord(s.src(), s.peek(), "replace") {
		s.advance()
		s.advance()
	}
	if s.word("global") || s.word("local") {
		s.advance()
	}
	if s.word("temp") || s.word("temporary") {
		st.Kind = CreateTemp
	}
}

// explain reads past EXPLAIN's options to the statement explained, which
// EXPLAIN ANALYZE runs: CREATE TABLE AS and SELECT INTO create their table.
// (A plain EXPLAIN does not, so that is a false positive.)
func (s *stream) explain(st *Statement) scanMode {
	if s.op("(") {
		for depth := 0; !s.atEnd(); {
			switch {
			case s.op("("):
				depth++
			case s.op(")"):
				depth--
			}
			s.advance()
			if depth == 0 {
				break
			}
		}
	}
	for s.word("analyze") || s.word("analyse") || s.word("verbose") {
		s.advance()
	}
	switch {
	case s.word("create"):
		s.advance()
		s.create(st)
		return scanCreate
	case s.word("select") || s.word("with") || s.op("("):
		return scanSelect
	}
	return scanPlain
}

// intoTemp reports whether the tokens after a SELECT's INTO name a
// temporary table: INTO [LOCAL|GLOBAL] {TEMP|TEMPORARY} ..., or INTO
// [UNLOGGED] [TABLE] pg_temp.name.
func intoTemp(lx lexer) bool {
	s := stream{lx: lx}
	s.advance()
	if s.word("local") || s.word("global") {
		s.advance()
	}
	if s.word("temp") || s.word("temporary") {
		return true
	}
	if s.word("unlogged") {
		s.advance()
	}
	if s.word("table") {
		s.advance()
	}
	p, ok := s.part()
	return ok && s.op(".") && p.isTempSchema(s.src())
}
