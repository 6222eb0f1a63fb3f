package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
)

// SecretKind says what a Secret holds.
type SecretKind uint8

const (
	// SecretSCRAM is a SCRAM-SHA-256 verifier, as PostgreSQL stores it.
	SecretSCRAM SecretKind = iota + 1
	// SecretMD5 is "md5" followed by hex(md5(password + user)).
	SecretMD5
	// SecretPlain is the password itself.
	SecretPlain
)

func (k SecretKind) String() string {
	switch k {
	case SecretSCRAM:
		return "SCRAM-SHA-256 verifier"
	case SecretMD5:
		return "md5 hash"
	case SecretPlain:
		return "plain password"
	default:
		return "no secret"
	}
}

// Secret is what a UserSource knows of a user's password: one of a SCRAM
// verifier, an md5 hash or the plain password. Its String and GoString
// never print the secret itself, so it is safe in a log line.
type Secret struct {
	Kind SecretKind
	// SCRAM is the verifier when Kind is SecretSCRAM.
	SCRAM SCRAMVerifier
	// Text is the md5 hash (SecretMD5) or the password (SecretPlain).
	Text string
}

func (s Secret) String() string   { return s.Kind.String() + " (redacted)" }
func (s Secret) GoString() string { return "auth.Secret{" + s.String() + "}" }

// scramPrefix starts every SCRAM-SHA-256 verifier.
const scramPrefix = "SCRAM-SHA-256$"

// md5Len is the length of "md5" followed by 32 hex digits.
const md5Len = 3 + 2*md5.Size

// ParseSecret classifies a stored password as PostgreSQL's
// get_password_type does: "md5" and 32 lowercase hex digits is an md5 hash,
// a string that parses as a SCRAM-SHA-256 verifier is one, anything else is
// a plain password. It is stricter than PostgreSQL in two places, where a
// typo would otherwise turn a hash into a password silently: a string that
// starts like a verifier but does not parse, and an md5 hash with uppercase
// hex digits, are errors. The empty string is an error too (PostgreSQL
// refuses empty passwords).
func ParseSecret(s string) (Secret, error) {
	switch {
	case s == "":
		return Secret{}, errors.New("empty password")
	case strings.HasPrefix(s, scramPrefix):
		v, err := ParseSCRAMVerifier(s)
		if err != nil {
			return Secret{}, err
		}
		return Secret{Kind: SecretSCRAM, SCRAM: v}, nil
	case len(s) == md5Len && strings.HasPrefix(s, "md5") && isHex(s[3:]):
		if strings.ToLower(s) != s {
			return Secret{}, errors.New("md5 hash must be written in lowercase hex, as PostgreSQL stores it")
		}
		return Secret{Kind: SecretMD5, Text: s}, nil
	default:
		return Secret{Kind: SecretPlain, Text: s}, nil
	}
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// scramKeyLen is the length of SHA-256 keys and proofs.
const scramKeyLen = sha256.Size

// SCRAMVerifier is a SCRAM-SHA-256 verifier: what the server stores in
// place of the password, "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
// with base64 salt and keys (RFC 5803, PostgreSQL's pg_authid.rolpassword).
type SCRAMVerifier struct {
	Iterations int
	Salt       []byte
	StoredKey  [scramKeyLen]byte
	ServerKey  [scramKeyLen]byte
}

// ParseSCRAMVerifier parses a verifier string. It accepts what PostgreSQL's
// parse_scram_secret accepts, except that it wants a positive decimal
// iteration count without sign or spaces, a non-empty salt, and base64
// without embedded whitespace.
func ParseSCRAMVerifier(s string) (SCRAMVerifier, error) {
	var v SCRAMVerifier
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return v, errors.New(`SCRAM verifier must start with "SCRAM-SHA-256$"`)
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return v, errors.New(`malformed SCRAM verifier: want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`)
	}
	iterStr, saltStr, ok1 := strings.Cut(params, ":")
	storedStr, serverStr, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return v, errors.New(`malformed SCRAM verifier: want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`)
	}
	iter, err := parseIterations(iterStr)
	if err != nil {
		return v, err
	}
	v.Iterations = iter
	if v.Salt, err = decodeBase64(saltStr); err != nil || len(v.Salt) == 0 {
		return SCRAMVerifier{}, errors.New("malformed SCRAM verifier: salt is not non-empty base64")
	}
	stored, err := decodeBase64(storedStr)
	if err != nil || len(stored) != scramKeyLen {
		return SCRAMVerifier{}, errors.New("malformed SCRAM verifier: StoredKey is not 32 bytes of base64")
	}
	server, err := decodeBase64(serverStr)
	if err != nil || len(server) != scramKeyLen {
		return SCRAMVerifier{}, errors.New("malformed SCRAM verifier: ServerKey is not 32 bytes of base64")
	}
	copy(v.StoredKey[:], stored)
	copy(v.ServerKey[:], server)
	return v, nil
}

// parseIterations parses a positive decimal count that fits PostgreSQL's
// int.
func parseIterations(s string) (int, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("malformed SCRAM verifier: iteration count is not a decimal number")
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n <= 0 || n > math.MaxInt32 {
		return 0, errors.New("malformed SCRAM verifier: iteration count out of range")
	}
	return int(n), nil
}

// decodeBase64 decodes padded standard base64. Go's decoder skips CR and LF;
// a verifier or proof holding them is malformed, so they are refused first.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("illegal newline in base64")
	}
	return base64.StdEncoding.DecodeString(s)
}

// String formats the verifier as PostgreSQL stores it.
func (v SCRAMVerifier) String() string {
	enc := base64.StdEncoding
	return fmt.Sprintf("%s%d:%s$%s:%s", scramPrefix, v.Iterations,
		enc.EncodeToString(v.Salt), enc.EncodeToString(v.StoredKey[:]), enc.EncodeToString(v.ServerKey[:]))
}

// NewSCRAMVerifier derives the verifier of password with salt and
// iterations, as PostgreSQL's scram_build_secret does: the password is
// normalized with SASLprep when it can be (see saslprep), else used as it
// is.
func NewSCRAMVerifier(password string, salt []byte, iterations int) (SCRAMVerifier, error) {
	if iterations <= 0 {
		return SCRAMVerifier{}, errors.New("SCRAM iteration count must be positive")
	}
	salted, err := saltedPassword(password, salt, iterations)
	if err != nil {
		return SCRAMVerifier{}, err
	}
	v := SCRAMVerifier{Iterations: iterations, Salt: append([]byte(nil), salt...)}
	clientKey := hmacSHA256(salted, "Client Key")
	v.StoredKey = sha256.Sum256(clientKey)
	copy(v.ServerKey[:], hmacSHA256(salted, "Server Key"))
	return v, nil
}

// saltedPassword is RFC 5802's SaltedPassword: Hi(Normalize(password),
// salt, i), Hi being PBKDF2 with HMAC-SHA-256.
func saltedPassword(password string, salt []byte, iterations int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, saslprep(password), salt, iterations, scramKeyLen)
}

// verifyPlain reports whether password matches v, comparing ServerKey as
// PostgreSQL's scram_verify_plain_password does.
func (v SCRAMVerifier) verifyPlain(password string) bool {
	salted, err := saltedPassword(password, v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(hmacSHA256(salted, "Server Key"), v.ServerKey[:]) == 1
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// MD5Hash returns PostgreSQL's md5 password hash of user's password:
// "md5" followed by hex(md5(password + user)).
func MD5Hash(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// md5Response is what a client answers to AuthenticationMD5Password with
// salt, given the stored hash: "md5" followed by hex(md5(hash[3:] + salt)).
func md5Response(hash string, salt [4]byte) string {
	sum := md5.Sum(append([]byte(hash[3:]), salt[:]...))
	return "md5" + hex.EncodeToString(sum[:])
}

// defaultPlainCacheSize is Options.PlainCacheSize's default.
const defaultPlainCacheSize = 4096

// keyring holds what the password methods derive from the mock secret: the
// deterministic per-user salts, and the verifiers of plain-password users.
type keyring struct {
	secret     []byte
	iterations int
	// plain caches, per user, the verifier derived from a plain password,
	// so that PBKDF2 runs once per user and password rather than at every
	// login. The password is kept with it so that a change is noticed.
	plain *lru.Cache[string, plainVerifier]
}

type plainVerifier struct {
	password string
	v        SCRAMVerifier
}

func newKeyringWith(secret []byte, iterations, cacheSize int) *keyring {
	cache, err := lru.New[string, plainVerifier](cacheSize)
	if err != nil {
		panic(err) // only for a size <= 0, which newKeyring rules out
	}
	return &keyring{secret: append([]byte(nil), secret...), iterations: iterations, plain: cache}
}

// saltLen is PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
const saltLen = 16

// userSalt is the deterministic salt of user: an HMAC of the user name under
// the mock secret. Unknown users get it in the mock exchange, plain-password
// users in their derived verifier, so the two look alike on the wire, and a
// user gets the same salt at every login.
func (k *keyring) userSalt(user string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("pgtenant scram salt\x00"))
	m.Write([]byte(user))
	return m.Sum(nil)[:saltLen]
}

// mockVerifier is the verifier of the doomed exchange an unknown user gets.
// Its keys are derived from the secret too, so that nothing about it is
// constant, though the exchange fails whatever the client proves.
func (k *keyring) mockVerifier(user string) SCRAMVerifier {
	v := SCRAMVerifier{Iterations: k.iterations, Salt: k.userSalt(user)}
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("pgtenant scram mock keys\x00"))
	m.Write([]byte(user))
	sum := m.Sum(nil)
	v.StoredKey = sha256.Sum256(append([]byte("stored"), sum...))
	v.ServerKey = sha256.Sum256(append([]byte("server"), sum...))
	return v
}

// plainVerifier returns the verifier of user's plain password.
func (k *keyring) plainVerifier(user, password string) (SCRAMVerifier, error) {
	if pv, ok := k.plain.Get(user); ok && pv.password == password {
		return pv.v, nil
	}
	v, err := NewSCRAMVerifier(password, k.userSalt(user), k.iterations)
	if err != nil {
		return SCRAMVerifier{}, err
	}
	k.plain.Add(user, plainVerifier{password: password, v: v})
	return v, nil
}
