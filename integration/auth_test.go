package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
)

// The auth tests prove client authentication through the real proxy, with
// real psql (libpq) and pgx clients: the methods, the user sources (auth
// file, auth query, both), reloads, the failure Limiter, and that a client
// that fails to log in never reaches PostgreSQL.
//
// The Limiter counts failures per client address. psql always connects from
// 127.0.0.1, so each test keeps its psql failures under the Limiter's
// threshold (5); pgx and raw-wire attempts each come from an address of
// their own in 127/8 (see freshLoopback), which Linux routes to lo.

// loopbackSeq numbers the source addresses handed out by freshLoopback.
var loopbackSeq atomic.Uint32

// freshLoopback returns a loopback address no other attempt of this test
// binary uses: 127.1.x.y, never 127.0.0.1.
func freshLoopback() *net.TCPAddr {
	n := loopbackSeq.Add(1)
	return &net.TCPAddr{IP: net.IPv4(127, 1, byte(n/250), byte(1+n%250))}
}

// quoteUserList quotes a userlist field: in double quotes, a quote doubled.
func quoteUserList(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// writeUserList writes users (name to secret) in PgBouncer's userlist.txt
// format to path.
func writeUserList(t testing.TB, path string, users map[string]string) {
	t.Helper()
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("; written by the pgtenant auth tests\n")
	for _, name := range names {
		fmt.Fprintf(&b, "%s %s\n", quoteUserList(name), quoteUserList(users[name]))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newUserList writes users to a fresh auth file and returns its path.
func newUserList(t testing.TB, users map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "userlist.txt")
	writeUserList(t, path, users)
	return path
}

// scramVerifier makes a SCRAM-SHA-256 verifier of password with a random
// salt and PostgreSQL's default iteration count.
func scramVerifier(t testing.TB, password string) string {
	t.Helper()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewSCRAMVerifier(password, salt, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	return v.String()
}

// ensureRole creates (or alters) a cluster role with options, e.g.
// "LOGIN PASSWORD 'x'", with SCRAM password encryption, and returns the
// password PostgreSQL stored for it (pg_authid.rolpassword), "" for none.
func ensureRole(t testing.TB, name, options string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := direct(t)
	if _, err := d.Exec(ctx, "SET password_encryption = 'scram-sha-256'"); err != nil {
		t.Fatal(err)
	}
	role := pgx.Identifier{name}.Sanitize()
	sql := fmt.Sprintf("DO $$BEGIN CREATE ROLE %s; EXCEPTION WHEN duplicate_object THEN NULL; END$$", role)
	if _, err := d.Exec(ctx, sql); err != nil {
		t.Fatalf("create role %s: %v", name, err)
	}
	if _, err := d.Exec(ctx, "ALTER ROLE "+role+" "+options); err != nil {
		t.Fatalf("alter role %s: %v", name, err)
	}
	var stored *string
	if err := d.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", name).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored == nil {
		return ""
	}
	return *stored
}

// withAuthFile configures an auth file; the method is scram-sha-256 unless
// another mod says otherwise. Tenant access is "all": these tests are about
// who a client is, not which tenants it may use.
func withAuthFile(path string) func(*config.Config) {
	return func(c *config.Config) {
		c.AuthFile = path
		c.TenantAccess = config.AccessAll
	}
}

// connectAs opens a pgx connection to pgtenant as user with password, for
// tenant, from an address of its own (so the Limiter sees each attempt as
// a new client).
func connectAs(p *Proxy, user, password, tenant string) (*pgx.Conn, error) {
	return connectFrom(p, freshLoopback(), user, password, tenant)
}

// connectFrom is connectAs from a given source address.
func connectFrom(p *Proxy, from *net.TCPAddr, user, password, tenant string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.DSN(tenant))
	if err != nil {
		return nil, err
	}
	cfg.User = user
	cfg.Password = password
	d := &net.Dialer{LocalAddr: from, Timeout: 10 * time.Second}
	cfg.DialFunc = d.DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// loginPgx logs in as user with pgx, checks the session is in tenant's
// schema, and closes it.
func loginPgx(t testing.TB, p *Proxy, user, password, tenant string) {
	t.Helper()
	conn, err := connectAs(p, user, password, tenant)
	if err != nil {
		t.Fatalf("pgx login as %s: %v", user, err)
	}
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var schema string
	if err := conn.QueryRow(ctx, "select current_schema()").Scan(&schema); err != nil {
		t.Fatalf("pgx as %s: %v", user, err)
	}
	if schema != tenant {
		t.Fatalf("pgx as %s: current_schema() = %q, want %q", user, schema, tenant)
	}
}

// failPgx tries to log in as user with pgx and returns the server's error,
// failing the test if the login succeeded or failed some other way.
func failPgx(t testing.TB, p *Proxy, user, password, tenant string) *pgconn.PgError {
	t.Helper()
	conn, err := connectAs(p, user, password, tenant)
	if err == nil {
		conn.Close(context.Background())
		t.Fatalf("pgx login as %s with password %q succeeded, want a failure", user, password)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("pgx login as %s: %v, want a PostgreSQL error", user, err)
	}
	return pe
}

// wantPasswordFailed checks pe is PostgreSQL's answer to a bad password.
func wantPasswordFailed(t testing.TB, pe *pgconn.PgError, user string) {
	t.Helper()
	want := fmt.Sprintf("password authentication failed for user %q", user)
	if pe.Severity != "FATAL" || pe.Code != "28P01" || pe.Message != want || pe.Detail != "" {
		t.Fatalf("login as %s: %s %s %q (detail %q), want FATAL 28P01 %q", user, pe.Severity, pe.Code, pe.Message, pe.Detail, want)
	}
}

// psqlAs runs psql as user with PGPASSWORD (none when password is ""),
// never prompting, and returns its combined output.
func psqlAs(t testing.TB, p *Proxy, user, password, tenant, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-w", "-v", "ON_ERROR_STOP=1", "-At",
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", user, "-d", tenant, "-c", sql)
	cmd.Env = cleanEnv()
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// loginPsql logs in with psql and checks the session is in tenant's schema.
func loginPsql(t testing.TB, p *Proxy, user, password, tenant string) {
	t.Helper()
	out, err := psqlAs(t, p, user, password, tenant, "select current_schema()")
	if err != nil || out != tenant {
		t.Fatalf("psql as %s: %v\n%s\nwant %q", user, err, out, tenant)
	}
}

// failPsql checks that psql cannot log in as user and prints want.
func failPsql(t testing.TB, p *Proxy, user, password, tenant, want string) {
	t.Helper()
	out, err := psqlAs(t, p, user, password, tenant, "select 1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, want) {
		t.Fatalf("psql as %s with password %q: %v\n%s\nwant a failure saying %q", user, password, err, out, want)
	}
}

// scramTranscript is what pgtenant sent during one SCRAM exchange driven
// on the wire with a wrong proof.
type scramTranscript struct {
	msgs       []string // the message types pgtenant sent, in order
	mechanisms []string
	salt       string
	iterations string
	severity   string
	code       string
	message    string // the error message, with the user name replaced by USER
	closed     bool   // pgtenant hung up after the error
}

// scramWire runs a SCRAM-SHA-256 exchange with pgtenant over a raw TCP
// connection as user, with a proof of 32 zero bytes, which no password
// gives, and records everything pgtenant sent.
func scramWire(t testing.TB, p *Proxy, user, tenant string) scramTranscript {
	t.Helper()
	d := &net.Dialer{LocalAddr: freshLoopback(), Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(nc, nc)
	var tr scramTranscript
	send := func(msg pgproto3.FrontendMessage) {
		fe.Send(msg)
		if err := fe.Flush(); err != nil {
			t.Fatalf("as %s: send %T: %v", user, msg, err)
		}
	}
	next := func() pgproto3.BackendMessage {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("as %s: receive after %v: %v", user, tr.msgs, err)
		}
		tr.msgs = append(tr.msgs, fmt.Sprintf("%T", msg))
		return msg
	}

	send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": tenant}})
	sasl, ok := next().(*pgproto3.AuthenticationSASL)
	if !ok {
		t.Fatalf("as %s: first message %v, want AuthenticationSASL", user, tr.msgs)
	}
	tr.mechanisms = append([]string(nil), sasl.AuthMechanisms...)

	const clientNonce = "pgtenantAuthTestNonce0123456789"
	send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=" + clientNonce)})
	cont, ok := next().(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("as %s: second message %v, want AuthenticationSASLContinue", user, tr.msgs)
	}
	var nonce string
	for _, attr := range strings.Split(string(cont.Data), ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "r":
			nonce = v
		case "s":
			tr.salt = v
		case "i":
			tr.iterations = v
		}
	}
	if !strings.HasPrefix(nonce, clientNonce) || len(nonce) <= len(clientNonce) || tr.salt == "" {
		t.Fatalf("as %s: server-first-message %q", user, cont.Data)
	}

	proof := base64.StdEncoding.EncodeToString(make([]byte, 32))
	send(&pgproto3.SASLResponse{Data: []byte("c=biws,r=" + nonce + ",p=" + proof)})
	er, ok := next().(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("as %s: third message %v, want ErrorResponse", user, tr.msgs)
	}
	tr.severity, tr.code = er.Severity, er.Code
	tr.message = strings.ReplaceAll(er.Message, strconv.Quote(user), `"USER"`)
	_, err = fe.Receive()
	tr.closed = err != nil
	return tr
}

// TestAuthSCRAM: scram-sha-256, the default with an auth file. Users with a
// verifier made by auth.NewSCRAMVerifier, a verifier PostgreSQL made itself,
// and a plain password log in with psql and pgx; a wrong password, an
// unknown user and an md5-only user all fail alike, down to the messages on
// the wire.
func TestAuthSCRAM(t *testing.T) {
	t.Parallel()
	const tenant = "auth_scram"
	createTenant(t, tenant)
	pgVerifier := ensureRole(t, "pgt_auth_dave", "LOGIN PASSWORD 'dave-secret'")
	if !strings.HasPrefix(pgVerifier, "SCRAM-SHA-256$4096:") {
		t.Fatalf("PostgreSQL stored %q, want a SCRAM-SHA-256 verifier", pgVerifier)
	}
	file := newUserList(t, map[string]string{
		"alice": scramVerifier(t, "alice-secret"),
		"dave":  pgVerifier,
		"bob":   "bob secret, \"quoted\"",
		"carol": auth.MD5Hash("carol", "carol-secret"),
	})
	p := startProxy(t, withAuthFile(file))
	if got := p.Cfg.EffectiveAuthType(); got != config.AuthSCRAM {
		t.Fatalf("effective auth type %q, want %q", got, config.AuthSCRAM)
	}

	t.Run("success", func(t *testing.T) {
		for _, u := range []struct{ user, password string }{
			{"alice", "alice-secret"}, {"dave", "dave-secret"}, {"bob", "bob secret, \"quoted\""},
		} {
			loginPsql(t, p, u.user, u.password, tenant)
			loginPgx(t, p, u.user, u.password, tenant)
		}
	})

	// psql connects from 127.0.0.1: three failures, under the Limiter's
	// threshold.
	t.Run("wrong password", func(t *testing.T) {
		failPsql(t, p, "alice", "wrong", tenant, `FATAL:  password authentication failed for user "alice"`)
		wantPasswordFailed(t, failPgx(t, p, "alice", "wrong", tenant), "alice")
		wantPasswordFailed(t, failPgx(t, p, "dave", "alice-secret", tenant), "dave")
		wantPasswordFailed(t, failPgx(t, p, "bob", "bob secret", tenant), "bob")
	})
	t.Run("unknown user", func(t *testing.T) {
		failPsql(t, p, "nobody", "alice-secret", tenant, `FATAL:  password authentication failed for user "nobody"`)
		wantPasswordFailed(t, failPgx(t, p, "nobody", "alice-secret", tenant), "nobody")
	})
	t.Run("md5 hash cannot serve scram", func(t *testing.T) {
		failPsql(t, p, "carol", "carol-secret", tenant, `FATAL:  password authentication failed for user "carol"`)
		wantPasswordFailed(t, failPgx(t, p, "carol", "carol-secret", tenant), "carol")
	})

	t.Run("unknown user is indistinguishable on the wire", func(t *testing.T) {
		known := scramWire(t, p, "alice", tenant)
		plain := scramWire(t, p, "bob", tenant)
		md5Only := scramWire(t, p, "carol", tenant)
		unknown := scramWire(t, p, "nobody", tenant)
		again := scramWire(t, p, "nobody", tenant)
		other := scramWire(t, p, "nobody-else", tenant)

		want := []string{"*pgproto3.AuthenticationSASL", "*pgproto3.AuthenticationSASLContinue", "*pgproto3.ErrorResponse"}
		for name, tr := range map[string]scramTranscript{
			"alice (verifier)": known, "bob (plain)": plain, "carol (md5 only)": md5Only,
			"nobody": unknown, "nobody again": again, "nobody-else": other,
		} {
			if strings.Join(tr.msgs, " ") != strings.Join(want, " ") ||
				strings.Join(tr.mechanisms, ",") != "SCRAM-SHA-256" ||
				tr.iterations != "4096" ||
				tr.severity != "FATAL" || tr.code != "28P01" ||
				tr.message != `password authentication failed for user "USER"` ||
				!tr.closed {
				t.Errorf("%s: %+v\nwant messages %v, mechanisms [SCRAM-SHA-256], i=4096, FATAL 28P01 %q, then a hang-up",
					name, tr, want, `password authentication failed for user "USER"`)
			}
		}
		if unknown.salt != again.salt {
			t.Errorf("the same unknown user got salt %q, then %q: a real user's salt does not change", unknown.salt, again.salt)
		}
		if unknown.salt == other.salt {
			t.Errorf("two unknown users got the same salt %q", unknown.salt)
		}
		if raw, err := base64.StdEncoding.DecodeString(unknown.salt); err != nil || len(raw) != 16 {
			t.Errorf("mock salt %q: %d bytes (%v), want 16 like PostgreSQL's", unknown.salt, len(raw), err)
		}
		aliceV, err := auth.ParseSCRAMVerifier(strings.TrimSpace(readUserSecret(t, file, "alice")))
		if err != nil {
			t.Fatal(err)
		}
		if known.salt != base64.StdEncoding.EncodeToString(aliceV.Salt) {
			t.Errorf("alice's exchange used salt %q, want her verifier's", known.salt)
		}
	})
}

// readUserSecret returns user's secret from the userlist at path.
func readUserSecret(t testing.TB, path, user string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	users, err := auth.ParseUserList(data)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := users[user]
	if !ok {
		t.Fatalf("no user %q in %s", user, path)
	}
	if s.Kind == auth.SecretSCRAM {
		return s.SCRAM.String()
	}
	return s.Text
}

// TestAuthMD5: auth-type md5. Users with an md5 hash or a plain password get
// the md5 challenge and log in with psql and pgx; a SCRAM user gets SCRAM,
// as PostgreSQL does; wrong passwords and unknown users get 28P01.
func TestAuthMD5(t *testing.T) {
	t.Parallel()
	const tenant = "auth_md5"
	createTenant(t, tenant)
	file := newUserList(t, map[string]string{
		"erin":  auth.MD5Hash("erin", "erin-secret"),
		"frank": "frank-secret",
		"grace": scramVerifier(t, "grace-secret"),
	})
	p := startProxy(t, withAuthFile(file), func(c *config.Config) { c.AuthType = config.AuthMD5 })

	for _, u := range []struct{ user, password string }{
		{"erin", "erin-secret"}, {"frank", "frank-secret"}, {"grace", "grace-secret"},
	} {
		loginPsql(t, p, u.user, u.password, tenant)
		loginPgx(t, p, u.user, u.password, tenant)
	}

	failPsql(t, p, "erin", "frank-secret", tenant, `FATAL:  password authentication failed for user "erin"`)
	failPsql(t, p, "frank", "erin-secret", tenant, `FATAL:  password authentication failed for user "frank"`)
	failPsql(t, p, "nobody", "erin-secret", tenant, `FATAL:  password authentication failed for user "nobody"`)
	wantPasswordFailed(t, failPgx(t, p, "erin", "wrong", tenant), "erin")
	wantPasswordFailed(t, failPgx(t, p, "frank", "wrong", tenant), "frank")
	wantPasswordFailed(t, failPgx(t, p, "grace", "wrong", tenant), "grace")
	wantPasswordFailed(t, failPgx(t, p, "nobody", "wrong", tenant), "nobody")

	// Which exchange each user gets: md5 for the md5 and plain users,
	// SCRAM for the SCRAM user and (the default mock) for an unknown one.
	for user, want := range map[string]string{
		"erin": "*pgproto3.AuthenticationMD5Password", "frank": "*pgproto3.AuthenticationMD5Password",
		"grace": "*pgproto3.AuthenticationSASL", "nobody": "*pgproto3.AuthenticationSASL",
	} {
		if got := firstAuthRequest(t, p, user, tenant); got != want {
			t.Errorf("md5 method, user %s: first request %s, want %s", user, got, want)
		}
	}
}

// firstAuthRequest starts up as user and returns the type of pgtenant's
// first message, then hangs up.
func firstAuthRequest(t testing.TB, p *Proxy, user, tenant string) string {
	t.Helper()
	nc := rawDial(t, p)
	defer nc.Close()
	rawSend(t, nc, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": tenant}})
	msg, err := pgproto3.NewFrontend(nc, nc).Receive()
	if err != nil {
		t.Fatalf("startup as %s: %v", user, err)
	}
	return fmt.Sprintf("%T", msg)
}

// TestAuthCleartext: auth-type password refuses a connection without TLS
// (28000) before asking for anything, unless AuthCleartextWithoutTLS.
func TestAuthCleartext(t *testing.T) {
	t.Parallel()
	const tenant = "auth_cleartext"
	createTenant(t, tenant)
	file := newUserList(t, map[string]string{
		"hank": "hank-secret",
		"iris": scramVerifier(t, "iris-secret"),
		"jack": auth.MD5Hash("jack", "jack-secret"),
	})
	cleartext := func(c *config.Config) { c.AuthType = config.AuthPassword }

	t.Run("refused without TLS", func(t *testing.T) {
		p := startProxy(t, withAuthFile(file), cleartext)
		const msg = "password authentication requires an encrypted connection"
		failPsql(t, p, "hank", "hank-secret", tenant, "FATAL:  "+msg)
		for _, user := range []string{"hank", "nobody"} {
			pe := failPgx(t, p, user, "hank-secret", tenant)
			if pe.Severity != "FATAL" || pe.Code != "28000" || pe.Message != msg {
				t.Errorf("as %s: %s %s %q, want FATAL 28000 %q", user, pe.Severity, pe.Code, pe.Message, msg)
			}
		}
		// Refused before pgtenant asks for the password: its first
		// message is the error.
		if got := firstAuthRequest(t, p, "hank", tenant); got != "*pgproto3.ErrorResponse" {
			t.Errorf("first message %s, want the ErrorResponse", got)
		}
	})

	t.Run("allowed with AuthCleartextWithoutTLS", func(t *testing.T) {
		p := startProxy(t, withAuthFile(file), cleartext, func(c *config.Config) { c.AuthCleartextWithoutTLS = true })
		for _, u := range []struct{ user, password string }{
			{"hank", "hank-secret"}, {"iris", "iris-secret"}, {"jack", "jack-secret"},
		} {
			loginPsql(t, p, u.user, u.password, tenant)
			loginPgx(t, p, u.user, u.password, tenant)
			wantPasswordFailed(t, failPgx(t, p, u.user, "wrong", tenant), u.user)
		}
		failPsql(t, p, "hank", "wrong", tenant, `FATAL:  password authentication failed for user "hank"`)
		wantPasswordFailed(t, failPgx(t, p, "nobody", "hank-secret", tenant), "nobody")
		if got := firstAuthRequest(t, p, "hank", tenant); got != "*pgproto3.AuthenticationCleartextPassword" {
			t.Errorf("first message %s, want AuthenticationCleartextPassword", got)
		}
	})
}

// TestAuthFailureNeverReachesBackend: failed logins open no backend
// connection and leave nothing in PostgreSQL's log. The pool logs in as a
// role of its own, so its connections can be counted in pg_stat_activity;
// a successful login at the end shows that the count does see them.
func TestAuthFailureNeverReachesBackend(t *testing.T) {
	t.Parallel()
	const (
		tenant   = "auth_nothing"
		poolRole = "pgt_auth_pool"
		unknown  = "pgt_no_such_user_4f1c"
	)
	createTenant(t, tenant)
	ensureRole(t, poolRole, "LOGIN SUPERUSER")
	file := newUserList(t, map[string]string{"kate": scramVerifier(t, "kate-secret"), "liam": auth.MD5Hash("liam", "liam-secret")})
	backend := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", pg.Host, pg.Port, poolRole, backendDB)
	p := startProxy(t, withAuthFile(file), func(c *config.Config) { c.Backend = backend })
	md5 := startProxy(t, withAuthFile(file), func(c *config.Config) { c.Backend = backend; c.AuthType = config.AuthMD5 })

	d := direct(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poolConns := func() int {
		t.Helper()
		var n int
		err := d.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'pgtenant'", poolRole).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	logBefore := len(pg.ServerLog())
	before := poolConns()

	failPsql(t, p, "kate", "wrong", tenant, "password authentication failed")
	failPsql(t, p, unknown, "kate-secret", tenant, "password authentication failed")
	wantPasswordFailed(t, failPgx(t, p, "kate", "wrong", tenant), "kate")
	wantPasswordFailed(t, failPgx(t, p, unknown, "wrong", tenant), unknown)
	scramWire(t, p, unknown, tenant)
	wantPasswordFailed(t, failPgx(t, md5, "liam", "wrong", tenant), "liam")
	wantPasswordFailed(t, failPgx(t, md5, unknown, "wrong", tenant), unknown)
	failPsql(t, md5, "liam", "wrong", tenant, "password authentication failed")

	if after := poolConns(); after != before {
		t.Errorf("pool connections went from %d to %d during failed logins", before, after)
	}
	serverLog := pg.ServerLog()[logBefore:]
	// Only strings of this test: other tests share the server and its log.
	for _, s := range []string{unknown, `"kate"`, `"liam"`, "authentication failed"} {
		if strings.Contains(serverLog, s) {
			t.Errorf("PostgreSQL's log mentions %q after failed logins through pgtenant:\n%s", s, serverLog)
		}
	}

	// The count does see the pool: a good login checks a connection out.
	loginPgx(t, p, "kate", "kate-secret", tenant)
	if after := poolConns(); after <= before {
		t.Errorf("pool connections %d after a successful login, want more than %d: the count does not see the pool", after, before)
	}
}

// TestAuthFileReload: a user added to the auth file can log in after a
// reload; a broken file on reload is reported and keeps the users in force.
func TestAuthFileReload(t *testing.T) {
	t.Parallel()
	const tenant = "auth_reload"
	createTenant(t, tenant)
	dir := t.TempDir()
	file := filepath.Join(dir, "userlist.txt")
	users := map[string]string{"mona": scramVerifier(t, "mona-secret")}
	writeUserList(t, file, users)
	p := startProxy(t, withAuthFile(file))

	loginPgx(t, p, "mona", "mona-secret", tenant)
	wantPasswordFailed(t, failPgx(t, p, "ned", "ned-secret", tenant), "ned")

	users["ned"] = "ned-secret"
	writeUserList(t, file, users)
	p.Reload(t)
	eventually(t, 10*time.Second, "ned to log in after the reload", func() bool {
		conn, err := connectAs(p, "ned", "ned-secret", tenant)
		if err != nil {
			if sqlState(err) != "28P01" {
				t.Fatalf("ned before the reload took effect: %v", err)
			}
			return false
		}
		conn.Close(context.Background())
		return true
	})
	loginPsql(t, p, "ned", "ned-secret", tenant)
	loginPgx(t, p, "mona", "mona-secret", tenant)

	// A broken file: an added user and a bad line. The reload fails, says
	// which line, and the users read before stay in force.
	broken := `"mona" "mona-secret"` + "\n" + `"olga" "olga-secret"` + "\n" + `this is not a userlist line` + "\n"
	if err := os.WriteFile(file, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Reload(t)
	eventually(t, 10*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.Logs(), `msg="reload failed; keeping what was read before"`)
	})
	if logs := p.Logs(); !strings.Contains(logs, "line 3") {
		t.Errorf("the failed reload's log does not name line 3:\n%s", logs)
	}
	loginPgx(t, p, "mona", "mona-secret", tenant)
	loginPsql(t, p, "ned", "ned-secret", tenant)
	wantPasswordFailed(t, failPgx(t, p, "mona", "mona-secret-from-broken-file", tenant), "mona")
	wantPasswordFailed(t, failPgx(t, p, "olga", "olga-secret", tenant), "olga")
}

// authQueryFunction is auth/doc.go's lookup function and grants, word for
// word.
const authQueryFunction = `
CREATE SCHEMA IF NOT EXISTS pgtenant;

CREATE OR REPLACE FUNCTION pgtenant.user_secret(p_user text)
RETURNS TABLE (rolname text, rolpassword text)
LANGUAGE sql STABLE STRICT SECURITY DEFINER
-- A SECURITY DEFINER function must not trust the caller's search_path.
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.rolname::text,
           CASE WHEN a.rolvaliduntil < now() THEN NULL
                ELSE a.rolpassword END
      FROM pg_catalog.pg_authid a
     WHERE a.rolname = p_user
       AND a.rolcanlogin
       AND NOT a.rolsuper   -- superusers do not log in through the proxy
$$;

REVOKE ALL ON FUNCTION pgtenant.user_secret(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgtenant TO pgtenant_proxy;
GRANT EXECUTE ON FUNCTION pgtenant.user_secret(text) TO pgtenant_proxy;
`

// TestAuthQuery: the auth query through the SECURITY DEFINER function of
// auth/doc.go, run by a proxy whose backend role (pgtenant_proxy) is not a
// superuser and cannot read pg_authid; then an auth file and the query
// together, the file first.
func TestAuthQuery(t *testing.T) {
	t.Parallel()
	const tenant = "auth_query"
	createTenant(t, tenant)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ensureRole(t, "pgtenant_proxy", "LOGIN NOSUPERUSER")
	ensureRole(t, "pgt_aq_mallory", "LOGIN PASSWORD 'mallory-secret'")
	ensureRole(t, "pgt_aq_oscar", "LOGIN PASSWORD 'oscar-secret'")
	ensureRole(t, "pgt_aq_nologin", "NOLOGIN PASSWORD 'nologin-secret'")
	ensureRole(t, "pgt_aq_expired", "LOGIN PASSWORD 'expired-secret' VALID UNTIL '2001-01-01'")
	d := direct(t)
	if _, err := d.Exec(ctx, authQueryFunction); err != nil {
		t.Fatalf("auth/doc.go's function: %v", err)
	}
	// What the proxy's role needs besides: the registry, and the tenant's
	// schema for the test's queries.
	for _, sql := range []string{
		"GRANT SELECT ON ALL TABLES IN SCHEMA pgtenant TO pgtenant_proxy",
		"GRANT USAGE ON SCHEMA " + tenant + " TO pgtenant_proxy",
	} {
		if _, err := d.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	backend := fmt.Sprintf("host=%s port=%d user=pgtenant_proxy dbname=%s sslmode=disable", pg.Host, pg.Port, backendDB)

	// The proxy's role cannot read pg_authid, only call the function.
	pc, err := pgx.Connect(ctx, backend)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "SELECT rolpassword FROM pg_catalog.pg_authid"); sqlState(err) != "42501" {
		t.Fatalf("pgtenant_proxy reading pg_authid: %v, want 42501 permission denied", err)
	}
	var name, secret string
	if err := pc.QueryRow(ctx, auth.DefaultAuthQuery, "pgt_aq_mallory").Scan(&name, &secret); err != nil {
		t.Fatalf("pgtenant_proxy calling the function: %v", err)
	}
	if name != "pgt_aq_mallory" || !strings.HasPrefix(secret, "SCRAM-SHA-256$") {
		t.Fatalf("function returned %q, %q", name, secret)
	}

	t.Run("query only", func(t *testing.T) {
		p := startProxy(t, func(c *config.Config) {
			c.Backend = backend
			c.AuthQuery = auth.DefaultAuthQuery
			c.TenantAccess = config.AccessAll
		})
		loginPsql(t, p, "pgt_aq_mallory", "mallory-secret", tenant)
		loginPgx(t, p, "pgt_aq_mallory", "mallory-secret", tenant)
		loginPgx(t, p, "pgt_aq_oscar", "oscar-secret", tenant)
		failPsql(t, p, "pgt_aq_mallory", "wrong", tenant, `FATAL:  password authentication failed for user "pgt_aq_mallory"`)
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_mallory", "oscar-secret", tenant), "pgt_aq_mallory")
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_nobody", "mallory-secret", tenant), "pgt_aq_nobody")
		// Roles the function leaves out fail like unknown users.
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_nologin", "nologin-secret", tenant), "pgt_aq_nologin")
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_expired", "expired-secret", tenant), "pgt_aq_expired")
		wantPasswordFailed(t, failPgx(t, p, "postgres", "", tenant), "postgres")
		// A user name is data, never SQL.
		wantPasswordFailed(t, failPgx(t, p, "x') OR true --", "mallory-secret", tenant), "x') OR true --")
		// A password change counts at once: nothing is cached.
		ensureRole(t, "pgt_aq_oscar", "PASSWORD 'oscar-new'")
		loginPgx(t, p, "pgt_aq_oscar", "oscar-new", tenant)
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_oscar", "oscar-secret", tenant), "pgt_aq_oscar")
	})

	t.Run("file first, then query", func(t *testing.T) {
		file := newUserList(t, map[string]string{
			"pgt_aq_mallory": "mallory-from-file",
			"pia":            scramVerifier(t, "pia-secret"),
		})
		p := startProxy(t, withAuthFile(file), func(c *config.Config) {
			c.Backend = backend
			c.AuthQuery = auth.DefaultAuthQuery
		})
		loginPgx(t, p, "pgt_aq_mallory", "mallory-from-file", tenant)
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_mallory", "mallory-secret", tenant), "pgt_aq_mallory")
		loginPsql(t, p, "pia", "pia-secret", tenant)
		loginPgx(t, p, "pgt_aq_oscar", "oscar-new", tenant)
		loginPsql(t, p, "pgt_aq_oscar", "oscar-new", tenant)
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_oscar", "wrong", tenant), "pgt_aq_oscar")
		wantPasswordFailed(t, failPgx(t, p, "pgt_aq_nobody", "pia-secret", tenant), "pgt_aq_nobody")
	})
}

// TestAuthLimiter: once an address has had the Limiter's threshold of wrong
// passwords (5), its next attempt is delayed, and pgtenant says so in its
// log; other addresses are not; a success lifts the delay. The log line is
// written before the delay starts, and each attempt here waits for the
// previous one's answer, so nothing depends on timing.
func TestAuthLimiter(t *testing.T) {
	t.Parallel()
	const tenant = "auth_limiter"
	createTenant(t, tenant)
	file := newUserList(t, map[string]string{"quinn": scramVerifier(t, "quinn-secret")})
	p := startProxy(t, withAuthFile(file))

	attacker, bystander := freshLoopback(), freshLoopback()
	delayed := func(a *net.TCPAddr) int {
		return strings.Count(p.Logs(),
			`msg="authentication attempt delayed after repeated failures" addr=`+a.IP.String()+"/32 ")
	}
	fail := func(from *net.TCPAddr) {
		t.Helper()
		conn, err := connectFrom(p, from, "quinn", "wrong", tenant)
		if err == nil {
			conn.Close(context.Background())
			t.Fatal("a wrong password logged in")
		}
		if sqlState(err) != "28P01" {
			t.Fatalf("wrong password: %v, want 28P01", err)
		}
	}
	login := func(from *net.TCPAddr) {
		t.Helper()
		conn, err := connectFrom(p, from, "quinn", "quinn-secret", tenant)
		if err != nil {
			t.Fatalf("login from %s: %v", from.IP, err)
		}
		conn.Close(context.Background())
	}

	for i := range auth.DefaultLimiterThreshold {
		fail(attacker)
		if n := delayed(attacker); n != 0 {
			t.Fatalf("after %d failures: %d delayed attempts, want none below the threshold", i+1, n)
		}
	}
	fail(attacker) // the threshold reached: this one waits
	if n := delayed(attacker); n != 1 {
		t.Fatalf("attempt after %d failures: %d delayed attempts logged, want 1\n%s", auth.DefaultLimiterThreshold, n, p.Logs())
	}
	if !strings.Contains(p.Logs(), "addr="+attacker.IP.String()+"/32 failures=5 delay=500ms") {
		t.Errorf("the delay line does not say 5 failures and 500ms:\n%s", p.Logs())
	}
	// Another address is not held back by the attacker's failures.
	login(bystander)
	fail(bystander)
	if n := delayed(bystander); n != 0 {
		t.Errorf("bystander delayed %d times", n)
	}
	// The right password still gets in, after its delay; then the address
	// is one failure short of the threshold and is not delayed.
	login(attacker)
	if n := delayed(attacker); n != 2 {
		t.Fatalf("%d delayed attempts, want 2", n)
	}
	login(attacker)
	if n := delayed(attacker); n != 2 {
		t.Errorf("after a success: %d delayed attempts, want still 2", n)
	}
	fail(attacker) // back at the threshold
	login(attacker)
	if n := delayed(attacker); n != 3 {
		t.Errorf("a failure after a success: %d delayed attempts, want 3 (the success must not wipe the record)", n)
	}
}

// TestAuthPgbenchConnectPerTransaction: pgbench -C opens a connection, and
// so runs a SCRAM exchange, for every transaction; none may fail.
func TestAuthPgbenchConnectPerTransaction(t *testing.T) {
	t.Parallel()
	const (
		tenant      = "auth_bench"
		clients     = 4
		txPerClient = 50
	)
	createTenant(t, tenant)
	file := newUserList(t, map[string]string{"bench": scramVerifier(t, "bench-secret")})
	p := startProxy(t, withAuthFile(file), func(c *config.Config) { c.LogLevel = "info" })
	env := append(cleanEnv(), "PGPASSWORD=bench-secret")
	host := []string{"-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", "bench"}

	out := runPgbench(t, env, append(append([]string{"-i", "-s", "1"}, host...), tenant)...)
	if !strings.Contains(out, "done in") {
		t.Fatalf("pgbench -i did not finish:\n%s", out)
	}
	out = runPgbench(t, env, append(append([]string{"-S", "-C", "-c", strconv.Itoa(clients), "-t", strconv.Itoa(txPerClient)}, host...), tenant)...)
	tps := checkPgbenchRun(t, "pgbench -S -C with scram-sha-256", out, clients, txPerClient)
	failed := pgbenchFailed.FindString(out)
	t.Logf("pgbench -S -C -c %d -t %d through pgtenant with scram-sha-256: %s; %s", clients, txPerClient, strings.TrimSpace(failed), tps)
	if n := strings.Count(p.Logs(), `msg="authentication failed"`); n != 0 {
		t.Errorf("%d failed authentications during the run", n)
	}
	// Every connection really authenticated: the wrong password fails.
	bad := append(cleanEnv(), "PGPASSWORD=wrong")
	cmd := exec.Command("pgbench", append(append([]string{"-S", "-C", "-c", "1", "-t", "1"}, host...), tenant)...)
	cmd.Env = bad
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), `password authentication failed for user "bench"`) {
		t.Errorf("pgbench with a wrong password: %v\n%s", err, out)
	}
}

// With auth-mock-secret set, an unknown user's made-up salt survives a
// restart, as a real user's stored salt does; without it, each process
// makes up its own, and comparing salts across a restart would tell
// unknown users from real ones.
func TestAuthMockSecretStableAcrossRestart(t *testing.T) {
	t.Parallel()
	const tenant = "auth_mock_secret"
	createTenant(t, tenant)
	file := newUserList(t, map[string]string{"alice": scramVerifier(t, "alice-secret")})
	withSecret := func(c *config.Config) { c.AuthMockSecret = "stable-test-secret" }

	first := startProxy(t, withAuthFile(file), withSecret)
	before := scramWire(t, first, "nobody_here", tenant).salt
	first.Stop(t)
	second := startProxy(t, withAuthFile(file), withSecret)
	if after := scramWire(t, second, "nobody_here", tenant).salt; after != before {
		t.Errorf("with a mock secret, an unknown user's salt changed across a restart: %q, then %q", before, after)
	}
	random := startProxy(t, withAuthFile(file))
	if other := scramWire(t, random, "nobody_here", tenant).salt; other == before {
		t.Errorf("a proxy without the secret showed the same salt %q: the salt is not keyed by the secret", other)
	}
}
