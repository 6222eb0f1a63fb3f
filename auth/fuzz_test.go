package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Native fuzz targets for every parser of bytes a client or a file can
// control. `make fuzz` runs each for FUZZTIME.

func FuzzSASLInitialResponse(f *testing.F) {
	f.Add(body(f, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=rOprNGfwEbeRWgbNEkqO")}))
	f.Add(body(f, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("y,,n=user,r=abc,x=1")}))
	f.Add([]byte("SCRAM-SHA-256\x00\xff\xff\xff\xff"))
	f.Add([]byte("SCRAM-SHA-256\x00\x00\x00\x00\x05n,,n="))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mech, data, has, err := parseSASLInitialResponse(b)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if strings.IndexByte(mech, 0) >= 0 || (!has && len(data) != 0) || !bytes.HasSuffix(b, data) {
			t.Fatalf("parsed %q %q %v from %q", mech, data, has, b)
		}
		if has {
			checkClientFirst(t, data)
		}
	})
}

func FuzzClientFirstMessage(f *testing.F) {
	for _, s := range []string{"n,,n=,r=rOprNGfwEbeRWgbNEkqO", "y,,n=user,r=abc", "n,,n=,r=abc,x=ext",
		"p=tls-server-end-point,,n=,r=abc", "n,a=admin,n=,r=abc", "n,,m=x,n=,r=abc", "n,,n=,r=abc,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) { checkClientFirst(t, msg) })
}

func checkClientFirst(t *testing.T, msg []byte) {
	cf, err := parseClientFirst(msg)
	if err != nil {
		checkClientError(t, err)
		return
	}
	if cf.cbindFlag != 'n' && cf.cbindFlag != 'y' {
		t.Fatalf("cbind flag %q from %q", cf.cbindFlag, msg)
	}
	if cf.nonce == "" || !isSCRAMPrintable(cf.nonce) || !strings.Contains(cf.bare, "r="+cf.nonce) {
		t.Fatalf("nonce %q from %q", cf.nonce, msg)
	}
	if !strings.HasSuffix(string(msg), cf.bare) || !strings.HasPrefix(cf.bare, "n=") {
		t.Fatalf("bare %q from %q", cf.bare, msg)
	}
}

func FuzzClientFinalMessage(f *testing.F) {
	proof := base64.StdEncoding.EncodeToString(make([]byte, 32))
	f.Add([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), false)
	f.Add([]byte("c=eSws,r=abc,p="+proof), true)
	f.Add([]byte("c=biws,r=abc,x=1,p="+proof+","), false)
	f.Add([]byte("c=biws,r=abc,p="+proof+",q=1"), false)
	f.Fuzz(func(t *testing.T, msg []byte, y bool) {
		flag := byte('n')
		if y {
			flag = 'y'
		}
		cl, err := parseClientFinal(msg, flag)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if len(cl.proof) != scramKeyLen || !strings.HasPrefix(string(msg), cl.withoutProof+",p=") {
			t.Fatalf("parsed %+v from %q", cl, msg)
		}
		if !strings.HasPrefix(cl.withoutProof, "c=biws,r=") && !strings.HasPrefix(cl.withoutProof, "c=eSws,r=") {
			t.Fatalf("without proof %q", cl.withoutProof)
		}
	})
}

// FuzzSCRAMExchange runs the whole server exchange with client messages
// from the fuzzer, against a real verifier and against the mock: it must
// never panic, never succeed, and fail only with errors meant for the
// client.
func FuzzSCRAMExchange(f *testing.F) {
	f.Add(body(f, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")}),
		[]byte("c=biws,r=abc,p="+base64.StdEncoding.EncodeToString(make([]byte, 32))), true)
	f.Add([]byte("SCRAM-SHA-256\x00\xff\xff\xff\xff"), []byte("n,,n=,r=abc"), false)
	users := StaticUsers{"u": verifierFor(f, "pw")}
	keys := testKeys()
	f.Fuzz(func(t *testing.T, first, final []byte, known bool) {
		user := "u"
		if !known {
			user = "ghost"
		}
		m := &SCRAMSHA256{src: users, keys: keys}
		turn := 0
		c := &fakeConn{client: func(msgs []pgproto3.BackendMessage) ([]byte, error) {
			turn++
			if turn == 1 {
				return first, nil
			}
			if turn == 2 {
				// Splice the server's nonce in where the fuzzer wrote
				// "SNONCE", so the fuzzer can reach proof checking.
				if sc, ok := msgs[len(msgs)-1].(*pgproto3.AuthenticationSASLContinue); ok {
					r, _, _ := strings.Cut(string(sc.Data), ",")
					return bytes.ReplaceAll(final, []byte("SNONCE"), []byte(strings.TrimPrefix(r, "r="))), nil
				}
				return final, nil
			}
			return final, nil
		}}
		err := m.Authenticate(context.Background(), c, user)
		if err == nil {
			t.Fatalf("exchange succeeded with %q, %q", first, final)
		}
		checkClientError(t, err)
	})
}

func FuzzPasswordPacket(f *testing.F) {
	f.Add([]byte("secret\x00"))
	f.Add([]byte("\x00"))
	f.Add([]byte("a\x00b\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pw, err := parsePasswordPacket(b)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if pw == "" || strings.IndexByte(pw, 0) >= 0 || pw+"\x00" != string(b) {
			t.Fatalf("password %q from %q", pw, b)
		}
	})
}

func FuzzUserList(f *testing.F) {
	f.Add([]byte(`"alice" "` + pencilVerifier + "\"\n\"bob\" \"md5" + strings.Repeat("ab", 16) + "\"\n"))
	f.Add([]byte("; comment\n\"da\"\"ve\" \"say \"\"hi\"\"\" # note\r\n\n"))
	f.Add([]byte("\"a\" \"b\"\n\"a\" \"c\"\nbroken\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseUserList(data)
		if err != nil {
			var le *UserListError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error %v is not a *UserListError with a line", err)
			}
			return
		}
		// What parsed must write back and parse again to the same users.
		var out strings.Builder
		for user, s := range users {
			if user == "" || strings.ContainsAny(user, "\x00\n") {
				t.Fatalf("user %q", user)
			}
			text := s.Text
			if s.Kind == SecretSCRAM {
				text = s.SCRAM.String()
			}
			out.WriteString(quote(user) + " " + quote(text) + "\n")
		}
		again, err := ParseUserList([]byte(out.String()))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out.String(), err)
		}
		if !reflect.DeepEqual(again, users) {
			t.Fatalf("round trip changed the users: %v -> %v", users, again)
		}
	})
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func FuzzSCRAMVerifier(f *testing.F) {
	f.Add(pencilVerifier)
	f.Add("SCRAM-SHA-256$1:AA==$" + strings.Repeat("A", 43) + "=:" + strings.Repeat("A", 43) + "=")
	f.Add("SCRAM-SHA-256$4096:x$y:z")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSCRAMVerifier(s)
		if err != nil {
			return
		}
		if v.Iterations <= 0 || len(v.Salt) == 0 {
			t.Fatalf("parsed %+v from %q", v, s)
		}
		again, err := ParseSCRAMVerifier(v.String())
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		if sec, err := ParseSecret(s); err != nil || sec.Kind != SecretSCRAM {
			t.Fatalf("ParseSecret(%q) = %v, %v", s, sec.Kind, err)
		}
	})
}

func FuzzSASLprep(f *testing.F) {
	for _, s := range []string{"pencil", "p\u00e4ssw\u00f6rd", "\uFB01", "\u05D0a\u05D1", "\xff", "a\u00A0b\u00AD"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := saslprep(s)
		if isASCII(s) && out != s {
			t.Fatalf("ASCII %q changed to %q", s, out)
		}
		if out == "" && s != "" {
			t.Fatalf("%q normalized to nothing", s)
		}
	})
}

// checkClientError fails unless err is an *Error for the client: a known
// SQLSTATE, a message, and no raw control bytes from the client in either
// the message or the detail.
func checkClientError(t *testing.T, err error) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *auth.Error", err, err)
	}
	switch ae.Code {
	case CodeProtocolViolation, CodeFeatureNotSupported, CodeInvalidPassword:
	default:
		t.Fatalf("unexpected SQLSTATE %s: %v", ae.Code, ae)
	}
	for _, s := range []string{ae.Message, ae.Detail} {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				t.Fatalf("unsanitized byte %#x in %q", s[i], s)
			}
		}
	}
}
