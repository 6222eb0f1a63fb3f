package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"
)

const (
	// scramMechanism is the only SASL mechanism offered. SCRAM-SHA-256-PLUS
	// (channel binding) is not: a client with channel_binding=require is
	// refused by its own driver.
	scramMechanism = "SCRAM-SHA-256"
	// maxSASLMessageLen is PostgreSQL's PG_MAX_SASL_MESSAGE_LENGTH.
	maxSASLMessageLen = 1024
	// serverNonceLen is PostgreSQL's SCRAM_RAW_NONCE_LEN: random bytes,
	// base64-encoded into the server's part of the nonce.
	serverNonceLen = 18
	// malformedSCRAM is PostgreSQL's message for every syntax error in a
	// SCRAM message; the detail says which.
	malformedSCRAM = "malformed SCRAM message"
)

// SCRAMSHA256 is the scram-sha-256 method (RFC 5802, RFC 7677) as
// PostgreSQL runs it. Users with a SCRAM verifier prove their password
// against it; plain-password users against a verifier derived on the fly
// (salt from the mock secret, cached); users with only an md5 hash, and
// unknown users, go through a mock exchange with a deterministic fake salt
// and fail exactly as a wrong password does. Create it with NewMethod.
type SCRAMSHA256 struct {
	src  UserSource
	keys *keyring
	// nonce makes the server's nonce; nil means crypto/rand. Tests set it to
	// replay RFC 7677's example.
	nonce func() (string, error)
}

// Authenticate implements Method.
func (m *SCRAMSHA256) Authenticate(ctx context.Context, c Conn, user string) error {
	secret, found, err := m.src.Lookup(ctx, user)
	if err != nil {
		return lookupFailed(err)
	}
	return scramExchange(c, user, scramFor(m.keys, user, secret, found), m.nonce)
}

// scramTarget is the verifier an exchange runs against; doomed marks a mock
// exchange, which fails whatever the client proves, and log says why.
type scramTarget struct {
	v      SCRAMVerifier
	doomed bool
	log    string
}

// scramFor picks the verifier for user's secret, or a mock one.
func scramFor(keys *keyring, user string, secret Secret, found bool) scramTarget {
	if !found {
		return scramTarget{v: keys.mockVerifier(user), doomed: true, log: "user does not exist"}
	}
	switch secret.Kind {
	case SecretSCRAM:
		return scramTarget{v: secret.SCRAM}
	case SecretPlain:
		v, err := keys.plainVerifier(user, secret.Text)
		if err == nil {
			return scramTarget{v: v}
		}
		return scramTarget{v: keys.mockVerifier(user), doomed: true, log: "cannot derive a SCRAM verifier: " + err.Error()}
	default:
		// As PostgreSQL: an md5 hash cannot serve SCRAM.
		return scramTarget{v: keys.mockVerifier(user), doomed: true,
			log: fmt.Sprintf("user %q does not have a valid SCRAM secret", user)}
	}
}

// scramExchange runs the server side of one SASL SCRAM-SHA-256 exchange
// with the client, as PostgreSQL's CheckSASLAuth and auth-scram.c do:
//
//	S: AuthenticationSASL [SCRAM-SHA-256]
//	C: SASLInitialResponse (client-first-message)
//	S: AuthenticationSASLContinue (server-first-message)
//	C: SASLResponse (client-final-message)
//	S: AuthenticationSASLFinal (server-final-message) + AuthenticationOk
//
// or FATAL 28P01 after the client-final-message when the proof is wrong or
// the exchange is a mock one: the same messages and round trips either way.
func scramExchange(c Conn, user string, t scramTarget, nonce func() (string, error)) error {
	if err := c.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	body, err := receiveSASL(c)
	if err != nil {
		return err
	}
	mech, first, hasFirst, err := parseSASLInitialResponse(body)
	if err != nil {
		return err
	}
	if mech != scramMechanism {
		return protocolViolation("client selected an invalid SASL authentication mechanism", "")
	}
	if !hasFirst {
		// The client left the initial response out: send an empty
		// challenge, and it sends its client-first-message on its own.
		if err := c.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte{}}); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
		if first, err = receiveSASL(c); err != nil {
			return err
		}
	}
	cf, err := parseClientFirst(first)
	if err != nil {
		return err
	}

	if nonce == nil {
		nonce = randomNonce
	}
	serverNonce, err := nonce()
	if err != nil {
		return fmt.Errorf("auth: SCRAM nonce: %w", err)
	}
	serverFirst := "r=" + cf.nonce + serverNonce +
		",s=" + base64.StdEncoding.EncodeToString(t.v.Salt) +
		",i=" + strconv.Itoa(t.v.Iterations)
	if err := c.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}

	final, err := receiveSASL(c)
	if err != nil {
		return err
	}
	cl, err := parseClientFinal(final, cf.cbindFlag)
	if err != nil {
		return err
	}
	if !nonceMatches(cl.nonce, cf.nonce, serverNonce) {
		return protocolViolation("invalid SCRAM response", "Nonce does not match.")
	}
	authMessage := cf.bare + "," + serverFirst + "," + cl.withoutProof
	// The proof is checked even in a mock exchange, and before doomed is
	// looked at, so that an unknown user costs the same time as a known one.
	if !verifyClientProof(t.v, authMessage, cl.proof) || t.doomed {
		log := t.log
		if log == "" {
			log = "password does not match"
		}
		return passwordFailed(user, log)
	}
	serverSig := hmac.New(sha256.New, t.v.ServerKey[:])
	serverSig.Write([]byte(authMessage))
	serverFinal := "v=" + base64.StdEncoding.EncodeToString(serverSig.Sum(nil))
	if err := c.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)}); err != nil {
		return err
	}
	return c.Send(&pgproto3.AuthenticationOk{})
}

// receiveSASL reads a SASL message and holds it to PostgreSQL's length.
func receiveSASL(c Conn) ([]byte, error) {
	body, err := receive(c, "SASL")
	if err != nil {
		return nil, err
	}
	if len(body) > maxSASLMessageLen {
		return nil, protocolViolation("invalid SASL message length",
			fmt.Sprintf("The message is %d bytes long; the limit is %d.", len(body), maxSASLMessageLen))
	}
	return body, nil
}

func randomNonce() (string, error) {
	b := make([]byte, serverNonceLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// nonceMatches reports whether the client's final nonce is its first nonce
// followed by the server's, in constant time for equal lengths.
func nonceMatches(final, client, server string) bool {
	if len(final) != len(client)+len(server) {
		return false
	}
	a := subtle.ConstantTimeCompare([]byte(final[:len(client)]), []byte(client))
	b := subtle.ConstantTimeCompare([]byte(final[len(client):]), []byte(server))
	return a&b == 1
}

// verifyClientProof recovers ClientKey = ClientProof XOR HMAC(StoredKey,
// AuthMessage) and checks H(ClientKey) against StoredKey in constant time.
func verifyClientProof(v SCRAMVerifier, authMessage string, proof []byte) bool {
	sig := hmac.New(sha256.New, v.StoredKey[:])
	sig.Write([]byte(authMessage))
	clientKey := sig.Sum(nil)
	for i := range clientKey {
		clientKey[i] ^= proof[i]
	}
	stored := sha256.Sum256(clientKey)
	return subtle.ConstantTimeCompare(stored[:], v.StoredKey[:]) == 1
}

// parseSASLInitialResponse splits a SASLInitialResponse body: the selected
// mechanism (a NUL-terminated string), the length of the initial response
// (Int32, -1 for none) and the response. hasData is false for -1.
func parseSASLInitialResponse(body []byte) (mech string, data []byte, hasData bool, err error) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", nil, false, protocolViolation("invalid SASL initial response", "The mechanism name is not terminated.")
	}
	mech, rest := string(body[:i]), body[i+1:]
	if len(rest) < 4 {
		return "", nil, false, protocolViolation("invalid SASL initial response", "The response length is missing.")
	}
	n := int32(binary.BigEndian.Uint32(rest))
	rest = rest[4:]
	switch {
	case n == -1 && len(rest) == 0:
		return mech, nil, false, nil
	case n < 0 || int(n) != len(rest):
		return "", nil, false, protocolViolation("invalid SASL initial response", "The response length does not match the message.")
	}
	return mech, rest, true, nil
}

// clientFirst is what the server keeps of the client-first-message.
type clientFirst struct {
	cbindFlag byte   // 'n' or 'y'
	bare      string // client-first-message-bare, for the AuthMessage
	nonce     string // c-nonce
}

// checkSCRAMInput applies PostgreSQL's checks on any SCRAM message: not
// empty, and no NUL (its length must agree with its string length).
func checkSCRAMInput(msg []byte) error {
	if len(msg) == 0 {
		return protocolViolation(malformedSCRAM, "The message is empty.")
	}
	if bytes.IndexByte(msg, 0) >= 0 {
		return protocolViolation(malformedSCRAM, "Message length does not match input length.")
	}
	return nil
}

// parseClientFirst parses a client-first-message (RFC 5802 section 7):
//
//	gs2-header = gs2-cbind-flag "," [ authzid ] ","
//	client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
//
// as PostgreSQL's read_client_first_message does: the cbind flag must be
// "n" or "y" ("p" asks for channel binding, which is not offered), an
// authzid or a mandatory extension is refused as unsupported, the user
// name is read and ignored (the startup packet's user is the one
// authenticated; libpq sends it empty), the nonce must be printable, and
// optional extensions are skipped.
func parseClientFirst(msg []byte) (clientFirst, error) {
	var cf clientFirst
	if err := checkSCRAMInput(msg); err != nil {
		return cf, err
	}
	p := &scramReader{s: string(msg)}
	switch flag := p.peek(); flag {
	case 'n', 'y':
		cf.cbindFlag = flag
		p.next()
		if p.peek() != ',' {
			return cf, protocolViolation(malformedSCRAM,
				fmt.Sprintf("Comma expected, but found character %s.", sanitizeChar(p.peek())))
		}
		p.next()
	case 'p':
		return cf, protocolViolation(malformedSCRAM,
			"The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
	default:
		return cf, protocolViolation(malformedSCRAM,
			fmt.Sprintf("Unexpected channel-binding flag %s.", sanitizeChar(flag)))
	}
	if p.peek() == 'a' {
		return cf, &Error{Code: CodeFeatureNotSupported, Message: "client uses authorization identity, but it is not supported"}
	}
	if p.peek() != ',' {
		return cf, protocolViolation(malformedSCRAM,
			fmt.Sprintf("Unexpected attribute %s in client-first-message.", sanitizeChar(p.peek())))
	}
	p.next()
	cf.bare = p.rest()
	if p.peek() == 'm' {
		return cf, &Error{Code: CodeFeatureNotSupported, Message: "client requires an unsupported SCRAM extension"}
	}
	if _, err := p.attr('n'); err != nil {
		return cf, err
	}
	nonce, err := p.attr('r')
	if err != nil {
		return cf, err
	}
	if nonce == "" || !isSCRAMPrintable(nonce) {
		return cf, protocolViolation("non-printable characters in SCRAM nonce", "")
	}
	cf.nonce = nonce
	for !p.done() {
		if _, _, err := p.anyAttr(); err != nil {
			return cf, err
		}
	}
	return cf, nil
}

// clientFinal is the parsed client-final-message.
type clientFinal struct {
	nonce        string
	proof        []byte // scramKeyLen bytes
	withoutProof string // client-final-message-without-proof, for the AuthMessage
}

// Channel-binding attributes without channel binding: base64 of the gs2
// headers "n,," and "y,,".
const (
	cbindN = "biws"
	cbindY = "eSws"
)

// parseClientFinal parses a client-final-message (RFC 5802 section 7):
//
//	client-final-message-without-proof = channel-binding "," nonce ["," extensions]
//	client-final-message = client-final-message-without-proof "," proof
//
// as PostgreSQL's read_client_final_message does: the channel binding must
// repeat the first message's gs2 header, extensions before the proof are
// skipped, the proof must be 32 bytes of base64, and nothing may follow it.
func parseClientFinal(msg []byte, cbindFlag byte) (clientFinal, error) {
	var cl clientFinal
	if err := checkSCRAMInput(msg); err != nil {
		return cl, err
	}
	p := &scramReader{s: string(msg)}
	cbind, err := p.attr('c')
	if err != nil {
		return cl, err
	}
	if !(cbind == cbindN && cbindFlag == 'n') && !(cbind == cbindY && cbindFlag == 'y') {
		return cl, protocolViolation("unexpected SCRAM channel-binding attribute in client-final-message", "")
	}
	if cl.nonce, err = p.attr('r'); err != nil {
		return cl, err
	}
	var proof string
	for {
		// The proof attribute starts after the comma that ends the
		// message without proof.
		start := p.pos - 1
		attr, value, err := p.anyAttr()
		if err != nil {
			return cl, err
		}
		if attr == 'p' {
			cl.withoutProof = p.s[:start]
			proof = value
			break
		}
	}
	raw, err := decodeBase64(proof)
	if err != nil || len(raw) != scramKeyLen {
		return cl, protocolViolation(malformedSCRAM, "Malformed proof in client-final-message.")
	}
	cl.proof = raw
	if !p.done() {
		return cl, protocolViolation(malformedSCRAM, "Garbage found at the end of client-final-message.")
	}
	return cl, nil
}

// scramReader walks a SCRAM message, attribute by attribute.
type scramReader struct {
	s   string
	pos int
}

func (r *scramReader) done() bool   { return r.pos >= len(r.s) }
func (r *scramReader) rest() string { return r.s[r.pos:] }
func (r *scramReader) next()        { r.pos++ }

// peek returns the current byte, or 0 at the end (messages hold no NUL).
func (r *scramReader) peek() byte {
	if r.done() {
		return 0
	}
	return r.s[r.pos]
}

// value reads up to the next comma or the end, and steps over the comma.
func (r *scramReader) value() string {
	start := r.pos
	for r.pos < len(r.s) && r.s[r.pos] != ',' {
		r.pos++
	}
	v := r.s[start:r.pos]
	if r.pos < len(r.s) {
		r.pos++
	}
	return v
}

// attr reads "<want>=value".
func (r *scramReader) attr(want byte) (string, error) {
	if r.peek() != want {
		return "", protocolViolation(malformedSCRAM,
			fmt.Sprintf("Expected attribute \"%c\" but found %s.", want, sanitizeChar(r.peek())))
	}
	r.next()
	if r.peek() != '=' {
		return "", protocolViolation(malformedSCRAM, fmt.Sprintf("Expected character \"=\" for attribute \"%c\".", want))
	}
	r.next()
	return r.value(), nil
}

// anyAttr reads "ALPHA=value".
func (r *scramReader) anyAttr() (byte, string, error) {
	a := r.peek()
	if r.done() {
		return 0, "", protocolViolation(malformedSCRAM, "Attribute expected, but found end of string.")
	}
	if !('A' <= a && a <= 'Z' || 'a' <= a && a <= 'z') {
		return 0, "", protocolViolation(malformedSCRAM,
			fmt.Sprintf("Attribute expected, but found invalid character %s.", sanitizeChar(a)))
	}
	v, err := r.attr(a)
	return a, v, err
}

// isSCRAMPrintable is RFC 5802's printable: %x21-2B / %x2D-7E.
func isSCRAMPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7E || c == ',' {
			return false
		}
	}
	return true
}

// sanitizeChar shows a byte from the client in an error: quoted when it is
// printable ASCII, in hex otherwise, so that nothing the client sends can
// put arbitrary bytes in a message or a log line.
func sanitizeChar(c byte) string {
	if c >= 0x21 && c <= 0x7E {
		return fmt.Sprintf(`"'%c'"`, c)
	}
	return fmt.Sprintf(`"0x%02x"`, c)
}
