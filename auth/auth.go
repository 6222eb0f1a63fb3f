package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/internal/pgerr"
)

// MaxPasswordMessageLen is the longest password-message body ('p') a Conn
// should accept, PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH. SASL messages are
// held to the shorter maxSASLMessageLen by the SCRAM method itself.
const MaxPasswordMessageLen = 65535

// Conn is what a Method needs of the client connection during startup.
type Conn interface {
	// Send buffers one message to the client.
	Send(msg pgproto3.BackendMessage) error
	// Flush writes buffered messages.
	Flush() error
	// ReceivePassword reads the client's next message, which must be a
	// password message (type 'p': PasswordMessage, SASLInitialResponse or
	// SASLResponse, which share the type byte), and returns its body
	// without the type and length. The body belongs to the caller. Any
	// other message type yields an *UnexpectedMessageError; a body longer
	// than MaxPasswordMessageLen an error of the implementation's choice.
	// A client that hangs up yields the read error (io.EOF or similar),
	// which the methods return unchanged: libpq hangs up on purpose when it
	// is asked for a password it does not have, and asks the user.
	ReceivePassword() ([]byte, error)
	// TLS reports whether the connection is encrypted.
	TLS() bool
	// RemoteAddr is the client's address, for the failure Limiter.
	RemoteAddr() net.Addr
}

// UnexpectedMessageError is what Conn.ReceivePassword returns when the
// client sent a message other than a password message.
type UnexpectedMessageError struct {
	Type byte // the message type byte the client sent
}

func (e *UnexpectedMessageError) Error() string {
	return fmt.Sprintf("expected password response, got message type %d", e.Type)
}

// Method authenticates one client. On success it has sent (buffered, not
// necessarily flushed) AuthenticationOk; on failure it returns an error and
// the proxy answers with the FATAL error the method chose when that error is
// an *Error, and simply closes the connection otherwise (the client hung up,
// or the connection failed).
type Method interface {
	Authenticate(ctx context.Context, c Conn, user string) error
}

// SQLSTATE codes the methods answer with, from pgtenant's one list
// (internal/pgerr).
const (
	CodeInvalidPassword      = pgerr.InvalidPassword                   // wrong password, unknown user
	CodeInvalidAuthorization = pgerr.InvalidAuthorizationSpecification // refused before any password
	CodeProtocolViolation    = pgerr.ProtocolViolation                 // malformed authentication messages
	CodeFeatureNotSupported  = pgerr.FeatureNotSupported               // SCRAM authzid or mandatory extension
	CodeConnectionFailure    = pgerr.ConnectionFailure                 // the user source could not answer
	CodeTooManyConnections   = pgerr.TooManyConnections                // the Limiter refused an address
)

// Error is an authentication failure the client is told about as a FATAL
// ErrorResponse: pgtenant's one error type for clients. Code and Message
// (and Detail when set) go to the client, worded as PostgreSQL words them;
// Log and Err are for the proxy's log only: they may say that the user does
// not exist, which the client must never learn.
type Error = pgerr.Error

// passwordFailed is the answer to a wrong password, an unknown user, a user
// without a usable secret: PostgreSQL's one message for all of them.
func passwordFailed(user, log string) *Error {
	return &Error{
		Code:    CodeInvalidPassword,
		Message: fmt.Sprintf("password authentication failed for user %q", user),
		Log:     log,
	}
}

func protocolViolation(msg, detail string) *Error {
	return &Error{Code: CodeProtocolViolation, Message: msg, Detail: detail}
}

// lookupFailed is the answer when the user source fails: it is the same for
// every user name, so it reveals nothing about which users exist.
func lookupFailed(err error) *Error {
	return &Error{
		Code:    CodeConnectionFailure,
		Message: "pgtenant: authentication is unavailable, try again later",
		Log:     "user lookup failed",
		Err:     err,
	}
}

// receive reads the next password message; what names the expected message
// ("password" or "SASL") in the error for anything else.
func receive(c Conn, what string) ([]byte, error) {
	body, err := c.ReceivePassword()
	var um *UnexpectedMessageError
	if errors.As(err, &um) {
		return nil, &Error{
			Code:    CodeProtocolViolation,
			Message: fmt.Sprintf("expected %s response, got message type %d", what, um.Type),
		}
	}
	return body, err
}

// Trust admits every client without a password. It is the default only for
// a proxy that listens on loopback (the demo) or behind another guard.
type Trust struct{}

// Authenticate implements Method.
func (Trust) Authenticate(_ context.Context, c Conn, _ string) error {
	return c.Send(&pgproto3.AuthenticationOk{})
}

// Method kinds, the values of --auth-type.
const (
	KindTrust    = "trust"
	KindPassword = "password"
	KindMD5      = "md5"
	KindSCRAM    = "scram-sha-256"
)

// Defaults for Options.
const (
	// DefaultIterations is PostgreSQL's default scram_iterations: the
	// iteration count of verifiers derived from plain passwords, and of
	// the mock exchange for unknown users.
	DefaultIterations = 4096
	// mockSecretLen is the length of a generated Options.MockSecret.
	mockSecretLen = 32
)

// Options tunes the password methods. The zero value is a working
// configuration.
type Options struct {
	// AllowCleartextWithoutTLS lets the "password" method ask for a
	// cleartext password on an unencrypted connection. Default false: the
	// client is refused (28000) before it sends anything.
	AllowCleartextWithoutTLS bool

	// MockSecret keys the deterministic salts: the fake salt of the mock
	// SCRAM exchange for unknown users, and the salt of verifiers derived
	// from plain passwords (the same derivation, so the two cannot be told
	// apart). Set it (any length; 32 random bytes is plenty) to keep the
	// salts stable across restarts; default: random per process, so a
	// restart changes them, for unknown and plain-password users alike.
	MockSecret []byte

	// Iterations is the iteration count of the mock exchange and of
	// verifiers derived from plain passwords. Default DefaultIterations.
	Iterations int

	// MockMethod is the exchange the "md5" method runs for an unknown
	// user: KindSCRAM (default, as PostgreSQL does with its default
	// password_encryption) or KindMD5. Pick what most users in the source
	// have, so that an unknown user blends in: KindMD5 for a userlist of
	// md5 hashes or plain passwords.
	MockMethod string

	// PlainCacheSize bounds the verifiers derived from plain passwords that
	// are kept, so that a plain-password user pays PBKDF2 once, not at
	// every login. Default 4096 users.
	PlainCacheSize int
}

// NewMethod returns the method of the given kind (KindTrust, KindPassword,
// KindMD5 or KindSCRAM). Every kind but trust needs src.
func NewMethod(kind string, src UserSource, opts Options) (Method, error) {
	if kind == KindTrust {
		return Trust{}, nil
	}
	if src == nil {
		return nil, fmt.Errorf("auth: method %q needs a user source (an auth file or an auth query)", kind)
	}
	k, err := newKeyring(opts)
	if err != nil {
		return nil, err
	}
	switch kind {
	case KindPassword:
		return &Password{src: src, keys: k, allowInsecure: opts.AllowCleartextWithoutTLS}, nil
	case KindMD5:
		switch opts.MockMethod {
		case "", KindSCRAM:
		case KindMD5:
		default:
			return nil, fmt.Errorf("auth: MockMethod %q: want %q or %q", opts.MockMethod, KindSCRAM, KindMD5)
		}
		return &MD5{src: src, keys: k, mockMD5: opts.MockMethod == KindMD5}, nil
	case KindSCRAM:
		return &SCRAMSHA256{src: src, keys: k}, nil
	default:
		return nil, fmt.Errorf("auth: unknown method %q: want %s, %s, %s or %s",
			kind, KindSCRAM, KindMD5, KindPassword, KindTrust)
	}
}

// newKeyring checks opts and fills in its defaults.
func newKeyring(opts Options) (*keyring, error) {
	if opts.Iterations < 0 {
		return nil, fmt.Errorf("auth: Iterations is %d, want a positive count or 0 for the default", opts.Iterations)
	}
	if opts.PlainCacheSize < 0 {
		return nil, fmt.Errorf("auth: PlainCacheSize is %d, want a positive count or 0 for the default", opts.PlainCacheSize)
	}
	secret := opts.MockSecret
	if len(secret) == 0 {
		secret = make([]byte, mockSecretLen)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("auth: generate mock secret: %w", err)
		}
	}
	iter := opts.Iterations
	if iter == 0 {
		iter = DefaultIterations
	}
	size := opts.PlainCacheSize
	if size == 0 {
		size = defaultPlainCacheSize
	}
	return newKeyringWith(secret, iter, size), nil
}
