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
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// session is one client connection, from admission to close.
//
// Two goroutines serve it. The client goroutine (run, relayClient) reads the
// client's messages and writes them to the attached backend through bw,
// checking a backend out first when none is attached. The backend goroutine
// (serveBackend) exists while a backend is attached: it reads the backend's
// replies, writes them to the client through cw, and at a safe point
// releases the backend and ends. Neither hands messages to the other; they
// meet only in the reply model (rm) and the link state under mu.
//
// Ownership: bw and the client reader belong to the client goroutine. cw
// belongs to the backend goroutine while the link is attached or failing
// (link.go) and to the client goroutine otherwise; whoever changes the link
// holds mu and has flushed cw first. Every section that holds mu releases it
// in a defer, so a panic cannot leave it held.
type session struct {
	srv  *Server
	nc   net.Conn
	cr   *inBuf
	cw   *outBuf
	bw   *outBuf // writes to the attached backend; reset on each attach
	mode config.PoolMode

	user string
	key  cancelKey
	// tr is what pgtenant knows of the client's session (tracker.go).
	tr tracker

	// backendDone is waited for before the session ends.
	backendDone sync.WaitGroup
	// out collects what the client goroutine sends for one client message
	// besides (or instead of) the message itself. Client goroutine only.
	out []byte
	// curClient: the oldest reply owed is the client's Execute or Query,
	// so a DataRow or CopyData is the client's and is forwarded without
	// the lock. Backend goroutine only; set under mu with each verdict.
	curClient bool
	// curQuery: more precisely, a Query of the client's with nothing of
	// pgtenant's inside it, whose RowDescription, CommandComplete,
	// EmptyQueryResponse and notices go the same way. queryRollback and
	// queryTagged carry the client's last CommandComplete's ROLLBACK tag,
	// seen on the hot path or under the lock, to the next ReadyForQuery
	// (lastRollback, settleLocked). Backend goroutine only.
	curQuery, queryRollback, queryTagged bool

	mu sync.Mutex
	// cond is signalled (with mu) when link, unsent or cancelling change,
	// or one of pgtenant's own queries is answered: the client goroutine
	// waits out linkFailing, the backend goroutine a pending send before a
	// release, a cancel the pin's reply.
	cond *sync.Cond
	// link is the state of the attached backend (link.go); be is that
	// backend while linkAttached, nil otherwise.
	link linkState
	be   *pool.Conn
	// reserved is a backend taken by answerDetachedLocked's try, about to
	// be attached.
	reserved *pool.Conn
	// rm is what the attached backend owes, in order (replies.go).
	rm replyModel
	// open: the client sent extended-protocol messages after its last Sync.
	open bool
	// unsent: the client goroutine accounted a message it has not yet
	// written out and flushed to the backend; the backend must not change
	// hands before it is. parked: the backend goroutine waits for that.
	unsent, parked bool
	// cancelling: a cancel request is being forwarded to the attached
	// backend; it must not change hands until the server acted on it.
	cancelling bool
	// status is the last transaction status the client was told.
	status byte
	// skipTillSync: a batch of the client's could not be sent (no backend
	// could be had); like PostgreSQL after an error, discard the client's
	// messages up to its Sync, then answer it with skipErr and
	// ReadyForQuery.
	skipTillSync bool
	skipErr      *pgError
	// pinErr is the error one of pgtenant's own queries reported.
	pinErr *pgproto3.ErrorResponse
	// violated: the client broke the protocol while a backend was attached;
	// the backend goroutine sends this FATAL error as it winds down.
	violated *pgError
	// pinned, when not empty, says why the client keeps its backend until
	// it disconnects (a session feature that cannot move between backends).
	pinned string
	// dirty: since the backend was attached, the client sent something
	// that may change session state, so the backend is released without
	// its pin key (see attachLocked).
	dirty bool
	// unnamedHere: the attached backend has the client's unnamed
	// statement (tracker.unnamedParse). Client goroutine and mu.
	unnamedHere bool
	// swallowing: the rows of pgtenant's restore statement inside a
	// client's Query are arriving (backend goroutine, under mu).
	swallowing bool
	// cwBusy: the client goroutine, detached, wrote answers to cw that it
	// has yet to flush (outside the lock); shutdown must not write to cw
	// meanwhile (closeIfIdle).
	cwBusy bool
	// clientGone: the client left; the backend goroutine releases at the
	// next safe point whatever the pool mode, and writes nothing to cw.
	clientGone bool
}

func newSession(srv *Server, nc net.Conn) *session {
	s := &session{
		srv:    srv,
		nc:     nc,
		cr:     newInBuf(nc),
		cw:     &outBuf{w: nc},
		bw:     &outBuf{},
		mode:   srv.cfg.PoolMode,
		status: 'I',
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
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeMsg(s.cw, e.response())
	_ = s.cw.Flush()
}

// serve runs the whole life of the connection. admitted is called once
// the startup phase is over (the StartupMessage arrived, or admission
// failed): it gives back the connection's startup slot (startup.go), as the
// client now counts toward max-client-conn.
func (s *session) serve(ctx context.Context, admitted func()) {
	defer func() {
		if r := recover(); r != nil {
			// Every locked section unlocks in a defer, so teardown can
			// take the lock; once the backend goroutine is done, cw is
			// this goroutine's to say why the session ends.
			s.logger().Error("session panic", "panic", r)
			s.teardown()
			s.backendDone.Wait()
			s.fail(fatalf(codeInternalError, "%v", errInternal))
		}
		_ = s.nc.Close()
	}()

	// The startup deadline (StartupTimeout after accept) bounds admission
	// and authentication; the socket has it until the client is in.
	deadline := time.Now().Add(s.srv.cfg.StartupTimeout)
	_ = s.nc.SetDeadline(deadline)
	startup, err := s.admit()
	admitted()
	// From here on every client message is framed by s.cr, which admit
	// may have replaced (TLS): cap the lengths it will take.
	s.cr.maxMessage = s.srv.cfg.MaxMessageSize
	if err != nil {
		s.reportStartupError("admit", err)
		return
	}
	if startup == nil {
		return // a CancelRequest, handled
	}
	if s.srv.clients.Add(1) > int64(s.srv.cfg.MaxClientConn) {
		s.srv.clients.Add(-1)
		s.fail(fatalf(codeTooManyClients, "sorry, too many clients already (max-client-conn %d)", s.srv.cfg.MaxClientConn))
		return
	}
	defer s.srv.clients.Add(-1)

	defer s.srv.unregister(s) // start registers the cancel key it hands out
	if err := s.start(ctx, startup, deadline); err != nil {
		if ctx.Err() != nil && !isClosedErr(err) {
			// Shutdown cancelled whatever start was waiting on (a
			// registry lookup, a backend); that, not the cancelled
			// lookup, is what the client should hear.
			err = fatalf(codeAdminShutdown, "pgtenant is shutting down")
		}
		s.reportStartupError("startup", err)
		return
	}
	_ = s.nc.SetDeadline(time.Time{})

	if s.srv.log.Enabled(ctx, slog.LevelDebug) {
		s.logger().Debug("client admitted")
	}
	err = s.relayClient(ctx)
	// The client is done: close its socket first, so a backend goroutine
	// blocked writing to a client that stopped reading fails at once
	// instead of holding up the teardown.
	_ = s.nc.Close()
	s.teardown()
	s.backendDone.Wait()
	if err != nil && !isClosedErr(err) {
		s.logger().Info("client connection ended", "err", err)
	}
}

// reportStartupError sends the client the error if it is one for the
// client, and logs it.
func (s *session) reportStartupError(stage string, err error) {
	var pe *pgError
	if errors.As(err, &pe) {
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
			// The client hears only Code, Message and Detail; why (which
			// may say the user does not exist) goes to the log alone.
			s.logger().Info("authentication failed", "sqlstate", ae.Code, "reason", ae.Log, "err", ae.Err)
			return &pgError{Severity: "FATAL", Code: ae.Code, Message: ae.Message, Detail: ae.Detail}
		}
		return err
	}
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
	s.tr.tenant, s.tr.shared = t, s.srv.cfg.SharedSchemas

	params, perr := checkParams(sm.Parameters)
	if perr != nil {
		return perr
	}
	s.tr.params = params
	s.tr.pin = buildPin(t.Schema, params)

	// The parameters are checked on a backend once per distinct set: the
	// ParameterStatus messages the server reported for it are kept
	// (greetings), so a client that connects again with the same tenant and
	// parameters, as pgbench -C does for every transaction, is admitted
	// without a server round trip. Session mode needs its backend now anyway.
	greeting, known := s.srv.greetings.Get(s.tr.pin.key)
	var be *pool.Conn
	if !known || s.mode == config.PoolSession {
		var err error
		if be, err = s.srv.pool.Checkout(ctx); err != nil {
			return asFatal(err)
		}
		if greeting, err = s.checkOnBackend(be); err != nil {
			return err
		}
		s.srv.greetings.Add(s.tr.pin.key, greeting)
	}
	// Registering the cancel key makes the session visible to shutdown,
	// whose closeIfIdle writes to cw under mu; so mu is held from here
	// until the greeting is out (and, in session mode, the backend is
	// attached), or the two would write to cw at once.
	s.mu.Lock()
	_, _ = s.cw.Write(greeting)
	s.srv.assignKey(s)
	_ = writeMsg(s.cw, &pgproto3.BackendKeyData{ProcessID: s.key.pid, SecretKey: s.key.secret[:]})
	_, _ = s.cw.Write(readyForQuery('I'))

	if err := s.cw.Flush(); err != nil {
		s.mu.Unlock()
		if be != nil {
			s.srv.pool.Release(be)
		}
		return err
	}
	if s.mode == config.PoolSession {
		// Flushed first: from here on the backend goroutine owns cw.
		s.attachLocked(be, false)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if be != nil {
		s.srv.pool.Release(be)
	}
	return nil
}

// checkOnBackend applies the client's pin to be, which reports a parameter
// the server rejects (the client then gets the server's error, FATAL, as
// PostgreSQL would give it at login) and, otherwise, the ParameterStatus
// values the client must be told: what the server reports after the pin,
// so they are the ones its queries will run with. On error be has been
// released or destroyed.
func (s *session) checkOnBackend(be *pool.Conn) ([]byte, error) {
	serverErr, err := s.applyPinNow(be)
	if err != nil {
		s.srv.pool.Destroy(be)
		return nil, fatalf(codeConnectionFailure, "pgtenant: server connection failed during startup: %v", err)
	}
	if serverErr != nil {
		be.State = ""
		s.srv.pool.Release(be)
		return nil, &pgError{Severity: "FATAL", Code: serverErr.Code, Message: serverErr.Message,
			Detail: serverErr.Detail, Hint: serverErr.Hint}
	}
	if v := be.Params["standard_conforming_strings"]; v != "on" {
		// The server's own default is off (postgresql.conf or the pool
		// role): see lexerSafe.
		s.srv.pool.Release(be)
		return nil, fatalf(codeFeatureUnsupported,
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
	return greeting, nil
}

// applyPinNow runs the pin on be and waits for its replies, keeping the
// server's reported parameters current. It is used at startup only, where
// the client must hear about a parameter the server rejects before it is
// admitted; afterwards the pin travels with the client's messages.
func (s *session) applyPinNow(be *pool.Conn) (*pgproto3.ErrorResponse, error) {
	_ = be.NetConn.SetDeadline(time.Now().Add(s.srv.cfg.ServerConnectTimeout))
	defer be.NetConn.SetDeadline(time.Time{})
	if _, err := be.NetConn.Write(s.tr.pin.msgs); err != nil {
		return nil, err
	}
	var serverErr *pgproto3.ErrorResponse
	for left := s.tr.pin.queries; left > 0; {
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

// asFatal turns a checkout failure into a FATAL startup error.
func asFatal(err error) *pgError {
	e := checkoutError(err)
	e.Severity = "FATAL"
	return e
}

// checkoutError says why no backend connection could be had.
func checkoutError(err error) *pgError {
	switch {
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
