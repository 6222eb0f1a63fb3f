package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// The tests in this file need a real PostgreSQL: the auth query, and
// PostgreSQL's own verifiers and md5 hashes to compare with. The server is
// started by the first test that asks for it, so the unit tests and the
// fuzzers never wait for it, and stopped by TestMain.
var (
	pgOnce    sync.Once
	pgCluster *pgcluster.Cluster
	pgErr     error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pgCluster != nil {
		if code != 0 {
			log := pgCluster.ServerLog()
			if len(log) > 8000 {
				log = log[len(log)-8000:]
			}
			fmt.Fprintf(os.Stderr, "--- PostgreSQL server log (tail) ---\n%s\n", log)
		}
		if err := pgCluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "auth: stop PostgreSQL:", err)
		}
	}
	os.Exit(code)
}

// postgres returns the shared server, starting it on first use.
func postgres(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Every statement is logged, so a test can see how the auth
		// query's user name reached the server.
		pgCluster, pgErr = pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"log_statement": "all"}})
	})
	if pgErr != nil {
		t.Fatalf("start PostgreSQL: %v", pgErr)
	}
	return pgCluster
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func superConn(t *testing.T, pg *pgcluster.Cluster, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), pg.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(testCtx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// sqlString quotes s as an SQL string literal (standard_conforming_strings
// is on), for the statements that take no parameters.
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// TestPostgresSecrets checks that the verifiers and md5 hashes this package
// derives are PostgreSQL's: PostgreSQL hashes a password with its own salt,
// and the verifier derived here from the same password, salt and iteration
// count must be the same string. The passwords cover SASLprep's cases.
func TestPostgresSecrets(t *testing.T) {
	pg := postgres(t)
	conn := superConn(t, pg, "postgres")
	for i, password := range []string{
		"pencil",
		"s3cret with spaces",
		"ctrl\x07ascii",                 // ASCII: used raw
		"p\u00e4ssw\u00f6rd",            // NFC already
		"pa\u0308ssw\u006f\u0308rd",     // decomposed: NFKC composes
		"\ufb01sh",                      // ligature: NFKC decomposes
		"a\u00a0b",                      // non-ASCII space mapped to space
		"I\u00adX",                      // soft hyphen mapped to nothing
		"\u05d0a\u05d1",                 // bidi violation: used raw
		"a\u0007\u00e9",                 // control character in non-ASCII: raw
		"\u05d0\u05d1\u05d2",            // right-to-left only
		"\u2168 \u3000 \u00bd",          // Roman numeral, ideographic space, fraction
		"\U0001d400bold",                // mathematical bold A: NFKC to "A"
		strings.Repeat("long", 100),     // long passwords
		"\u00e9\u0301\u0327 combining!", // stacked combining marks
	} {
		role := fmt.Sprintf("scram_%d", i)
		mustExec(t, conn, "SET password_encryption = 'scram-sha-256'")
		mustExec(t, conn, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", role, sqlString(password)))
		var stored string
		if err := conn.QueryRow(testCtx(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		secret, err := ParseSecret(stored)
		if err != nil || secret.Kind != SecretSCRAM {
			t.Fatalf("PostgreSQL's verifier %q: %v, %v", stored, secret.Kind, err)
		}
		ours, err := NewSCRAMVerifier(password, secret.SCRAM.Salt, secret.SCRAM.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if ours.String() != stored {
			t.Errorf("password %+q:\n PostgreSQL %s\n derived    %s", password, stored, ours)
		}
		if !secret.SCRAM.verifyPlain(password) {
			t.Errorf("password %+q does not verify against PostgreSQL's verifier", password)
		}

		md5Role := fmt.Sprintf("md5_%d", i)
		mustExec(t, conn, "SET password_encryption = 'md5'")
		mustExec(t, conn, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", md5Role, sqlString(password)))
		if err := conn.QueryRow(testCtx(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", md5Role).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if got := MD5Hash(md5Role, password); got != stored {
			t.Errorf("md5 of %+q: PostgreSQL %s, derived %s", password, stored, got)
		}
	}
}

// docSQL returns the SQL that doc.go recommends for the auth query, so that
// the test runs exactly what the documentation says.
func docSQL(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var sql []string
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		code, ok := strings.CutPrefix(line, "//\t")
		if strings.Contains(code, "CREATE SCHEMA IF NOT EXISTS pgtenant;") {
			in = true
		}
		if in && !ok && line != "//" {
			break
		}
		if in && ok {
			sql = append(sql, code)
		}
	}
	if len(sql) == 0 {
		t.Fatal("doc.go has no auth query SQL")
	}
	return strings.Join(sql, "\n")
}

func TestAuthQuery(t *testing.T) {
	pg := postgres(t)
	ctx := testCtx(t)
	if err := pg.CreateDatabase(ctx, "authq"); err != nil {
		t.Fatal(err)
	}
	su := superConn(t, pg, "authq")
	mustExec(t, su, "CREATE ROLE pgtenant_proxy LOGIN")
	mustExec(t, su, docSQL(t))
	mustExec(t, su, "SET password_encryption = 'scram-sha-256'")
	mustExec(t, su, "CREATE ROLE aq_alice LOGIN PASSWORD 'pencil'")
	mustExec(t, su, "CREATE ROLE aq_nopw LOGIN")
	mustExec(t, su, "CREATE ROLE aq_nologin NOLOGIN PASSWORD 'pencil'")
	mustExec(t, su, "CREATE ROLE aq_expired LOGIN PASSWORD 'pencil' VALID UNTIL '2000-01-01'")
	mustExec(t, su, "CREATE ROLE aq_root SUPERUSER LOGIN PASSWORD 'pencil'")
	mustExec(t, su, "SET password_encryption = 'md5'")
	mustExec(t, su, "CREATE ROLE aq_mallory LOGIN PASSWORD 'pencil'")

	// The proxy's role, with nothing but EXECUTE on the function. Its pool
	// defaults to the simple protocol, which must not matter: the lookup
	// forces a bind parameter.
	cfg, err := pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d user=pgtenant_proxy dbname=authq sslmode=disable", pg.Host, pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	_, err = pool.Exec(ctx, "SELECT rolpassword FROM pg_catalog.pg_authid")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("the proxy's role reads pg_authid: %v", err)
	}

	q, err := NewAuthQuery(pool, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	const injection = "x' OR true; DROP ROLE aq_alice; --"
	for _, tc := range []struct {
		user  string
		found bool
		kind  SecretKind
	}{
		{"aq_alice", true, SecretSCRAM},
		{"aq_mallory", true, SecretMD5},
		{"aq_nopw", false, 0},       // NULL password
		{"aq_nologin", false, 0},    // cannot log in
		{"aq_expired", false, 0},    // VALID UNTIL passed
		{"aq_root", false, 0},       // superuser
		{"aq_nobody", false, 0},     // no such role
		{injection, false, 0},       // only ever a parameter
		{"AQ_ALICE", false, 0},      // names are case-sensitive
		{"aq_alice\x00x", false, 0}, // NUL cannot even be sent
	} {
		secret, found, err := q.Lookup(ctx, tc.user)
		if tc.user == "aq_alice\x00x" {
			if err == nil && found {
				t.Errorf("%q found", tc.user)
			}
			continue
		}
		if err != nil || found != tc.found || secret.Kind != tc.kind {
			t.Errorf("Lookup(%q) = %v, %v, %v; want %v %v", tc.user, secret.Kind, found, err, tc.kind, tc.found)
		}
	}
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = 'aq_alice'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("aq_alice after the injection attempt: %d, %v", n, err)
	}
	if log := pg.ServerLog(); !strings.Contains(log, "parameters: $1 = 'x'' OR true; DROP ROLE aq_alice; --'") {
		t.Errorf("the user name did not reach the server as a bind parameter; server log:\n%s", lastLines(log, 30))
	}

	// End to end: SCRAM against the verifier the query returns.
	m, err := NewMethod(KindSCRAM, q, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc := newSCRAMClient(t, "pencil")
	if err := m.Authenticate(ctx, &fakeConn{client: sc.respond}, "aq_alice"); err != nil {
		t.Fatal(err)
	}
	sc = newSCRAMClient(t, "wrong")
	authError(t, m.Authenticate(ctx, &fakeConn{client: sc.respond}, "aq_alice"), CodeInvalidPassword, "")
	sc = newSCRAMClient(t, "pencil")
	authError(t, m.Authenticate(ctx, &fakeConn{client: sc.respond}, "aq_nopw"), CodeInvalidPassword, "")

	// A query that returns several rows, or another user's row, is an
	// error, never a login.
	mustExec(t, su, "CREATE TABLE public.secrets (rolname text, rolpassword text)")
	mustExec(t, su, "INSERT INTO public.secrets VALUES ('dup', 'a'), ('dup', 'b'), ('other', 'c')")
	mustExec(t, su, "GRANT SELECT ON public.secrets TO pgtenant_proxy")
	dup, err := NewAuthQuery(pool, "SELECT rolname, rolpassword FROM public.secrets WHERE rolname = $1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dup.Lookup(ctx, "dup"); err == nil || !strings.Contains(err.Error(), "more than one row") {
		t.Errorf("two rows: %v", err)
	}
	wrongUser, err := NewAuthQuery(pool, "SELECT rolname, rolpassword FROM public.secrets WHERE rolname = 'other' AND $1::text IS NOT NULL", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := wrongUser.Lookup(ctx, "alice"); err == nil || found {
		t.Errorf("another user's row: found %v, %v", found, err)
	}

	// A query that fails is an outage for every user alike.
	broken, err := NewAuthQuery(pool, "SELECT rolname, rolpassword FROM public.missing WHERE rolname = $1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bm, _ := NewMethod(KindSCRAM, broken, Options{})
	authError(t, bm.Authenticate(ctx, &fakeConn{}, "aq_alice"), CodeConnectionFailure, "")
}

func TestNewAuthQuery(t *testing.T) {
	var pool *pgxpool.Pool // never queried
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"", true},
		{"SELECT rolname, rolpassword FROM s.f($1)", true},
		{"SELECT rolname, rolpassword FROM s.t WHERE rolname = $1 OR alias = $1", true},
		{"SELECT rolname, rolpassword FROM s.t", false},
		{"SELECT rolname, rolpassword FROM s.t WHERE rolname = $2", false},
		{"SELECT rolname, rolpassword FROM s.t WHERE rolname = $1 AND db = $2", false},
	} {
		_, err := NewAuthQuery(pool, tc.query, 0)
		if (err == nil) != tc.ok {
			t.Errorf("NewAuthQuery(%q): %v", tc.query, err)
		}
	}
	if _, err := NewAuthQuery(nil, "", 0); err == nil {
		t.Error("nil pool accepted")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
