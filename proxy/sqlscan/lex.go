package sqlscan

import "strings"

// The lexer follows PostgreSQL's scan.l closely enough to find the same
// token boundaries in any text the server accepts. Where PostgreSQL
// versions differ (numbers directly followed by letters, hexadecimal
// integers) it takes the older reading, which splits such text into more
// tokens; newer servers reject that text outright, so no statement the
// server runs can be hidden by the difference.
//
// A token is only a pair of offsets into the text: lexing allocates
// nothing, and a token's value is decoded (decode.go) only for the few
// statements that need it.

// tokKind is the lexical class of a token.
type tokKind uint8

const (
	tEOF       tokKind = iota
	tIdent             // unquoted identifier or keyword
	tQIdent            // "quoted identifier"
	tUIdent            // U&"quoted identifier with Unicode escapes"
	tString            // 'standard string'
	tNString           // N'national string' (PostgreSQL reads it as nchar 'string')
	tEString           // E'escape string'
	tUString           // U&'string with Unicode escapes'
	tBitString         // B'0101' or X'1F'
	tDollar            // $tag$dollar-quoted string$tag$
	tNumber            // 1, 1.5, .5, 1e-3, 1_000
	tParam             // $1
	tOp                // punctuation or an operator
	tBad               // unterminated quote, comment or dollar quote; runs to the end of the text
)

// token is a token's kind and its bytes, src[start:end]. A string token
// with continuation lines ('a'<newline>'b') covers all its segments.
type token struct {
	kind       tokKind
	start, end int
}

// lexer yields the tokens of src from pos on, skipping whitespace and
// comments. It is a value: copying it is how the classifier looks ahead.
type lexer struct {
	src string
	pos int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart reports whether c may start an identifier: PostgreSQL takes
// every byte with the high bit set as a letter.
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

// isIdentCont reports whether c may continue an identifier. '$' may:
// "a$b$" is one identifier, not the start of a dollar quote.
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// isDolqCont reports whether c may continue a dollar-quote tag ('$' may not).
func isDolqCont(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isOpChar(c byte) bool {
	switch c {
	case '~', '!', '@', '#', '^', '&', '|', '`', '?', '+', '-', '*', '/', '%', '<', '>', '=':
		return true
	}
	return false
}

// next returns the next token. After a tBad or tEOF token it returns tEOF.
func (lx *lexer) next() token {
	src := lx.src
	i := lx.pos
	for i < len(src) {
		c := src[i]
		switch {
		case isSpace(c):
			i++
			continue
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			i = skipLineComment(src, i)
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			j, ok := skipBlockComment(src, i)
			if !ok {
				lx.pos = len(src)
				return token{kind: tBad, start: i, end: len(src)}
			}
			i = j
			continue
		}
		break
	}
	if i >= len(src) {
		lx.pos = len(src)
		return token{kind: tEOF, start: len(src), end: len(src)}
	}
	t := lexAt(src, i)
	lx.pos = t.end
	return t
}

// skipLineComment returns the offset of the newline ending the "--" comment
// at i, or len(src).
func skipLineComment(src string, i int) int {
	i += 2
	for i < len(src) && src[i] != '\n' && src[i] != '\r' {
		i++
	}
	return i
}

// skipBlockComment returns the offset just past the block comment at i.
// Block comments nest.
func skipBlockComment(src string, i int) (int, bool) {
	depth := 0
	for i+1 < len(src) {
		switch {
		case src[i] == '/' && src[i+1] == '*':
			depth++
			i += 2
		case src[i] == '*' && src[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return 0, false
}

// lexAt lexes the token that starts at src[i], which is not whitespace and
// not the start of a comment.
func lexAt(src string, i int) token {
	c := src[i]
	switch {
	case isIdentStart(c):
		// A one-letter prefix turns a string into another kind, but only
		// at the start of a token: in "abe'x'" the e belongs to "abe".
		if i+1 < len(src) {
			switch c | 0x20 {
			case 'e':
				if src[i+1] == '\'' {
					return lexString(src, i, i+1, tEString)
				}
			case 'b', 'x':
				if src[i+1] == '\'' {
					return lexString(src, i, i+1, tBitString)
				}
			case 'n':
				if src[i+1] == '\'' {
					return lexString(src, i, i+1, tNString)
				}
			case 'u':
				if src[i+1] == '&' && i+2 < len(src) {
					switch src[i+2] {
					case '\'':
						return lexString(src, i, i+2, tUString)
					case '"':
						return lexQuotedIdent(src, i, i+2, tUIdent)
					}
				}
			}
		}
		j := i + 1
		for j < len(src) && isIdentCont(src[j]) {
			j++
		}
		return token{kind: tIdent, start: i, end: j}
	case c == '"':
		return lexQuotedIdent(src, i, i, tQIdent)
	case c == '\'':
		return lexString(src, i, i, tString)
	case c == '$':
		return lexDollar(src, i)
	case isDigit(c) || c == '.' && i+1 < len(src) && isDigit(src[i+1]):
		return token{kind: tNumber, start: i, end: lexNumber(src, i)}
	case c == '.' || c == ':':
		// "..", "::" and ":=" are tokens of their own.
		if i+1 < len(src) && (c == '.' && src[i+1] == '.' || c == ':' && (src[i+1] == ':' || src[i+1] == '=')) {
			return token{kind: tOp, start: i, end: i + 2}
		}
		return token{kind: tOp, start: i, end: i + 1}
	case isOpChar(c):
		return token{kind: tOp, start: i, end: i + lexOperator(src[i:])}
	}
	// , ( ) [ ] ; and bytes PostgreSQL does not know are one-byte tokens.
	return token{kind: tOp, start: i, end: i + 1}
}

// lexOperator returns the length of the operator at the start of s, by
// PostgreSQL's rules: the longest run of operator characters, cut before
// any "--" or "/*" in it, and without trailing '+' and '-' unless the
// operator holds one of ~ ! @ # ^ & | ` ? % (so "=-1" is "=" then "-1").
func lexOperator(s string) int {
	n := 0
	for n < len(s) && isOpChar(s[n]) {
		n++
	}
	op := s[:n]
	if k := strings.Index(op, "--"); k >= 0 {
		n = k
	}
	if k := strings.Index(op[:n], "/*"); k >= 0 {
		n = k
	}
	if n > 1 && (op[n-1] == '+' || op[n-1] == '-') {
		if !strings.ContainsAny(op[:n-1], "~!@#^&|`?%") {
			for n > 1 && (op[n-1] == '+' || op[n-1] == '-') {
				n--
			}
		}
	}
	return n
}

// lexNumber returns the end of the number at src[i].
func lexNumber(src string, i int) int {
	j := i
	if src[j] == '.' {
		j = lexDigits(src, j+1)
	} else {
		j = lexDigits(src, j)
		// "1..2" is 1 followed by "..".
		if j < len(src) && src[j] == '.' && !(j+1 < len(src) && src[j+1] == '.') {
			j = lexDigits(src, j+1)
		}
	}
	// An exponent needs digits; "1e" is 1 followed by an identifier.
	if j < len(src) && src[j]|0x20 == 'e' {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && isDigit(src[k]) {
			j = lexDigits(src, k)
		}
	}
	return j
}

// lexDigits returns the end of the run of digits at src[j], allowing single
// underscores between digits (PostgreSQL 16).
func lexDigits(src string, j int) int {
	for j < len(src) {
		switch {
		case isDigit(src[j]):
			j++
		case src[j] == '_' && j+1 < len(src) && isDigit(src[j+1]):
			j += 2
		default:
			return j
		}
	}
	return j
}

// lexDollar lexes a parameter ($1), a dollar-quoted string ($$...$$,
// $tag$...$tag$) or a lone '$'.
func lexDollar(src string, i int) token {
	j := i + 1
	if j < len(src) && isDigit(src[j]) {
		for j < len(src) && isDigit(src[j]) {
			j++
		}
		return token{kind: tParam, start: i, end: j}
	}
	if j < len(src) && isIdentStart(src[j]) {
		for j++; j < len(src) && isDolqCont(src[j]); j++ {
		}
	}
	if j >= len(src) || src[j] != '$' {
		return token{kind: tOp, start: i, end: i + 1}
	}
	tag := src[i : j+1]
	k := strings.Index(src[j+1:], tag)
	if k < 0 {
		return token{kind: tBad, start: i, end: len(src)}
	}
	return token{kind: tDollar, start: i, end: j + 1 + k + len(tag)}
}

// lexQuotedIdent lexes a quoted identifier whose opening '"' is at src[q].
func lexQuotedIdent(src string, start, q int, kind tokKind) token {
	j := q + 1
	for {
		k := strings.IndexByte(src[j:], '"')
		if k < 0 {
			return token{kind: tBad, start: start, end: len(src)}
		}
		j += k + 1
		if j < len(src) && src[j] == '"' {
			j++ // "" stands for one "
			continue
		}
		return token{kind: kind, start: start, end: j}
	}
}

// lexString lexes a quoted string whose opening quote is at src[q],
// including continuation segments.
func lexString(src string, start, q int, kind tokKind) token {
	j, ok := stringSegmentEnd(src, q, kind == tEString)
	for ok {
		k, cont := quoteContinue(src, j)
		if !cont {
			return token{kind: kind, start: start, end: j}
		}
		j, ok = stringSegmentEnd(src, k, kind == tEString)
	}
	return token{kind: tBad, start: start, end: len(src)}
}

// stringSegmentEnd returns the offset just past the closing quote of the
// string segment whose opening quote is at src[q]. In an escape string a
// backslash escapes the next byte.
func stringSegmentEnd(src string, q int, backslash bool) (int, bool) {
	j := q + 1
	for j < len(src) {
		switch src[j] {
		case '\'':
			if j+1 < len(src) && src[j+1] == '\'' {
				j += 2
				continue
			}
			return j + 1, true
		case '\\':
			if backslash {
				j += 2
				continue
			}
		}
		j++
	}
	return 0, false
}

// quoteContinue reports whether the string that ended at src[j] goes on:
// SQL joins 'a' and 'b' into 'ab' when only whitespace holding at least one
// newline, and "--" comments, stand between them. It returns the offset of
// the next segment's opening quote.
func quoteContinue(src string, j int) (int, bool) {
	newline := false
	for j < len(src) {
		c := src[j]
		switch {
		case c == '\n' || c == '\r':
			newline = true
			j++
		case isSpace(c):
			j++
		case c == '-' && j+1 < len(src) && src[j+1] == '-':
			j = skipLineComment(src, j)
			// After the first newline a comment counts only if a newline
			// ends it; before it, the newline is what comes next anyway.
			if j >= len(src) {
				return 0, false
			}
		case c == '\'' && newline:
			return j, true
		default:
			return 0, false
		}
	}
	return 0, false
}
