package sqlscan

import "strconv"

// Function calls are found anywhere in a statement: a name, unqualified or
// qualified by pg_catalog, followed by '('. The scan keeps the last few
// tokens in a window and looks back from each '(' (and, in a CREATE
// statement, from each '.'), so a statement with no call of interest costs
// one pass of the lexer and no allocation.

// sessionLockFuncs are the advisory lock functions whose locks outlive the
// transaction. The _xact_ variants end with it; the unlock functions take
// nothing.
var sessionLockFuncs = [...]string{
	"pg_advisory_lock",
	"pg_advisory_lock_shared",
	"pg_try_advisory_lock",
	"pg_try_advisory_lock_shared",
}

// window holds the last tokens read. Eight is enough for the longest name
// looked back at: U&"q" UESCAPE '!' . U&"f" UESCAPE '!'.
type window struct {
	toks [8]token
	n    int
}

func (w *window) push(t token) {
	w.toks[w.n%len(w.toks)] = t
	w.n++
}

// at returns the k-th most recent token (0 is the last one pushed), or a
// tEOF token past the start of the statement or the window.
func (w *window) at(k int) token {
	if k >= w.n || k >= len(w.toks) {
		return token{}
	}
	return w.toks[(w.n-1-k)%len(w.toks)]
}

// partAt reads the identifier that ends with the k-th most recent token,
// and returns the index of the token before it.
func (w *window) partAt(src string, k int) (namePart, int, bool) {
	t := w.at(k)
	switch t.kind {
	case tIdent, tQIdent:
		return namePart{tok: t}, k + 1, true
	case tUIdent:
		return namePart{tok: t, esc: '\\'}, k + 1, true
	case tString, tEString, tDollar: // U&"..." UESCAPE 'c'
		if u := w.at(k + 2); u.kind == tUIdent && isWord(src, w.at(k+1), "uescape") {
			v, ok := stringValue(src, t, 0)
			if ok && validUEscape(v) {
				return namePart{tok: u, esc: v[0]}, k + 3, true
			}
		}
	}
	return namePart{}, 0, false
}

// callee returns the function name before a '(' just read, if the name is
// unqualified or qualified by pg_catalog: a function in another schema is
// not PostgreSQL's.
func (w *window) callee(src string) (namePart, bool) {
	p, k, ok := w.partAt(src, 0)
	if !ok {
		return p, false
	}
	if isOp(src, w.at(k), ".") {
		q, _, ok := w.partAt(src, k+1)
		if !ok || !q.is(src, "pg_catalog") {
			return p, false
		}
	}
	return p, true
}

// scanCalls reads the whole statement that starts at src[start] for calls
// of set_config and the session-level advisory lock functions, and
// according to mode for temporary objects.
func scanCalls(src string, start int, st *Statement, mode scanMode) {
	lx := lexer{src: src, pos: start}
	var w window
	for {
		t := lx.next()
		if t.kind == tEOF || t.kind == tBad {
			return
		}
		switch {
		case t.kind == tOp && src[t.start] == '(':
			if p, ok := w.callee(src); ok {
				checkCall(src, lx, p, st)
			}
		case t.kind == tOp && src[t.start] == '.' && t.end == t.start+1:
			if mode == scanCreate && st.Kind == Other {
				if p, _, ok := w.partAt(src, 0); ok && p.isTempSchema(src) {
					st.Kind = CreateTemp
				}
			}
		case mode == scanSelect && st.Kind == Other && isWord(src, t, "into"):
			// INSERT INTO and MERGE INTO in a WITH statement are not
			// SELECT INTO. A SELECT INTO inside parentheses creates its
			// table too: (SELECT 1 INTO TEMP t).
			if prev := w.at(0); !isWord(src, prev, "insert") && !isWord(src, prev, "merge") && intoTemp(lx) {
				st.Kind = CreateTemp
			}
		}
		w.push(t)
	}
}

// checkCall records a call of p whose '(' was the last token lx read.
func checkCall(src string, lx lexer, p namePart, st *Statement) {
	if p.is(src, "set_config") {
		st.SetConfigs = append(st.SetConfigs, parseSetConfig(lx))
		return
	}
	for _, f := range sessionLockFuncs {
		if p.is(src, f) {
			st.SessionLockFuncs = append(st.SessionLockFuncs, f)
			return
		}
	}
}

// argKind is what a function argument is known to be.
type argKind uint8

const (
	argUnknown argKind = iota // an expression
	argText                   // a string literal, maybe cast to text
	argBool                   // TRUE, FALSE, or a literal cast to boolean
	argNull                   // NULL
	argParam                  // $n, maybe cast
)

type arg struct {
	kind  argKind
	text  string
	b     bool
	param int
}

// set_config's parameter names, for named notation.
var setConfigParams = [...]string{"setting_name", "new_value", "is_local"}

// parseSetConfig reads the arguments of a set_config call; lx has just read
// its '('.
func parseSetConfig(lx lexer) SetConfig {
	var sc SetConfig
	s := stream{lx: lx, prevEnd: lx.pos}
	s.advance()
	if s.op(")") {
		return sc
	}
	for pos := 0; ; pos++ {
		name, a := s.arg()
		if name != "" {
			pos = -1
			for i, p := range setConfigParams {
				if name == p {
					pos = i
				}
			}
		}
		sc.apply(pos, a)
		if !s.op(",") {
			return sc
		}
		s.advance()
	}
}

func (sc *SetConfig) apply(pos int, a arg) {
	switch pos {
	case 0:
		switch a.kind {
		case argText:
			sc.Name, sc.NameKnown = lowerASCII(a.text), true
		case argParam:
			sc.NameParam = a.param
		}
	case 1:
		switch a.kind {
		case argText:
			sc.Value, sc.ValueKnown = a.text, true
		case argNull:
			sc.Value, sc.ValueKnown, sc.ValueNull = "", true, true
		case argParam:
			sc.ValueParam = a.param
		}
	case 2:
		switch a.kind {
		case argText:
			sc.Local, sc.LocalKnown = parseBool(a.text)
		case argBool:
			sc.Local, sc.LocalKnown = a.b, true
		case argNull:
			sc.Local, sc.LocalKnown = false, true
		case argParam:
			sc.LocalParam = a.param
		}
	}
}

// arg reads one argument up to the ',' or ')' that ends it, and its name
// in named notation (name => value, name := value).
func (s *stream) arg() (name string, a arg) {
	if isIdentLike(s.tok.kind) {
		try := *s
		if n, ok := try.ident(); ok && (try.op("=>") || try.op(":=")) {
			*s = try
			s.advance()
			name = lowerASCII(n)
		}
	}
	a = s.argValue()
	for a.kind != argUnknown && s.op("::") {
		s.advance()
		a = s.cast(a)
	}
	if a.kind == argUnknown || !(s.atEnd() || s.op(",") || s.op(")")) {
		s.skipArg()
		return name, arg{}
	}
	return name, a
}

// argValue reads a literal, NULL or parameter.
func (s *stream) argValue() arg {
	t := s.tok
	switch t.kind {
	case tString, tEString, tUString, tDollar:
		if v, ok := s.stringLit(); ok {
			return arg{kind: argText, text: v}
		}
	case tParam:
		s.advance()
		// PostgreSQL allows at most 65535 parameters.
		if n, err := strconv.Atoi(s.text(t)[1:]); err == nil && n <= 65535 {
			return arg{kind: argParam, param: n}
		}
	case tIdent:
		switch {
		case s.word("null"):
			s.advance()
			return arg{kind: argNull}
		case s.word("true"), s.word("false"):
			s.advance()
			return arg{kind: argBool, b: equalFoldASCII(s.text(t), "true")}
		}
	}
	return arg{}
}

// cast applies the type cast whose "::" was just read. Only casts that keep
// a literal's meaning are understood: to text or varchar without a length
// (a length would cut the value), and to boolean.
func (s *stream) cast(a arg) arg {
	typ, ok := s.ident()
	if !ok {
		return arg{}
	}
	if typ == "pg_catalog" && s.op(".") {
		s.advance()
		if typ, ok = s.ident(); !ok {
			return arg{}
		}
	}
	if (typ == "character" || typ == "char") && s.word("varying") {
		s.advance()
		typ = "varchar"
	}
	switch typ {
	case "text", "varchar":
		switch a.kind {
		case argBool:
			a = arg{kind: argText, text: strconv.FormatBool(a.b)}
		}
		return a
	case "bool", "boolean":
		switch a.kind {
		case argText:
			b, ok := parseBool(a.text)
			if !ok {
				return arg{}
			}
			a = arg{kind: argBool, b: b}
		}
		return a
	}
	return arg{}
}

// skipArg reads up to the ',' or ')' that ends the current argument.
func (s *stream) skipArg() {
	depth := 0
	for !s.atEnd() {
		switch {
		case depth == 0 && (s.op(",") || s.op(")")):
			return
		case s.op("(") || s.op("["):
			depth++
		case s.op(")") || s.op("]"):
			depth--
		}
		s.advance()
	}
}
