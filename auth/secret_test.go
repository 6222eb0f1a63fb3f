package auth

import (
	"fmt"
	"strings"
	"testing"
)

// pencilVerifier is the verifier of RFC 7677's example, in PostgreSQL's form.
const pencilVerifier = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

func TestParseSecret(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind SecretKind
		ok   bool
	}{
		{pencilVerifier, SecretSCRAM, true},
		{"md5" + strings.Repeat("0a", 16), SecretMD5, true},
		{"md5" + strings.Repeat("0A", 16), 0, false},          // uppercase hex: a typo, not a password
		{"md5" + strings.Repeat("0a", 15), SecretPlain, true}, // too short for a hash
		{"md5" + strings.Repeat("zz", 16), SecretPlain, true},
		{"MD5" + strings.Repeat("0a", 16), SecretPlain, true},
		{"hunter2", SecretPlain, true},
		{"SCRAM-SHA-256", SecretPlain, true},
		{"SCRAM-SHA-256$4096:abc", 0, false},
		{"", 0, false},
	} {
		s, err := ParseSecret(tc.in)
		if (err == nil) != tc.ok || s.Kind != tc.kind {
			t.Errorf("ParseSecret(%q) = %v, %v; want kind %v ok %v", tc.in, s.Kind, err, tc.kind, tc.ok)
		}
	}
}

func TestParseSCRAMVerifier(t *testing.T) {
	v, err := ParseSCRAMVerifier(pencilVerifier)
	if err != nil {
		t.Fatal(err)
	}
	if v.Iterations != 4096 || len(v.Salt) != 16 || v.String() != pencilVerifier {
		t.Fatalf("parsed %+v, formats as %s", v, v)
	}
	// The verifier is the one RFC 7677's password derives.
	want, err := NewSCRAMVerifier("pencil", v.Salt, 4096)
	if err != nil || want.String() != pencilVerifier {
		t.Fatalf("derived %s, %v", want, err)
	}

	// salt$stored:server of the good verifier, to break one piece at a time.
	_, rest, _ := strings.Cut(strings.TrimPrefix(pencilVerifier, "SCRAM-SHA-256$"), ":")
	salt, keys, _ := strings.Cut(rest, "$")
	stored, server, _ := strings.Cut(keys, ":")
	for _, bad := range []string{
		"SCRAM-SHA-1$4096:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$4096:" + salt + "$" + stored,
		"SCRAM-SHA-256$4096" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$0:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$-1:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$+4096:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$ 4096:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$99999999999:" + salt + "$" + stored + ":" + server,
		"SCRAM-SHA-256$4096:$" + stored + ":" + server,
		"SCRAM-SHA-256$4096:!!!!$" + stored + ":" + server,
		"SCRAM-SHA-256$4096:" + salt + "$" + stored[:8] + ":" + server,
		"SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server + "AAAA",
		"SCRAM-SHA-256$4096:" + salt + "\n$" + stored + ":" + server,
		"SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server + "$x",
	} {
		if v, err := ParseSCRAMVerifier(bad); err == nil {
			t.Errorf("ParseSCRAMVerifier(%q) = %v, want an error", bad, v)
		}
	}
}

// TestSecretRedacted checks that printing a Secret never shows the secret.
func TestSecretRedacted(t *testing.T) {
	s, _ := ParseSecret("hunter2")
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, s); strings.Contains(out, "hunter2") {
			t.Errorf("%s shows the password: %s", f, out)
		}
	}
}

func TestMD5Hash(t *testing.T) {
	// Python: "md5" + hashlib.md5(b"penciluser").hexdigest(); PostgreSQL
	// agrees in TestPostgresSecrets.
	if got, want := MD5Hash("user", "pencil"), "md520c46e3762c864548e296b33c3406aa9"; got != want {
		t.Fatalf("MD5Hash = %s, want %s", got, want)
	}
}

func TestSASLprep(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"pencil", "pencil"},
		{"ctrl\x07ascii", "ctrl\x07ascii"},                  // ASCII: used as is, as PostgreSQL does
		{"I\u00ADX", "IX"},                                  // B.1 soft hyphen mapped to nothing
		{"a\u00A0b", "a b"},                                 // C.1.2 non-ASCII space mapped to space
		{"\uFB01sh", "fish"},                                // NFKC: the ligature decomposes
		{"\u2168", "IX"},                                    // NFKC: Roman numeral nine
		{"caf\u0065\u0301", "caf\u00e9"},                    // NFKC composes
		{"a\u0007\u00e9", "a\u0007\u00e9"},                  // prohibited control: raw
		{"\u00AD", "\u00AD"},                                // maps to empty: raw
		{"\xff\xfe", "\xff\xfe"},                            // not UTF-8: raw
		{"\u05D0\u05D1", "\u05D0\u05D1"},                    // RTL only: fine
		{"\u05D0a\u05D1", "\u05D0a\u05D1"},                  // RTL with LTR: prohibited, raw
		{"\u05D01", "\u05D01"},                              // RTL not last: prohibited, raw
		{"\U000E0001x\u00e9", "\U000E0001x\u00e9"},          // tagging: prohibited, raw
		{"\U0010FFFE\u00e9", "\U0010FFFE\u00e9"},            // non-character: prohibited, raw
		{"\U000F0000\u00e9", "\U000F0000\u00e9"},            // private use: raw
		{"p\u00e4ssw\u00f6rd", "p\u00e4ssw\u00f6rd"},        // already normalized
		{"pa\u0308ssw\u006F\u0308rd", "p\u00e4ssw\u00f6rd"}, // decomposed umlauts compose
	} {
		if got := saslprep(tc.in); got != tc.want {
			t.Errorf("saslprep(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}
