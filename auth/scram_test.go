package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// testKeys is a keyring with a fixed secret, so that tests are repeatable.
func testKeys() *keyring { return newKeyringWith([]byte("test mock secret"), DefaultIterations, 16) }

func newSCRAM(src UserSource) *SCRAMSHA256 { return &SCRAMSHA256{src: src, keys: testKeys()} }

// verifierFor derives a verifier for tests.
func verifierFor(t testing.TB, password string) Secret {
	t.Helper()
	v, err := NewSCRAMVerifier(password, []byte("0123456789abcdef"), DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	return Secret{Kind: SecretSCRAM, SCRAM: v}
}

// TestSCRAMRFC7677 replays the example exchange of RFC 7677 section 3 (user
// "user", password "pencil") byte for byte, with the server's nonce and the
// verifier's salt and iteration count set to the example's.
func TestSCRAMRFC7677(t *testing.T) {
	const (
		clientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := NewSCRAMVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	// The verifier agrees with the RFC's arithmetic done independently.
	salted := hi([]byte("pencil"), salt, 4096)
	clientKey := mac(salted, "Client Key")
	if got, want := v.ServerKey[:], mac(salted, "Server Key"); string(got) != string(want) {
		t.Fatalf("ServerKey %x, want %x", got, want)
	}
	if got := v.StoredKey; got != sha256.Sum256(clientKey) {
		t.Fatalf("StoredKey %x", got)
	}
	// And it round-trips through PostgreSQL's text form.
	parsed, err := ParseSCRAMVerifier(v.String())
	if err != nil || !reflect.DeepEqual(parsed, v) {
		t.Fatalf("round trip of %s: %+v, %v", v, parsed, err)
	}

	m := newSCRAM(StaticUsers{"alice": {Kind: SecretSCRAM, SCRAM: v}})
	m.nonce = func() (string, error) { return "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", nil }
	turn := 0
	c := &fakeConn{client: func(msgs []pgproto3.BackendMessage) ([]byte, error) {
		turn++
		switch turn {
		case 1:
			return body(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(clientFirst)}), nil
		case 2:
			got := string(msgs[0].(*pgproto3.AuthenticationSASLContinue).Data)
			if got != serverFirst {
				t.Errorf("server-first-message\n got %s\nwant %s", got, serverFirst)
			}
			return []byte(clientFinal), nil
		}
		return nil, io.EOF
	}}
	// The startup user is alice; the SCRAM user name "user" is ignored.
	if err := m.Authenticate(context.Background(), c, "alice"); err != nil {
		t.Fatal(err)
	}
	all := c.all()
	if got := string(all[len(all)-2].(*pgproto3.AuthenticationSASLFinal).Data); got != serverFinal {
		t.Errorf("server-final-message %s, want %s", got, serverFinal)
	}
	if _, ok := all[len(all)-1].(*pgproto3.AuthenticationOk); !ok {
		t.Errorf("last message %T, want AuthenticationOk", all[len(all)-1])
	}
}

func TestSCRAMSuccess(t *testing.T) {
	users := StaticUsers{
		"verifier": verifierFor(t, "s3cret"),
		"plain":    {Kind: SecretPlain, Text: "s3cret"},
	}
	for _, tc := range []struct {
		name, user, scramUser, gs2 string
		method                     Method
	}{
		{"verifier", "verifier", "", "n,,", newSCRAM(users)},
		{"plain password", "plain", "", "n,,", newSCRAM(users)},
		{"scram user name ignored", "verifier", "mallory", "n,,", newSCRAM(users)},
		{"client supports channel binding (y)", "verifier", "", "y,,", newSCRAM(users)},
		{"md5 method, SCRAM verifier", "verifier", "", "n,,", &MD5{src: users, keys: testKeys()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := newSCRAMClient(t, "s3cret")
			sc.user, sc.gs2 = tc.scramUser, tc.gs2
			c := &fakeConn{client: sc.respond}
			if err := tc.method.Authenticate(context.Background(), c, tc.user); err != nil {
				t.Fatal(err)
			}
			sc.checkServerFinal(t, c)
			want := []string{"*pgproto3.AuthenticationSASL", "*pgproto3.AuthenticationSASLContinue",
				"*pgproto3.AuthenticationSASLFinal", "*pgproto3.AuthenticationOk"}
			if got := c.types(); !reflect.DeepEqual(got, want) {
				t.Fatalf("messages %v, want %v", got, want)
			}
		})
	}
}

// TestSCRAMPlainPasswordStable checks that a plain-password user gets the
// same salt at every login, and a new salt-consistent verifier when the
// password changes.
func TestSCRAMPlainPasswordStable(t *testing.T) {
	users := StaticUsers{"plain": {Kind: SecretPlain, Text: "one"}}
	m := newSCRAM(users)
	login := func(password string) (serverFirst string, err error) {
		sc := newSCRAMClient(t, password)
		c := &fakeConn{client: sc.respond}
		err = m.Authenticate(context.Background(), c, "plain")
		return sc.serverFirst, err
	}
	first, err := login("one")
	if err != nil {
		t.Fatal(err)
	}
	second, err := login("one")
	if err != nil {
		t.Fatal(err)
	}
	if saltOf(first) != saltOf(second) {
		t.Fatalf("salt changed between logins: %s, %s", first, second)
	}
	users["plain"] = Secret{Kind: SecretPlain, Text: "two"}
	if _, err := login("one"); err == nil {
		t.Fatal("old password still accepted after the change")
	}
	if _, err := login("two"); err != nil {
		t.Fatalf("new password: %v", err)
	}
}

// saltOf returns the s= and i= attributes of a server-first-message.
func saltOf(serverFirst string) string {
	_, rest, _ := strings.Cut(serverFirst, ",s=")
	return rest
}

func TestSCRAMWrongPassword(t *testing.T) {
	users := StaticUsers{"alice": verifierFor(t, "right"), "plain": {Kind: SecretPlain, Text: "right"}}
	for _, user := range []string{"alice", "plain"} {
		sc := newSCRAMClient(t, "wrong")
		c := &fakeConn{client: sc.respond}
		err := newSCRAM(users).Authenticate(context.Background(), c, user)
		ae := authError(t, err, CodeInvalidPassword, `password authentication failed for user "`+user+`"`)
		if ae.Log != "password does not match" {
			t.Errorf("log detail %q", ae.Log)
		}
		for _, m := range c.all() {
			if _, ok := m.(*pgproto3.AuthenticationOk); ok {
				t.Fatal("AuthenticationOk sent on a wrong password")
			}
		}
	}
}

// conversation is what a client can observe of one failed exchange.
type conversation struct {
	trace      []string
	saltIter   string
	errCode    string
	errMessage string
	errDetail  string
}

func converse(t *testing.T, m Method, user, password string) conversation {
	t.Helper()
	sc := newSCRAMClient(t, password)
	c := &fakeConn{client: func(msgs []pgproto3.BackendMessage) ([]byte, error) {
		if _, ok := msgs[len(msgs)-1].(*pgproto3.AuthenticationMD5Password); ok {
			return passwordClient(t, user, password)(msgs)
		}
		return sc.respond(msgs)
	}}
	err := m.Authenticate(context.Background(), c, user)
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: error %v, want *auth.Error", user, err)
	}
	saltIter := saltOf(sc.serverFirst)
	// The salt differs between users by design; its length does not.
	s, i, _ := strings.Cut(saltIter, ",i=")
	return conversation{trace: c.trace, saltIter: strings.Repeat("x", len(s)) + ",i=" + i,
		errCode: ae.Code, errMessage: ae.Message, errDetail: ae.Detail}
}

// TestSCRAMUnknownUserIndistinguishable checks that an unknown user, a user
// with a wrong password, and a user without a SCRAM-capable secret see the
// same conversation: the same messages, flushes and reads in the same
// order, a salt of the same length with the same iteration count, and the
// same error.
func TestSCRAMUnknownUserIndistinguishable(t *testing.T) {
	const user = "alice"
	known := StaticUsers{user: verifierFor(t, "right")}
	plain := StaticUsers{user: {Kind: SecretPlain, Text: "right"}}
	md5Only := StaticUsers{user: {Kind: SecretMD5, Text: MD5Hash(user, "right")}}
	unknown := StaticUsers{"bob": verifierFor(t, "right")}

	wrong := converse(t, newSCRAM(known), user, "wrong")
	t.Logf("wrong password: %+v", wrong)
	for name, m := range map[string]Method{
		"unknown user":             newSCRAM(unknown),
		"unknown user, md5 method": &MD5{src: unknown, keys: testKeys()},
		"plain, wrong password":    newSCRAM(plain),
		"md5 hash under scram":     newSCRAM(md5Only),
		"unknown, right password?": newSCRAM(unknown),
	} {
		got := converse(t, m, user, "wrong")
		if !reflect.DeepEqual(got, wrong) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, wrong)
		}
	}
	// The mock even fails a client that sends the "right" password.
	if got := converse(t, newSCRAM(unknown), user, "right"); !reflect.DeepEqual(got, wrong) {
		t.Errorf("unknown user with a password:\n got %+v\nwant %+v", got, wrong)
	}
}

// TestSCRAMMockSaltStable checks that an unknown user gets the same salt at
// every attempt (a random one would give it away) and that two unknown
// users get different salts.
func TestSCRAMMockSaltStable(t *testing.T) {
	m := newSCRAM(StaticUsers{})
	salt := func(user string) string {
		sc := newSCRAMClient(t, "x")
		c := &fakeConn{client: sc.respond}
		_ = m.Authenticate(context.Background(), c, user)
		return saltOf(sc.serverFirst)
	}
	a1, a2, b := salt("ghost"), salt("ghost"), salt("phantom")
	if a1 != a2 {
		t.Errorf("mock salt changed: %s, %s", a1, a2)
	}
	if a1 == b {
		t.Errorf("two unknown users share salt %s", a1)
	}
	if !strings.HasSuffix(a1, ",i=4096") {
		t.Errorf("mock iteration count: %s", a1)
	}
	// The plain-password user and the unknown user of the same name share
	// the derivation, so the salt cannot tell them apart.
	p := newSCRAM(StaticUsers{"ghost": {Kind: SecretPlain, Text: "pw"}})
	sc := newSCRAMClient(t, "pw")
	if err := p.Authenticate(context.Background(), &fakeConn{client: sc.respond}, "ghost"); err != nil {
		t.Fatal(err)
	}
	if saltOf(sc.serverFirst) != a1 {
		t.Errorf("plain user salt %s, mock salt %s", saltOf(sc.serverFirst), a1)
	}
}

// TestSCRAMNoInitialResponse covers a client that leaves the initial
// response out of SASLInitialResponse (length -1): the server sends an
// empty challenge and reads the client-first-message next.
func TestSCRAMNoInitialResponse(t *testing.T) {
	sc := newSCRAMClient(t, "s3cret")
	turn := 0
	c := &fakeConn{client: func(msgs []pgproto3.BackendMessage) ([]byte, error) {
		turn++
		switch turn {
		case 1:
			b := append([]byte("SCRAM-SHA-256\x00"), 0xff, 0xff, 0xff, 0xff)
			return b, nil
		case 2:
			if d := msgs[0].(*pgproto3.AuthenticationSASLContinue).Data; len(d) != 0 {
				t.Errorf("challenge %q, want empty", d)
			}
			sc.first = "n=,r=" + sc.nonce
			return []byte("n,," + sc.first), nil
		default:
			return sc.respond(msgs)
		}
	}}
	if err := newSCRAM(StaticUsers{"u": verifierFor(t, "s3cret")}).Authenticate(context.Background(), c, "u"); err != nil {
		t.Fatal(err)
	}
	sc.checkServerFinal(t, c)
}

func TestSCRAMProtocolErrors(t *testing.T) {
	users := StaticUsers{"u": verifierFor(t, "pw")}
	initial := func(mech, data string) []byte {
		return body(t, &pgproto3.SASLInitialResponse{AuthMechanism: mech, Data: []byte(data)})
	}
	goodFirst := initial("SCRAM-SHA-256", "n,,n=,r=abc")
	// final builds a client-final-message for the server-first-message.
	final := func(f func(serverFirst string) string) func(msgs []pgproto3.BackendMessage) ([]byte, error) {
		return func(msgs []pgproto3.BackendMessage) ([]byte, error) {
			return []byte(f(string(msgs[0].(*pgproto3.AuthenticationSASLContinue).Data))), nil
		}
	}
	nonceOf := func(sf string) string { r, _, _ := strings.Cut(sf, ","); return r[2:] }
	proof := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name          string
		first         []byte
		second        func(msgs []pgproto3.BackendMessage) ([]byte, error)
		code, message string
	}{
		{name: "other mechanism", first: initial("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc"),
			code: CodeProtocolViolation, message: "client selected an invalid SASL authentication mechanism"},
		{name: "no mechanism terminator", first: []byte("SCRAM-SHA-256"),
			code: CodeProtocolViolation, message: "invalid SASL initial response"},
		{name: "length mismatch", first: append([]byte("SCRAM-SHA-256\x00\x00\x00\x00\x09"), "n,,"...),
			code: CodeProtocolViolation, message: "invalid SASL initial response"},
		{name: "empty message", first: initial("SCRAM-SHA-256", ""),
			code: CodeProtocolViolation, message: malformedSCRAM},
		{name: "NUL inside", first: initial("SCRAM-SHA-256", "n,,n=\x00,r=abc"),
			code: CodeProtocolViolation, message: malformedSCRAM},
		{name: "channel binding asked", first: initial("SCRAM-SHA-256", "p=tls-server-end-point,,n=,r=abc"),
			code: CodeProtocolViolation, message: malformedSCRAM},
		{name: "bad cbind flag", first: initial("SCRAM-SHA-256", "x,,n=,r=abc"),
			code: CodeProtocolViolation, message: malformedSCRAM},
		{name: "authzid", first: initial("SCRAM-SHA-256", "n,a=admin,n=,r=abc"),
			code: CodeFeatureNotSupported, message: "client uses authorization identity, but it is not supported"},
		{name: "mandatory extension", first: initial("SCRAM-SHA-256", "n,,m=ext,n=,r=abc"),
			code: CodeFeatureNotSupported, message: "client requires an unsupported SCRAM extension"},
		{name: "no nonce", first: initial("SCRAM-SHA-256", "n,,n="),
			code: CodeProtocolViolation, message: malformedSCRAM},
		{name: "unprintable nonce", first: initial("SCRAM-SHA-256", "n,,n=,r=a\x7fb"),
			code: CodeProtocolViolation, message: "non-printable characters in SCRAM nonce"},
		{name: "too long", first: initial("SCRAM-SHA-256", "n,,n=,r="+strings.Repeat("a", 2000)),
			code: CodeProtocolViolation, message: "invalid SASL message length"},
		{name: "nonce mismatch", first: goodFirst,
			second: final(func(sf string) string { return "c=biws,r=abcXYZ,p=" + proof }),
			code:   CodeProtocolViolation, message: "invalid SCRAM response"},
		{name: "channel binding changed", first: goodFirst,
			second: final(func(sf string) string { return "c=eSws,r=" + nonceOf(sf) + ",p=" + proof }),
			code:   CodeProtocolViolation, message: "unexpected SCRAM channel-binding attribute in client-final-message"},
		{name: "short proof", first: goodFirst,
			second: final(func(sf string) string { return "c=biws,r=" + nonceOf(sf) + ",p=AAAA" }),
			code:   CodeProtocolViolation, message: malformedSCRAM},
		{name: "garbage after proof", first: goodFirst,
			second: final(func(sf string) string { return "c=biws,r=" + nonceOf(sf) + ",p=" + proof + ",x=1" }),
			code:   CodeProtocolViolation, message: malformedSCRAM},
		{name: "no proof", first: goodFirst,
			second: final(func(sf string) string { return "c=biws,r=" + nonceOf(sf) }),
			code:   CodeProtocolViolation, message: malformedSCRAM},
		{name: "wrong proof, extension skipped", first: goodFirst,
			second: final(func(sf string) string { return "c=biws,r=" + nonceOf(sf) + ",x=ext,p=" + proof }),
			code:   CodeInvalidPassword, message: `password authentication failed for user "u"`},
		{name: "query instead of SASL response", first: goodFirst,
			second: func([]pgproto3.BackendMessage) ([]byte, error) { return nil, &UnexpectedMessageError{Type: 'Q'} },
			code:   CodeProtocolViolation, message: "expected SASL response, got message type 81"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			turn := 0
			c := &fakeConn{client: func(msgs []pgproto3.BackendMessage) ([]byte, error) {
				turn++
				if turn == 1 {
					return tc.first, nil
				}
				if tc.second == nil {
					t.Fatal("server read a second message")
				}
				return tc.second(msgs)
			}}
			err := newSCRAM(users).Authenticate(context.Background(), c, "u")
			authError(t, err, tc.code, tc.message)
		})
	}
}

// TestSCRAMClientHangsUp checks that a client that disconnects mid-exchange
// gets no error message: the read error comes back as it is.
func TestSCRAMClientHangsUp(t *testing.T) {
	c := &fakeConn{client: func([]pgproto3.BackendMessage) ([]byte, error) { return nil, io.EOF }}
	err := newSCRAM(StaticUsers{}).Authenticate(context.Background(), c, "u")
	if !errors.Is(err, io.EOF) {
		t.Fatalf("error %v, want io.EOF", err)
	}
	var ae *Error
	if errors.As(err, &ae) {
		t.Fatalf("hang-up turned into a client error: %v", ae)
	}
}

func TestSCRAMLookupError(t *testing.T) {
	boom := errors.New("database is down")
	c := &fakeConn{}
	err := newSCRAM(failingSource{boom}).Authenticate(context.Background(), c, "u")
	ae := authError(t, err, CodeConnectionFailure, "")
	if !errors.Is(err, boom) {
		t.Fatalf("cause lost: %v", ae)
	}
	if len(c.all()) != 0 {
		t.Fatalf("messages sent before the lookup failed: %v", c.types())
	}
}

type failingSource struct{ err error }

func (f failingSource) Lookup(context.Context, string) (Secret, bool, error) {
	return Secret{}, false, f.err
}

func TestParseSASLInitialResponse(t *testing.T) {
	le := func(n int32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, uint32(n)); return b }
	for _, tc := range []struct {
		name    string
		in      []byte
		mech    string
		data    string
		hasData bool
		ok      bool
	}{
		{"normal", append(append([]byte("SCRAM-SHA-256\x00"), le(3)...), "abc"...), "SCRAM-SHA-256", "abc", true, true},
		{"empty data", append([]byte("M\x00"), le(0)...), "M", "", true, true},
		{"none", append([]byte("M\x00"), le(-1)...), "M", "", false, true},
		{"none with trailing bytes", append(append([]byte("M\x00"), le(-1)...), 'x'), "", "", false, false},
		{"negative", append([]byte("M\x00"), le(-2)...), "", "", false, false},
		{"too long", append(append([]byte("M\x00"), le(5)...), "abc"...), "", "", false, false},
		{"too short", append(append([]byte("M\x00"), le(2)...), "abc"...), "", "", false, false},
		{"no length", []byte("M\x00\x00"), "", "", false, false},
		{"empty", nil, "", "", false, false},
	} {
		mech, data, has, err := parseSASLInitialResponse(tc.in)
		if (err == nil) != tc.ok || mech != tc.mech || string(data) != tc.data || has != tc.hasData {
			t.Errorf("%s: got %q %q %v %v", tc.name, mech, data, has, err)
		}
	}
}

func TestParseClientFirst(t *testing.T) {
	for _, tc := range []struct {
		in, bare, nonce string
		flag            byte
		ok              bool
	}{
		{"n,,n=,r=abc", "n=,r=abc", "abc", 'n', true},
		{"y,,n=user,r=abc", "n=user,r=abc", "abc", 'y', true},
		{"n,,n=,r=abc,x=ext,y=", "n=,r=abc,x=ext,y=", "abc", 'n', true},
		{"n,,n=,r=abc,", "n=,r=abc,", "abc", 'n', true},
		{"n,,n=,r=", "", "", 0, false},
		{"n,,n=,r=a b", "", "", 0, false},
		{"n,,r=abc", "", "", 0, false},
		{"n,,n=,r=abc,1=x", "", "", 0, false},
		{"n,,n=,r=abc,x", "", "", 0, false},
		{"n", "", "", 0, false},
		{"n,", "", "", 0, false},
		{"n,x,n=,r=abc", "", "", 0, false},
		{"", "", "", 0, false},
	} {
		cf, err := parseClientFirst([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v", tc.in, err)
			continue
		}
		if tc.ok && (cf.bare != tc.bare || cf.nonce != tc.nonce || cf.cbindFlag != tc.flag) {
			t.Errorf("%q: got %+v", tc.in, cf)
		}
	}
}

func TestParseClientFinal(t *testing.T) {
	proof := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	for _, tc := range []struct {
		in           string
		flag         byte
		withoutProof string
		ok           bool
	}{
		{"c=biws,r=abc,p=" + proof, 'n', "c=biws,r=abc", true},
		{"c=eSws,r=abc,p=" + proof, 'y', "c=eSws,r=abc", true},
		{"c=biws,r=abc,e=x,p=" + proof, 'n', "c=biws,r=abc,e=x", true},
		{"c=biws,r=abc,p=" + proof + ",", 'n', "c=biws,r=abc", true},
		{"c=biws,r=abc,p=" + proof, 'y', "", false},
		{"c=eSws,r=abc,p=" + proof, 'n', "", false},
		{"c=biws,p=" + proof, 'n', "", false},
		{"r=abc,c=biws,p=" + proof, 'n', "", false},
		{"c=biws,r=abc,p=" + proof[:len(proof)-4], 'n', "", false},
		{"c=biws,r=abc,p=" + proof + ",q=1", 'n', "", false},
		{"c=biws,r=abc,p=!!!!", 'n', "", false},
		{"c=biws,r=abc,", 'n', "", false},
	} {
		cl, err := parseClientFinal([]byte(tc.in), tc.flag)
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v", tc.in, err)
			continue
		}
		if tc.ok && (cl.withoutProof != tc.withoutProof || cl.nonce != "abc" || len(cl.proof) != 32) {
			t.Errorf("%q: got %+v", tc.in, cl)
		}
	}
}
