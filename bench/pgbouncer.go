package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// pgbouncerPath is where Debian's pgbouncer package puts the binary;
	// /usr/sbin is not on a non-root PATH.
	pgbouncerPath = "/usr/sbin/pgbouncer"
	// pgbouncerOSUser runs PgBouncer when the harness is root: PgBouncer
	// refuses to run as root.
	pgbouncerOSUser = "postgres"
	// pgbouncerStopTimeout bounds the wait for PgBouncer to exit after
	// SIGTERM; past it, SIGKILL.
	pgbouncerStopTimeout = 10 * time.Second
)

// findPgbouncer returns the pgbouncer binary.
func findPgbouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(pgbouncerPath); err == nil {
		return pgbouncerPath, nil
	}
	return "", errors.New("pgbouncer is not installed (run `make deps`, or leave pgbouncer out of --targets)")
}

// pgbouncer is a PgBouncer process the harness started.
type pgbouncer struct {
	dir  string
	port int
	cmd  *exec.Cmd
	log  *os.File
	done chan error
}

// pgbouncerIni is PgBouncer's configuration for the job, as its users write
// it for transaction pooling of a schema-per-tenant database:
//
//   - one database entry per tenant, each logging in to the same database
//     and setting its schema with connect_query, which runs once per server
//     connection: a server connection of entry t001 serves only t001's
//     clients, so its search_path never needs resetting;
//   - the bench tenant's entry gets default_pool_size (the pool size every
//     pooler gets); the many-tenants entries get pool_size=2 each, as one
//     does to keep hundreds of tenants under max_connections;
//   - auth_type=trust on loopback as for every target; the auth_file lists
//     the client user, which trust still requires;
//   - ignore_startup_parameters for what pgbench and drivers send
//     (extra_float_digits, options);
//   - per-connection log lines off, as pgtenant's are at log level warn.
//
// server_reset_query stays at its default, which transaction pooling does
// not run.
func (e *env) pgbouncerIni(port int, logPath, pidPath, authPath string, a pgbouncerAuth) string {
	b := e.pooled()
	entry := func(name, role, schema string, poolSize int) string {
		s := fmt.Sprintf("%s = host=%s port=%d dbname=%s user=%s connect_query='SET search_path TO %s'",
			name, b.host, b.port, b.database, e.loginRole(role), schema)
		if b.password != "" {
			s += " password=" + b.password
		}
		if poolSize > 0 {
			s += " pool_size=" + strconv.Itoa(poolSize)
		}
		return s + "\n"
	}
	var ini strings.Builder
	ini.WriteString("[databases]\n")
	if a.databases != "" {
		ini.WriteString(a.databases)
	} else if a.role != "" {
		ini.WriteString(entry(benchTenant, a.role, benchTenant, 0))
	} else {
		ini.WriteString(entry(benchTenant, rolePgbouncer, benchTenant, 0))
		for _, t := range e.tenants {
			ini.WriteString(entry(t, rolePgbouncerTenants, t, tenantPoolSize))
		}
	}
	fmt.Fprintf(&ini, `
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = %s
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = %d
ignore_startup_parameters = extra_float_digits,options
log_connections = 0
log_disconnections = 0
logfile = %s
pidfile = %s
`, port, a.authType(), authPath, clientUser, e.o.PoolSize, max(10000, e.o.IdleClients+1000), logPath, pidPath)
	return ini.String()
}

// pgbouncerAuth is how a PgBouncer authenticates clients. The zero value is
// the shared PgBouncer of most scenarios: trust, with every tenant's entry.
type pgbouncerAuth struct {
	typ      string // auth_type; "" is trust
	userlist string // auth_file contents; "" lists the client with no password
	// role, when set, is the only database entry's login role (the bench
	// tenant's), so the SCRAM PgBouncer's server connections are counted
	// apart and no tenant entries are made.
	role     string
	password string // the client's password, for the readiness probe
	// databases, when set, is the whole [databases] section instead of the
	// entries above: the crowd scenario's PgBouncer pools a cluster of its
	// own.
	databases string
	// probe is the database the readiness probe logs in to; "" is bench.
	probe string
}

func (a pgbouncerAuth) authType() string {
	if a.typ == "" {
		return "trust"
	}
	return a.typ
}

// startPgbouncer starts a PgBouncer on a free loopback port, in a temporary
// directory of its own, and returns once it serves a client of the bench
// tenant.
func (e *env) startPgbouncer(ctx context.Context, a pgbouncerAuth) (*pgbouncer, error) {
	dir, err := os.MkdirTemp(e.tmp, "pgbouncer-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := splitAddr(addr)
	b := &pgbouncer{dir: dir, port: port, done: make(chan error, 1)}
	ini := filepath.Join(dir, "pgbouncer.ini")
	auth := filepath.Join(dir, "userlist.txt")
	files := map[string]string{
		ini:  e.pgbouncerIni(port, filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"), auth, a),
		auth: fmt.Sprintf("%q \"\"\n", clientUser),
	}
	if a.userlist != "" {
		files[auth] = a.userlist
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	// PgBouncer's own open-files limit must cover the idle scenario's
	// clients plus its server connections; sh raises it, then becomes
	// pgbouncer.
	script := fmt.Sprintf(`ulimit -n %d 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$1"`, e.nofile)
	args := []string{"-c", script, e.pgbouncerBin, ini}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		if err := chownTree(dir, pgbouncerOSUser); err != nil {
			return nil, err
		}
		cmd = exec.Command("runuser", append([]string{"-u", pgbouncerOSUser, "--", "sh"}, args...)...)
	} else {
		cmd = exec.Command("sh", args...)
	}
	cmd.Dir = dir
	cmd.Env = append(pgEnv(), "LC_ALL=C")
	// Its stderr is a file this process opened, so PgBouncer can write it
	// whatever user it runs as.
	if b.log, err = os.Create(filepath.Join(e.tmp, filepath.Base(dir)+".stderr")); err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = b.log, b.log
	// Its own process group: a Ctrl-C for the harness is the harness's to
	// handle, and stop signals PgBouncer by pid.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.log.Close()
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	b.cmd = cmd
	go func() { b.done <- cmd.Wait() }()
	e.stops = append(e.stops, b.stop)
	if err := waitReady(ctx, addr, cmp.Or(a.probe, benchTenant), a.password, b.done); err != nil {
		return nil, fmt.Errorf("pgbouncer: %w\n%s", err, b.logTail())
	}
	return b, nil
}

// pid returns PgBouncer's own pid (runuser and sh stand between it and
// this process) from its pidfile.
func (b *pgbouncer) pid() (int, error) {
	data, err := os.ReadFile(filepath.Join(b.dir, "pgbouncer.pid"))
	if err != nil {
		return 0, fmt.Errorf("pgbouncer pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// cpuPID is pid for cpuMeter: 0 when the pidfile cannot be read.
func (b *pgbouncer) cpuPID() int {
	pid, err := b.pid()
	if err != nil {
		return 0
	}
	return pid
}

// stop ends PgBouncer: SIGTERM (immediate shutdown), then SIGKILL if it
// lingers.
func (b *pgbouncer) stop() {
	if b.cmd == nil {
		return
	}
	if pid, err := b.pid(); err == nil {
		syscall.Kill(pid, syscall.SIGTERM)
	} else {
		b.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-b.done:
	case <-time.After(pgbouncerStopTimeout):
		if pid, err := b.pid(); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
	b.log.Close()
}

// logTail is the end of PgBouncer's log and stderr, for an error message.
func (b *pgbouncer) logTail() string {
	var s string
	for _, f := range []string{filepath.Join(b.dir, "pgbouncer.log"), b.log.Name()} {
		if data, err := os.ReadFile(f); err == nil {
			s += string(data)
		}
	}
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// chownTree gives dir and everything in it to OS user name.
func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("pgbouncer runs as OS user %q when the harness is root: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// pgbouncerVersion is the first line of `pgbouncer --version`.
func pgbouncerVersion(bin string) string {
	if bin == "" {
		return ""
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}
