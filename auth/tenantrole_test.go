package auth

import (
	"strings"
	"testing"
)

func TestTenantRolePassword(t *testing.T) {
	a := TenantRolePassword("secret-one-0123456", "pgt_acme")
	if a != TenantRolePassword("secret-one-0123456", "pgt_acme") {
		t.Fatal("the derivation is not deterministic")
	}
	if a == TenantRolePassword("secret-one-0123456", "pgt_globex") {
		t.Fatal("two roles got the same password")
	}
	if a == TenantRolePassword("secret-two-0123456", "pgt_acme") {
		t.Fatal("two secrets gave the same password")
	}
	if len(a) != 43 || strings.ContainsAny(a, "+/=") {
		t.Fatalf("password %q: want 43 base64url characters", a)
	}
}

// The verifier is one PostgreSQL accepts and checks the derived password,
// salted afresh each time.
func TestTenantRoleVerifier(t *testing.T) {
	s1, err := TenantRoleVerifier("secret-one-0123456", "pgt_acme")
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := TenantRoleVerifier("secret-one-0123456", "pgt_acme")
	if s1 == s2 {
		t.Fatal("two verifiers share a salt")
	}
	v, err := ParseSCRAMVerifier(s1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Iterations != TenantRoleIterations || !strings.HasPrefix(s1, "SCRAM-SHA-256$4096:") {
		t.Fatalf("verifier %q", s1)
	}
	if !v.verifyPlain(TenantRolePassword("secret-one-0123456", "pgt_acme")) {
		t.Fatal("verifier does not match the derived password")
	}
	if v.verifyPlain(TenantRolePassword("secret-one-0123456", "pgt_globex")) {
		t.Fatal("verifier matches another role's password")
	}
}
