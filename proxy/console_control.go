package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/internal/pgerr"
	"github.com/pgtenant/pgtenant/router"
)

// runConsoleCommand runs one parsed console command for the console
// session s, appending its answer to out. after, when set, runs once the
// answer is sent.
func (srv *Server) runConsoleCommand(ctx context.Context, s *session, cmd consoleCmd, out []byte) (_ []byte, after func(), _ *pgError) {
	switch cmd.verb {
	case "SHOW TENANTS":
		return srv.showTenants(ctx, out), nil, nil
	case "SHOW POOLS":
		return srv.showPools(out), nil, nil
	case "SHOW CLIENTS":
		return srv.showClients(out), nil, nil
	case "SHOW SERVERS":
		return srv.showServers(out), nil, nil
	case "SHOW STATS":
		return srv.showStats(out), nil, nil
	case "SHOW CONFIG":
		return srv.showConfig(out), nil, nil
	case "SHOW VERSION":
		return showVersion(out), nil, nil
	case "PAUSE":
		out, err := srv.consolePause(ctx, cmd.arg, out)
		return done(out, cmd.verb, err)
	case "RESUME":
		return done(out, cmd.verb, srv.consoleResume(cmd.arg))
	case "DISABLE", "ENABLE":
		return done(out, cmd.verb, srv.consoleSetActive(ctx, cmd.arg, cmd.verb == "ENABLE"))
	case "KILL":
		out, err := srv.consoleKill(ctx, cmd.arg, out)
		return done(out, cmd.verb, err)
	case "KILL_CLIENT":
		out, err := srv.consoleKillClient(ctx, s, cmd.arg, out)
		return done(out, cmd.verb, err)
	case "RELOAD":
		if err := srv.reloadNow(); err != nil {
			return out, nil, errorf(pgerr.ConfigFileError, "pgtenant: reload failed: %v", err)
		}
		return done(out, cmd.verb, nil)
	case "SHUTDOWN":
		wait := cmd.arg == "wait_for_clients"
		out, _, err := done(out, cmd.verb, nil)
		return out, func() { srv.shutdownFromConsole(wait) }, err
	}
	return out, nil, errorf(pgerr.SyntaxError, "unknown pgtenant console command: %s", cmd)
}

// done ends a command that returns no rows: CommandComplete tagged with
// its verb, or err.
func done(out []byte, tag string, err *pgError) ([]byte, func(), *pgError) {
	if err != nil {
		return out, nil, err
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(out)
	return out, nil, nil
}

// foreignRegistry is a registry pgtenant reads but does not own
// (router.DjangoRegistry): the console finds and lists tenants in it, and
// does not write to it.
type foreignRegistry interface {
	LookupTenant(ctx context.Context, name string) (router.Tenant, error)
	ListTenants(ctx context.Context) ([]router.Tenant, error)
}

// errForeignRegistry answers DISABLE and ENABLE under a registry pgtenant
// does not own.
var errForeignRegistry = &pgError{Severity: "ERROR", Code: pgerr.FeatureNotSupported,
	Message: "pgtenant reads its tenants from django-tenants' tables (registry-source django-tenants) and does not change them",
	Hint:    "Change the tenant in Django; KILL tenant closes its clients."}

// checkTenant validates a tenant name given to the console and, when the
// registry can be asked, that the tenant exists (an alias is not a
// tenant: the console acts on tenants by name).
func (srv *Server) checkTenant(ctx context.Context, name string) *pgError {
	if err := router.ValidateTenantName(name); err != nil {
		return errorf(pgerr.InvalidName, "%v", err)
	}
	if srv.registryDB == nil && srv.foreign == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, consoleTimeout)
	defer cancel()
	var found bool
	var err error
	if srv.foreign != nil {
		// By schema name only: a domain is not a tenant's name.
		var t router.Tenant
		t, err = srv.foreign.LookupTenant(rctx, name)
		found = err == nil && t.Name == name
		if errors.Is(err, router.ErrNotFound) {
			err = nil
		}
	} else {
		_, found, err = router.FindTenant(rctx, srv.registryDB, name)
	}
	switch {
	case err != nil:
		return errorf(codeConnectionFailure, "pgtenant: cannot read the tenant registry: %v", err)
	case !found:
		return errorf(codeUnknownTenant, "tenant %q does not exist", name)
	}
	return nil
}

// consolePause is PAUSE [tenant]: the tenant's (or every tenant's) new
// transactions wait, from now on, until RESUME; the command answers once
// the transactions that run now have ended and given their backends back,
// as PgBouncer's PAUSE does, or after shutdown-timeout with a notice that
// some still run.
func (srv *Server) consolePause(ctx context.Context, name string, out []byte) ([]byte, *pgError) {
	timeout := srv.liveConfig().QueryWaitTimeout
	var entries []*tenantEntry
	if name == "" {
		// The flag first: a tenant whose entry is made after the loop
		// below read the table finds it set (session.start).
		srv.pausedAll.Store(true)
		entries = srv.tenants.all()
	} else {
		if err := srv.checkTenant(ctx, name); err != nil {
			return out, err
		}
		entries = []*tenantEntry{srv.tenants.entry(name)}
	}
	for _, e := range entries {
		e.pause.pause(timeout)
	}
	held := func() (n int64) {
		for _, e := range entries {
			n += e.backends.Load()
		}
		return n
	}
	deadline := time.Now().Add(srv.cfg.ShutdownTimeout)
	for held() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := held(); n > 0 {
		out = consoleNotice(out, fmt.Sprintf("%d backend(s) still held by running transactions or pinned sessions after shutdown-timeout (%s); new transactions wait",
			n, srv.cfg.ShutdownTimeout))
	}
	return out, nil
}

// consoleResume is RESUME [tenant].
func (srv *Server) consoleResume(name string) *pgError {
	if name == "" {
		srv.pausedAll.Store(false)
		for _, e := range srv.tenants.all() {
			e.pause.resume()
		}
		return nil
	}
	if err := router.ValidateTenantName(name); err != nil {
		return errorf(pgerr.InvalidName, "%v", err)
	}
	if srv.pausedAll.Load() {
		return &pgError{Severity: "ERROR", Code: codeTenantDisabled,
			Message: "every tenant is paused; RESUME without a tenant name resumes them"}
	}
	if e := srv.tenants.lookup(name); e != nil {
		e.pause.resume()
	}
	return nil
}

// consoleSetActive is DISABLE and ENABLE: through the registry, whose
// trigger tells every proxy. This one forgets its cached entry at once, so
// the next client here sees the change without waiting for the NOTIFY.
// Clients already connected stay (KILL ends them).
func (srv *Server) consoleSetActive(ctx context.Context, name string, active bool) *pgError {
	if err := router.ValidateTenantName(name); err != nil {
		return errorf(pgerr.InvalidName, "%v", err)
	}
	if srv.foreign != nil {
		return errForeignRegistry
	}
	if srv.registryDB == nil {
		return errorf(codeConnectionFailure, "pgtenant runs without a registry connection")
	}
	rctx, cancel := context.WithTimeout(ctx, consoleTimeout)
	defer cancel()
	found, err := router.SetTenantActive(rctx, srv.registryDB, name, active)
	switch {
	case err != nil:
		return errorf(codeConnectionFailure, "pgtenant: %v", err)
	case !found:
		return errorf(codeUnknownTenant, "tenant %q does not exist", name)
	}
	if f, ok := srv.router.(interface{ Forget(string) }); ok {
		f.Forget(name)
	}
	return nil
}

// consoleKill is KILL tenant: every client of the tenant is told 57P01 and
// closed; an open transaction is rolled back and its backend goes back to
// the pool (a command still running is cancelled and its backend closed).
// It answers once they are gone, or after shutdown-timeout with a notice.
func (srv *Server) consoleKill(ctx context.Context, name string, out []byte) ([]byte, *pgError) {
	if err := router.ValidateTenantName(name); err != nil {
		return out, errorf(pgerr.InvalidName, "%v", err)
	}
	e := srv.tenants.lookup(name)
	if e == nil {
		// No client ever: nothing to end, but a typo deserves an error.
		return out, srv.checkTenant(ctx, name)
	}
	return srv.awaitGone(ctx, srv.killTenant(e), out), nil
}

// killTenant tells every client of the tenant of e 57P01 and closes it,
// without waiting, and returns those sessions. An open transaction is
// rolled back as the session tears down. The console's KILL and the
// registry's kick (KickNotifyPrefix) both end a tenant's clients with it.
func (srv *Server) killTenant(e *tenantEntry) []*session {
	var victims []*session
	for _, s := range srv.sessionList() {
		if s.te == e {
			victims = append(victims, s)
			s.kill()
		}
	}
	// Those waiting for RESUME end now rather than at RESUME.
	e.pause.kick()
	return victims
}

// kickTenant is a registry kick (router.KickNotifyPrefix, sent by tenant
// disable, drop and rename with --kick): this proxy's clients of tenant
// name are closed as by KILL. It does not wait for them to go.
func (srv *Server) kickTenant(name string) {
	e := srv.tenants.lookup(name)
	if e == nil {
		return
	}
	if n := len(srv.killTenant(e)); n > 0 {
		srv.log.Info("registry kick: closing the tenant's clients", "tenant", name, "clients", n)
	}
}

// consoleKillClient is KILL_CLIENT id, id as SHOW CLIENTS gives it. A
// console client may be killed too, this one included: it is told after
// the answer.
func (srv *Server) consoleKillClient(ctx context.Context, self *session, arg string, out []byte) ([]byte, *pgError) {
	id, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return out, errorf(pgerr.SyntaxError, "KILL_CLIENT takes a client id (SHOW CLIENTS), not %q", arg)
	}
	srv.mu.Lock()
	s := srv.byKey[uint32(id)]
	srv.mu.Unlock()
	if s == nil {
		return out, errorf(pgerr.UndefinedObject, "no client with id %d", id)
	}
	s.kill()
	if s == self {
		return out, nil
	}
	return srv.awaitGone(ctx, []*session{s}, out), nil
}

// awaitGone waits, up to shutdown-timeout, for the sessions to be
// unregistered.
func (srv *Server) awaitGone(ctx context.Context, list []*session, out []byte) []byte {
	left := func() (n int) {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for _, s := range list {
			if srv.byKey[s.key.pid] == s {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(srv.cfg.ShutdownTimeout)
	for left() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := left(); n > 0 {
		out = consoleNotice(out, fmt.Sprintf("%d client(s) not gone yet after shutdown-timeout (%s); they end when their wait for a backend does",
			n, srv.cfg.ShutdownTimeout))
	}
	return out
}

// shutdownFromConsole is SHUTDOWN: like SIGTERM, Serve stops accepting,
// idle clients are closed and the others get shutdown-timeout to finish.
// With wait (WAIT_FOR_CLIENTS) Serve stops accepting and carries on until
// every client has left.
func (srv *Server) shutdownFromConsole(wait bool) {
	srv.mu.Lock()
	stopAccept, stopSessions := srv.stopAccept, srv.stopSessions
	srv.mu.Unlock()
	if stopAccept == nil {
		return // not serving
	}
	if wait {
		srv.waitClients.Store(true)
		srv.log.Info("admin console: SHUTDOWN WAIT_FOR_CLIENTS; no new clients, exiting once every client has left")
		stopAccept()
		return
	}
	srv.log.Info("admin console: SHUTDOWN")
	stopSessions()
}

// waitForClients returns once no client is left but console clients (which
// shutdown then closes), or ctx ends (SIGTERM meanwhile: a shutdown after
// all).
func (srv *Server) waitForClients(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		srv.mu.Lock()
		srv.closed = true
		others := len(srv.conns)
		for _, s := range srv.byKey {
			if s.console {
				others--
			}
		}
		srv.mu.Unlock()
		if others <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
