package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// Routing by TLS server name (SNI) and by the startup option
// pgtenant.tenant, and the rule that every value naming a tenant must name
// the same one.

const sniSuffix = ".db.example.com"

// Tenants of these tests; their names are DNS labels too.
const (
	sniAcme   = "sniacme"
	sniGlobex = "sniglobex"
	// sniAlias is an alias of sniAcme. An alias may hold a dash, as host
	// names do and tenant names may not.
	sniAlias = "sniacme-corp"
)

// sniSetup creates the tenants and the alias, and a certificate for
// *.db.example.com.
func sniSetup(t *testing.T) tlsFiles {
	t.Helper()
	createTenant(t, sniAcme)
	createTenant(t, sniGlobex)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := router.AddTenantAlias(ctx, direct(t), sniAlias, sniAcme); err != nil {
		t.Fatalf("add alias: %v", err)
	}
	return newTLSFiles(t, "pgtenant SNI test CA", "*"+sniSuffix)
}

func withSNI(from config.TenantSource) func(*config.Config) {
	return func(c *config.Config) {
		c.TenantFrom = from
		c.SNISuffix = sniSuffix
	}
}

// TestSNIRouting: with tenant-from sni the host name a client verifies
// names its tenant (or an alias of it); without a server name, the option
// pgtenant.tenant does, and never reaches the backend; two values naming
// different tenants are refused with 08004; none at all with 3D000.
func TestSNIRouting(t *testing.T) {
	t.Parallel()
	f := sniSetup(t)
	p := startProxy(t, withClientTLS(f, config.ClientTLSAllow), withSNI(config.TenantFromSNI))
	verify := "sslmode=verify-full sslrootcert=" + f.caFile

	t.Run("psql host name", func(t *testing.T) {
		out, err := psqlDSN(t, tlsDSN(p, sniAcme+sniSuffix, "app", verify), nil, "-c", "select current_schema()")
		if err != nil || out != sniAcme {
			t.Fatalf("psql to %s%s: %v\n%s\nwant schema %s", sniAcme, sniSuffix, err, out, sniAcme)
		}
	})
	t.Run("pgx host name", func(t *testing.T) {
		for host, want := range map[string]string{
			sniAcme + sniSuffix:                    sniAcme,
			sniGlobex + sniSuffix:                  sniGlobex,
			strings.ToUpper(sniGlobex) + sniSuffix: sniGlobex, // host names have no case
		} {
			conn := mustConnectPgx(t, tlsDSN(p, host, "app", verify))
			if got := currentSchema(t, conn); got != want {
				t.Errorf("host %s: current_schema() = %q, want %q", host, got, want)
			}
		}
	})
	t.Run("alias host name", func(t *testing.T) {
		conn := mustConnectPgx(t, tlsDSN(p, sniAlias+sniSuffix, "app", verify))
		if got := currentSchema(t, conn); got != sniAcme {
			t.Fatalf("host %s%s: current_schema() = %q, want %q", sniAlias, sniSuffix, got, sniAcme)
		}
		out, err := psqlDSN(t, tlsDSN(p, sniAlias+sniSuffix, "app", verify), nil, "-c", "select current_schema()")
		if err != nil || out != sniAcme {
			t.Fatalf("psql to %s%s: %v\n%s", sniAlias, sniSuffix, err, out)
		}
	})
	t.Run("options without a server name", func(t *testing.T) {
		// libpq sends no SNI for an IP address; the option names the
		// tenant, the other options still apply, and pgtenant.tenant is
		// set nowhere on the backend.
		dsn := tlsDSN(p, "127.0.0.1", "app", "sslmode=require") +
			` options='-c pgtenant.tenant=` + sniAcme + ` -c work_mem=7\\ MB'`
		out, err := psqlDSN(t, dsn, nil, "-c",
			`select current_schema(), current_setting('work_mem'), coalesce(current_setting('pgtenant.tenant', true), '<unset>')`)
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		parts := strings.Split(out, "|")
		if len(parts) != 3 || parts[0] != sniAcme || parts[1] != "7MB" {
			t.Fatalf("psql with options: %q, want %s|7MB|<unset>", out, sniAcme)
		}
		if v := parts[2]; v != "<unset>" && v != "" {
			t.Fatalf("pgtenant.tenant reached the backend: %q", v)
		}
		// The same through pgx, as options and as a parameter of its own.
		for _, extra := range []string{
			`options='-c pgtenant.tenant=` + sniGlobex + `'`,
			`pgtenant.tenant=` + sniGlobex,
		} {
			conn := mustConnectPgx(t, tlsDSN(p, "127.0.0.1", "app", "sslmode=require "+extra))
			var schema string
			var setting *string
			err := conn.QueryRow(context.Background(),
				"select current_schema(), current_setting('pgtenant.tenant', true)").Scan(&schema, &setting)
			if err != nil {
				t.Fatal(err)
			}
			if schema != sniGlobex || (setting != nil && *setting != "") {
				t.Fatalf("pgx with %s: schema %q, pgtenant.tenant %v; want %s and unset", extra, schema, setting, sniGlobex)
			}
		}
	})
	t.Run("host name and options agree", func(t *testing.T) {
		conn := mustConnectPgx(t, tlsDSN(p, sniAcme+sniSuffix, "app", verify+" options='-c pgtenant.tenant="+sniAlias+"'"))
		if got := currentSchema(t, conn); got != sniAcme {
			t.Fatalf("current_schema() = %q, want %q", got, sniAcme)
		}
	})
	t.Run("host name and options disagree", func(t *testing.T) {
		_, err := connectPgx(t, tlsDSN(p, sniAcme+sniSuffix, "app", verify+" options='-c pgtenant.tenant="+sniGlobex+"'"))
		if code := sqlState(err); code != "08004" {
			t.Fatalf("SNI %s with option %s: %v (SQLSTATE %q), want 08004", sniAcme, sniGlobex, err, code)
		}
		for _, want := range []string{sniAcme + sniSuffix, `tenant "` + sniAcme + `"`, `tenant "` + sniGlobex + `"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not mention %s", err, want)
			}
		}
	})
	t.Run("no tenant named", func(t *testing.T) {
		_, err := connectPgx(t, tlsDSN(p, "127.0.0.1", sniAcme, "sslmode=require"))
		if code := sqlState(err); code != "3D000" {
			t.Fatalf("no SNI, no option: %v (SQLSTATE %q), want 3D000", err, code)
		}
		out, err := psqlDSN(t, tlsDSN(p, "127.0.0.1", sniAcme, "sslmode=require"), nil, "-c", "select 1")
		if err == nil || !strings.Contains(out, "HINT:") || !strings.Contains(out, "pgtenant.tenant=") {
			t.Fatalf("psql without a tenant: %v\n%s\nwant a FATAL with a hint naming pgtenant.tenant", err, out)
		}
	})
	t.Run("unknown host name", func(t *testing.T) {
		_, err := connectPgx(t, tlsDSN(p, "nosuchtenant"+sniSuffix, "app", verify))
		if code := sqlState(err); code != "3D000" || !strings.Contains(err.Error(), `"nosuchtenant"`) {
			t.Fatalf("unknown tenant by SNI: %v (SQLSTATE %q), want 3D000 naming it", err, code)
		}
	})
}

// TestSNIWithTenantFromDatabase: with an SNI suffix set, a host name under
// it is a claim whatever tenant-from says: it must agree with the
// database, so a client cannot verify one tenant's host and use another's
// data.
func TestSNIWithTenantFromDatabase(t *testing.T) {
	t.Parallel()
	f := sniSetup(t)
	p := startProxy(t, withClientTLS(f, config.ClientTLSAllow), withSNI(config.TenantFromDatabase))
	verify := "sslmode=verify-full sslrootcert=" + f.caFile

	_, err := connectPgx(t, tlsDSN(p, sniGlobex+sniSuffix, sniAcme, verify))
	if code := sqlState(err); code != "08004" {
		t.Fatalf("SNI %s with database %s: %v (SQLSTATE %q), want 08004", sniGlobex, sniAcme, err, code)
	}
	out, err := psqlDSN(t, tlsDSN(p, sniGlobex+sniSuffix, sniAcme, verify), nil, "-c", "select 1")
	if err == nil || !strings.Contains(out, "names two tenants") {
		t.Fatalf("psql SNI %s with database %s: %v\n%s\nwant the refusal", sniGlobex, sniAcme, err, out)
	}
	for _, c := range []struct{ host, db, ssl, want string }{
		{sniAcme + sniSuffix, sniAcme, verify, sniAcme},        // agree
		{sniAlias + sniSuffix, sniAcme, verify, sniAcme},       // an alias and its tenant agree
		{"127.0.0.1", sniGlobex, "sslmode=require", sniGlobex}, // no SNI: the database alone
	} {
		conn := mustConnectPgx(t, tlsDSN(p, c.host, c.db, c.ssl))
		if got := currentSchema(t, conn); got != c.want {
			t.Errorf("host %s database %s: current_schema() = %q, want %q", c.host, c.db, got, c.want)
		}
	}
}
