package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// DefaultBinDir is where Debian's postgresql-15 package puts initdb,
	// pg_ctl and postgres.
	DefaultBinDir = "/usr/lib/postgresql/15/bin"
	// BinDirEnv names the environment variable that overrides DefaultBinDir
	// when Options.BinDir is empty.
	BinDirEnv = "PGTENANT_PG_BIN"
	// DefaultMaxConnections is max_connections when Options.MaxConnections
	// is zero: enough for a pool under test plus the test's own connections.
	DefaultMaxConnections = 300
	// DefaultStartTimeout bounds Start when its context has no deadline.
	DefaultStartTimeout = 60 * time.Second
	// StopTimeout bounds Stop, which takes no context.
	StopTimeout = 30 * time.Second

	// superuser is the database superuser initdb creates, and also the OS
	// user the server runs as when this process is root.
	superuser = "postgres"
	// startAttempts is how many ports Start tries: between closing the probe
	// listener and the postmaster's bind, another process may take the port.
	startAttempts = 5
	// readyPollInterval is the pause between two connection attempts while
	// waiting for the server to accept connections.
	readyPollInterval = 20 * time.Millisecond
	// readyConnectTimeout bounds one of those connection attempts.
	readyConnectTimeout = 2 * time.Second
	// logDrainTimeout bounds the wait for the server's last log lines after it
	// has been told to stop; past it the copy is cut off.
	logDrainTimeout = 5 * time.Second
	// logTailBytes is how much of the server log a Start error carries.
	logTailBytes = 4 << 10
)

// ErrNotInstalled is returned (wrapped) by Start when the PostgreSQL server
// binaries are not in the bin directory.
var ErrNotInstalled = errors.New("PostgreSQL server binaries not found")

// errPortInUse marks a start attempt that lost its port to another process.
var errPortInUse = errors.New("port already in use")

// Options configures Start. The zero value is a working configuration.
type Options struct {
	// BinDir holds initdb, pg_ctl and postgres. Default: $PGTENANT_PG_BIN,
	// else DefaultBinDir.
	BinDir string
	// MaxConnections is the server's max_connections (a count). Default:
	// DefaultMaxConnections.
	MaxConnections int
	// Settings are extra server settings, name to value, as `-c name=value`
	// would give them; they win over this package's defaults (fsync=off and
	// the like). port, listen_addresses, unix_socket_directories and
	// max_connections are managed by the cluster and rejected here.
	Settings map[string]string
	// Log, when set, receives a copy of the server log as it is written.
	// Default: none (the log is still kept; see Cluster.ServerLog).
	Log io.Writer
	// TLSCertPEM and TLSKeyPEM, both or neither, start the server with
	// ssl=on and this PEM certificate (chain) and private key, for example
	// a Leaf from a test CA. They are written into the data directory as
	// server.crt and server.key (the key 0600), owned by the server's OS
	// user, as PostgreSQL requires of its key file. Clients may then use
	// TLS or not: pg_hba's host lines match both. Default: no TLS.
	TLSCertPEM, TLSKeyPEM []byte

	// pickPort, when set, replaces freePort: the test seam for a port lost
	// between the probe and the postmaster's bind.
	pickPort func() (int, error)
}

// Cluster is a running throwaway server. Its fields are read-only.
type Cluster struct {
	// Dir is the temporary directory holding the data directory, the Unix
	// socket and server.log; Stop removes it.
	Dir string
	// Host is the loopback address the server listens on: "127.0.0.1".
	Host string
	// Port is the server's TCP port.
	Port int
	// User is the database superuser: "postgres", trusted without password.
	User string

	dataDir string
	run     *runner
	log     *serverLog

	mu       sync.Mutex // guards stopped and finalLog
	stopped  bool
	finalLog string // the server log, read just before Stop removed Dir
}

// Start creates and starts a throwaway PostgreSQL server, and returns once it
// accepts connections. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir := opts.BinDir
	if binDir == "" {
		binDir = os.Getenv(BinDirEnv)
	}
	if binDir == "" {
		binDir = DefaultBinDir
	}
	if err := checkBinaries(binDir); err != nil {
		return nil, err
	}
	maxConns := opts.MaxConnections
	if maxConns == 0 {
		maxConns = DefaultMaxConnections
	}
	if maxConns < 0 {
		return nil, fmt.Errorf("cluster: MaxConnections is %d, want a positive count or 0 for the default", maxConns)
	}
	if err := checkSettings(opts.Settings); err != nil {
		return nil, err
	}
	if (len(opts.TLSCertPEM) == 0) != (len(opts.TLSKeyPEM) == 0) {
		return nil, errors.New("cluster: TLSCertPEM and TLSKeyPEM go together: set both or neither")
	}
	run, err := newRunner(binDir)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}

	reapOrphans(ctx, run, os.TempDir())
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("cluster: create temporary directory: %w", err)
	}
	c := &Cluster{
		Dir:     dir,
		Host:    "127.0.0.1",
		User:    superuser,
		dataDir: filepath.Join(dir, "data"),
		run:     run,
	}
	// From here on every failure goes through c.abort, which stops whatever
	// was started and removes dir.
	if err := writeOwner(dir); err != nil {
		return nil, c.abort(err)
	}
	if err := run.chown(dir); err != nil {
		return nil, c.abort(err)
	}
	c.log, err = newServerLog(filepath.Join(dir, "server.log"), opts.Log)
	if err != nil {
		return nil, c.abort(err)
	}
	if err := c.initdb(ctx); err != nil {
		return nil, c.abort(err)
	}
	conf := serverSettings(dir, maxConns, opts.Settings)
	if len(opts.TLSCertPEM) > 0 {
		tlsConf, err := c.writeTLSFiles(opts.TLSCertPEM, opts.TLSKeyPEM)
		if err != nil {
			return nil, c.abort(err)
		}
		// First, so that the caller's Settings (ssl_min_protocol_version,
		// or even ssl=off) come later in the file and win.
		conf = append(tlsConf, conf...)
	}
	if err := appendConf(filepath.Join(c.dataDir, "postgresql.conf"), conf); err != nil {
		return nil, c.abort(err)
	}
	pickPort := opts.pickPort
	if pickPort == nil {
		pickPort = freePort
	}
	for attempt := 1; ; attempt++ {
		err := c.startServer(ctx, pickPort)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortInUse) || attempt == startAttempts {
			return nil, c.abort(err)
		}
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, c.abort(err)
	}
	return c, nil
}

// DSN returns a key=value connection string for dbname.
func (c *Cluster) DSN(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		c.Host, c.Port, dsnValue(c.User), dsnValue(dbname))
}

// URL returns a postgres:// connection URL for dbname.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(c.User),
		Host:     net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
		Path:     "/" + dbname,
		RawPath:  "/" + url.PathEscape(dbname),
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name; the name is quoted, so any string is
// taken literally.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("cluster: create database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("cluster: create database %q: %w", name, err)
	}
	return nil
}

// Stop shuts the server down and removes Dir. Calls after the first return
// nil.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	// Immediate mode: the data is thrown away, so skipping the shutdown
	// checkpoint costs nothing and saves time in every test.
	err := c.stopServer(ctx, ShutdownImmediate)
	// The postmaster's stderr is copied by goroutines that end when it and
	// its children have exited; wait for them so the log is complete and
	// Options.Log is not written after Stop returns.
	c.log.drain(logDrainTimeout)
	c.finalLog = c.log.read(0)
	if cerr := c.log.close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if rerr := os.RemoveAll(c.Dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("cluster: remove %s: %w", c.Dir, rerr))
	}
	return err
}

// ServerLog returns the server log so far, pg_ctl's own messages included.
// After Stop it returns the log as it was when the server stopped.
func (c *Cluster) ServerLog() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.finalLog
	}
	return c.log.read(0)
}

// initdb creates the data directory.
func (c *Cluster) initdb(ctx context.Context) error {
	cmd := c.run.command(ctx, c.Dir, "initdb",
		"--pgdata="+c.dataDir,
		"--username="+superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cluster: initdb: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ShutdownMode is how Restart stops the server: pg_ctl's --mode.
type ShutdownMode string

const (
	// ShutdownFast terminates every backend (each client is sent FATAL
	// 57P01), rolls back their transactions and writes a shutdown
	// checkpoint.
	ShutdownFast ShutdownMode = "fast"
	// ShutdownImmediate kills every server process at once, without a
	// checkpoint; the next start runs crash recovery. To a client it looks
	// like a crash.
	ShutdownImmediate ShutdownMode = "immediate"
)

// Restart stops the server in mode and starts it again on the same port
// and data directory, and returns once it accepts connections. Every
// connection open at the time is lost; what was committed before the stop
// is still there after it: in immediate mode only with synchronous_commit
// on (this package's default is off, which lets a crash lose the last
// commits; fsync=off is harmless, as the OS survives). It is for fault
// tests of clients and proxies that must ride out a server restart.
func (c *Cluster) Restart(ctx context.Context, mode ShutdownMode) error {
	if mode != ShutdownFast && mode != ShutdownImmediate {
		return fmt.Errorf("cluster: restart mode %q, want %q or %q", mode, ShutdownFast, ShutdownImmediate)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("cluster: restart of a stopped cluster")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	if err := c.stopServer(ctx, mode); err != nil {
		return fmt.Errorf("cluster: restart: %w", err)
	}
	// The port was this server's a moment ago; PostgreSQL binds with
	// SO_REUSEADDR, so connections still in TIME_WAIT do not keep it.
	if err := c.launch(ctx, c.Port); err != nil {
		return fmt.Errorf("cluster: restart: %w", err)
	}
	return c.waitReady(ctx)
}

// startServer starts the postmaster on a port that was free a moment ago. It
// returns an error wrapping errPortInUse when another process took the port
// first, after making sure no postmaster of this attempt is left running.
func (c *Cluster) startServer(ctx context.Context, pickPort func() (int, error)) error {
	port, err := pickPort()
	if err != nil {
		return err
	}
	logStart := c.log.size()
	err = c.launch(ctx, port)
	if err == nil {
		c.Port = port
		return nil
	}
	// pg_ctl may have given up (timeout, cancelled context) on a postmaster
	// that is still running: stop it before trying another port.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StopTimeout)
	defer cancel()
	stopErr := c.stopServer(stopCtx, ShutdownImmediate)
	c.log.drain(logDrainTimeout)
	attemptLog := c.log.read(logStart)
	if stopErr == nil && strings.Contains(attemptLog, "Address already in use") {
		return fmt.Errorf("cluster: start server on port %d: %w", port, errPortInUse)
	}
	return errors.Join(fmt.Errorf("cluster: start server on port %d: pg_ctl: %w", port, err), stopErr)
}

// launch runs pg_ctl start on port, with the server's output going to the
// log, and returns pg_ctl's error.
func (c *Cluster) launch(ctx context.Context, port int) error {
	w, err := c.log.attach()
	if err != nil {
		return err
	}
	// pg_ctl -w polls the postmaster.pid status itself and exits non-zero
	// as soon as the postmaster dies, so a lost port shows up at once. The
	// port goes on the command line rather than in postgresql.conf because
	// it changes from attempt to attempt.
	cmd := c.run.command(ctx, c.Dir, "pg_ctl", "start",
		"--pgdata="+c.dataDir,
		"--wait", "--timeout="+strconv.Itoa(secondsLeft(ctx)),
		"-o", "-p "+strconv.Itoa(port),
	)
	cmd.Stdout = w
	cmd.Stderr = w
	err = cmd.Run()
	// The postmaster inherited w; this process's copy is no longer needed,
	// and holding it would keep the log copy from ever seeing EOF.
	w.Close()
	return err
}

// TLS file names in the data directory; relative names in postgresql.conf
// are taken from the data directory.
const (
	tlsCertFile = "server.crt"
	tlsKeyFile  = "server.key"
)

// writeTLSFiles writes the server certificate and key into the data
// directory, owned by the server's OS user (PostgreSQL refuses a key file
// that is not its own, or that group or others can read), and returns the
// postgresql.conf lines that turn TLS on with them.
func (c *Cluster) writeTLSFiles(certPEM, keyPEM []byte) ([]string, error) {
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{tlsCertFile, certPEM, 0o644}, {tlsKeyFile, keyPEM, 0o600}} {
		path := filepath.Join(c.dataDir, f.name)
		if err := os.WriteFile(path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("cluster: write %s: %w", f.name, err)
		}
		// WriteFile's mode is filtered by the umask and ignored for an
		// existing file: set it outright.
		if err := os.Chmod(path, f.mode); err != nil {
			return nil, fmt.Errorf("cluster: chmod %s: %w", f.name, err)
		}
		if err := c.run.chown(path); err != nil {
			return nil, err
		}
	}
	return []string{
		"ssl = on",
		"ssl_cert_file = " + confQuote(tlsCertFile),
		"ssl_key_file = " + confQuote(tlsKeyFile),
	}, nil
}

// waitReady polls until a connection succeeds or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("cluster: parse own DSN: %w", err)
	}
	cfg.ConnectTimeout = readyConnectTimeout
	ticker := time.NewTicker(readyPollInterval)
	defer ticker.Stop()
	for {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: server on port %d did not accept connections: %w (last attempt: %v)",
				c.Port, ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// stopServer stops the postmaster, in mode, if one is running on the data
// directory.
func (c *Cluster) stopServer(ctx context.Context, mode ShutdownMode) error {
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	if _, err := os.Stat(pidFile); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	cmd := c.run.command(ctx, c.Dir, "pg_ctl", "stop",
		"--pgdata="+c.dataDir,
		"--mode="+string(mode),
		"--wait", "--timeout="+strconv.Itoa(secondsLeft(ctx)),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, serr := os.Stat(pidFile); errors.Is(serr, os.ErrNotExist) {
			return nil // it was already on its way out
		}
		return fmt.Errorf("cluster: pg_ctl stop: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// abort undoes a failed Start: it stops the server if one runs, removes Dir,
// and returns cause with the tail of the server log appended.
func (c *Cluster) abort(cause error) error {
	var tail string
	if c.log != nil {
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		if err := c.stopServer(ctx, ShutdownImmediate); err != nil {
			cause = errors.Join(cause, err)
		}
		c.log.drain(logDrainTimeout)
		tail = lastBytes(c.log.read(0), logTailBytes)
		c.log.close()
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		cause = errors.Join(cause, fmt.Errorf("cluster: remove %s: %w", c.Dir, err))
	}
	if strings.TrimSpace(tail) == "" {
		return cause
	}
	return fmt.Errorf("%w\n--- server log (tail) ---\n%s", cause, tail)
}

// freePort returns a loopback TCP port that was free when it looked.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cluster: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// secondsLeft converts ctx's remaining time to pg_ctl's whole-second timeout,
// rounding up so that pg_ctl never gives up before ctx does.
func secondsLeft(ctx context.Context) int {
	deadline, ok := ctx.Deadline()
	if !ok {
		return int(StopTimeout / time.Second)
	}
	return max(1, int(math.Ceil(time.Until(deadline).Seconds())))
}

// dsnValue quotes a key=value DSN value when it needs quoting.
func dsnValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n'\\=") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// lastBytes returns at most n bytes from the end of s, starting at a line
// boundary when one is within reach.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return s
}
