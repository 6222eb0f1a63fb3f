package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeConn is the proxy's side of a client connection, with the client
// played by a script: every ReceivePassword hands the script the messages
// flushed since the previous one, and returns what the script answers. It
// records everything, so tests can compare the conversation of two runs.
type fakeConn struct {
	tls  bool
	addr net.Addr
	// client answers the messages flushed since its previous turn with the
	// body of a password message, or an error (a hang-up, another message).
	client func(msgs []pgproto3.BackendMessage) ([]byte, error)

	pending []pgproto3.BackendMessage // sent, not flushed
	flushed []pgproto3.BackendMessage // everything flushed, in order
	seen    int                       // flushed[:seen] went to the client
	trace   []string                  // "S <type>", "flush", "recv"
}

func (c *fakeConn) Send(msg pgproto3.BackendMessage) error {
	// Encoding checks that the message is one pgproto3 can put on the wire.
	if _, err := msg.Encode(nil); err != nil {
		return err
	}
	c.pending = append(c.pending, msg)
	c.trace = append(c.trace, fmt.Sprintf("S %T", msg))
	return nil
}

func (c *fakeConn) Flush() error {
	c.flushed = append(c.flushed, c.pending...)
	c.pending = nil
	c.trace = append(c.trace, "flush")
	return nil
}

func (c *fakeConn) ReceivePassword() ([]byte, error) {
	c.trace = append(c.trace, "recv")
	if len(c.pending) > 0 {
		// A real client would wait forever for these.
		return nil, errors.New("fakeConn: receive with unflushed messages")
	}
	msgs := c.flushed[c.seen:]
	c.seen = len(c.flushed)
	if c.client == nil {
		return nil, errors.New("fakeConn: no client script")
	}
	return c.client(msgs)
}

func (c *fakeConn) TLS() bool { return c.tls }

func (c *fakeConn) RemoteAddr() net.Addr {
	if c.addr == nil {
		return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5432}
	}
	return c.addr
}

// all returns every message sent, flushed or not.
func (c *fakeConn) all() []pgproto3.BackendMessage {
	return append(append([]pgproto3.BackendMessage(nil), c.flushed...), c.pending...)
}

// types returns the type names of every message sent.
func (c *fakeConn) types() []string {
	var out []string
	for _, m := range c.all() {
		out = append(out, fmt.Sprintf("%T", m))
	}
	return out
}

// body strips the type byte and length from an encoded frontend message.
func body(t testing.TB, msg pgproto3.FrontendMessage) []byte {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b[5:]
}

// scramClient is a SCRAM-SHA-256 client written from RFC 5802 and 7677 for
// these tests, independent of the server code: it does its own PBKDF2 with
// crypto/hmac (no SASLprep: the test passwords are ASCII).
type scramClient struct {
	t        testing.TB
	password string
	user     string // the n= attribute; libpq sends it empty
	gs2      string // "n,," or "y,,"
	nonce    string

	first, serverFirst, withoutProof string
	saltedPassword                   []byte
	serverFinal                      string // what the server sent last
}

func newSCRAMClient(t testing.TB, password string) *scramClient {
	return &scramClient{t: t, password: password, gs2: "n,,", nonce: "fyko+d2lbbFgONRv9qkxdawL"}
}

// respond is the client's script for fakeConn.
func (sc *scramClient) respond(msgs []pgproto3.BackendMessage) ([]byte, error) {
	if len(msgs) == 0 {
		return nil, errors.New("scramClient: nothing to answer")
	}
	switch m := msgs[len(msgs)-1].(type) {
	case *pgproto3.AuthenticationSASL:
		if len(m.AuthMechanisms) != 1 || m.AuthMechanisms[0] != "SCRAM-SHA-256" {
			return nil, fmt.Errorf("scramClient: mechanisms %q", m.AuthMechanisms)
		}
		sc.first = "n=" + sc.user + ",r=" + sc.nonce
		return body(sc.t, &pgproto3.SASLInitialResponse{
			AuthMechanism: "SCRAM-SHA-256", Data: []byte(sc.gs2 + sc.first)}), nil
	case *pgproto3.AuthenticationSASLContinue:
		return []byte(sc.final(string(m.Data))), nil
	default:
		return nil, fmt.Errorf("scramClient: unexpected %T", m)
	}
}

// final computes the client-final-message for a server-first-message.
func (sc *scramClient) final(serverFirst string) string {
	sc.serverFirst = serverFirst
	attrs := map[string]string{}
	for _, kv := range strings.Split(serverFirst, ",") {
		k, v, _ := strings.Cut(kv, "=")
		attrs[k] = v
	}
	salt, err := base64.StdEncoding.DecodeString(attrs["s"])
	if err != nil {
		sc.t.Fatalf("server salt %q: %v", attrs["s"], err)
	}
	var iter int
	if _, err := fmt.Sscanf(attrs["i"], "%d", &iter); err != nil {
		sc.t.Fatalf("server iterations %q: %v", attrs["i"], err)
	}
	if !strings.HasPrefix(attrs["r"], sc.nonce) || len(attrs["r"]) <= len(sc.nonce) {
		sc.t.Fatalf("server nonce %q does not extend client nonce %q", attrs["r"], sc.nonce)
	}
	sc.saltedPassword = hi([]byte(sc.password), salt, iter)
	sc.withoutProof = "c=" + base64.StdEncoding.EncodeToString([]byte(sc.gs2)) + ",r=" + attrs["r"]
	authMessage := sc.first + "," + serverFirst + "," + sc.withoutProof
	clientKey := mac(sc.saltedPassword, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	sig := mac(storedKey[:], authMessage)
	proof := make([]byte, len(sig))
	for i := range sig {
		proof[i] = clientKey[i] ^ sig[i]
	}
	return sc.withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)
}

// checkServerFinal verifies the server's signature in the messages sent.
func (sc *scramClient) checkServerFinal(t *testing.T, c *fakeConn) {
	t.Helper()
	var final *pgproto3.AuthenticationSASLFinal
	for _, m := range c.all() {
		if f, ok := m.(*pgproto3.AuthenticationSASLFinal); ok {
			final = f
		}
	}
	if final == nil {
		t.Fatal("no AuthenticationSASLFinal sent")
	}
	authMessage := sc.first + "," + sc.serverFirst + "," + sc.withoutProof
	want := "v=" + base64.StdEncoding.EncodeToString(mac(mac(sc.saltedPassword, "Server Key"), authMessage))
	if string(final.Data) != want {
		t.Fatalf("server-final-message %q, want %q", final.Data, want)
	}
}

// hi is RFC 5802's Hi(): PBKDF2 with HMAC-SHA-256, written out.
func hi(password, salt []byte, iter int) []byte {
	u := mac(password, string(salt)+"\x00\x00\x00\x01")
	out := append([]byte(nil), u...)
	for i := 1; i < iter; i++ {
		u = mac(password, string(u))
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out
}

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// passwordClient answers a password request (cleartext or md5) with
// password, hashed as the request asks.
func passwordClient(t testing.TB, user, password string) func([]pgproto3.BackendMessage) ([]byte, error) {
	return func(msgs []pgproto3.BackendMessage) ([]byte, error) {
		if len(msgs) == 0 {
			return nil, errors.New("passwordClient: nothing to answer")
		}
		switch m := msgs[len(msgs)-1].(type) {
		case *pgproto3.AuthenticationCleartextPassword:
			return body(t, &pgproto3.PasswordMessage{Password: password}), nil
		case *pgproto3.AuthenticationMD5Password:
			return body(t, &pgproto3.PasswordMessage{Password: md5Response(MD5Hash(user, password), m.Salt)}), nil
		default:
			return nil, fmt.Errorf("passwordClient: unexpected %T", m)
		}
	}
}

// authError asserts err is an *Error with code and message.
func authError(t *testing.T, err error, code, message string) *Error {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want *auth.Error %s", err, err, code)
	}
	if ae.Code != code || (message != "" && ae.Message != message) {
		t.Fatalf("error %s %q, want %s %q", ae.Code, ae.Message, code, message)
	}
	return ae
}
