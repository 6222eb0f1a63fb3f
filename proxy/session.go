package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// session is one client connection, from admission to close. It is made
// of three parts: the tracker (tracker.go), what pgtenant knows of the
// client's session whatever backend serves it; the link (link.go), the
// backend serving it now and what that backend owes; and the two loops
// that move messages between them (relay.go).
//
// Two goroutines serve it. The client goroutine (serve, relayClient) reads
// the client's messages and writes them to the attached backend through bw,
// checking a backend out first when none is attached. The backend goroutine
// (serveBackend) exists while a backend is attached: it reads the backend's
// replies, writes them to the client through cw, and at a safe point
// releases the backend and ends. Neither hands messages to the other; they
// meet only in the link (its reply model and state) under mu.
//
// Ownership: bw and the client reader belong to the client goroutine. cw
// belongs to the backend goroutine while the link holds a backend or is
// draining, closing or failing (link.go), and to the client goroutine
// otherwise. Whoever hands cw over has flushed it first, and no one writes
// to a socket while holding mu: the backend goroutine flushes cw in the
// draining and failing states, which the client goroutine waits out. Every
// section that holds mu releases it in a defer, so a panic cannot leave it
// held.
type session struct {
	srv *Server
	nc  net.Conn
	cr  *inBuf
	cw  *outBuf
	bw  *outBuf // writes to the attached backend; reset on each attach
	// bwTo is bw's destination (link.go); client goroutine only.
	bwTo backendWriter
	mode config.PoolMode

	user string
	key  cancelKey
	// te is the tenant's entry in the server's table (tenants.go), from
	// the moment the tenant is known until the session ends.
	te *tenantEntry
	// admitted gives back the startup slot once the client authenticated
	// (serve); counted: the client counts toward max-client-conn.
	admitted func()
	counted  bool
	// tr is what pgtenant knows of the client's session (tracker.go).
	// Client goroutine, and under mu where the backend goroutine reads it.
	tr tracker

	// backendDone is waited for before the session ends.
	backendDone sync.WaitGroup
	// out collects what the client goroutine sends for one client message
	// besides (or instead of) the message itself. Client goroutine only.
	out []byte

	mu sync.Mutex
	// cond is signalled (with mu) when the link's state, unsent or
	// cancelling change, or one of pgtenant's own queries is answered: the
	// client goroutine waits out a busy link, the backend goroutine a
	// pending send before a release, a cancel the pin's reply.
	cond *sync.Cond
	// link is the backend serving the client and its state (link.go).
	link link
	// cwBusy: the client goroutine, detached, wrote answers to cw that it
	// has yet to flush (outside the lock), or shutdown is writing to it
	// (closeIfIdle); neither may start meanwhile.
	cwBusy bool
	// greeting: start is writing the client's greeting (cw is its own);
	// closeIfIdle waits for it.
	greeting bool
	// clientGone: the client left; the backend goroutine releases at the
	// next safe point whatever the pool mode, and writes nothing to cw.
	clientGone bool

	// console: the client opened the admin console (console.go), not a
	// tenant; set before the session is registered, then read-only.
	console bool
	// killed: the admin console ended the client (KILL, KILL_CLIENT); the
	// client goroutine ends it at its next read (endKilled).
	// waitingBackend: the client goroutine waits for a backend (SHOW
	// CLIENTS).
	killed, waitingBackend atomic.Bool
	// since is when the client connected, in Unix microseconds.
	since int64
}

func newSession(srv *Server, nc net.Conn) *session {
	s := &session{
		srv:   srv,
		nc:    nc,
		cr:    newInBuf(nc),
		cw:    &outBuf{w: nc},
		bw:    &outBuf{},
		mode:  srv.cfg.PoolMode,
		link:  link{status: 'I'},
		since: time.Now().UnixMicro(),
	}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// logger is the server's logger with the connection's attributes: client
// address, and user and tenant once known (house style: on every line about
// a connection). It is built when something is logged, not kept, because a
// logger with attributes costs memory every idle client would pay.
func (s *session) logger() *slog.Logger {
	args := make([]any, 0, 6)
	args = append(args, "client", s.nc.RemoteAddr().String())
	if s.user != "" {
		args = append(args, "user", s.user)
	}
	if s.tr.tenant.Name != "" {
		args = append(args, "tenant", s.tr.tenant.Name)
	}
	return s.srv.log.With(args...)
}

// Send, Flush, ReceivePassword, TLS and RemoteAddr let auth methods talk
// to the client (auth.Conn).
func (s *session) Send(msg pgproto3.BackendMessage) error { return writeMsg(s.cw, msg) }
func (s *session) Flush() error                           { return s.cw.Flush() }
func (s *session) RemoteAddr() net.Addr                   { return s.nc.RemoteAddr() }

// TLS reports whether the client's connection is encrypted: admit moves
// s.nc onto a *tls.Conn after the handshake, so the type says it. The
// cleartext password method depends on it.
func (s *session) TLS() bool {
	_, ok := s.nc.(*tls.Conn)
	return ok
}

// ReceivePassword reads the client's next message, which must be a
// password message ('p'), and returns a copy of its body.
func (s *session) ReceivePassword() ([]byte, error) {
	typ, n, err := peekHeader(s.cr)
	if err != nil {
		if errors.Is(err, errMalformed) {
			return nil, fatalf(codeProtocolViolation, "invalid message from client: %v", err)
		}
		return nil, err
	}
	if typ != 'p' {
		return nil, &auth.UnexpectedMessageError{Type: typ}
	}
	if n > auth.MaxPasswordMessageLen {
		return nil, fatalf(codeProtocolViolation, "password message too long (%d bytes)", n)
	}
	if _, err := s.cr.Discard(5); err != nil {
		return nil, err
	}
	return readWhole(s.cr, n)
}

// fail tells the client why it is being turned away, best effort.
func (s *session) fail(e *pgError) {
	s.toldError(e.Code)
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeMsg(s.cw, e.Response())
	_ = s.cw.Flush()
}

// serve runs the startup of the connection: admission and
// authentication, bounded by the startup deadline. admitted is called once
// that phase is over (the client authenticated, or startup failed): it
// gives back the connection's startup slot (startup.go). A client counts
// toward max-client-conn only from its authentication on, so clients that
// connect and stall (before their StartupMessage, or at the password) take
// startup slots, which are capped per address, and never the slots of
// clients that proved who they are. done is called once the session has
// ended, by whichever goroutine ends it.
//
// A client that is in is served on a goroutine of its own (relay), started
// here, and this one ends. The startup (authentication, the registry
// lookup, the parameter check on a backend) grows a goroutine's stack to
// several KiB, which an idle client would otherwise hold as long as it
// stays connected; the relay's goroutine starts small and grows only to
// what relaying needs, which the GC shrinks again while the client idles.
func (s *session) serve(ctx context.Context, admitted func(), done func()) {
	defer admitted() // whatever way startup ends; releasing twice is a no-op
	in := false
	defer func() {
		if r := recover(); r != nil {
			in = false
			s.panicked(r)
		}
		if !in {
			s.finish(done)
		}
	}()
	if in = s.startup(ctx, admitted); in {
		go s.relay(ctx, done)
	}
}

// startup admits and authenticates the client, resolves its tenant and
// greets it. It reports whether the client is in; if not, the client has
// been told why (or left).
func (s *session) startup(ctx context.Context, admitted func()) bool {
	// The startup deadline (StartupTimeout after accept) bounds admission
	// and authentication; the socket has it until the client is in.
	deadline := time.Now().Add(s.srv.cfg.StartupTimeout)
	_ = s.nc.SetDeadline(deadline)
	startup, err := s.admit()
	// From here on every client message is framed by s.cr, which admit
	// may have replaced (TLS): cap the lengths it will take.
	s.cr.maxMessage = s.srv.cfg.MaxMessageSize
	if err != nil {
		s.reportStartupError("admit", err)
		return false
	}
	if startup == nil {
		return false // a CancelRequest, handled
	}
	s.admitted = admitted
	if err := s.start(ctx, startup, deadline); err != nil {
		if ctx.Err() != nil && !isClosedErr(err) {
			// Shutdown cancelled whatever start was waiting on (a
			// registry lookup, a backend); that, not the cancelled
			// lookup, is what the client should hear.
			err = fatalf(codeAdminShutdown, "pgtenant is shutting down")
		}
		s.reportStartupError("startup", err)
		return false
	}
	_ = s.nc.SetDeadline(time.Time{})
	return true
}

// relay serves a client that is in, until the session ends (see serve).
func (s *session) relay(ctx context.Context, done func()) {
	defer func() {
		if r := recover(); r != nil {
			s.panicked(r)
		}
		s.finish(done)
	}()
	if s.console {
		s.serveConsole(ctx)
		return
	}
	s.logAdmitted(ctx)
	err := s.relayClient(ctx)
	s.endRelay(err)
	s.logEnded(err)
}

// logAdmitted and logEnded are relay's log lines, in functions of their own
// (never inlined) so that their arguments take no room in relay's frame,
// which is on the stack an idle client's goroutine parks on (see
// session.handle).
//
//go:noinline
func (s *session) logAdmitted(ctx context.Context) {
	if s.srv.log.Enabled(ctx, slog.LevelDebug) {
		s.logger().Debug("client admitted")
	}
}

//go:noinline
func (s *session) logEnded(err error) {
	if err != nil && !isClosedErr(err) && !errors.Is(err, errIdleInTransaction) {
		s.logger().Info("client connection ended", "err", err)
	}
}

// panicked ends a session whose goroutine panicked with r. Every locked
// section unlocks in a defer, so teardown can take the lock; once the
// backend goroutine is done, cw is this goroutine's to say why the session
// ends.
func (s *session) panicked(r any) {
	s.logger().Error("session panic", "panic", r)
	s.startDueReader()
	s.teardown()
	s.backendDone.Wait()
	s.fail(fatalf(codeInternalError, "%v", errInternal))
}

// finish gives back what the session held in the server: its cancel key
// (start registers it), its place among the clients and its tenant's
// clients, and the socket; then done.
func (s *session) finish(done func()) {
	s.srv.unregister(s)
	if s.counted {
		s.srv.clients.Add(-1)
	}
	if s.te != nil {
		s.srv.tenants.leave(s.te)
	}
	_ = s.nc.Close()
	done()
}

// endRelay ends the session once relayClient returned err: the backend, if
// one is attached, is rolled back and released or destroyed (teardown), and
// the backend goroutine is waited for.
func (s *session) endRelay(err error) {
	s.startDueReader()
	if errors.Is(err, errIdleInTransaction) {
		s.endIdleInTransaction()
		return
	}
	if errors.Is(err, errKilled) {
		s.endKilled()
		return
	}
	// The client is done: close its socket first, so a backend goroutine
	// blocked writing to a client that stopped reading fails at once
	// instead of holding up the teardown.
	_ = s.nc.Close()
	s.teardown()
	s.backendDone.Wait()
}

// endIdleInTransaction ends a client that stayed idle in a transaction
// longer than --idle-transaction-timeout, as PostgreSQL does: its
// transaction is rolled back (teardown; the backend goes back to the pool),
// and it is told FATAL 25P03 and closed. The client was marked gone
// (idleInTransaction), so the backend goroutine writes nothing more to it;
// the error is written once that goroutine is done, so it follows whatever
// the client was sent before, and a client that hears it finds its
// transaction already rolled back. Its socket stays open until then, with a
// write deadline, so a backend goroutine stuck writing to a client that
// stopped reading gives up (and destroys the backend, which may be
// mid-reply).
func (s *session) endIdleInTransaction() {
	s.endTelling(&pgError{Severity: "FATAL", Code: codeIdleInTransactionTimeout,
		Message: "terminating connection due to idle-in-transaction timeout"})
	s.logger().Info("client ended: idle in a transaction longer than idle-transaction-timeout",
		"timeout", s.srv.liveConfig().IdleTransactionTimeout)
}

// endTelling ends a session pgtenant ends itself (idle in a transaction,
// killed from the console): its transaction is rolled back and its backend
// released by the normal teardown, and then, unless shutdown is telling it
// something else, it is told fatal and closed. See endIdleInTransaction.
func (s *session) endTelling(fatal *pgError) {
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	s.teardown()
	s.backendDone.Wait()
	s.mu.Lock()
	tell := !s.cwBusy // shutdown may be telling it something else
	s.cwBusy = true
	s.mu.Unlock()
	if tell {
		s.fail(fatal)
	}
	_ = s.nc.Close()
}

// reportStartupError sends the client the error if it is one for the
// client, and logs it.
func (s *session) reportStartupError(stage string, err error) {
	var pe *pgError
	if errors.As(err, &pe) {
		s.refusedStartup(pe.Code)
		s.fail(pe)
		s.logger().Info("client refused", "stage", stage, "sqlstate", pe.Code, "reason", pe.Message)
		return
	}
	if !isClosedErr(err) {
		s.logger().Info("client dropped during startup", "stage", stage, "err", err)
	}
}

// start authenticates and routes the client, checks its parameters on a
// backend, and tells it the server's parameters and its cancel key.
func (s *session) start(ctx context.Context, sm *pgproto3.StartupMessage, deadline time.Time) error {
	s.user = sm.Parameters["user"]
	if s.user == "" {
		return fatalf(codeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	database := sm.Parameters["database"]
	if database == "" {
		database = s.user // libpq's default, as PostgreSQL applies it
	}

	// Database pgtenant is the admin console: refused before the password
	// when it is off, so that no one is asked for one in vain.
	console := database == router.ConsoleDatabase
	if console && len(s.srv.liveConfig().AdminUsers) == 0 {
		return consoleOff()
	}
	if np := negotiation(sm); np != nil {
		if err := writeMsg(s.cw, np); err != nil {
			return err
		}
	}
	// Authentication ends with the startup deadline: the failure Limiter
	// must not queue an attempt, nor a user lookup run, past the moment
	// the socket gives up. Trust answers at once and waits on nothing, so
	// its clients do not pay for the deadline's timer (a few hundred bytes
	// a connection, which shows in a burst of connections).
	actx := ctx
	if _, trust := s.srv.auth.(auth.Trust); !trust {
		var cancel context.CancelFunc
		actx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	if err := s.srv.auth.Authenticate(actx, s, s.user); err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) {
			s.srv.countAuth(false)
			// The client hears only Code, Message and Detail; why (which
			// may say the user does not exist) goes to the log alone.
			s.logger().Info("authentication failed", "sqlstate", ae.Code, "reason", ae.Log, "err", ae.Err)
			return &pgError{Severity: "FATAL", Code: ae.Code, Message: ae.Message, Detail: ae.Detail}
		}
		return err
	}
	if console {
		return s.startConsole()
	}
	// Authenticated: the client leaves the startup slots and counts toward
	// max-client-conn (see serve).
	s.srv.countAuth(true)
	s.admitted()
	if maxConn := s.srv.liveConfig().MaxClientConn; s.srv.clients.Add(1) > int64(maxConn) {
		s.srv.clients.Add(-1)
		return fatalf(codeTooManyClients, "sorry, too many clients already (max-client-conn %d)", maxConn)
	}
	s.counted = true
	// The tenant option is taken out of the parameters before anything
	// else reads them: it is pgtenant's, and must reach neither the
	// backend nor the pin.
	optTenant, err := takeTenantOption(sm.Parameters)
	if err != nil {
		return err
	}
	t, err := s.srv.router.ResolveTenant(ctx, router.Startup{
		Database: database, User: s.user, ServerName: s.serverName(), OptionsTenant: optTenant,
	})
	if err != nil {
		return routeError(err)
	}
	if err := s.srv.access.CheckAccess(ctx, s.user, t); err != nil {
		return accessError(err)
	}
	s.tr.tenant, s.tr.user, s.tr.shared = t, s.user, s.srv.cfg.SharedSchemas
	s.te = s.srv.tenants.join(t.Name)
	if err := s.checkTenantClients(); err != nil {
		return err
	}
	if s.srv.pausedAll.Load() {
		s.te.pause.pause(s.srv.liveConfig().QueryWaitTimeout) // see consolePause
	}
	s.countClientIO()
	s.tr.maxStmts, s.tr.maxStmtBytes = s.srv.cfg.MaxClientStatements, s.srv.cfg.MaxClientStatementBytes

	params, perr := checkParams(sm.Parameters)
	if perr != nil {
		return perr
	}
	s.tr.params = params
	// The tenant's settings (loaded with its first client) go into the
	// pin, and so into the greeting's key.
	lctx, cancel := context.WithDeadline(ctx, deadline)
	s.srv.loadConf(lctx, s.te)
	cancel()
	s.tr.conf = s.te.conf.snap()
	s.tr.rebuildPin()

	// The parameters are checked on a backend once per distinct set: the
	// ParameterStatus messages the server reported for it are kept
	// (greetings), so a client that connects again with the same tenant and
	// parameters, as pgbench -C does for every transaction, is admitted
	// without a server round trip. Session mode needs its backend now anyway.
	greeting, known := s.srv.greetings.Get(s.tr.pin.key)
	var be *pool.Conn
	if !known || s.mode == config.PoolSession {
		var err error
		if be, err = s.checkoutTimed(ctx); err != nil {
			return s.asFatal(err)
		}
		if be, greeting, err = s.checkOnBackend(ctx, be); err != nil {
			return err
		}
		s.srv.greetings.Add(s.tr.pin.key, greeting)
	}
	// Registering the cancel key makes the session visible to shutdown
	// (closeIfIdle). The greeting is written without the lock; meanwhile
	// greeting makes closeIfIdle wait until it is out (and, in session
	// mode, the backend attached), so the two never write to cw at once.
	s.mu.Lock()
	s.srv.assignKey(s)
	s.greeting = true
	s.tr.greeted(greeting)
	s.mu.Unlock()
	_, _ = s.cw.Write(greeting)
	_ = writeMsg(s.cw, &pgproto3.BackendKeyData{ProcessID: s.key.pid, SecretKey: s.key.secret[:]})
	_, _ = s.cw.Write(readyForQuery('I'))
	err = s.cw.Flush()

	s.mu.Lock()
	s.greeting = false
	s.cond.Broadcast()
	if err == nil && s.mode == config.PoolSession {
		// Flushed first: from here on the backend goroutine owns cw.
		s.attachLocked(be, false, false)
		be = nil
	}
	s.mu.Unlock()
	if be != nil {
		s.srv.pool.Release(be)
	}
	return err
}

// checkOnBackend applies the client's pin to be, which reports a parameter
// the server rejects (the client then gets the server's error, FATAL, as
// PostgreSQL would give it at login) and, otherwise, the ParameterStatus
// values the client must be told: what the server reports after the pin,
// so they are the ones its queries will run with. It returns the backend
// it ended with; on error that has been released or destroyed.
//
// A pin that fails may fail for what the backend's previous holder left
// (pin.go), not for the client's parameters: it is tried once more, on
// another backend, before the client is refused.
func (s *session) checkOnBackend(ctx context.Context, be *pool.Conn) (*pool.Conn, []byte, error) {
	serverErr, err := s.applyPinNow(be)
	if err == nil && serverErr != nil {
		s.srv.pool.Destroy(be)
		s.logger().Warn("the pin failed on the server at startup; trying another server connection",
			"sqlstate", serverErr.Code, "err", serverErr.Message)
		if be, err = s.checkout(ctx, true); err != nil {
			return nil, nil, s.asFatal(err)
		}
		serverErr, err = s.applyPinNow(be)
	}
	if err != nil {
		s.srv.pool.Destroy(be)
		return nil, nil, fatalf(codeConnectionFailure, "pgtenant: server connection failed during startup: %v", err)
	}
	if serverErr != nil {
		// The pin failed whole (one transaction), but the state the
		// previous holder left is still there, and may be why.
		s.srv.pool.Destroy(be)
		return nil, nil, &pgError{Severity: "FATAL", Code: serverErr.Code, Message: serverErr.Message,
			Detail: serverErr.Detail, Hint: serverErr.Hint}
	}
	if v := be.Params["standard_conforming_strings"]; v != "on" {
		// The server's own default is off (postgresql.conf or the pool
		// role): see lexerSafe.
		s.srv.pool.Release(be)
		return nil, nil, fatalf(codeFeatureUnsupported,
			"pgtenant requires standard_conforming_strings = on on the backend (it is %q)", v)
	}
	names := make([]string, 0, len(be.Params))
	for name := range be.Params {
		names = append(names, name)
	}
	sort.Strings(names)
	var greeting []byte
	for _, name := range names {
		greeting, _ = (&pgproto3.ParameterStatus{Name: name, Value: be.Params[name]}).Encode(greeting)
	}
	return be, greeting, nil
}

// applyPinNow runs the pin on be and waits for its replies, keeping the
// server's reported parameters current. It is used at startup only, where
// the client must hear about a parameter the server rejects before it is
// admitted; afterwards the pin travels with the client's messages.
func (s *session) applyPinNow(be *pool.Conn) (*pgproto3.ErrorResponse, error) {
	_ = be.NetConn.SetDeadline(time.Now().Add(s.srv.cfg.ServerConnectTimeout))
	defer be.NetConn.SetDeadline(time.Time{})
	msgs, _ := s.pinFor(be)
	s.stats().pinned(false)
	if _, err := be.NetConn.Write(append(append([]byte(nil), msgs...), syncMsg...)); err != nil {
		return nil, err
	}
	var serverErr *pgproto3.ErrorResponse
	for left := 1; left > 0; {
		typ, n, err := peekHeader(be.Reader)
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'Z':
			if _, err := readBody(be.Reader, n); err != nil {
				return nil, err
			}
			left--
		case 'E':
			body, err := readBody(be.Reader, n)
			if err != nil {
				return nil, err
			}
			er := &pgproto3.ErrorResponse{}
			if err := er.Decode(body); err != nil {
				return nil, err
			}
			if serverErr == nil {
				serverErr = er
			}
		case 'S':
			if err := trackParameter(be, n); err != nil {
				return nil, err
			}
		default:
			if err := discard(be.Reader, n); err != nil {
				return nil, err
			}
		}
	}
	if serverErr == nil {
		be.State = s.tr.pin.key
	}
	return serverErr, nil
}

// trackParameter consumes a ParameterStatus and records it on the backend.
func trackParameter(be *pool.Conn, bodyLen int) error {
	body, err := readBody(be.Reader, bodyLen)
	if err != nil {
		return err
	}
	var ps pgproto3.ParameterStatus
	if err := ps.Decode(body); err != nil {
		return err
	}
	be.Params[ps.Name] = ps.Value // Decode copies the strings out of body
	return nil
}

// routeError maps the router's answer to what the client sees.
func routeError(err error) *pgError {
	var unknown *router.UnknownTenantError
	var disabled *router.DisabledTenantError
	var conflict *router.ConflictingClaimsError
	var none *router.NoTenantError
	switch {
	case errors.As(err, &conflict):
		return &pgError{Severity: "FATAL", Code: codeRejectedConnection, Message: conflict.Error(),
			Hint: "Name one tenant: the database (or user), the TLS host name and options pgtenant.tenant must agree."}
	case errors.As(err, &none):
		return &pgError{Severity: "FATAL", Code: codeUnknownTenant, Message: none.Error(), Hint: none.Hint()}
	case errors.As(err, &unknown):
		return fatalf(codeUnknownTenant, "tenant %q does not exist", unknown.Name)
	case errors.As(err, &disabled):
		return fatalf(codeTenantDisabled, "tenant %q is disabled", disabled.Name)
	default:
		return fatalf(codeConnectionFailure, "pgtenant: cannot look up tenant: %v", err)
	}
}

// accessError maps a TenantAccess answer to what the client sees.
func accessError(err error) *pgError {
	var denied *router.AccessDeniedError
	if errors.As(err, &denied) {
		return fatalf(codeInvalidAuthorization, "user %q is not allowed to connect to tenant %q", denied.User, denied.Tenant)
	}
	return fatalf(codeConnectionFailure, "pgtenant: cannot check tenant access: %v", err)
}

// asFatal turns a checkout failure at startup into the FATAL the client is
// told: a client cannot be told ERROR during startup and carry on.
//
// A wait for a backend that ran out is 57014 mid-session (the statement
// fails, as under statement_timeout, and the session goes on) but 53300
// here: no statement was cancelled, and 53300 is what PostgreSQL itself
// answers a connection it has no room for, which drivers and pools read as
// "connect again later" (psycopg: TooManyConnections, not QueryCanceled).
// PgBouncer's FATAL 08P01 "query_wait_timeout" would say the client broke
// the protocol. The message names the wait and what to tune, since many
// drivers show only the message.
func (s *session) asFatal(err error) *pgError {
	e := checkoutError(err)
	e.Severity = "FATAL"
	if e.Code != codeQueryCanceled {
		return e
	}
	e.Code = codeTooManyClients
	wait := s.srv.liveConfig().QueryWaitTimeout
	if errors.Is(err, pool.ErrTimeout) {
		// Otherwise the message already says why (the tenant's
		// max-backends, a pause).
		e.Message = fmt.Sprintf("pgtenant: no server connection became free within query-wait-timeout (%s) to start this session: every one is busy; raise --pool-size or --query-wait-timeout", wait)
	}
	e.Hint = fmt.Sprintf("A new client needs a server connection to start only in session mode, or when its tenant and startup parameters are new to pgtenant; it waited query-wait-timeout (%s). Other clients are admitted at once and wait with their first statement.", wait)
	return e
}

// checkoutError says why no backend connection could be had.
func checkoutError(err error) *pgError {
	var pe *pgError
	switch {
	case errors.As(err, &pe):
		// Already what the client should read (a tenant role's login
		// refused, see roleLoginError); a copy, since asFatal changes it.
		e := *pe
		return &e
	case errors.Is(err, pool.ErrTimeout):
		return errorf(codeQueryCanceled, "pgtenant: no server connection became free within query-wait-timeout")
	case errors.Is(err, pool.ErrClosed), errors.Is(err, context.Canceled):
		// Checkouts wait under the server's context, which ends only at
		// shutdown.
		return fatalf(codeAdminShutdown, "pgtenant is shutting down")
	default:
		return errorf(codeConnectionFailure, "pgtenant: cannot connect to the backend: %v", err)
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, errClientGone) || isEOF(err)
}

var errClientGone = fmt.Errorf("client terminated")

// closeIfIdle closes a client that has no backend attached, telling it why
// (shutdown). The client goroutine is then blocked reading and owns nothing
// that the close could tear. It reports whether it closed the client (no:
// a backend is attached, and the client may finish its transaction).
//
// It takes cw from the client goroutine under mu (cwBusy), and writes
// without the lock, with a one-second write deadline: the client goroutine
// sees cwBusy and ends instead of answering or attaching meanwhile. When
// that goroutine is already writing (cwBusy was set), the client is closed
// without a word rather than have two writers.
func (s *session) closeIfIdle() (closed bool) {
	tell, idle := s.claimIdle()
	if !idle {
		return false
	}
	if tell {
		s.fail(fatalf(codeAdminShutdown, "terminating connection because pgtenant is shutting down"))
	}
	_ = s.nc.Close()
	return true
}

// claimIdle takes cw for closeIfIdle when no backend is attached: tell
// says no one else is writing to it.
func (s *session) claimIdle() (tell, idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.link.state == linkDraining || s.greeting {
		s.cond.Wait() // about to be detached, or to be greeted
	}
	if !s.link.state.idle() {
		return false, false
	}
	tell = !s.cwBusy
	s.cwBusy = true
	return tell, true
}
