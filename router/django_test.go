package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/config"
)

// TestDjangoQueries: the table names reach SQL only as quoted identifiers,
// schema-qualified (public when not given), and the client's name only as
// bind parameters.
func TestDjangoQueries(t *testing.T) {
	d, err := NewDjangoRegistry(nil, "customers_client", `Shared.Tenant Domains`)
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{"lookup": d.lookupSQL, "list": d.listSQL, "sizes": d.sizesSQL, "role-named": d.roleNameSQL} {
		if !strings.Contains(q, `"public"."customers_client" t`) {
			t.Errorf("%s query does not read the quoted, qualified tenant table:\n%s", name, q)
		}
		if !strings.Contains(q, `<> 'public'`) {
			t.Errorf("%s query does not leave out the public tenant:\n%s", name, q)
		}
	}
	for _, want := range []string{
		`FROM "Shared"."Tenant Domains" d JOIN "public"."customers_client" t ON t.id = d.tenant_id`,
		`WHERE t.schema_name = $1`,
		`WHERE d.domain = ANY($2::text[])`,
		"ORDER BY via",
	} {
		if !strings.Contains(d.lookupSQL, want) {
			t.Errorf("lookup query lacks %q:\n%s", want, d.lookupSQL)
		}
	}
	// A name that could break out of the quotes is refused before any SQL
	// is built.
	for _, bad := range []string{`x"; DROP TABLE y; --`, "a.b.c", ""} {
		if _, err := NewDjangoRegistry(nil, bad, "customers_domain"); err == nil || !strings.Contains(err.Error(), "django-tenant-table") {
			t.Errorf("NewDjangoRegistry(tenant table %q) = %v, want an error naming django-tenant-table", bad, err)
		}
		if _, err := NewDjangoRegistry(nil, "customers_client", bad); err == nil || !strings.Contains(err.Error(), "django-domain-table") {
			t.Errorf("NewDjangoRegistry(domain table %q) = %v, want an error naming django-domain-table", bad, err)
		}
	}
}

func TestDomainKeys(t *testing.T) {
	for in, want := range map[string][]string{
		"acme":              {"acme"},
		"acme.example.com":  {"acme.example.com"},
		"Acme.Example.COM":  {"Acme.Example.COM", "acme.example.com"},
		"acme.example.com.": {"acme.example.com.", "acme.example.com"},
		".":                 {"."},
	} {
		if got := domainKeys(in); !slices.Equal(got, want) {
			t.Errorf("domainKeys(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSNIHostNames: with WithSNIHostNames and no suffix, the whole server
// name is a claim; beside a database it is ignored when it names nothing
// (the proxy's own host name) and must agree when it names a tenant; under
// tenant-from sni it must name one.
func TestSNIHostNames(t *testing.T) {
	sni, db := config.TenantFromSNI, config.TenantFromDatabase
	conflict := func(first, firstTenant, second, secondTenant string) error {
		return &ConflictingClaimsError{First: first, FirstTenant: firstTenant, Second: second, SecondTenant: secondTenant}
	}
	tests := []struct {
		name    string
		from    config.TenantSource
		suffix  string
		startup Startup
		want    Tenant
		wantErr error
	}{
		{"a domain names the tenant", sni, "", Startup{ServerName: "acme.example.com"}, acme, nil},
		{"a domain in upper case with a dot", sni, "", Startup{ServerName: "ACME.Example.com."}, acme, nil},
		{"an unknown domain under tenant-from sni", sni, "", Startup{ServerName: "nope.example.com"}, Tenant{},
			&UnknownTenantError{Name: "nope.example.com"}},
		{"options without a server name", sni, "", Startup{OptionsTenant: "globex"}, globex, nil},
		{"nothing at all", sni, "", Startup{Database: "acme"}, Tenant{}, &NoTenantError{}},
		{"the proxy's own host name is ignored", db, "", Startup{Database: "acme", ServerName: "db.internal"}, acme, nil},
		{"database and domain agree", db, "", Startup{Database: "acme", ServerName: "acme.example.com"}, acme, nil},
		{"database and domain disagree", db, "", Startup{Database: "globex", ServerName: "acme.example.com"}, Tenant{},
			conflict(`database "globex"`, "globex", `TLS server name "acme.example.com"`, "acme")},
		{"an unknown database stays unknown", db, "", Startup{Database: "nope", ServerName: "acme.example.com"}, Tenant{},
			&UnknownTenantError{Name: "nope"}},
		{"a disabled tenant's domain is refused", db, "", Startup{Database: "acme", ServerName: "initech.example.com"}, Tenant{},
			&DisabledTenantError{Name: "initech.example.com"}},
		// A suffix keeps its meaning: the label under it, nothing else.
		{"with a suffix only the label counts", db, ".example.com", Startup{Database: "acme", ServerName: "acme.example.com"}, acme, nil},
		{"with a suffix a foreign name is no claim", db, ".db.example.com", Startup{Database: "acme", ServerName: "globex.example.com"}, acme, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(acme, globex, initec)
			reg.tenants["acme.example.com"] = acme // domains: the registry answers with the tenant
			reg.tenants["initech.example.com"] = initec
			r := New(reg, tt.from, longTTL, longTTL, WithSNISuffix(tt.suffix), WithSNIHostNames())
			got, err := r.ResolveTenant(context.Background(), tt.startup)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ResolveTenant(%+v) error: %v", tt.startup, err)
				}
			} else if err == nil || fmt.Sprintf("%T %v", err, err) != fmt.Sprintf("%T %v", tt.wantErr, tt.wantErr) {
				t.Fatalf("ResolveTenant(%+v) error = %T %v, want %T %v", tt.startup, err, err, tt.wantErr, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ResolveTenant(%+v) = %+v, want %+v", tt.startup, got, tt.want)
			}
		})
	}
}
