package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

// TestBackendTLS: pgtenant reaches its backend over TLS that it verifies.
// A throwaway PostgreSQL of its own serves a certificate for "localhost"
// from a test CA. With sslmode=verify-full and that CA, clients through
// pgtenant work and their queries run on TLS connections; with another CA,
// or a host name the certificate does not name, pgtenant refuses to start
// and says why.
func TestBackendTLS(t *testing.T) {
	t.Parallel()
	const (
		db     = "pgtenant_tls"
		tenant = "tls_t1"
	)
	ca, err := pgcluster.NewCA("pgtenant backend TLS test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tc, setup := startTLSBackend(t, leaf, db, tenant)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := pgcluster.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(otherFile, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	backend := func(host, sslmode, rootCert string) string {
		return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=%s sslrootcert=%s",
			host, tc.Port, tc.User, db, sslmode, rootCert)
	}
	// A second backend whose certificate, from the same CA, names another
	// host than the one pgtenant is told to reach.
	elsewhere, err := ca.Issue("db.example.com")
	if err != nil {
		t.Fatal(err)
	}
	tcElsewhere, _ := startTLSBackend(t, elsewhere, db, tenant)

	t.Run("verify-full", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) { c.Backend = backend("localhost", "verify-full", caFile) })
		const sslQuery = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			conn := p.Connect(t, tenant, mode)
			var ssl bool
			var schema string
			if err := conn.QueryRow(ctx, "select ssl, current_schema() from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl, &schema); err != nil {
				t.Fatalf("%v: %v", mode, err)
			}
			if !ssl || schema != tenant {
				t.Errorf("%v: ssl = %v in schema %q, want true in %q", mode, ssl, schema, tenant)
			}
		}
		out, err := p.Psql(t, tenant, "-c", sslQuery)
		if err != nil || out != "t" {
			t.Errorf("psql through pgtenant: %v\n%s\nwant t", err, out)
		}
		// Every connection pgtenant holds to this backend, the pool's and
		// the registry's, is encrypted.
		var plain, encrypted int
		err = setup.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
			  FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
			 WHERE a.application_name LIKE 'pgtenant%'`).Scan(&plain, &encrypted)
		if err != nil {
			t.Fatal(err)
		}
		if plain != 0 || encrypted == 0 {
			t.Errorf("pgtenant's backend connections: %d without TLS, %d with, want 0 and some", plain, encrypted)
		}
	})

	// Each case starts pgtenant with a backend it must refuse; RunListener
	// returns the error that names the certificate problem.
	for _, tc := range []struct {
		name, backend, want string
	}{
		{"another CA", backend("localhost", "verify-full", otherFile), "certificate signed by unknown authority"},
		{"host name mismatch", fmt.Sprintf("host=localhost port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s",
			tcElsewhere.Port, tcElsewhere.User, db, caFile), "certificate is valid for db.example.com, not localhost"},
		{"IP address not in the certificate", backend("127.0.0.1", "verify-full", caFile),
			"cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runProxyExpectingFailure(t, tc.backend)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RunListener with backend %q: %v, want an error containing %q", tc.backend, err, tc.want)
			}
		})
	}

	// The mismatch is the name alone: verify-ca, which checks the chain but
	// not the name, accepts the same certificate at 127.0.0.1.
	t.Run("verify-ca ignores the name", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) { c.Backend = backend("127.0.0.1", "verify-ca", caFile) })
		out, err := p.Psql(t, tenant, "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
		if err != nil || out != "t" {
			t.Errorf("psql through pgtenant: %v\n%s\nwant t", err, out)
		}
	})
}

// startTLSBackend starts a throwaway PostgreSQL serving leaf, with database
// db holding tenant; it returns the cluster and a connection to db without
// TLS for the test's own checks. It stops when the test ends.
func startTLSBackend(t *testing.T, leaf pgcluster.Leaf, db, tenant string) (*pgcluster.Cluster, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startOwnCluster(ctx, t, pgcluster.Options{TLSCertPEM: leaf.CertPEM, TLSKeyPEM: leaf.KeyPEM}, db)
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, _, err := router.CreateTenant(ctx, conn, tenant, ""); err != nil {
		t.Fatal(err)
	}
	return c, conn
}

// runProxyExpectingFailure runs pgtenant against backend and returns what
// RunListener returned; it fails the test if pgtenant is still serving
// after a minute.
func runProxyExpectingFailure(t *testing.T, backend string) error {
	t.Helper()
	cfg := config.Default()
	cfg.Backend = backend
	cfg.Listen = "127.0.0.1:0"
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = proxy.RunListener(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if ctx.Err() != nil {
		t.Fatalf("pgtenant served with backend %q until the test gave up (%v)", backend, err)
	}
	return err
}
