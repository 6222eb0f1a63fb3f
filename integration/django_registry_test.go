package integration

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy"
)

// --registry-source django-tenants: pgtenant routes by the tables of a
// django-tenants deployment, read-only.

// The tenants of these tests, their domains and the role that reads the
// tables. django-tenants' own names (customers_client, customers_domain)
// are the flags' defaults, so the tables have them.
const (
	djtAcme    = "djt_acme"
	djtGlobex  = "djt_globex"
	djtLate    = "djt_late"
	djtDomain  = ".djt.example.com"
	djtReader  = "djt_reader"
	djtPublicD = "www.djt.example.com" // the public tenant's domain
)

// djtDDL creates the two tables as `manage.py migrate` creates them for
// django-tenants' documented example (app customers, Client(TenantMixin)
// with name, paid_until, on_trial, created_on; Domain(DomainMixin)) with
// Django 3.2 and DEFAULT_AUTO_FIELD BigAutoField: sqlmigrate's statements,
// the unique and _like indexes and the deferred foreign key included.
var djtDDL = []string{
	`DROP TABLE IF EXISTS "customers_domain", "customers_client"`,
	`CREATE TABLE "customers_client" ("id" bigserial NOT NULL PRIMARY KEY, "schema_name" varchar(63) NOT NULL UNIQUE,
		"name" varchar(100) NOT NULL, "paid_until" date NOT NULL, "on_trial" boolean NOT NULL, "created_on" date NOT NULL)`,
	`CREATE TABLE "customers_domain" ("id" bigserial NOT NULL PRIMARY KEY, "domain" varchar(253) NOT NULL UNIQUE,
		"is_primary" boolean NOT NULL, "tenant_id" bigint NOT NULL)`,
	`CREATE INDEX "customers_client_schema_name_5e8a1d6c_like" ON "customers_client" ("schema_name" varchar_pattern_ops)`,
	`ALTER TABLE "customers_domain" ADD CONSTRAINT "customers_domain_tenant_id_2e8b9e06_fk_customers_client_id"
		FOREIGN KEY ("tenant_id") REFERENCES "customers_client" ("id") DEFERRABLE INITIALLY DEFERRED`,
	`CREATE INDEX "customers_domain_domain_4a6e1a2c_like" ON "customers_domain" ("domain" varchar_pattern_ops)`,
	`CREATE INDEX "customers_domain_tenant_id_2e8b9e06" ON "customers_domain" ("tenant_id")`,
}

// djtSetup makes the tables, the public tenant and two tenants, each with
// a schema holding a row of its own, and a role that may only read the
// tables. It starts from scratch, so the test can run again.
func djtSetup(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := direct(t)
	stmts := []string{
		`DROP SCHEMA IF EXISTS djt_acme, djt_globex, djt_late CASCADE`,
		`DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'djt_reader') THEN
				CREATE ROLE djt_reader LOGIN;
			END IF;
		END $$`,
	}
	stmts = append(stmts, djtDDL...)
	stmts = append(stmts,
		`GRANT SELECT ON customers_client, customers_domain TO djt_reader`,
		// What TenantMixin.save does: the row, then the schema.
		`INSERT INTO customers_client (schema_name, name, paid_until, on_trial, created_on) VALUES
			('public', 'Public', '2100-01-01', false, current_date),
			('djt_acme', 'Acme', '2100-01-01', false, current_date),
			('djt_globex', 'Globex', '2100-01-01', true, current_date)`,
		`INSERT INTO customers_domain (domain, is_primary, tenant_id)
			SELECT v.domain, v.is_primary, c.id FROM (VALUES
				('`+djtPublicD+`', true, 'public'),
				('acme`+djtDomain+`', true, 'djt_acme'),
				('acme-alt`+djtDomain+`', false, 'djt_acme'),
				('globex`+djtDomain+`', true, 'djt_globex')) v (domain, is_primary, schema_name)
			JOIN customers_client c USING (schema_name)`,
		`CREATE SCHEMA djt_acme`,
		`CREATE TABLE djt_acme.shop_note (body text)`,
		`INSERT INTO djt_acme.shop_note VALUES ('acme note')`,
		`CREATE SCHEMA djt_globex`,
		`CREATE TABLE djt_globex.shop_note (body text)`,
		`INSERT INTO djt_globex.shop_note VALUES ('globex note')`,
	)
	for _, q := range stmts {
		if _, err := d.Exec(ctx, q); err != nil {
			t.Fatalf("django-tenants setup %q: %v", q, err)
		}
	}
}

// withDjangoRegistry reads tenants from the default tables, as djt_reader,
// which may read them and nothing else of the registry: the proxy cannot
// write to them. The TTLs are short so that changes show quickly.
func withDjangoRegistry(c *config.Config) {
	c.RegistrySource = config.RegistryDjangoTenants
	c.Registry = backendDSN() + " user=" + djtReader
	c.TenantCacheTTL = 300 * time.Millisecond
	c.TenantMissTTL = 100 * time.Millisecond
}

// djtNote connects with dsn and returns the note it sees, or the error.
func djtNote(t *testing.T, dsn string) (string, error) {
	t.Helper()
	conn, err := connectPgx(t, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var body string
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = conn.QueryRow(ctx, "SELECT body FROM shop_note").Scan(&body)
	return body, err
}

// TestDjangoTenantsRegistry: with --registry-source django-tenants a client
// reaches a tenant by its schema name or by one of its domains (as the
// database name or as the TLS host name), the public tenant is not served,
// an unknown name is 3D000, a tenant added in Django's tables is reachable
// once the cached miss expires, and an is_active column is honoured.
func TestDjangoTenantsRegistry(t *testing.T) {
	djtSetup(t)
	f := newTLSFiles(t, "pgtenant django-tenants test CA", "*"+djtDomain)
	p := startProxy(t, withDjangoRegistry, withClientTLS(f, config.ClientTLSAllow))
	verify := "sslmode=verify-full sslrootcert=" + f.caFile

	t.Run("schema name as database", func(t *testing.T) {
		for db, want := range map[string]string{djtAcme: "acme note", djtGlobex: "globex note"} {
			if got, err := djtNote(t, p.DSN(db)); err != nil || got != want {
				t.Errorf("database %s: %q, %v; want %q", db, got, err, want)
			}
		}
		out, err := p.Psql(t, djtAcme, "-c", "SELECT current_schema() || ':' || body FROM shop_note")
		if err != nil || out != djtAcme+":acme note" {
			t.Errorf("psql -d %s: %v\n%s", djtAcme, err, out)
		}
	})
	t.Run("domain as database", func(t *testing.T) {
		for db, want := range map[string]string{
			"acme" + djtDomain:                    "acme note",
			"acme-alt" + djtDomain:                "acme note", // not the primary domain: every domain routes
			"globex" + djtDomain:                  "globex note",
			strings.ToUpper("globex") + djtDomain: "globex note", // host names have no case
		} {
			if got, err := djtNote(t, p.DSN(db)); err != nil || got != want {
				t.Errorf("database %s: %q, %v; want %q", db, got, err, want)
			}
		}
	})
	t.Run("domain as TLS host name", func(t *testing.T) {
		// tenant-from database: the host name must agree with the
		// database, by schema name or by domain.
		for _, db := range []string{djtGlobex, "globex" + djtDomain} {
			got, err := djtNote(t, tlsDSN(p, "globex"+djtDomain, db, verify))
			if err != nil || got != "globex note" {
				t.Errorf("host globex%s, database %s: %q, %v", djtDomain, db, got, err)
			}
		}
		out, err := psqlDSN(t, tlsDSN(p, "acme"+djtDomain, djtAcme, verify), nil, "-c", "SELECT body FROM shop_note")
		if err != nil || out != "acme note" {
			t.Errorf("psql to acme%s: %v\n%s", djtDomain, err, out)
		}
		_, err = djtNote(t, tlsDSN(p, "acme"+djtDomain, djtGlobex, verify))
		if sqlState(err) != "08004" || !strings.Contains(err.Error(), `TLS server name "acme`+djtDomain+`" names tenant "djt_acme"`) {
			t.Errorf("host of acme, database of globex: %v, want 08004 naming both", err)
		}
		// A host name that is no tenant's domain (the proxy's own) is no
		// claim: the database decides.
		got, err := djtNote(t, tlsDSN(p, "proxy"+djtDomain, djtGlobex, verify))
		if err != nil || got != "globex note" {
			t.Errorf("host proxy%s, database %s: %q, %v", djtDomain, djtGlobex, got, err)
		}
	})
	t.Run("unknown names", func(t *testing.T) {
		for _, db := range []string{"djt_nope", "nope" + djtDomain,
			"public", djtPublicD, // the public tenant, by schema and by domain
			"DJT_ACME", // a schema name is exact
		} {
			_, err := djtNote(t, p.DSN(db))
			if sqlState(err) != "3D000" {
				t.Errorf("database %q: %v, want 3D000", db, err)
			}
		}
	})
	t.Run("a tenant added in Django becomes reachable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := djtNote(t, p.DSN(djtLate)); sqlState(err) != "3D000" {
			t.Fatalf("before it exists: %v, want 3D000", err)
		}
		d := direct(t)
		for _, q := range []string{
			`INSERT INTO customers_client (schema_name, name, paid_until, on_trial, created_on)
				VALUES ('djt_late', 'Late', '2100-01-01', true, current_date)`,
			`INSERT INTO customers_domain (domain, is_primary, tenant_id)
				SELECT 'late` + djtDomain + `', true, id FROM customers_client WHERE schema_name = 'djt_late'`,
			`CREATE SCHEMA djt_late`,
			`CREATE TABLE djt_late.shop_note (body text)`,
			`INSERT INTO djt_late.shop_note VALUES ('late note')`,
		} {
			if _, err := d.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for _, db := range []string{djtLate, "late" + djtDomain} {
			eventually(t, 10*time.Second, "tenant "+db+" reachable", func() bool {
				got, err := djtNote(t, p.DSN(db))
				return err == nil && got == "late note"
			})
		}
	})
	t.Run("is_active", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := direct(t)
		// A model with an is_active field: a migration adds the column
		// while pgtenant runs.
		if _, err := d.Exec(ctx, `ALTER TABLE customers_client ADD COLUMN "is_active" boolean DEFAULT true NOT NULL`); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Exec(ctx, `UPDATE customers_client SET is_active = false WHERE schema_name = 'djt_globex'`); err != nil {
			t.Fatal(err)
		}
		for _, db := range []string{djtGlobex, "globex" + djtDomain} {
			eventually(t, 10*time.Second, "tenant "+db+" refused as disabled", func() bool {
				_, err := djtNote(t, p.DSN(db))
				return sqlState(err) == "55000"
			})
		}
		if got, err := djtNote(t, p.DSN(djtAcme)); err != nil || got != "acme note" {
			t.Errorf("an active tenant: %q, %v", got, err)
		}
	})
}

// TestDjangoTenantsSNI: with tenant-from sni and no suffix, the host name a
// client verified is looked up as a domain, whatever database it names.
func TestDjangoTenantsSNI(t *testing.T) {
	djtSetup(t)
	f := newTLSFiles(t, "pgtenant django-tenants SNI test CA", "*"+djtDomain)
	p := startProxy(t, withDjangoRegistry, withClientTLS(f, config.ClientTLSAllow),
		func(c *config.Config) { c.TenantFrom = config.TenantFromSNI })
	verify := "sslmode=verify-full sslrootcert=" + f.caFile
	for host, want := range map[string]string{"acme" + djtDomain: "acme note", "globex" + djtDomain: "globex note"} {
		got, err := djtNote(t, tlsDSN(p, host, "app", verify))
		if err != nil || got != want {
			t.Errorf("host %s: %q, %v; want %q", host, got, err, want)
		}
	}
	out, err := psqlDSN(t, tlsDSN(p, "acme-alt"+djtDomain, "app", verify), nil, "-c", "SELECT body FROM shop_note")
	if err != nil || out != "acme note" {
		t.Errorf("psql to acme-alt%s: %v\n%s", djtDomain, err, out)
	}
	for _, host := range []string{"nope" + djtDomain, djtPublicD} {
		if _, err := djtNote(t, tlsDSN(p, host, "app", verify)); sqlState(err) != "3D000" {
			t.Errorf("host %s: %v, want 3D000", host, err)
		}
	}
}

// TestDjangoTenantsConsole: the admin console lists the tenants of
// Django's table and refuses to change them.
func TestDjangoTenantsConsole(t *testing.T) {
	djtSetup(t)
	p := startProxy(t, withDjangoRegistry, func(c *config.Config) { c.AdminUsers = []string{"app"} })
	if _, err := djtNote(t, p.DSN(djtAcme)); err != nil {
		t.Fatal(err)
	}
	conn := p.Connect(t, "pgtenant", pgx.QueryExecModeSimpleProtocol)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, "SHOW TENANTS")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, vals[0].(string))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, djtAcme+","+djtGlobex) || strings.Contains(got, "public") {
		t.Errorf("SHOW TENANTS names %q; want %s and %s, not public", got, djtAcme, djtGlobex)
	}
	if _, err := conn.Exec(ctx, "DISABLE "+djtAcme); sqlState(err) != "0A000" {
		t.Errorf("DISABLE under django-tenants: %v, want 0A000", err)
	}
	if _, err := conn.Exec(ctx, "KILL "+djtAcme); err != nil {
		t.Errorf("KILL %s: %v", djtAcme, err)
	}
	if _, err := conn.Exec(ctx, "KILL djt_nope"); sqlState(err) != "3D000" {
		t.Errorf("KILL of an unknown tenant: %v, want 3D000", err)
	}
}

// TestDjangoTenantsWrongTable: a table name that names no django-tenants
// table stops serve at start, naming the flag to fix.
func TestDjangoTenantsWrongTable(t *testing.T) {
	djtSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A tenant table djt_reader is not granted.
	if _, err := direct(t).Exec(ctx, `CREATE TABLE IF NOT EXISTS djt_unreadable (id bigint, schema_name varchar(63))`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*config.Config)
		want string
	}{
		{"missing table", func(c *config.Config) { c.DjangoTenantTable = "customers_tenant" },
			`there is no table "public"."customers_tenant"; set --django-tenant-table`},
		{"not the domain model", func(c *config.Config) { c.DjangoDomainTable = "customers_client" },
			`has no column domain`},
		{"not readable", func(c *config.Config) {
			c.Registry = backendDSN() + " user=" + djtReader
			c.DjangoTenantTable = "djt_unreadable"
		},
			`may not read "public"."djt_unreadable"; GRANT SELECT`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Backend = backendDSN()
			cfg.AllowPrivilegedBackend = true
			cfg.Listen = "127.0.0.1:0"
			cfg.RegistrySource = config.RegistryDjangoTenants
			tt.mod(&cfg)
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				t.Fatal(err)
			}
			err = proxy.RunListener(ctx, cfg, slog.New(slog.DiscardHandler), ln)
			if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RunListener: %v; want an error containing %q", err, tt.want)
			}
		})
	}
}
