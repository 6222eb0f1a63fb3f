package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startTimeout bounds each test's Start; initdb alone takes a second or two.
const startTimeout = 2 * time.Minute

// syncBuffer is a bytes.Buffer safe for the log copy goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startCluster starts a cluster for t, stops it when t ends, and prints the
// server log if t failed.
func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", c.ServerLog())
		}
	})
	return c
}

func connect(t *testing.T, ctx context.Context, connString string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %q: %v", connString, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartCreateDatabaseStop(t *testing.T) {
	var serverLog syncBuffer
	c := startCluster(t, Options{
		Settings: map[string]string{"work_mem": "8MB", "application_name": "it's cluster_test"},
		Log:      &serverLog,
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if c.Host != "127.0.0.1" || c.User != "postgres" || c.Port <= 0 {
		t.Fatalf("cluster = host %q user %q port %d, want 127.0.0.1, postgres, a port", c.Host, c.User, c.Port)
	}

	conn := connect(t, ctx, c.DSN("postgres"))
	if v := queryString(t, ctx, conn, "select version()"); !strings.Contains(v, "PostgreSQL 15") {
		t.Errorf("version() = %q, want PostgreSQL 15", v)
	}
	for _, tc := range []struct{ setting, want string }{
		{"max_connections", "300"},
		{"fsync", "off"},
		{"listen_addresses", "127.0.0.1"},
		{"unix_socket_directories", c.Dir},
		{"work_mem", "8MB"},
		{"application_name", "it's cluster_test"},
		{"server_encoding", "UTF8"},
	} {
		// application_name is the connection's own (pgx sets none), so it
		// shows the server default from postgresql.conf.
		if got := queryString(t, ctx, conn, "show "+tc.setting); got != tc.want {
			t.Errorf("show %s = %q, want %q", tc.setting, got, tc.want)
		}
	}

	// A name that needs quoting everywhere: in SQL, in a DSN and in a URL.
	const dbname = `tenant "acme" o'brien/1`
	if err := c.CreateDatabase(ctx, dbname); err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	for _, connString := range []string{c.DSN(dbname), c.URL(dbname)} {
		tconn := connect(t, ctx, connString)
		if got := queryString(t, ctx, tconn, "select current_database()"); got != dbname {
			t.Errorf("via %q: current_database() = %q, want %q", connString, got, dbname)
		}
		tconn.Close(ctx)
	}
	if err := c.CreateDatabase(ctx, dbname); err == nil {
		t.Errorf("CreateDatabase of an existing database: no error")
	}
	conn.Close(ctx)

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, stat %s: %v, want not exist", c.Dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if log := c.ServerLog(); !strings.Contains(log, "database system is ready to accept connections") {
		t.Errorf("ServerLog after Stop lacks the ready line:\n%s", log)
	}
	if log := serverLog.String(); !strings.Contains(log, "database system is ready to accept connections") {
		t.Errorf("Options.Log copy lacks the ready line:\n%s", log)
	}
}

func TestTwoClustersAtOnce(t *testing.T) {
	a := startCluster(t, Options{MaxConnections: 20})
	b := startCluster(t, Options{MaxConnections: 20})
	if a.Port == b.Port || a.Dir == b.Dir {
		t.Fatalf("clusters share port %d or directory %s", a.Port, a.Dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []*Cluster{a, b} {
		conn := connect(t, ctx, c.URL("postgres"))
		if got := queryString(t, ctx, conn, "show max_connections"); got != "20" {
			t.Errorf("port %d: max_connections = %s, want 20", c.Port, got)
		}
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"missing binaries", Options{BinDir: t.TempDir()}, "install PostgreSQL 15"},
		{"managed setting", Options{Settings: map[string]string{"port": "5432"}}, "managed by the cluster"},
		{"bad setting name", Options{Settings: map[string]string{"work mem": "8MB"}}, "not a PostgreSQL parameter name"},
		{"line break in value", Options{Settings: map[string]string{"work_mem": "8MB\nfsync = on"}}, "line break"},
		{"negative max connections", Options{MaxConnections: -1}, "MaxConnections"},
		{"TLS certificate without key", Options{TLSCertPEM: []byte("cert")}, "set both or neither"},
		{"TLS key without certificate", Options{TLSKeyPEM: []byte("key")}, "set both or neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Start(ctx, tc.opts)
			if err == nil {
				c.Stop()
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestStartMissingBinariesIsErrNotInstalled(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	_, err := Start(context.Background(), Options{})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Start with an empty %s: %v, want ErrNotInstalled", BinDirEnv, err)
	}
}

func TestStartFailureRemovesDirAndReportsLog(t *testing.T) {
	// An unknown parameter passes checkSettings but makes the postmaster
	// exit at start-up, after initdb: Start must clean up and say why.
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	_, err := Start(ctx, Options{Settings: map[string]string{"no_such_parameter": "1"}})
	if err == nil {
		t.Fatal("Start with an unknown parameter succeeded")
	}
	if !strings.Contains(err.Error(), "no_such_parameter") {
		t.Errorf("Start error lacks the server log's complaint:\n%v", err)
	}
	// The server's complaint names its postgresql.conf, inside the cluster
	// directory; other packages' tests may be creating theirs meanwhile, so
	// look for this one only.
	dir := regexp.MustCompile(`/\S*pgtenant-pg-[0-9]+`).FindString(err.Error())
	if dir == "" {
		t.Fatalf("Start error names no cluster directory:\n%v", err)
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("failed Start left %s behind (stat: %v)", dir, serr)
	}
}

func TestStartRetriesWhenPortIsTaken(t *testing.T) {
	// Hold a port, and make Start's first pick that port, as if another
	// process had bound it between the probe and the postmaster's bind.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	c := startCluster(t, Options{pickPort: func() (int, error) {
		picks++
		if picks == 1 {
			return takenPort, nil
		}
		return freePort()
	}})
	if c.Port == takenPort || picks != 2 {
		t.Fatalf("Port = %d after %d picks, want a port other than %d after 2", c.Port, picks, takenPort)
	}
	if log := c.ServerLog(); !strings.Contains(log, "Address already in use") {
		t.Errorf("server log does not show the lost port:\n%s", log)
	}
}

func TestDSNAndURLQuoting(t *testing.T) {
	c := &Cluster{Host: "127.0.0.1", Port: 5433, User: "postgres"}
	for _, tc := range []struct{ db, dsn, url string }{
		{"app", "host=127.0.0.1 port=5433 user=postgres dbname=app sslmode=disable",
			"postgres://postgres@127.0.0.1:5433/app?sslmode=disable"},
		{"a b", "host=127.0.0.1 port=5433 user=postgres dbname='a b' sslmode=disable",
			"postgres://postgres@127.0.0.1:5433/a%20b?sslmode=disable"},
		{`o'b\c`, `host=127.0.0.1 port=5433 user=postgres dbname='o\'b\\c' sslmode=disable`,
			"postgres://postgres@127.0.0.1:5433/o%27b%5Cc?sslmode=disable"},
	} {
		if got := c.DSN(tc.db); got != tc.dsn {
			t.Errorf("DSN(%q) = %q, want %q", tc.db, got, tc.dsn)
		}
		if got := c.URL(tc.db); got != tc.url {
			t.Errorf("URL(%q) = %q, want %q", tc.db, got, tc.url)
		}
	}
}

// TestStartWithTLS: a cluster started with a certificate from a test CA
// serves TLS that verify-full accepts for the certificate's names, still
// serves clients without TLS, refuses verification against another CA, and
// keeps the key as PostgreSQL demands (0600, owned by the server's user).
func TestStartWithTLS(t *testing.T) {
	ca, err := NewCA("pgtenant cluster test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, Options{TLSCertPEM: leaf.CertPEM, TLSKeyPEM: leaf.KeyPEM})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	const sslQuery = "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()"
	for _, host := range []string{"localhost", "127.0.0.1"} {
		dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=verify-full sslrootcert=%s", host, c.Port, c.User, caFile)
		if got := queryString(t, ctx, connect(t, ctx, dsn), sslQuery); got != "true" {
			t.Errorf("verify-full to %s: ssl = %s, want true", host, got)
		}
	}
	if got := queryString(t, ctx, connect(t, ctx, c.DSN("postgres")), sslQuery); got != "false" {
		t.Errorf("sslmode=disable: ssl = %s, want false", got)
	}

	other, err := NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherFile, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=localhost port=%d user=%s dbname=postgres sslmode=verify-full sslrootcert=%s", c.Port, c.User, otherFile))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("verify-full against another CA succeeded")
	}
	if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("verify-full against another CA: %v, want an unknown authority error", err)
	}

	key, err := os.Stat(filepath.Join(c.Dir, "data", tlsKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := key.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode %v, want 0600", mode)
	}
	if st, ok := key.Sys().(*syscall.Stat_t); ok && c.run.runuser != "" && int(st.Uid) != c.run.uid {
		t.Errorf("key file owned by uid %d, want the server user's %d", st.Uid, c.run.uid)
	}
}

// TestRestart: Restart in either mode brings the server back on the same
// port with what was committed; connections open across it are lost, and a
// transaction open across it is rolled back.
func TestRestart(t *testing.T) {
	// The cluster's default synchronous_commit=off lets an immediate stop
	// lose the last commits: the WAL of a commit must reach the OS before
	// the server is killed for the commit to survive it.
	c := startCluster(t, Options{Settings: map[string]string{"synchronous_commit": "on"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	setup := connect(t, ctx, c.DSN("postgres"))
	if _, err := setup.Exec(ctx, "create table kept (v text)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)
	port := c.Port
	for _, mode := range []ShutdownMode{ShutdownFast, ShutdownImmediate} {
		conn := connect(t, ctx, c.DSN("postgres"))
		if _, err := conn.Exec(ctx, "insert into kept values ($1)", string(mode)); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "insert into kept values ('open across the restart')"); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(ctx, mode); err != nil {
			t.Fatalf("Restart(%s): %v", mode, err)
		}
		if c.Port != port {
			t.Fatalf("Restart(%s): port %d, was %d", mode, c.Port, port)
		}
		if err := tx.Commit(ctx); err == nil {
			t.Errorf("Restart(%s): a transaction open across it committed", mode)
		}
		after := connect(t, ctx, c.DSN("postgres"))
		got := queryString(t, ctx, after, "select string_agg(v, ',' order by v) from kept")
		want := "fast"
		if mode == ShutdownImmediate {
			want = "fast,immediate"
		}
		if got != want {
			t.Errorf("after Restart(%s): kept = %q, want %q", mode, got, want)
		}
		after.Close(ctx)
	}
	if err := c.Restart(ctx, "smart"); err == nil {
		t.Error("Restart(smart): no error")
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, ShutdownFast); err == nil {
		t.Error("Restart after Stop: no error")
	}
	if log := c.ServerLog(); strings.Count(log, "database system is ready to accept connections") != 3 {
		t.Errorf("server log does not show three starts:\n%s", log)
	}
}
