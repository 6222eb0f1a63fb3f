package auth

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestMD5(t *testing.T) {
	users := StaticUsers{
		"hashed": {Kind: SecretMD5, Text: MD5Hash("hashed", "s3cret")},
		"plain":  {Kind: SecretPlain, Text: "s3cret"},
	}
	m := &MD5{src: users, keys: testKeys()}
	for _, user := range []string{"hashed", "plain"} {
		t.Run(user, func(t *testing.T) {
			c := &fakeConn{client: passwordClient(t, user, "s3cret")}
			if err := m.Authenticate(context.Background(), c, user); err != nil {
				t.Fatal(err)
			}
			want := []string{"*pgproto3.AuthenticationMD5Password", "*pgproto3.AuthenticationOk"}
			if got := c.types(); !reflect.DeepEqual(got, want) {
				t.Fatalf("messages %v, want %v", got, want)
			}

			c = &fakeConn{client: passwordClient(t, user, "wrong")}
			err := m.Authenticate(context.Background(), c, user)
			authError(t, err, CodeInvalidPassword, `password authentication failed for user "`+user+`"`)
		})
	}
}

// TestMD5SaltIsRandom checks that two challenges do not share a salt: a
// fixed salt would let a captured response be replayed.
func TestMD5SaltIsRandom(t *testing.T) {
	m := &MD5{src: StaticUsers{"u": {Kind: SecretPlain, Text: "pw"}}, keys: testKeys()}
	salts := map[[4]byte]bool{}
	for range 8 {
		c := &fakeConn{client: passwordClient(t, "u", "pw")}
		if err := m.Authenticate(context.Background(), c, "u"); err != nil {
			t.Fatal(err)
		}
		salts[c.all()[0].(*pgproto3.AuthenticationMD5Password).Salt] = true
	}
	if len(salts) < 7 {
		t.Fatalf("only %d distinct salts in 8 challenges", len(salts))
	}
}

// TestMD5UnknownUser checks the md5 mock: with MockMethod md5 an unknown
// user gets the md5 challenge and fails as a wrong password does.
func TestMD5UnknownUser(t *testing.T) {
	known := &MD5{src: StaticUsers{"alice": {Kind: SecretMD5, Text: MD5Hash("alice", "right")}}, keys: testKeys(), mockMD5: true}
	unknown := &MD5{src: StaticUsers{}, keys: testKeys(), mockMD5: true}
	run := func(m Method) ([]string, error) {
		c := &fakeConn{client: passwordClient(t, "alice", "wrong")}
		err := m.Authenticate(context.Background(), c, "alice")
		return c.trace, err
	}
	wantTrace, wantErr := run(known)
	gotTrace, gotErr := run(unknown)
	if !reflect.DeepEqual(gotTrace, wantTrace) {
		t.Errorf("trace %v, want %v", gotTrace, wantTrace)
	}
	want := authError(t, wantErr, CodeInvalidPassword, "")
	got := authError(t, gotErr, CodeInvalidPassword, "")
	if got.Message != want.Message || got.Detail != want.Detail {
		t.Errorf("error %q, want %q", got.Message, want.Message)
	}
}

func TestPassword(t *testing.T) {
	users := StaticUsers{
		"scram": verifierFor(t, "s3cret"),
		"md5":   {Kind: SecretMD5, Text: MD5Hash("md5", "s3cret")},
		"plain": {Kind: SecretPlain, Text: "s3cret"},
	}
	m := &Password{src: users, keys: testKeys()}
	for _, user := range []string{"scram", "md5", "plain"} {
		t.Run(user, func(t *testing.T) {
			c := &fakeConn{tls: true, client: passwordClient(t, user, "s3cret")}
			if err := m.Authenticate(context.Background(), c, user); err != nil {
				t.Fatal(err)
			}
			want := []string{"*pgproto3.AuthenticationCleartextPassword", "*pgproto3.AuthenticationOk"}
			if got := c.types(); !reflect.DeepEqual(got, want) {
				t.Fatalf("messages %v, want %v", got, want)
			}
			c = &fakeConn{tls: true, client: passwordClient(t, user, "wrong")}
			err := m.Authenticate(context.Background(), c, user)
			authError(t, err, CodeInvalidPassword, `password authentication failed for user "`+user+`"`)
		})
	}

	// An unknown user: the same conversation and error as a wrong password.
	wrong := &fakeConn{tls: true, client: passwordClient(t, "scram", "wrong")}
	wrongErr := m.Authenticate(context.Background(), wrong, "scram")
	ghost := &fakeConn{tls: true, client: passwordClient(t, "scram", "wrong")}
	ghostErr := (&Password{src: StaticUsers{}, keys: testKeys()}).Authenticate(context.Background(), ghost, "scram")
	if !reflect.DeepEqual(wrong.trace, ghost.trace) || wrongErr.Error() != ghostErr.Error() {
		t.Errorf("unknown user: %v %v, wrong password: %v %v", ghost.trace, ghostErr, wrong.trace, wrongErr)
	}
}

func TestPasswordRequiresTLS(t *testing.T) {
	users := StaticUsers{"u": {Kind: SecretPlain, Text: "pw"}}
	c := &fakeConn{client: passwordClient(t, "u", "pw")}
	err := (&Password{src: users, keys: testKeys()}).Authenticate(context.Background(), c, "u")
	authError(t, err, CodeInvalidAuthorization, "password authentication requires an encrypted connection")
	if len(c.trace) != 0 {
		t.Fatalf("the client was asked for its password in the clear: %v", c.trace)
	}
	c = &fakeConn{client: passwordClient(t, "u", "pw")}
	if err := (&Password{src: users, keys: testKeys(), allowInsecure: true}).Authenticate(context.Background(), c, "u"); err != nil {
		t.Fatalf("explicitly allowed: %v", err)
	}
}

func TestPasswordPacket(t *testing.T) {
	m := &Password{src: StaticUsers{"u": {Kind: SecretPlain, Text: "pw"}}, keys: testKeys(), allowInsecure: true}
	for _, tc := range []struct {
		name          string
		body          []byte
		err           error
		code, message string
	}{
		{name: "empty password", body: []byte{0}, code: CodeInvalidPassword, message: "empty password returned by client"},
		{name: "no terminator", body: []byte("pw"), code: CodeProtocolViolation, message: "invalid password packet size"},
		{name: "NUL inside", body: []byte("p\x00w\x00"), code: CodeProtocolViolation, message: "invalid password packet size"},
		{name: "empty body", body: []byte{}, code: CodeProtocolViolation, message: "invalid password packet size"},
		{name: "another message", err: &UnexpectedMessageError{Type: 'Q'},
			code: CodeProtocolViolation, message: "expected password response, got message type 81"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeConn{client: func([]pgproto3.BackendMessage) ([]byte, error) { return tc.body, tc.err }}
			authError(t, m.Authenticate(context.Background(), c, "u"), tc.code, tc.message)
		})
	}
	c := &fakeConn{client: func([]pgproto3.BackendMessage) ([]byte, error) { return nil, io.ErrUnexpectedEOF }}
	if err := m.Authenticate(context.Background(), c, "u"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("hang-up: %v", err)
	}
}

func TestNewMethod(t *testing.T) {
	src := StaticUsers{}
	for _, tc := range []struct {
		kind string
		src  UserSource
		opts Options
		want any
		ok   bool
	}{
		{KindTrust, nil, Options{}, Trust{}, true},
		{KindSCRAM, src, Options{}, &SCRAMSHA256{}, true},
		{KindMD5, src, Options{MockMethod: KindMD5}, &MD5{}, true},
		{KindPassword, src, Options{}, &Password{}, true},
		{KindSCRAM, nil, Options{}, nil, false},
		{"ldap", src, Options{}, nil, false},
		{KindMD5, src, Options{MockMethod: "password"}, nil, false},
		{KindSCRAM, src, Options{Iterations: -1}, nil, false},
	} {
		m, err := NewMethod(tc.kind, tc.src, tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("%s %+v: error %v", tc.kind, tc.opts, err)
			continue
		}
		if tc.ok && reflect.TypeOf(m) != reflect.TypeOf(tc.want) {
			t.Errorf("%s: got %T, want %T", tc.kind, m, tc.want)
		}
	}
	// A method from NewMethod works end to end.
	m, err := NewMethod(KindSCRAM, StaticUsers{"u": {Kind: SecretPlain, Text: "pw"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc := newSCRAMClient(t, "pw")
	if err := m.Authenticate(context.Background(), &fakeConn{client: sc.respond}, "u"); err != nil {
		t.Fatal(err)
	}
}
