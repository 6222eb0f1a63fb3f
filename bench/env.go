package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

// Backend roles, one per target, so that pg_stat_activity tells whose
// server connections are whose: PgBouncer keeps idle server connections
// for minutes after a run, and every pooler's pool outlives the scenario
// that filled it. All are superusers of a throwaway cluster.
const (
	roleDirect   = "bench_direct"
	rolePgtenant = "bench_pgtenant"
	// rolePgtenantProcess is the role of pgtenant run as a process of its
	// own (many-tenants and idle scenarios), apart from the in-process one.
	rolePgtenantProcess  = "bench_pgtenant_process"
	rolePgbouncer        = "bench_pgbouncer"
	rolePgbouncerTenants = "bench_pgbouncer_tenants"
	rolePinOn            = "bench_pin_on"
	rolePinAlways        = "bench_pin_always"
	rolePinOff           = "bench_pin_off"
	rolePgtenantScram    = "bench_pgtenant_scram"
	rolePgbouncerScram   = "bench_pgbouncer_scram"
	// clientUser is the user name every pgbench client logs in to a pooler
	// with; poolers log in to PostgreSQL with their own role.
	clientUser = "postgres"
)

// Pin-cost targets: in-process pgtenants identical but for pinning. "pin
// on" has the defaults, which skip the pin when a backend's last holder was
// a client of the same tenant and settings; "pin always" pins at every
// checkout (config PinReuse off); "pin off" never pins (proxy.WithoutPin,
// which exists for this measurement only).
const (
	targetPinOn     = "pgtenant pin on"
	targetPinAlways = "pgtenant pin always"
	targetPinOff    = "pgtenant pin off"
)

var pinTargets = []string{targetPinOn, targetPinAlways, targetPinOff}

// SCRAM targets: a pgtenant and a PgBouncer of their own that authenticate
// clients with SCRAM-SHA-256 against the same verifier in a userlist, for
// the connect-per-transaction scenario with authentication. Both still log
// in to PostgreSQL as the other targets do; only the client leg changes.
const (
	targetScramPgtenant  = "pgtenant scram"
	targetScramPgbouncer = "pgbouncer scram"
	// scramPassword is the bench client's password on the SCRAM targets.
	scramPassword = "bench-scram-password"
)

var scramTargets = []string{targetScramPgtenant, targetScramPgbouncer}

const (
	setupTimeout = 10 * time.Minute
	// readyTimeout bounds the wait for a pooler the harness started to
	// accept a client.
	readyTimeout = 30 * time.Second
	// readyPoll is the pause between two readiness probes.
	readyPoll = 20 * time.Millisecond
)

// backendInfo is where PostgreSQL is and who the harness is there.
type backendInfo struct {
	host, user, password, database string
	port                           int
	// socketDir is the directory of PostgreSQL's unix socket, when the
	// harness knows it (its throwaway cluster).
	socketDir string
}

// pooled is where the poolers reach PostgreSQL: its unix socket when there
// is one and Options.BackendTCP is off, as a pooler on the database's host
// would be set up (pgtenant and PgBouncer alike). Clients reach every
// target, PostgreSQL directly included, over loopback TCP.
func (e *env) pooled() backendInfo {
	b := e.backend
	if b.socketDir != "" && !e.o.BackendTCP {
		b.host = b.socketDir
	}
	return b
}

// dsn is a key=value DSN for role (the admin user when empty) with extra
// key=value pairs appended.
func (b backendInfo) dsn(role string, extra ...string) string {
	if role == "" {
		role = b.user
	}
	parts := []string{
		"host=" + dsnQuote(b.host), "port=" + strconv.Itoa(b.port),
		"user=" + dsnQuote(role), "dbname=" + dsnQuote(b.database), "sslmode=disable",
	}
	if b.password != "" {
		parts = append(parts, "password="+dsnQuote(b.password))
	}
	return strings.Join(append(parts, extra...), " ")
}

func dsnQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n'\\=") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// target is one thing pgbench connects to.
type target struct {
	name string
	host string
	port int
	// database is the database name a client of tenant asks for.
	database func(tenant string) string
	// env is the extra environment a client of schema needs.
	env func(schema string) []string
	// role is the backend role whose connections are this target's; empty
	// when unknown (a target the harness did not start).
	role string
	// tenantRole, when set, replaces role in the many-tenants scenario:
	// PgBouncer's tenant entries, and the pgtenant process that scenario
	// runs, log in with a role of their own, so that the server connections
	// other scenarios left idle are not counted there.
	tenantRole string
	// external is true for a pooler given by flag.
	external bool
	// pid is the pooler's process, whose CPU the harness counts; nil or 0
	// when there is none to count (direct) or it is unknown (external).
	pid func() int
}

// cpuPID is t's process for cpuMeter, 0 when unknown.
func (t *target) cpuPID() int {
	if t.pid == nil {
		return 0
	}
	return t.pid()
}

// selfPID is the pid of an in-process pgtenant: this process's. The
// harness itself is idle while a run goes on (one pg_stat_activity poll
// every 100 ms), which is all its share of the count.
func selfPID() int { return os.Getpid() }

func (t *target) addr() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// tenantsRole is the role whose connections the many-tenants scenario
// counts for t.
func (t *target) tenantsRole() string {
	if t.tenantRole != "" {
		return t.tenantRole
	}
	return t.role
}

// env is everything a run needs, set up once.
type env struct {
	o       Options
	tmp     string
	nofile  int
	cl      *pgcluster.Cluster
	backend backendInfo
	admin   *pgx.Conn // setup and version queries
	poll    *pgx.Conn // the pg_stat_activity poller's own connection
	// roles says whether the per-target roles could be used.
	roles   bool
	targets map[string]*target
	tenants []string // many-tenants scenario: t001, t002, ...

	pgbouncerBin string
	bouncer      *pgbouncer // the shared one the harness started, if any
	// runs numbers pgbench runs, for their log file names.
	runs int
	// profiles numbers the CPU profile files (Options.CPUProfile).
	profiles int
	// crowd is the crowd scenario's cluster of its own; nil unless it runs.
	crowd *crowdEnv
	// mixedNext is the mixed scenario's next transaction; nil unless it
	// runs.
	mixedNext func() string

	stops []func()
}

// setUp starts or finds everything the selected scenarios need. On error it
// undoes what it did.
func setUp(ctx context.Context, o Options, scenarios []*scenario, nofile int) (_ *env, err error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	e := &env{o: o, nofile: nofile, targets: map[string]*target{}}
	defer func() {
		if err != nil {
			e.tearDown()
		}
	}()
	e.tmp, err = os.MkdirTemp("", "pgtenant-bench-")
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() { os.RemoveAll(e.tmp) })
	// PgBouncer runs as another OS user when the harness is root and must
	// reach its own directory inside this one.
	if err := os.Chmod(e.tmp, 0o755); err != nil {
		return nil, err
	}
	has := func(name string) bool {
		return slices.ContainsFunc(scenarios, func(s *scenario) bool { return s.name == name })
	}
	wants := func(t string) bool { return slices.Contains(o.Targets, t) }

	if wants(TargetPgbouncer) && o.PgbouncerAddr == "" {
		if e.pgbouncerBin, err = findPgbouncer(); err != nil {
			return nil, err
		}
	}
	if err := e.startBackend(ctx); err != nil {
		return nil, err
	}
	e.progress("setting up roles and pgbench data (scale %d) in schema %s", o.Scale, benchTenant)
	e.roles = e.createRoles(ctx)
	if _, _, err := router.CreateTenant(ctx, e.admin, benchTenant, ""); err != nil {
		return nil, err
	}
	if err := e.pgbenchInit(ctx, benchTenant, o.Scale); err != nil {
		return nil, err
	}
	if has("tenants") || has("mixed") {
		t0 := time.Now()
		if err := e.createTenants(ctx, o.Tenants); err != nil {
			return nil, err
		}
		e.progress("created %d tenant schemas with pgbench tables in %s", o.Tenants, time.Since(t0).Round(100*time.Millisecond))
	}

	if e.o.Isolation == config.IsolationRole {
		if err := e.isolateTenants(ctx); err != nil {
			return nil, err
		}
	}
	if has("mixed") {
		steps, err := parseMixed(mixedScripts)
		if err != nil {
			return nil, err
		}
		e.mixedNext = mixedQuery(steps)
		if err := writeMixedScripts(o.OutDir); err != nil {
			return nil, err
		}
	}
	if has("crowd") {
		if err := e.setUpCrowd(ctx, slices.Max(crowdSizes(o))); err != nil {
			return nil, err
		}
	}
	if wants(TargetPgtenant) {
		t := &target{name: TargetPgtenant, database: func(tenant string) string { return tenant },
			role: e.role(rolePgtenant), tenantRole: e.role(rolePgtenantProcess)}
		if o.PgtenantAddr != "" {
			t.external, t.role, t.tenantRole = true, "", ""
			if t.host, t.port, err = splitAddr(o.PgtenantAddr); err != nil {
				return nil, usagef("--pgtenant: %v", err)
			}
		} else {
			addr, err := e.startPgtenant(ctx, e.pooled().dsn(t.role), e.isolation)
			if err != nil {
				return nil, fmt.Errorf("start pgtenant: %w", err)
			}
			t.host, t.port, _ = splitAddr(addr)
			t.pid = selfPID
		}
		e.targets[t.name] = t
	}
	if wants(TargetPgbouncer) {
		t := &target{name: TargetPgbouncer, database: func(tenant string) string { return tenant },
			role: e.role(rolePgbouncer), tenantRole: e.role(rolePgbouncerTenants)}
		if o.PgbouncerAddr != "" {
			t.external, t.role, t.tenantRole = true, "", ""
			if t.host, t.port, err = splitAddr(o.PgbouncerAddr); err != nil {
				return nil, usagef("--pgbouncer: %v", err)
			}
		} else {
			b, err := e.startPgbouncer(ctx, pgbouncerAuth{})
			if err != nil {
				return nil, err
			}
			e.bouncer = b
			t.host, t.port = "127.0.0.1", b.port
			t.pid = b.cpuPID
		}
		e.targets[t.name] = t
	}
	if wants(TargetDirect) {
		b := e.backend
		e.targets[TargetDirect] = &target{
			name: TargetDirect, host: b.host, port: b.port,
			database: func(string) string { return b.database },
			env: func(schema string) []string {
				env := []string{"PGOPTIONS=-c search_path=" + schema}
				if b.password != "" {
					env = append(env, "PGPASSWORD="+b.password)
				}
				return env
			},
			role: e.role(roleDirect),
		}
	}
	if has("pin") && wants(TargetPgtenant) {
		if err := e.startPinTargets(ctx); err != nil {
			return nil, err
		}
	}
	if has("scram") {
		if err := e.startScramTargets(ctx, wants); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// startBackend starts a throwaway PostgreSQL, or connects to o.Backend.
func (e *env) startBackend(ctx context.Context) error {
	if e.o.Backend == "" {
		e.progress("starting a throwaway PostgreSQL")
		cl, err := pgcluster.Start(ctx, pgcluster.Options{
			MaxConnections: e.maxConnections(),
			// The data of 100 tenants at scale 1 plus the bench tenant stays
			// in shared buffers, so no target's run reads from disk.
			Settings: map[string]string{"shared_buffers": "512MB"},
		})
		if err != nil {
			if errors.Is(err, pgcluster.ErrNotInstalled) {
				return fmt.Errorf("%w (run `make deps`)", err)
			}
			return err
		}
		e.cl = cl
		e.stops = append(e.stops, func() { cl.Stop() })
		e.backend = backendInfo{host: cl.Host, port: cl.Port, user: cl.User, database: "postgres", socketDir: cl.Dir}
	} else {
		cfg, err := pgconn.ParseConfig(e.o.Backend)
		if err != nil {
			return usagef("--backend: %v", err)
		}
		e.backend = backendInfo{host: cfg.Host, port: int(cfg.Port), user: cfg.User, password: cfg.Password, database: cfg.Database}
		if strings.HasPrefix(cfg.Host, "/") {
			return usagef("--backend: pgtenant bench needs a TCP host, not the socket directory %s", cfg.Host)
		}
	}
	var err error
	if e.admin, err = pgx.Connect(ctx, e.backend.dsn("")); err != nil {
		return fmt.Errorf("connect to the backend: %w", err)
	}
	e.stops = append(e.stops, func() { e.admin.Close(context.Background()) })
	if e.poll, err = pgx.Connect(ctx, e.backend.dsn("", "application_name=pgtenant-bench-poller")); err != nil {
		return fmt.Errorf("connect to the backend: %w", err)
	}
	e.stops = append(e.stops, func() { e.poll.Close(context.Background()) })
	return nil
}

// maxConnections is enough for the busiest moment: the largest pgbench run
// straight at PostgreSQL, while PgBouncer still holds the many-tenants
// scenario's server connections (up to 2 per tenant) and each pgtenant its
// pool and registry connections.
func (e *env) maxConnections() int {
	return e.o.clients(200) + e.o.Tenants*(1+tenantPoolSize) + 7*(e.o.PoolSize+8) + 50
}

// createRoles creates one login role per target. It returns false, and the
// targets then share the admin role, when that is not possible (a backend
// given by flag whose role may not create roles, or whose pg_hba wants a
// password the new roles lack).
func (e *env) createRoles(ctx context.Context) bool {
	for _, r := range []string{roleDirect, rolePgtenant, rolePgtenantProcess, rolePgbouncer, rolePgbouncerTenants, rolePinOn, rolePinAlways, rolePinOff, rolePgtenantScram, rolePgbouncerScram} {
		_, err := e.admin.Exec(ctx, fmt.Sprintf(
			`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s SUPERUSER LOGIN; END IF; END $$`, r, r))
		if err == nil {
			var c *pgx.Conn
			if c, err = pgx.Connect(ctx, e.backend.dsn(r)); err == nil {
				c.Close(ctx)
			}
		}
		if err != nil {
			e.progress("cannot use a backend role per target (%v); backends will not be counted", errText(err))
			return false
		}
	}
	return true
}

// role is r when per-target roles exist, else the admin role's name with
// counting turned off (see target.role).
func (e *env) role(r string) string {
	if e.roles {
		return r
	}
	return ""
}

// loginRole is the role a pooler logs in to PostgreSQL with.
func (e *env) loginRole(r string) string {
	if e.roles {
		return r
	}
	return e.backend.user
}

// startPgtenant serves backendDSN in this process on a free loopback port
// and returns its address once it admits a client of the bench tenant.
// adjust, when set, changes the configuration first; opts go to
// proxy.RunListener.
func (e *env) startPgtenant(ctx context.Context, backendDSN string, adjust func(*config.Config), opts ...proxy.RunOption) (string, error) {
	cfg := config.Default()
	cfg.Backend = backendDSN
	// The bench measures on a superuser's throwaway cluster (or the one it
	// is pointed at); the role check is for production, not for this.
	cfg.AllowPrivilegedBackend = true
	cfg.PoolSize = e.o.PoolSize
	cfg.MaxClientConn = max(cfg.MaxClientConn, e.o.IdleClients+1000)
	cfg.LogLevel = "warn"
	if adjust != nil {
		adjust(&cfg)
	}
	if e.o.Metrics {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		cfg.MetricsListen = addr
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	cfg.Listen = ln.Addr().String()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.RunListener(pctx, cfg, log, ln, opts...) }()
	e.stops = append(e.stops, func() {
		stop()
		<-done
	})
	if cfg.MetricsListen != "" {
		go scrapeEverySecond(pctx, cfg.MetricsListen)
	}
	password := ""
	if cfg.AuthFile != "" {
		password = scramPassword
	}
	if err := waitReady(ctx, cfg.Listen, benchTenant, password, done); err != nil {
		return "", err
	}
	return cfg.Listen, nil
}

// startPinTargets starts the pgtenants of the pin-cost scenario. Their
// backend DSN sets search_path itself, so that all find the bench tables
// whether or not pgtenant pins the tenant's schema.
func (e *env) startPinTargets(ctx context.Context) error {
	opts := "options='-c search_path=" + benchTenant + ",public'"
	for _, v := range []struct {
		name, role string
		adjust     func(*config.Config)
		run        []proxy.RunOption
	}{
		{targetPinOn, rolePinOn, nil, nil},
		{targetPinAlways, rolePinAlways, func(c *config.Config) { c.PinReuse = false }, nil},
		{targetPinOff, rolePinOff, nil, []proxy.RunOption{proxy.WithoutPin()}},
	} {
		addr, err := e.startPgtenant(ctx, e.pooled().dsn(e.loginRole(v.role), opts), v.adjust, v.run...)
		if err != nil {
			return fmt.Errorf("start %s: %w", v.name, err)
		}
		t := &target{name: v.name, database: func(tenant string) string { return tenant }, role: e.role(v.role), pid: selfPID}
		t.host, t.port, _ = splitAddr(addr)
		e.targets[v.name] = t
	}
	return nil
}

// waitReady polls addr until a client of tenant (with password, when the
// server asks for one) gets ReadyForQuery, done delivers the server's exit,
// or ctx ends.
func waitReady(ctx context.Context, addr, tenant, password string, done <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ticker := time.NewTicker(readyPoll)
	defer ticker.Stop()
	for {
		err := probe(ctx, addr, tenant, password)
		if err == nil {
			return nil
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("exited")
			}
			return fmt.Errorf("server on %s: %w", addr, err)
		case <-ctx.Done():
			return fmt.Errorf("server on %s did not admit a client: %w (last attempt: %v)", addr, ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// probe logs in to addr once as the bench client.
func probe(ctx context.Context, addr, tenant, password string) error {
	if password == "" {
		c, err := startupConn(ctx, addr, clientUser, tenant)
		if err == nil {
			c.Close()
		}
		return err
	}
	host, port, err := splitAddr(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	c, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s password=%s sslmode=disable",
		host, port, clientUser, tenant, password))
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// startScramTargets starts the SCRAM targets of the wanted poolers. Their
// userlist holds the bench client's SCRAM verifier, as PostgreSQL would
// store it (4096 iterations).
func (e *env) startScramTargets(ctx context.Context, wants func(string) bool) error {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	v, err := auth.NewSCRAMVerifier(scramPassword, salt, auth.DefaultIterations)
	if err != nil {
		return err
	}
	userlist := fmt.Sprintf("%q %q\n", clientUser, v.String())
	withPassword := func(string) []string { return []string{"PGPASSWORD=" + scramPassword} }
	if wants(TargetPgtenant) {
		path := filepath.Join(e.tmp, "pgtenant-userlist.txt")
		if err := os.WriteFile(path, []byte(userlist), 0o600); err != nil {
			return err
		}
		addr, err := e.startPgtenant(ctx, e.pooled().dsn(e.loginRole(rolePgtenantScram)), func(c *config.Config) {
			c.AuthFile, c.AuthType = path, config.AuthSCRAM
			// Grants are another matter; this target measures the
			// authentication exchange only.
			c.TenantAccess = config.AccessAll
		})
		if err != nil {
			return fmt.Errorf("start %s: %w", targetScramPgtenant, err)
		}
		t := &target{name: targetScramPgtenant, database: func(tenant string) string { return tenant },
			role: e.role(rolePgtenantScram), env: withPassword, pid: selfPID}
		t.host, t.port, _ = splitAddr(addr)
		e.targets[t.name] = t
	}
	if wants(TargetPgbouncer) && e.pgbouncerBin != "" {
		b, err := e.startPgbouncer(ctx, pgbouncerAuth{typ: "scram-sha-256", userlist: userlist,
			role: rolePgbouncerScram, password: scramPassword})
		if err != nil {
			return fmt.Errorf("start %s: %w", targetScramPgbouncer, err)
		}
		e.targets[targetScramPgbouncer] = &target{name: targetScramPgbouncer, host: "127.0.0.1", port: b.port,
			database: func(tenant string) string { return tenant }, role: e.role(rolePgbouncerScram), env: withPassword,
			pid: b.cpuPID}
	}
	return nil
}

func (e *env) tearDown() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	e.stops = nil
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.o.Progress, "bench: "+format+"\n", args...)
}

// splitAddr splits host:port.
func splitAddr(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	return h, port, nil
}

// freeAddr returns a loopback address that was free a moment ago, for a
// child process to listen on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// benchRoleSecret is what the tenant roles' passwords derive from in role
// mode. The throwaway cluster trusts every login, but a backend given by
// flag may not.
const benchRoleSecret = "pgtenant-bench-role-secret"

// isolateTenants gives the bench tenant and the many-tenants scenario's
// tenants their LOGIN roles, for --isolation role.
func (e *env) isolateTenants(ctx context.Context) error {
	t0 := time.Now()
	for _, name := range append([]string{benchTenant}, e.tenants...) {
		if err := router.EnsureTenantRole(ctx, e.admin, router.Tenant{Name: name}, benchRoleSecret); err != nil {
			return err
		}
	}
	e.progress("gave %d tenants a role of their own in %s", len(e.tenants)+1, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// isolation sets pgtenant's isolation mode as the run asks.
func (e *env) isolation(c *config.Config) {
	if e.o.Isolation == config.IsolationRole {
		c.Isolation = config.IsolationRole
		c.RoleSecret = benchRoleSecret
	}
}

// tenantRolePrefix starts the roles of the many-tenants scenario's tenants
// (t001...) in role mode, and is "" otherwise: their backends are counted
// with the pgtenant process's own.
func (e *env) tenantRolePrefix() string {
	if e.o.Isolation != config.IsolationRole || len(e.tenants) == 0 {
		return ""
	}
	return router.TenantRoleName(tenantName(1)[:1])
}

// scrapeEverySecond reads addr's /metrics every second until ctx ends, as
// a Prometheus with a one-second interval would (--metrics).
func scrapeEverySecond(ctx context.Context, addr string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			return
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}
