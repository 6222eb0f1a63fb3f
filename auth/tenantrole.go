package auth

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// tenantRoleContext separates the tenant role passwords from anything else
// that might one day be derived from the same secret.
const tenantRoleContext = "pgtenant tenant role password\x00"

// TenantRoleIterations is the SCRAM iteration count of tenant role
// verifiers: PostgreSQL's default (scram_iterations). The password is 256
// random-looking bits, so more iterations would only slow every backend
// login down.
const TenantRoleIterations = 4096

// TenantRolePassword derives the password of a tenant's LOGIN role (in
// --isolation role) from the operator's secret: base64url of
// HMAC-SHA256(secret, context || role). `tenant create`/`tenant isolate`
// and `serve` derive the same password from the same secret, so nobody
// types or stores one; a new secret changes every role's password at once.
func TenantRolePassword(secret, role string) string {
	return base64.RawURLEncoding.EncodeToString(hmacSHA256([]byte(secret), tenantRoleContext+role))
}

// TenantRoleVerifier is the SCRAM-SHA-256 verifier of role's derived
// password, with a fresh random salt: what `ALTER ROLE ... PASSWORD` is
// given, so that PostgreSQL never sees the password itself (not in its
// logs, not in pg_stat_statements).
func TenantRoleVerifier(secret, role string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	v, err := NewSCRAMVerifier(TenantRolePassword(secret, role), salt, TenantRoleIterations)
	if err != nil {
		return "", err
	}
	return v.String(), nil
}
