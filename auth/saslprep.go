package auth

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
)

// saslprep normalizes a password the way PostgreSQL's pg_saslprep does
// before it hashes a password into a SCRAM verifier, and the way libpq does
// before it proves one, so that a verifier derived here from a plain
// password matches what clients compute:
//
//   - a pure ASCII password is used as it is (PostgreSQL's fast path, which
//     skips SASLprep's prohibition of control characters);
//   - a password that is not valid UTF-8, or that SASLprep prohibits, is
//     used as it is too (PostgreSQL's lenient fallback);
//   - otherwise, RFC 4013: non-ASCII spaces map to a space, the "commonly
//     mapped to nothing" characters are dropped, the result is NFKC
//     normalized, and the prohibited-output and bidirectional checks run
//     (on the mapped string before normalization, as PostgreSQL does).
//
// One approximation: RFC 3454 prohibits code points unassigned in Unicode
// 3.2, and this uses the Unicode version of the Go toolchain, so a password
// holding a character assigned after 3.2 is normalized here where
// PostgreSQL would use it raw. The two agree whenever NFKC leaves the
// password alone, as it does for most text; for the rest, store a SCRAM
// verifier made by PostgreSQL instead of the plain password.
func saslprep(password string) string {
	if isASCII(password) || !utf8.ValidString(password) {
		return password
	}
	mapped := make([]rune, 0, len(password))
	for _, r := range password {
		switch {
		case isNonASCIISpace(r):
			mapped = append(mapped, ' ')
		case isMappedToNothing(r):
		default:
			mapped = append(mapped, r)
		}
	}
	if len(mapped) == 0 {
		return password
	}
	randAL, l := false, false
	for _, r := range mapped {
		if isProhibited(r) || !isAssigned(r) {
			return password
		}
		switch bidiClass(r) {
		case bidi.R, bidi.AL:
			randAL = true
		case bidi.L:
			l = true
		}
	}
	if randAL {
		first, last := bidiClass(mapped[0]), bidiClass(mapped[len(mapped)-1])
		if l || (first != bidi.R && first != bidi.AL) || (last != bidi.R && last != bidi.AL) {
			return password
		}
	}
	return norm.NFKC.String(string(mapped))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func bidiClass(r rune) bidi.Class {
	p, _ := bidi.LookupRune(r)
	return p.Class()
}

// isNonASCIISpace is RFC 3454 table C.1.2.
func isNonASCIISpace(r rune) bool {
	switch {
	case r == 0x00A0, r == 0x1680, r >= 0x2000 && r <= 0x200B,
		r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

// isMappedToNothing is RFC 3454 table B.1.
func isMappedToNothing(r rune) bool {
	switch {
	case r == 0x00AD, r == 0x034F, r == 0x1806, r >= 0x180B && r <= 0x180D,
		r >= 0x200B && r <= 0x200D, r == 0x2060, r >= 0xFE00 && r <= 0xFE0F,
		r == 0xFEFF:
		return true
	}
	return false
}

// prohibitedRanges are the tables RFC 4013 section 2.3 prohibits in the
// output, from RFC 3454: C.1.2 non-ASCII spaces, C.2.1 and C.2.2 control
// characters, C.3 private use, C.4 non-characters, C.5 surrogates, C.6
// inappropriate for plain text, C.7 inappropriate for canonical
// representation, C.8 change display properties, C.9 tagging characters.
var prohibitedRanges = [][2]rune{
	{0x0000, 0x001F}, {0x007F, 0x009F}, // C.2.1, C.2.2
	{0x00A0, 0x00A0}, {0x1680, 0x1680}, {0x2000, 0x200B}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, // C.1.2
	{0x06DD, 0x06DD}, {0x070F, 0x070F}, {0x180E, 0x180E}, {0x200C, 0x200D}, {0x2028, 0x2029},
	{0x2060, 0x2063}, {0x206A, 0x206F}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFC}, {0x1D173, 0x1D17A}, // C.2.2
	{0xE000, 0xF8FF}, {0xF0000, 0xFFFFD}, {0x100000, 0x10FFFD}, // C.3
	{0xFDD0, 0xFDEF}, {0xFFFE, 0xFFFF}, // C.4 (the planes' last two code points below)
	{0xD800, 0xDFFF},                                     // C.5
	{0xFFF9, 0xFFFD},                                     // C.6
	{0x2FF0, 0x2FFB},                                     // C.7
	{0x0340, 0x0341}, {0x200E, 0x200F}, {0x202A, 0x202E}, // C.8
	{0xE0001, 0xE0001}, {0xE0020, 0xE007F}, // C.9
}

func isProhibited(r rune) bool {
	if r >= 0x10000 && r&0xFFFE == 0xFFFE {
		return true // C.4: U+nFFFE and U+nFFFF of every plane
	}
	for _, rg := range prohibitedRanges {
		if r >= rg[0] && r <= rg[1] {
			return true
		}
	}
	return false
}

// isAssigned approximates "assigned in Unicode 3.2" with the toolchain's
// Unicode tables (see saslprep).
func isAssigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}
