package router

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestValidateTenantName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"acme", true},
		{"a", true},
		{"acme_2", true},
		{"a_", true},
		{"pg_acme", true}, // reserved only as a schema
		{"public", true},
		{"select", true}, // a keyword, but always quoted in SQL
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"Acme", false},
		{"Acme!", false},
		{"2acme", false},
		{"_acme", false},
		{"ac-me", false},
		{"ac me", false},
		{"acme;", false},
		{`ac"me`, false},
		{"acme\x00", false},
		{"acme\n", false},
		{"ácme", false},
		{"acme.public", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTenantName(tt.name)
			if tt.ok && err != nil {
				t.Fatalf("ValidateTenantName(%q) = %v, want nil", tt.name, err)
			}
			if !tt.ok {
				var nameErr *InvalidNameError
				if !errors.As(err, &nameErr) {
					t.Fatalf("ValidateTenantName(%q) = %v, want *InvalidNameError", tt.name, err)
				}
				if !strings.Contains(err.Error(), "tenant name") || !strings.Contains(err.Error(), "lower-case letters") {
					t.Fatalf("error %q does not say what is wrong and what is allowed", err)
				}
			}
		})
	}
}

// TestConsoleNameReserved: database pgtenant is the admin console, so no
// tenant or alias may be called that.
func TestConsoleNameReserved(t *testing.T) {
	for _, err := range []error{ValidateTenantName(ConsoleDatabase), ValidateAliasName(ConsoleDatabase)} {
		var nameErr *InvalidNameError
		if !errors.As(err, &nameErr) || !strings.Contains(err.Error(), "admin console") {
			t.Errorf("got %v, want an *InvalidNameError naming the admin console", err)
		}
	}
}

func TestValidateTenantNameMessage(t *testing.T) {
	const want = `invalid tenant name "Acme!": use 1-63 lower-case letters, digits or _ starting with a letter`
	if err := ValidateTenantName("Acme!"); err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestValidateSchemaName(t *testing.T) {
	tests := []struct {
		schema   string
		ok       bool
		reserved bool
	}{
		{"acme", true, false},
		{"tenant_42", true, false},
		{"public_acme", true, false},
		{"pgtenant_acme", true, false},
		{"pgacme", true, false}, // only pg_ is reserved
		{"public", false, true},
		{"pgtenant", false, true},
		{"information_schema", false, true},
		{"pg_catalog", false, true},
		{"pg_temp", false, true},
		{"pg_toast", false, true},
		{"pg_", false, true},
		{"", false, false},
		{"Public", false, false},
		{"PG_CATALOG", false, false},
		{"acme-1", false, false},
		{`acme"; DROP SCHEMA public; --`, false, false},
		{strings.Repeat("s", 64), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			err := ValidateSchemaName(tt.schema)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateSchemaName(%q) = %v, want nil", tt.schema, err)
				}
				return
			}
			var nameErr *InvalidNameError
			if !errors.As(err, &nameErr) || nameErr.Kind != "schema name" || nameErr.Name != tt.schema {
				t.Fatalf("ValidateSchemaName(%q) = %#v, want *InvalidNameError for the schema", tt.schema, err)
			}
			if got := strings.Contains(err.Error(), "reserved"); got != tt.reserved {
				t.Fatalf("ValidateSchemaName(%q) = %q; says reserved: %v, want %v", tt.schema, err, got, tt.reserved)
			}
		})
	}
}

// documentedName is the pattern the docs and error messages promise,
// written out again rather than reusing namePattern, so that a change to
// one without the other fails the fuzzer.
var documentedName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// FuzzValidateTenantName checks that whatever a client or operator types,
// an accepted name is one that is safe everywhere pgtenant uses it: within
// the documented pattern and length, and the same quoted or not, so that
// "acme" in a startup packet, a search_path and a schema all mean the same.
func FuzzValidateTenantName(f *testing.F) {
	for _, seed := range []string{
		"acme", "a", "Acme!", "", "_x", "x-y", "pg_catalog", "public",
		strings.Repeat("a", 63), strings.Repeat("a", 64),
		`a"b`, "a\x00", "a\n", "ａcme", "acme\u0301", "İ", "ſ", "K",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateTenantName(name)
		schemaErr := ValidateSchemaName(name)
		if err != nil {
			if schemaErr == nil {
				t.Fatalf("schema %q accepted but refused as a tenant name: %v", name, err)
			}
			var nameErr *InvalidNameError
			if !errors.As(err, &nameErr) || nameErr.Name != name {
				t.Fatalf("ValidateTenantName(%q) = %#v, want *InvalidNameError naming it", name, err)
			}
			return
		}
		if !documentedName.MatchString(name) || len(name) > 63 {
			t.Fatalf("accepted %q, outside the documented pattern", name)
		}
		// PostgreSQL folds unquoted identifiers to lower case (ASCII only);
		// an accepted name must be unchanged by that.
		if strings.ToLower(name) != name {
			t.Fatalf("accepted %q, which PostgreSQL would fold unquoted", name)
		}
		// Quoting must only add the surrounding quotes: no escaping, no
		// characters dropped.
		quoted := pgx.Identifier{name}.Sanitize()
		if want := `"` + name + `"`; quoted != want {
			t.Fatalf("accepted %q, which quotes as %s, not %s", name, quoted, want)
		}
	})
}
