package sqlscan

import (
	"strings"
	"unicode/utf8"
)

// Decoding turns a token into the value PostgreSQL sees. Every function
// here returns a substring of the text when nothing needs undoing, so the
// common case does not allocate.

// maxIdentLen is NAMEDATALEN-1: PostgreSQL truncates longer identifiers.
const maxIdentLen = 63

// truncateIdent cuts s to maxIdentLen bytes at a character boundary, as
// PostgreSQL does with every identifier.
func truncateIdent(s string) string {
	if len(s) <= maxIdentLen {
		return s
	}
	n := maxIdentLen
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// lowerASCII folds A-Z to a-z and leaves every other byte alone, as
// PostgreSQL folds unquoted identifiers and compares parameter names.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// equalFoldASCII reports whether s equals lower, a lower-case ASCII word,
// when A-Z in s are folded. (strings.EqualFold would also fold non-ASCII
// letters such as the Kelvin sign to 'k', which PostgreSQL does not.)
func equalFoldASCII(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasPrefixFoldASCII is equalFoldASCII for a prefix of s.
func hasPrefixFoldASCII(s, lower string) bool {
	return len(s) >= len(lower) && equalFoldASCII(s[:len(lower)], lower)
}

// undouble replaces each doubled q in s with one q.
func undouble(s string, q byte) string {
	pair := `""`
	if q == '\'' {
		pair = "''"
	}
	if !strings.Contains(s, pair) {
		return s
	}
	return strings.ReplaceAll(s, pair, pair[:1])
}

// identValue is the name an identifier token stands for: folded if
// unquoted, with "" undone if quoted, Unicode escapes decoded for U&"..."
// (with esc, the escape character of its UESCAPE clause), truncated like
// PostgreSQL does. ok is false for a malformed escape.
func identValue(src string, t token, esc byte) (string, bool) {
	text := src[t.start:t.end]
	switch t.kind {
	case tIdent:
		return lowerASCII(truncateIdent(text)), true
	case tQIdent:
		return truncateIdent(undouble(text[1:len(text)-1], '"')), true
	case tUIdent:
		v, ok := decodeUnicode(undouble(text[3:len(text)-1], '"'), esc)
		return truncateIdent(v), ok
	}
	return "", false
}

// rawStringContent returns the content of a quoted string token between its
// quotes, its continuation segments joined, with quotes and escapes still
// as written. prefix is the length of the E, N, B, X or U& before the first
// quote.
func rawStringContent(src string, t token, prefix int, backslash bool) string {
	q := t.start + prefix
	end, _ := stringSegmentEnd(src, q, backslash)
	if end == t.end {
		return src[q+1 : end-1]
	}
	var b strings.Builder
	for {
		b.WriteString(src[q+1 : end-1])
		if end >= t.end {
			return b.String()
		}
		q, _ = quoteContinue(src, end)
		end, _ = stringSegmentEnd(src, q, backslash)
	}
}

// stringValue is the value of a string token: tString, tEString, tDollar,
// and tUString with esc the escape character of its UESCAPE clause. ok is
// false for any other token and for an escape PostgreSQL would reject.
func stringValue(src string, t token, esc byte) (string, bool) {
	switch t.kind {
	case tString:
		return undouble(rawStringContent(src, t, 0, false), '\''), true
	case tEString:
		return decodeEscapeString(rawStringContent(src, t, 1, true))
	case tUString:
		return decodeUnicode(undouble(rawStringContent(src, t, 2, false), '\''), esc)
	case tDollar:
		tagLen := strings.IndexByte(src[t.start+1:t.end], '$') + 2
		return src[t.start+tagLen : t.end-tagLen], true
	}
	return "", false
}

func hexVal(c byte) (rune, bool) {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0'), true
	case 'a' <= c && c <= 'f':
		return rune(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return rune(c-'A') + 10, true
	}
	return 0, false
}

// parseHex reads exactly n hex digits from the start of s.
func parseHex(s string, n int) (rune, bool) {
	if len(s) < n {
		return 0, false
	}
	var r rune
	for i := 0; i < n; i++ {
		v, ok := hexVal(s[i])
		if !ok {
			return 0, false
		}
		r = r<<4 | v
	}
	return r, true
}

func isHighSurrogate(r rune) bool { return 0xD800 <= r && r <= 0xDBFF }
func isLowSurrogate(r rune) bool  { return 0xDC00 <= r && r <= 0xDFFF }

// surrogates combines Unicode escapes into code points, accepting UTF-16
// surrogate pairs the way PostgreSQL does.
type surrogates struct{ high rune }

// add returns the code point to emit, if any, for escape value r.
func (s *surrogates) add(r rune) (rune, bool, bool) {
	if r <= 0 || r > utf8.MaxRune {
		return 0, false, false
	}
	switch {
	case s.high != 0:
		if !isLowSurrogate(r) {
			return 0, false, false
		}
		r = (s.high-0xD800)<<10 + (r - 0xDC00) + 0x10000
		s.high = 0
		return r, true, true
	case isHighSurrogate(r):
		s.high = r
		return 0, false, true
	case isLowSurrogate(r):
		return 0, false, false
	}
	return r, true, true
}

// decodeUnicode undoes the escapes of a U&'...' string or U&"..."
// identifier: esc esc, esc XXXX and esc+XXXXXX.
func decodeUnicode(s string, esc byte) (string, bool) {
	if strings.IndexByte(s, esc) < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	var pair surrogates
	for i := 0; i < len(s); {
		c := s[i]
		if c != esc {
			if pair.high != 0 {
				return "", false
			}
			b = append(b, c)
			i++
			continue
		}
		var r rune
		var ok bool
		switch {
		case i+1 < len(s) && s[i+1] == esc:
			if pair.high != 0 {
				return "", false
			}
			b = append(b, esc)
			i += 2
			continue
		case i+1 < len(s) && s[i+1] == '+':
			r, ok = parseHex(s[i+2:], 6)
			i += 8
		default:
			r, ok = parseHex(s[i+1:], 4)
			i += 5
		}
		if !ok {
			return "", false
		}
		r, emit, ok := pair.add(r)
		if !ok {
			return "", false
		}
		if emit {
			b = utf8.AppendRune(b, r)
		}
	}
	if pair.high != 0 {
		return "", false
	}
	return string(b), true
}

// decodeEscapeString undoes the escapes of an E'...' string's content.
// Bytes that do not form valid UTF-8, and NUL, make it fail: PostgreSQL
// rejects them.
func decodeEscapeString(s string) (string, bool) {
	if strings.IndexByte(s, '\\') < 0 {
		return undouble(s, '\''), true
	}
	b := make([]byte, 0, len(s))
	var pair surrogates
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\'' { // the lexer saw to it that it is doubled
			b = append(b, '\'')
			i += 2
			continue
		}
		if c != '\\' {
			if pair.high != 0 {
				return "", false
			}
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return "", false
		}
		d := s[i+1]
		i += 2
		if d == 'u' || d == 'U' {
			n := 4
			if d == 'U' {
				n = 8
			}
			r, ok := parseHex(s[i:], n)
			if !ok {
				return "", false
			}
			i += n
			r, emit, ok := pair.add(r)
			if !ok {
				return "", false
			}
			if emit {
				b = utf8.AppendRune(b, r)
			}
			continue
		}
		if pair.high != 0 {
			return "", false
		}
		switch {
		case d == 'b':
			b = append(b, '\b')
		case d == 'f':
			b = append(b, '\f')
		case d == 'n':
			b = append(b, '\n')
		case d == 'r':
			b = append(b, '\r')
		case d == 't':
			b = append(b, '\t')
		case '0' <= d && d <= '7':
			v := int(d - '0')
			for n := 1; n < 3 && i < len(s) && '0' <= s[i] && s[i] <= '7'; n++ {
				v = v*8 + int(s[i]-'0')
				i++
			}
			b = append(b, byte(v))
		case d == 'x' && i < len(s) && isHexDigit(s[i]):
			v, _ := hexVal(s[i])
			i++
			if i < len(s) && isHexDigit(s[i]) {
				w, _ := hexVal(s[i])
				v = v<<4 | w
				i++
			}
			b = append(b, byte(v))
		default:
			b = append(b, d)
		}
	}
	if pair.high != 0 || !utf8.Valid(b) || strings.IndexByte(string(b), 0) >= 0 {
		return "", false
	}
	return string(b), true
}

func isHexDigit(c byte) bool {
	_, ok := hexVal(c)
	return ok
}

// validUEscape reports whether s may follow UESCAPE: one character that is
// not a hex digit, '+', a quote or whitespace.
func validUEscape(s string) bool {
	return len(s) == 1 && !isHexDigit(s[0]) && !isSpace(s[0]) &&
		s[0] != '+' && s[0] != '\'' && s[0] != '"'
}

// parseBool reads a boolean the way PostgreSQL's boolin does: surrounding
// whitespace ignored, any case, any unique prefix of true, false, yes, no,
// on, off, and 1 and 0.
func parseBool(s string) (value, ok bool) {
	s = strings.Trim(s, " \t\n\r\f\v")
	if s == "" {
		return false, false
	}
	prefixOf := func(word string, min int) bool {
		return len(s) >= min && len(s) <= len(word) && equalFoldASCII(s, word[:len(s)])
	}
	switch {
	case s == "1":
		return true, true
	case s == "0":
		return false, true
	case prefixOf("true", 1), prefixOf("yes", 1), prefixOf("on", 2):
		return true, true
	case prefixOf("false", 1), prefixOf("no", 1), prefixOf("off", 2):
		return false, true
	}
	return false, false
}
