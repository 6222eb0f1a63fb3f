package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// The greeting cache: how many distinct tenant-and-parameter sets, and how
// long a server's answer for one is trusted.
const (
	greetingCacheSize = 4096
	greetingTTL       = 10 * time.Minute
)

// TenantResolver turns startup values into a tenant (router.Router).
type TenantResolver interface {
	ResolveTenant(ctx context.Context, s router.Startup) (router.Tenant, error)
}

// TenantAccess decides whether an authenticated user may use a tenant. An
// error that is a *router.AccessDeniedError is a refusal (28000); any other
// is a lookup failure.
type TenantAccess interface {
	CheckAccess(ctx context.Context, user string, t router.Tenant) error
}

// allowAll is the TenantAccess of --tenant-access all.
type allowAll struct{}

func (allowAll) CheckAccess(context.Context, string, router.Tenant) error { return nil }

// Server accepts clients and serves each in its own session.
type Server struct {
	cfg    config.Config
	log    *slog.Logger
	pool   *pool.Pool
	router TenantResolver
	// backends are the pools of the backends other than the default
	// (backends.go); nil when the server serves its own backend only.
	backends *backendPools
	// placements reads tenants' placements again when the registry says
	// they changed; nil: a tenant stays where it was resolved.
	placements PlacementSource
	auth       auth.Method
	access     TenantAccess
	// tls is the TLS offered to clients; nil when there is none (no
	// certificate, or client-tls disable).
	tls *serverTLS
	// noPin turns the pin off (WithoutPin): for the benchmark only.
	noPin bool

	clients  atomic.Int64 // admitted clients, for max-client-conn
	draining atomic.Bool  // shutting down: no new transactions
	sessions sync.WaitGroup

	// greetings are the ParameterStatus messages (encoded) the server
	// reported for a pin key: startup parameters already checked, so a
	// client with the same tenant and parameters needs no backend to log in.
	// They expire so that a change on the server (ALTER SYSTEM) shows.
	greetings *expirable.LRU[string, []byte]

	// stmtSeq numbers the preparations of statements, server-wide, so a
	// backend's copy can be told older or newer than a client's Parse of
	// the same statement (stmt.go).
	stmtSeq atomic.Uint64

	// tenants are the per-tenant counts and controls (tenants.go).
	tenants tenantTable
	// presenceUp: the presence loop holds its registry session, so the
	// serve locks are kept and checkouts wait for them (regpause.go).
	presenceUp atomic.Bool
	// settings reads tenants' settings and schema sizes (tenantconf.go,
	// quota.go); nil: tenants have no settings of their own.
	settings TenantSettingsSource

	// live is the config in force for the settings a reload can change
	// (reload.go); cfg keeps the one the server started with, which is
	// what every other setting still is. Readers of a live setting use
	// liveConfig.
	live atomic.Pointer[config.Config]
	// reload is what reloadNow needs (reload.go).
	reload reloadState

	// foreign is the registry tenants come from when pgtenant does not own
	// it (registry-source django-tenants): the console lists and finds
	// tenants there, and refuses to change them. nil otherwise.
	foreign foreignRegistry

	// registryDB is the registry's admin connection, which the console
	// reads tenants from and DISABLE and ENABLE write to; nil when the
	// server has no registry (unit tests).
	registryDB router.DB
	// pausedAll: the console paused every tenant (PAUSE without a name);
	// a tenant first seen meanwhile starts paused.
	pausedAll atomic.Bool
	// waitClients: the console's SHUTDOWN WAIT_FOR_CLIENTS stopped the
	// accepts, and Serve shuts down once every client has left.
	waitClients atomic.Bool
	// stopAccept ends Serve's accept loop; stopSessions ends the sessions'
	// context too, as the end of Serve's context does. Set by Serve,
	// under mu; the console's SHUTDOWN calls them.
	stopAccept, stopSessions context.CancelFunc

	// met are the server's own counters for the metrics (metrics.go).
	met *serverMetrics

	mu     sync.Mutex
	byKey  map[uint32]*session // admitted sessions by cancel key pid
	conns  map[net.Conn]struct{}
	closed bool

	// starting counts connections in startup (startup.go), for
	// max-startup-conn; startingFrom the same per client address, for
	// max-startup-per-addr (nil until needed). Both under mu.
	starting     int
	startingFrom map[netip.Addr]int
}

// NewServer wires a server from its parts. The caller owns p and r.
func NewServer(cfg config.Config, log *slog.Logger, p *pool.Pool, r TenantResolver, a auth.Method) *Server {
	srv := &Server{
		cfg: cfg, log: log, pool: p, router: r, auth: a, access: allowAll{}, met: new(serverMetrics),
		greetings: expirable.NewLRU[string, []byte](greetingCacheSize, nil, greetingTTL),
		byKey:     map[uint32]*session{},
		conns:     map[net.Conn]struct{}{},
	}
	live := cfg
	srv.live.Store(&live)
	return srv
}

// Accept backoff. An accept that fails while the listener is open means
// the process or the system ran out of something (EMFILE, ENFILE, ENOBUFS)
// that clients leaving will give back: Serve waits and tries again, the
// wait doubling from acceptBackoffMin to acceptBackoffMax and starting over
// after a success, so a full file table costs neither the process nor a
// busy loop.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Serve accepts connections on ln until ctx is done, then shuts down:
// it stops accepting, lets clients finish for up to ShutdownTimeout, and
// closes the rest. Only the end of ctx or a closed listener stops it; any
// other accept error is waited out (see acceptBackoffMin).
func (srv *Server) Serve(parent context.Context, ln net.Listener) error {
	// Sessions run under sessCtx, the accept loop under ctx: the console's
	// SHUTDOWN ends both, SHUTDOWN WAIT_FOR_CLIENTS only the accepts.
	sessCtx, stopSessionsCause := context.WithCancelCause(parent)
	stopSessions := func() { stopSessionsCause(nil) }
	defer stopSessions()
	ctx, stopAcceptCause := context.WithCancelCause(sessCtx)
	defer stopAcceptCause(nil)
	srv.mu.Lock()
	// Only the console calls these: the cause is the reason the shutdown
	// line gives.
	srv.stopAccept = func() { stopAcceptCause(errConsoleShutdownWait) }
	srv.stopSessions = func() { stopSessionsCause(errConsoleShutdown) }
	srv.mu.Unlock()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var acceptErr error
	var (
		delay    time.Duration // current backoff; 0 outside a burst of failures
		failures int           // in the current burst
		since    time.Time     // when the burst began
	)
accept:
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				acceptErr = fmt.Errorf("accept: %w", err)
				break
			}
			// Logged once per burst, not per failure: under a flood of
			// connections the log would otherwise grow as fast as the
			// retries.
			failures++
			if delay == 0 {
				delay, since = acceptBackoffMin, time.Now()
				srv.log.Warn("accept failed, retrying", "err", err)
			} else {
				delay = min(2*delay, acceptBackoffMax)
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				break accept
			case <-t.C:
			}
			continue
		}
		if delay != 0 {
			srv.log.Info("accepting again", "failed_accepts", failures, "after", time.Since(since).Round(time.Millisecond))
			delay, failures = 0, 0
		}
		srv.mu.Lock()
		if srv.closed {
			srv.mu.Unlock()
			_ = nc.Close()
			continue
		}
		slot, refusal := srv.takeStartupSlotLocked(nc)
		if refusal != nil {
			srv.mu.Unlock()
			refuseEarly(nc, refusal)
			continue
		}
		srv.conns[nc] = struct{}{}
		srv.sessions.Add(1)
		srv.mu.Unlock()
		go newSession(srv, nc).serve(sessCtx, slot.release, func() {
			slot.release()
			srv.mu.Lock()
			delete(srv.conns, nc)
			srv.mu.Unlock()
			srv.sessions.Done()
		})
	}
	began := time.Now()
	reason := context.Cause(ctx) // a signal's name, or the console's command
	if acceptErr != nil {
		reason = acceptErr
	}
	srv.mu.Lock()
	open := len(srv.conns)
	srv.mu.Unlock()
	srv.log.Info("shutting down", "reason", reason.Error(), "clients", open,
		"shutdown_timeout", srv.cfg.ShutdownTimeout)
	if srv.waitClients.Load() {
		srv.waitForClients(sessCtx)
	}
	stopSessions()
	st := srv.shutdown()
	srv.log.Info("stopped", "clients_closed", st.closed, "clients_finished", st.finished,
		"clients_cut_off", st.cutOff, "took", time.Since(began).Round(time.Millisecond))
	return acceptErr
}

// The reasons the console's SHUTDOWN gives Serve, for its log.
var (
	errConsoleShutdown     = errors.New("admin console SHUTDOWN")
	errConsoleShutdownWait = errors.New("admin console SHUTDOWN WAIT_FOR_CLIENTS")
)

// shutdownStats is what became of the connections open when shutdown
// began: closed at once (idle), finished on their own (a transaction
// completed, a client left), or cut off at shutdown-timeout.
type shutdownStats struct {
	closed, finished, cutOff int
}

// shutdown waits for sessions to end, up to ShutdownTimeout, then closes
// the connections still open.
//
// Clients between transactions are told 57P01 and closed at once; a client
// inside a transaction may finish it, and is closed when it next needs a
// backend.
func (srv *Server) shutdown() shutdownStats {
	srv.draining.Store(true)
	srv.mu.Lock()
	srv.closed = true
	open := len(srv.conns)
	sessions := make([]*session, 0, len(srv.byKey))
	for _, s := range srv.byKey {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	var st shutdownStats
	for _, s := range sessions {
		if s.closeIfIdle() {
			st.closed++
		}
	}
	done := make(chan struct{})
	go func() { srv.sessions.Wait(); close(done) }()
	select {
	case <-done:
		st.finished = open - st.closed
		return st
	case <-time.After(srv.cfg.ShutdownTimeout):
	}
	srv.mu.Lock()
	for nc := range srv.conns {
		_ = nc.Close()
		st.cutOff++
	}
	srv.mu.Unlock()
	<-done
	st.finished = max(open-st.closed-st.cutOff, 0)
	return st
}

// cancelKey is the BackendKeyData pgtenant gives a client: its own, never
// a server's, so a client can only ever cancel its own queries.
type cancelKey struct {
	pid    uint32
	secret [4]byte
}

// assignKey gives s a cancel key no other session holds and registers it,
// both under one lock so two sessions can never draw the same key.
func (srv *Server) assignKey(s *session) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) &^ (1 << 31) // positive, as a pid is
		if _, taken := srv.byKey[pid]; pid == 0 || taken {
			continue
		}
		s.key.pid = pid
		copy(s.key.secret[:], b[4:])
		srv.byKey[pid] = s
		return
	}
}

func (srv *Server) unregister(s *session) {
	srv.mu.Lock()
	if srv.byKey[s.key.pid] == s {
		delete(srv.byKey, s.key.pid)
	}
	srv.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the backend running that
// client's command, if one is running right now.
func (srv *Server) cancel(pid uint32, secret []byte) {
	srv.mu.Lock()
	s := srv.byKey[pid]
	srv.mu.Unlock()
	if s == nil || subtle.ConstantTimeCompare(secret, s.key.secret[:]) != 1 {
		srv.log.Debug("cancel request for no known session")
		return
	}
	s.cancelRunning()
}

// Run is `pgtenant serve`: it listens on cfg.Listen and serves until ctx is
// done. It installs no signal handlers: the command line ends ctx on SIGINT
// and SIGTERM and turns SIGHUP into a WithReload channel.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...RunOption) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return config.ListenError("listen", cfg.Listen, err)
	}
	return RunListener(ctx, cfg, log, ln, opts...)
}

// RunOption adjusts RunListener.
type RunOption func(*runOptions)

type runOptions struct {
	reload <-chan struct{}
	noPin  bool
	loader func() (config.Config, error)
	level  *slog.LevelVar
}

// WithReload makes RunListener reload whenever ch receives: reread the
// files named in its config (auth file, certificates) and, with
// WithConfigLoader, the config itself (see Server.reloadNow). The command
// line connects it to SIGHUP; tests send on it directly.
func WithReload(ch <-chan struct{}) RunOption {
	return func(o *runOptions) { o.reload = ch }
}

// WithConfigLoader gives RunListener the way to build its config again on
// a reload (the command line rereads its config file, environment and
// flags); what can change live is applied, the rest is logged as needing a
// restart. Without it a reload rereads the files alone.
func WithConfigLoader(load func() (config.Config, error)) RunOption {
	return func(o *runOptions) { o.loader = load }
}

// WithLogLevel hands RunListener the level of its logger, so that a reload
// can change it (log-level).
func WithLogLevel(level *slog.LevelVar) RunOption {
	return func(o *runOptions) { o.level = level }
}

// WithoutPin makes RunListener's server never pin: backends keep whatever
// tenant and settings their last client left, so tenants are not isolated.
// It exists only so the benchmark harness can measure what pinning costs;
// no flag or config field reaches it.
func WithoutPin() RunOption {
	return func(o *runOptions) { o.noPin = true }
}

// RunListener opens the registry and the pool and serves clients from ln
// until ctx is done. It closes ln.
func RunListener(ctx context.Context, cfg config.Config, log *slog.Logger, ln net.Listener, opts ...RunOption) error {
	defer ln.Close()
	if err := cfg.Validate(); err != nil {
		return err
	}
	var ro runOptions
	for _, o := range opts {
		o(&ro)
	}
	procs := cfg.ApplyGoMaxProcs()
	if err := checkBackendRole(ctx, cfg, log); err != nil {
		return err
	}
	reg, err := router.OpenRegistry(ctx, cfg.RegistryDSN(), log)
	if err != nil {
		return registryError(cfg.RegistryDSN(), err)
	}
	defer reg.Close()
	// tenants is where the router looks tenants up: pgtenant's registry,
	// or django-tenants' tables (read through the registry's connections).
	tenants, err := openTenantSource(ctx, cfg, reg)
	if err != nil {
		return err
	}
	// "$user" in a search_path reaches a schema named like the current role
	// (issue 17). tenant create refuses such a schema, but a role can come
	// later; say so at start rather than let it pass in silence.
	if collide, err := tenants.RoleNamedSchemas(ctx); err != nil {
		log.Warn("could not check tenant schemas against role names", "err", err)
	} else {
		for _, t := range collide {
			log.Warn(`tenant schema has the name of a role: "$user" in a search_path reaches it; rename the schema or the role`,
				"tenant", t.Name, "schema", t.Schema, "role", t.Schema)
		}
	}
	routerOpts := []router.Option{router.WithSNISuffix(cfg.SNISuffix)}
	if cfg.RegistrySource == config.RegistryDjangoTenants {
		// django-tenants routes by host name: so does pgtenant, when no
		// suffix says which part of the host name is the tenant.
		routerOpts = append(routerOpts, router.WithSNIHostNames())
	}
	rt := router.New(tenants, cfg.TenantFrom, cfg.TenantCacheTTL, cfg.TenantMissTTL, routerOpts...)

	// grants is the TenantAccess of --tenant-access granted; nil under all.
	var grants *router.Grants
	if cfg.EffectiveTenantAccess() == config.AccessGranted {
		grants = router.NewGrants(reg, cfg.TenantCacheTTL, cfg.TenantMissTTL)
	}

	dialer, err := pool.NewPgDialer(cfg.Backend)
	if err != nil {
		return err
	}
	dialer.Log = log.With("component", "pool")
	if cfg.Isolation == config.IsolationRole {
		// Tenant roles log in with the password derived from the role
		// secret, as `pgtenant tenant isolate` set it.
		dialer.RolePassword = func(role string) string { return auth.TenantRolePassword(cfg.RoleSecret, role) }
	}
	poolCfg := pool.Config{
		Size:           cfg.PoolSize,
		WaitTimeout:    cfg.QueryWaitTimeout,
		ConnectTimeout: cfg.ServerConnectTimeout,
		IdleTimeout:    cfg.ServerIdleTimeout,
		MaxLifetime:    cfg.ServerLifetime,
		CheckIdle:      cfg.ServerCheckIdle,
		MaxStatements:  cfg.MaxPreparedStatements,
		Logger:         log,
	}
	p, err := pool.New(poolCfg, dialer)
	if err != nil {
		return err
	}
	defer p.Close()

	method, reloaders, err := newAuth(cfg, reg, log)
	if err != nil {
		return err
	}
	clientTLS, err := newServerTLS(cfg)
	if err != nil {
		return err
	}
	if clientTLS != nil {
		reloaders = append(reloaders, reloader{"tls certificate " + cfg.TLSCert, clientTLS.reload})
	}
	srv := NewServer(cfg, log, p, rt, method)
	srv.registryDB = reg.Pool()
	if cfg.RegistrySource != config.RegistryDjangoTenants {
		// django-tenants' registry has no placements: every tenant is on
		// --backend.
		srv.placements = reg
		srv.backends = &backendPools{
			lookup: func(ctx context.Context, name string) (router.Backend, bool, error) {
				return router.GetBackend(ctx, reg.Pool(), name)
			},
			newPool: func(dsn string) (*pool.Pool, error) {
				dsn, err := backendDSN(dsn, cfg.Backend)
				if err != nil {
					return nil, err
				}
				d, err := pool.NewPgDialer(dsn)
				if err != nil {
					return nil, err
				}
				d.Log, d.RolePassword = dialer.Log, dialer.RolePassword
				// The sizes a reload set since start (reload.go).
				pc := poolCfg
				live := srv.liveConfig()
				pc.Size, pc.WaitTimeout = live.PoolSize, live.QueryWaitTimeout
				return pool.New(pc, d)
			},
		}
		defer srv.backends.closeAll()
	}
	srv.tls = clientTLS
	srv.noPin = ro.noPin
	srv.settings = tenants
	if d, ok := tenants.(*router.DjangoRegistry); ok {
		srv.foreign = d
	}
	srv.reload = reloadState{loader: ro.loader, level: ro.level, files: reloaders}
	if grants != nil {
		srv.access = grants
	}

	// The watch starts before the first client is accepted, and with
	// srv made, since it reloads tenants' settings too.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		err := reg.Watch(watchCtx, func(name string) {
			srv.met.registryEvent(name)
			// First: it marks the tenant's placement stale before anything
			// this payload resumes can send a transaction (backends.go).
			srv.placementChanged(watchCtx, name)
			if tenant, ok := router.KickFor(name); ok {
				srv.kickTenant(tenant)
				return
			}
			srv.confChanged(watchCtx, name)
			if _, ok := router.BackendChangedFor(name); ok {
				return
			}
			srv.pauseChanged(watchCtx, name)
			if user, ok := router.GrantsChangedFor(name); ok {
				if grants != nil {
					grants.Forget(user)
				}
				return
			}
			if name == "" {
				rt.ForgetAll()
				if grants != nil {
					grants.ForgetAll()
				}
				return
			}
			rt.Forget(name)
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("tenant registry watch ended", "err", err)
		}
	}()
	go srv.reloadOn(ctx, ro.reload)
	if len(cfg.AdminUsers) > 0 && cfg.EffectiveAuthType() == config.AuthTrust {
		log.Warn("the admin console is open to anyone who can reach --listen: auth-type trust lets a client claim an admin user's name",
			"admin_users", strings.Join(cfg.AdminUsers, ","))
	}
	// The metrics endpoint and the schema sizes stop when serving does.
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	metricsAddr := "off"
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return config.ListenError("metrics-listen", cfg.MetricsListen, err)
		}
		go serveMetrics(bgCtx, srv, mln)
		metricsAddr = "http://" + mln.Addr().String() + "/metrics"
	}
	go srv.measureSchemaSizes(bgCtx)
	// Presence locks say, to tenant drop and rename, which tenants have
	// clients here; fed by the tenant table before the first client.
	srv.tenants.changed = make(chan struct{}, 1)
	go newPresence(reg.Pool().Config().ConnConfig, srv, log).run(bgCtx)

	// One line says how this pgtenant runs, for whoever reads the log
	// first: a new user's "is it up, and where?".
	log.Info("pgtenant serving", "listen", ln.Addr().String(), "pool_size", cfg.PoolSize,
		"pool_mode", string(cfg.PoolMode), "isolation", cfg.Isolation,
		"tenant_source", cfg.RegistrySource, "tenants", countTenants(ctx, cfg, reg.Pool()),
		"tenant_from", string(cfg.TenantFrom),
		"auth_type", cfg.EffectiveAuthType(), "tenant_access", cfg.EffectiveTenantAccess(),
		"client_tls", clientTLSMode(clientTLS), "metrics", metricsAddr, "gomaxprocs", procs)
	return srv.Serve(ctx, ln)
}

// tenantSource is what RunListener needs of the registry it routes by.
type tenantSource interface {
	router.Registry
	TenantSettingsSource
	RoleNamedSchemas(ctx context.Context) ([]router.Tenant, error)
}

// openTenantSource returns the registry tenants are looked up in: reg
// itself, or with registry-source django-tenants a router.DjangoRegistry
// on reg's connections, whose tables must be there and readable.
func openTenantSource(ctx context.Context, cfg config.Config, reg *router.PGRegistry) (tenantSource, error) {
	if cfg.RegistrySource != config.RegistryDjangoTenants {
		return reg, nil
	}
	d, err := router.NewDjangoRegistry(reg, cfg.DjangoTenantTable, cfg.DjangoDomainTable)
	if err != nil {
		return nil, err
	}
	checkCtx, cancel := context.WithTimeout(ctx, cfg.ServerConnectTimeout)
	defer cancel()
	if err := d.CheckTables(checkCtx); err != nil {
		return nil, err
	}
	return d, nil
}

// checkBackendRole refuses to serve when the role tenant traffic runs as
// (the Backend DSN's) can do what a tenant must not (see
// router.CheckBackendRole): every client sends SQL as that role. With
// AllowPrivilegedBackend it only warns. It logs in once, on a connection of
// its own that it closes.
func checkBackendRole(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	connCfg, err := pgx.ParseConfig(cfg.Backend)
	if err != nil {
		return fmt.Errorf("backend dsn: %w", err)
	}
	connCfg.RuntimeParams["application_name"] = "pgtenant role check"
	dialCtx, cancel := context.WithTimeout(ctx, cfg.ServerConnectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(dialCtx, connCfg)
	if err != nil {
		return config.NewConnectError("the backend (--backend)", cfg.Backend, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = router.CheckBackendRole(dialCtx, conn)
	var privileged *router.PrivilegedBackendError
	if errors.As(err, &privileged) && cfg.AllowPrivilegedBackend {
		log.Warn("backend role can do what tenants must not; serving anyway because of --allow-privileged-backend",
			"role", privileged.Role, "reasons", strings.Join(privileged.Reasons, "; "))
		return nil
	}
	return err
}

// registryError is OpenRegistry's failure told once: where the registry
// was looked for and why it could not be reached.
func registryError(dsn string, err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return config.NewConnectError("the tenant registry", dsn, err)
	}
	if inner := errors.Unwrap(err); inner != nil {
		err = inner // OpenRegistry's "open registry: " says what this does
	}
	return fmt.Errorf("tenant registry: %w", err)
}

// countTenants is how many tenants the registry holds, for the start-up
// line: one count query on the registry's connections, or "unknown" when
// it fails (no registry table yet, a django-tenants table it may not read).
func countTenants(ctx context.Context, cfg config.Config, db router.DB) string {
	table := "pgtenant.tenants"
	if cfg.RegistrySource == config.RegistryDjangoTenants {
		parts, err := config.ParseTableName(cfg.DjangoTenantTable)
		if err != nil {
			return "unknown"
		}
		if len(parts) == 1 {
			parts = append([]string{"public"}, parts...)
		}
		table = pgx.Identifier(parts).Sanitize()
	}
	qctx, cancel := context.WithTimeout(ctx, cfg.ServerConnectTimeout)
	defer cancel()
	var n int64
	if err := db.QueryRow(qctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return "unknown"
	}
	return strconv.FormatInt(n, 10)
}
