package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// TLS between clients and pgtenant (--tls-cert, --tls-key, --client-tls),
// with real clients: psql (libpq) and pgx.

// tlsHost is the host name the test certificates are issued for; clients
// connect to it at 127.0.0.1 (libpq hostaddr, pgx LookupFunc), so
// sslmode=verify-full checks a real host name.
const tlsHost = "pgtenant.test"

// tlsFiles are a throwaway CA and a server certificate it signed, on disk.
type tlsFiles struct {
	ca                        *pgcluster.CA
	caFile, certFile, keyFile string
}

// newTLSFiles makes a CA called name and a certificate for hosts, and
// writes them to a directory of the test's.
func newTLSFiles(t testing.TB, name string, hosts ...string) tlsFiles {
	t.Helper()
	ca, err := pgcluster.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsFiles{ca: ca, caFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(f.caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if f.certFile, f.keyFile, err = leaf.WriteFiles(dir, "server.crt", "server.key"); err != nil {
		t.Fatal(err)
	}
	return f
}

// withClientTLS gives pgtenant the certificate in f and the client-tls mode.
func withClientTLS(f tlsFiles, mode string) func(*config.Config) {
	return func(c *config.Config) {
		c.TLSCert, c.TLSKey, c.ClientTLS = f.certFile, f.keyFile, mode
	}
}

// tlsDSN is a key=value DSN for host (a name, resolved to 127.0.0.1 by
// the helpers below, or an address) and tenant as the database; extra adds
// or overrides settings (sslmode, sslrootcert, ...).
func tlsDSN(p *Proxy, host, tenant, extra string) string {
	return fmt.Sprintf("host=%s port=%d user=app dbname=%s connect_timeout=10 %s", host, p.Port, tenant, extra)
}

// connectPgx opens a pgx connection with dsn, any host name resolving to
// 127.0.0.1 (pgx has no hostaddr), and closes it when the test ends.
func connectPgx(t testing.TB, dsn string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %q: %v", dsn, err)
	}
	cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, nil
}

// mustConnectPgx is connectPgx that fails the test on error.
func mustConnectPgx(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := connectPgx(t, dsn)
	if err != nil {
		t.Fatalf("connect with %q: %v", dsn, err)
	}
	return conn
}

// psqlDSN runs psql with the connection string dsn (hostaddr=127.0.0.1
// added, so a host name needs no resolver) and env on top of a clean
// environment; it returns the combined output.
func psqlDSN(t testing.TB, dsn string, env []string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", dsn + " hostaddr=127.0.0.1"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", full...)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// usesTLS reports whether a pgx connection's socket is a *tls.Conn, and
// the ALPN protocol it negotiated.
func usesTLS(conn *pgx.Conn) (bool, string) {
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		return false, ""
	}
	return true, tc.ConnectionState().NegotiatedProtocol
}

func currentSchema(t testing.TB, conn *pgx.Conn) string {
	t.Helper()
	var s string
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := conn.QueryRow(ctx, "select current_schema()").Scan(&s); err != nil {
		t.Fatalf("select current_schema(): %v", err)
	}
	return s
}

// TestTLSVerifyFull: psql and pgx reach pgtenant over TLS with
// sslmode=require and verify-full, and really are on TLS; a client that
// trusts another CA is refused by its own verification.
func TestTLSVerifyFull(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_verify"
	createTenant(t, tenant)
	f := newTLSFiles(t, "pgtenant client TLS test CA", tlsHost)
	other := newTLSFiles(t, "another CA", tlsHost)
	p := startProxy(t, withClientTLS(f, config.ClientTLSAllow))

	for _, mode := range []string{"require", "verify-full"} {
		t.Run("psql "+mode, func(t *testing.T) {
			dsn := tlsDSN(p, tlsHost, tenant, "sslmode="+mode+" sslrootcert="+f.caFile)
			out, err := psqlDSN(t, dsn, nil, "-c", `\conninfo`, "-c", "select current_schema()")
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			if !strings.Contains(out, "SSL connection (protocol: TLSv1.") {
				t.Fatalf("psql \\conninfo does not report an SSL connection:\n%s", out)
			}
			if !strings.HasSuffix(out, "\n"+tenant) {
				t.Fatalf("psql landed in schema %q, want %s", out, tenant)
			}
		})
		t.Run("pgx "+mode, func(t *testing.T) {
			conn := mustConnectPgx(t, tlsDSN(p, tlsHost, tenant, "sslmode="+mode+" sslrootcert="+f.caFile))
			if ok, _ := usesTLS(conn); !ok {
				t.Fatalf("pgx connection runs on %T, want *tls.Conn", conn.PgConn().Conn())
			}
			if got := currentSchema(t, conn); got != tenant {
				t.Fatalf("current_schema() = %q, want %q", got, tenant)
			}
		})
	}

	t.Run("wrong CA", func(t *testing.T) {
		out, err := psqlDSN(t, tlsDSN(p, tlsHost, tenant, "sslmode=verify-full sslrootcert="+other.caFile), nil, "-c", "select 1")
		if err == nil || !strings.Contains(out, "certificate verify failed") {
			t.Fatalf("psql trusting another CA: %v\n%s\nwant a certificate verification failure", err, out)
		}
		if _, err := connectPgx(t, tlsDSN(p, tlsHost, tenant, "sslmode=verify-full sslrootcert="+other.caFile)); err == nil ||
			!strings.Contains(err.Error(), "certificate") {
			t.Fatalf("pgx trusting another CA: %v, want a certificate error", err)
		}
	})
}

// TestTLSAllowServesPlaintext: client-tls allow (the default) serves a
// client that does not ask for TLS, in plaintext, and one that asks, on
// TLS.
func TestTLSAllowServesPlaintext(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_allow"
	createTenant(t, tenant)
	f := newTLSFiles(t, "pgtenant client TLS test CA", tlsHost)
	p := startProxy(t, withClientTLS(f, config.ClientTLSAllow))

	plain := mustConnectPgx(t, tlsDSN(p, "127.0.0.1", tenant, "sslmode=disable"))
	if ok, _ := usesTLS(plain); ok {
		t.Fatal("sslmode=disable connection runs on TLS")
	}
	if got := currentSchema(t, plain); got != tenant {
		t.Fatalf("current_schema() = %q, want %q", got, tenant)
	}
	out, err := psqlDSN(t, tlsDSN(p, "127.0.0.1", tenant, "sslmode=disable"), nil, "-c", `\conninfo`)
	if err != nil || strings.Contains(out, "SSL connection") {
		t.Fatalf("psql sslmode=disable: %v\n%s\nwant a plaintext connection", err, out)
	}
	// libpq's default, prefer, takes TLS when it is offered.
	out, err = psqlDSN(t, tlsDSN(p, "127.0.0.1", tenant, ""), nil, "-c", `\conninfo`)
	if err != nil || !strings.Contains(out, "SSL connection") {
		t.Fatalf("psql sslmode=prefer: %v\n%s\nwant an SSL connection", err, out)
	}
}

// TestTLSRequire: client-tls require refuses a plaintext startup with
// 28000 and a message that says what to do, serves TLS clients, and still
// honours a CancelRequest sent in plaintext.
func TestTLSRequire(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_require"
	createTenant(t, tenant)
	f := newTLSFiles(t, "pgtenant client TLS test CA", tlsHost)
	p := startProxy(t, withClientTLS(f, config.ClientTLSRequire))
	const msg = "pgtenant requires TLS: connect with sslmode=require (or verify-full)"

	_, err := connectPgx(t, tlsDSN(p, "127.0.0.1", tenant, "sslmode=disable"))
	if code := sqlState(err); code != "28000" || !strings.Contains(err.Error(), msg) {
		t.Fatalf("pgx sslmode=disable: %v (SQLSTATE %q), want 28000 %q", err, code, msg)
	}
	out, err := psqlDSN(t, tlsDSN(p, "127.0.0.1", tenant, "sslmode=disable"), nil, "-c", "select 1")
	if err == nil || !strings.Contains(out, "FATAL:  "+msg) {
		t.Fatalf("psql sslmode=disable: %v\n%s\nwant FATAL %q", err, out, msg)
	}

	conn := mustConnectPgx(t, tlsDSN(p, tlsHost, tenant, "sslmode=verify-full sslrootcert="+f.caFile))
	if got := currentSchema(t, conn); got != tenant {
		t.Fatalf("current_schema() = %q, want %q", got, tenant)
	}
	out, err = psqlDSN(t, tlsDSN(p, tlsHost, tenant, "sslmode=require"), nil, "-c", "select current_schema()")
	if err != nil || out != tenant {
		t.Fatalf("psql sslmode=require: %v\n%s", err, out)
	}

	// The cancel: conn sleeps, a plaintext CancelRequest with its key ends
	// the sleep with 57014.
	const marker = "cltls_require_cancel"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(60) /* "+marker+" */")
		errc <- err
	}()
	cnlWaitSleeping(t, direct(t), marker)
	cnlSendCancel(t, p, conn.PgConn().PID(), conn.PgConn().SecretKey())
	if err := <-errc; sqlState(err) != "57014" {
		t.Fatalf("sleep after a plaintext cancel: %v, want 57014", err)
	}
}

// TestTLSDirect: PostgreSQL 17's direct TLS (sslnegotiation=direct, no
// SSLRequest) works with pgx and negotiates ALPN "postgresql"; a TLS client
// that does not offer that ALPN is refused.
func TestTLSDirect(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_direct"
	createTenant(t, tenant)
	f := newTLSFiles(t, "pgtenant client TLS test CA", tlsHost)
	p := startProxy(t, withClientTLS(f, config.ClientTLSRequire))

	conn := mustConnectPgx(t, tlsDSN(p, tlsHost, tenant, "sslmode=verify-full sslnegotiation=direct sslrootcert="+f.caFile))
	ok, alpn := usesTLS(conn)
	if !ok || alpn != "postgresql" {
		t.Fatalf("direct TLS connection: TLS %v, ALPN %q; want TLS with ALPN postgresql", ok, alpn)
	}
	if got := currentSchema(t, conn); got != tenant {
		t.Fatalf("current_schema() = %q, want %q", got, tenant)
	}

	// The same handshake by hand, with and without the ALPN: only the
	// ALPN differs, so it is what the refusal is about.
	dial := func(protos []string) (*tls.Conn, error) {
		nc, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(p.Port)), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Client(nc, &tls.Config{RootCAs: f.ca.Pool(), ServerName: tlsHost, NextProtos: protos})
		return tc, tc.Handshake()
	}
	for _, protos := range [][]string{nil, {"http/1.1"}} {
		if _, err := dial(protos); err == nil {
			t.Errorf("direct TLS offering ALPN %q: handshake succeeded, want refusal", protos)
		}
	}
	tc, err := dial([]string{"postgresql"})
	if err != nil {
		t.Fatalf("direct TLS with ALPN postgresql: %v", err)
	}
	startup, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "app", "database": tenant}}).Encode(nil)
	if _, err := tc.Write(startup); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(tc, io.Discard)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("raw direct TLS client: %v", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("raw direct TLS client refused: %s %s", e.Code, e.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if logs := p.Logs(); !strings.Contains(logs, "ALPN") {
		t.Errorf("pgtenant's log does not say why the clients without ALPN were refused:\n%s", logs)
	}
}

// TestTLSCertificateReload: a reload (SIGHUP; here the harness's channel)
// puts a new certificate in force for new connections, while a connection
// made before goes on; a reload of broken files keeps the certificate.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_reload"
	createTenant(t, tenant)
	f1 := newTLSFiles(t, "first CA", tlsHost)
	p := startProxy(t, withClientTLS(f1, config.ClientTLSRequire))
	verifyWith := func(f tlsFiles) string {
		return tlsDSN(p, tlsHost, tenant, "sslmode=verify-full sslrootcert="+f.caFile)
	}
	old := mustConnectPgx(t, verifyWith(f1))

	// The second CA's certificate goes where pgtenant reads its files.
	f2 := newTLSFiles(t, "second CA", tlsHost)
	leaf2, err := f2.ca.Issue(tlsHost)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf2.WriteFiles(filepath.Dir(f1.certFile), filepath.Base(f1.certFile), filepath.Base(f1.keyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := connectPgx(t, verifyWith(f2)); err == nil {
		t.Fatal("the new certificate is in force before the reload")
	}
	p.Reload(t)
	eventually(t, 20*time.Second, "new connections to be served the second CA's certificate", func() bool {
		conn, err := connectPgx(t, verifyWith(f2))
		if err != nil {
			return false
		}
		conn.Close(context.Background())
		return true
	})
	if _, err := connectPgx(t, verifyWith(f1)); err == nil {
		t.Fatal("after the reload a client trusting only the first CA still verified pgtenant")
	}
	if got := currentSchema(t, old); got != tenant {
		t.Fatalf("connection made before the reload: current_schema() = %q", got)
	}

	// A broken key: the reload fails, is logged, and the certificate in
	// force stays.
	if err := os.WriteFile(f1.keyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Reload(t)
	eventually(t, 20*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.Logs(), `reload failed; keeping what was read before" what="tls certificate`)
	})
	conn := mustConnectPgx(t, verifyWith(f2))
	if got := currentSchema(t, conn); got != tenant {
		t.Fatalf("after a failed reload: current_schema() = %q", got)
	}
}

// TestTLSCleartextPassword: auth-type password asks for a cleartext
// password only over TLS; without TLS the client is refused (28000) before
// it sends one.
func TestTLSCleartextPassword(t *testing.T) {
	t.Parallel()
	const tenant = "cltls_password"
	createTenant(t, tenant)
	f := newTLSFiles(t, "pgtenant client TLS test CA", tlsHost)
	authFile := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(authFile, []byte(`"alice" "secret"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, withClientTLS(f, config.ClientTLSAllow), func(c *config.Config) {
		c.AuthType = config.AuthPassword
		c.AuthFile = authFile
		c.TenantAccess = config.AccessAll
	})
	dsn := func(extra string) string {
		return fmt.Sprintf("host=%s port=%d user=alice password=secret dbname=%s connect_timeout=10 %s", tlsHost, p.Port, tenant, extra)
	}

	conn := mustConnectPgx(t, dsn("sslmode=verify-full sslrootcert="+f.caFile))
	if got := currentSchema(t, conn); got != tenant {
		t.Fatalf("current_schema() = %q, want %q", got, tenant)
	}
	out, err := psqlDSN(t, fmt.Sprintf("host=%s port=%d user=alice dbname=%s sslmode=require", tlsHost, p.Port, tenant),
		[]string{"PGPASSWORD=secret"}, "-c", "select current_schema()")
	if err != nil || out != tenant {
		t.Fatalf("psql sslmode=require with a password: %v\n%s", err, out)
	}

	_, err = connectPgx(t, dsn("sslmode=disable"))
	if code := sqlState(err); code != "28000" || !strings.Contains(err.Error(), "requires an encrypted connection") {
		t.Fatalf("password over plaintext: %v (SQLSTATE %q), want 28000", err, code)
	}
	_, err = connectPgx(t, dsn("sslmode=require password=wrong"))
	if code := sqlState(err); code != "28P01" {
		t.Fatalf("wrong password over TLS: %v (SQLSTATE %q), want 28P01", err, code)
	}
}
