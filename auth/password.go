package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Password is the "password" method: the client sends its password in
// cleartext (AuthenticationCleartextPassword), which is checked against
// whatever secret the user has, as PostgreSQL's plain_crypt_verify does. It
// refuses an unencrypted connection before asking for anything, unless
// Options.AllowCleartextWithoutTLS. Create it with NewMethod.
type Password struct {
	src           UserSource
	keys          *keyring
	allowInsecure bool
}

// Authenticate implements Method.
func (m *Password) Authenticate(ctx context.Context, c Conn, user string) error {
	if !m.allowInsecure && !c.TLS() {
		return &Error{
			Code:    CodeInvalidAuthorization,
			Message: "password authentication requires an encrypted connection",
			Detail:  "Connect with TLS: sslmode=require or stronger.",
		}
	}
	secret, found, err := m.src.Lookup(ctx, user)
	if err != nil {
		return lookupFailed(err)
	}
	password, err := askPassword(c, &pgproto3.AuthenticationCleartextPassword{})
	if err != nil {
		return err
	}
	if !found {
		// Spend what checking a SCRAM verifier costs, so that an unknown
		// user answers no faster than a known one.
		m.keys.mockVerifier(user).verifyPlain(password)
		return passwordFailed(user, "user does not exist")
	}
	var ok bool
	switch secret.Kind {
	case SecretSCRAM:
		ok = secret.SCRAM.verifyPlain(password)
	case SecretMD5:
		ok = equalSecret(MD5Hash(user, password), secret.Text)
	case SecretPlain:
		ok = equalSecret(password, secret.Text)
	}
	if !ok {
		return passwordFailed(user, "password does not match")
	}
	return c.Send(&pgproto3.AuthenticationOk{})
}

// MD5 is the "md5" method as PostgreSQL runs it: a user whose secret is a
// SCRAM verifier gets the SCRAM exchange (which md5 in pg_hba.conf allows);
// a user with an md5 hash or a plain password gets the salted md5
// challenge; an unknown user gets a mock of Options.MockMethod. Create it
// with NewMethod.
type MD5 struct {
	src     UserSource
	keys    *keyring
	mockMD5 bool
}

// Authenticate implements Method.
func (m *MD5) Authenticate(ctx context.Context, c Conn, user string) error {
	secret, found, err := m.src.Lookup(ctx, user)
	if err != nil {
		return lookupFailed(err)
	}
	if (found && secret.Kind == SecretSCRAM) || (!found && !m.mockMD5) {
		return scramExchange(c, user, scramFor(m.keys, user, secret, found), nil)
	}
	var salt [4]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return fmt.Errorf("auth: md5 salt: %w", err)
	}
	response, err := askPassword(c, &pgproto3.AuthenticationMD5Password{Salt: salt})
	if err != nil {
		return err
	}
	if !found {
		return passwordFailed(user, "user does not exist")
	}
	hash := secret.Text
	if secret.Kind == SecretPlain {
		hash = MD5Hash(user, secret.Text)
	}
	if !equalSecret(response, md5Response(hash, salt)) {
		return passwordFailed(user, "password does not match")
	}
	return c.Send(&pgproto3.AuthenticationOk{})
}

// parsePasswordPacket checks a PasswordMessage body as PostgreSQL's
// recv_password_packet does: one NUL-terminated string, not empty.
func parsePasswordPacket(body []byte) (string, error) {
	if len(body) == 0 || bytes.IndexByte(body, 0) != len(body)-1 {
		return "", &Error{Code: CodeProtocolViolation, Message: "invalid password packet size"}
	}
	if len(body) == 1 {
		return "", &Error{Code: CodeInvalidPassword, Message: "empty password returned by client"}
	}
	return string(body[:len(body)-1]), nil
}

// equalSecret compares two secrets in time that depends on neither their
// contents nor their lengths: it compares their digests.
func equalSecret(a, b string) bool {
	da, db := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(da[:], db[:]) == 1
}

// askPassword sends an authentication request and returns the password
// packet the client answers with.
func askPassword(c Conn, request pgproto3.BackendMessage) (string, error) {
	if err := c.Send(request); err != nil {
		return "", err
	}
	if err := c.Flush(); err != nil {
		return "", err
	}
	body, err := receive(c, "password")
	if err != nil {
		return "", err
	}
	return parsePasswordPacket(body)
}
