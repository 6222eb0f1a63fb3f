package proxy

// The client loop: the client goroutine reads each client message, learns
// what it must of it (inspect: names, what a text means, through the
// tracker), decides under mu what happens to it (routeMsg: answered here,
// refused, sent, or a backend checked out first; accountLocked records
// what the server will owe), and writes it to the backend without the
// lock (send). It flushes to the backend when the client has nothing more
// buffered.

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"time"
	"unsafe"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/proxy/sqlscan"
	"github.com/pgtenant/pgtenant/router"
)

// clientMsg is what the client goroutine learned of one message before
// deciding what to send for it.
type clientMsg struct {
	typ byte
	n   int // body length
	// whole is the body when it had to be read off the client reader (a
	// Parse of a named statement, a message larger than the buffer whose
	// text must be scanned, a Bind whose parameters matter); nil when the
	// message is still in the reader, to be copied on from there.
	whole []byte
	// name is the statement name of a Parse, Bind, Describe or Close;
	// mapped says pgtenant rewrites it (a named statement).
	name   string
	mapped bool
	// nameEnd: body bytes up to and including the statement name's NUL;
	// the rest of a Bind body is copied on unchanged.
	nameEnd int
	portal  string // Bind; Execute when a portal of the client's has effects
	kind    byte   // Describe, Close: 'S' or 'P'
	// Query and Parse: what the text means for the session; dirty says the
	// text may change it.
	res   scanResult
	text  string
	dirty bool
	// replace: the message is sent as these bytes instead (a refusal).
	replace []byte
	// after: pgtenant's own messages sent right behind this one.
	after []byte
}

// step is what the client goroutine does with a message once the locked
// part of its handling (routeMsg) has decided.
type step uint8

const (
	stepSend     step = iota // write it to the attached backend
	stepDrop                 // discard it (answered, skipped, or meaningless)
	stepCheckout             // get a backend first, then decide again
	stepWaitPin              // flush, wait for the pin to be confirmed, then decide again
	stepEnd                  // the session is over
	stepShutdown             // tell the client pgtenant shuts down; the session is over
)

// relayClient reads client messages until the client leaves.
func (s *session) relayClient(ctx context.Context) error {
	// pending: something was written to bw since the last flush point (this
	// goroutine's own view of unsent, so the check costs no lock).
	pending := false
	for {
		idleTimeout := s.srv.liveConfig().IdleTransactionTimeout // a reload may change it
		// Flush point: nothing more is buffered from the client, so send
		// what it has said so far in one write before waiting for more.
		if s.cr.Buffered() == 0 && pending {
			// A write error means the server is gone; the backend
			// goroutine sees that on its side and reports it.
			_ = s.bw.Flush()
			s.flushedToBackend()
			pending = false
		}
		// The wait for the next message's header is bounded while a
		// backend serves the client, so that a client idle in a
		// transaction is found (idleInTransaction); the body of a message
		// is never read under a deadline.
		armed := false
		if idleTimeout > 0 && s.cr.Buffered() < 5 {
			if deadline, ok := s.idleDeadline(idleTimeout); ok {
				_ = s.nc.SetReadDeadline(deadline)
				armed = true
			}
		}
		// KILL sets killed, then a read deadline in the past: checked after
		// the deadline above was armed, so that one cannot undo it.
		if s.killed.Load() {
			return errKilled
		}
		typ, n, err := peekHeader(s.cr)
		if armed {
			_ = s.nc.SetReadDeadline(time.Time{})
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				if s.idleInTransaction(idleTimeout) {
					return errIdleInTransaction
				}
				// Not idle in a transaction (a command runs, or the
				// backend went back to the pool): wait again.
				s.cr.clearTimeout()
				continue
			}
		}
		if err != nil {
			if s.killed.Load() {
				return errKilled
			}
			if errors.Is(err, errMalformed) {
				return s.violation(fatalf(codeProtocolViolation, "invalid message from client: %v", err))
			}
			return err
		}
		sent, err := s.handle(ctx, typ, n, &pending)
		if err == errClientDone {
			return nil
		}
		if err != nil {
			return err
		}
		if sent {
			pending = true
		}
	}
}

// handle routes and sends one client message whose header was peeked
// (typ, n). It returns sent when the message went to bw, and an error that
// ends the session (errClientDone when the client said Terminate). It is
// apart from relayClient so that the stack an idle client parks on, in
// relayClient's read, stays small: handle's frame (the message, its route)
// is not on it, and a goroutine whose stack fits 2 KiB never grows to 4.
func (s *session) handle(ctx context.Context, typ byte, n int, pending *bool) (sent bool, err error) {
	m := clientMsg{typ: typ, n: n}
	switch typ {
	case 'X':
		return false, errClientDone
	case 'Q', 'P', 'B', 'D', 'C', 'E', 'F':
		if err := s.inspect(&m); err != nil {
			var pe *pgError
			if errors.As(err, &pe) {
				return false, s.violation(pe)
			}
			return false, err
		}
	case 'S', 'H', 'd', 'c', 'f':
	default:
		return false, s.violation(fatalf(codeProtocolViolation, "invalid frontend message type %q", typ))
	}

	st, flush := s.routeMsg(ctx, &m, nil, nil)
	for st == stepWaitPin {
		// The pin and what the client sent behind it must reach the
		// server before its confirmation can come back.
		if *pending {
			_ = s.bw.Flush()
			s.flushedToBackend()
			*pending = false
		}
		s.waitPin()
		// The backend goroutine may have marked the link unsent for
		// the message in hand (see waitPin): the next flush point
		// clears it, whatever becomes of the message.
		*pending = true
		st, flush = s.routeMsg(ctx, &m, nil, nil)
	}
	if st == stepCheckout {
		s.waitingBackend.Store(true)
		be, err := s.checkoutTimed(ctx)
		s.waitingBackend.Store(false)
		if s.killed.Load() {
			// Killed while it waited: what it asked for must not run.
			if be != nil {
				s.srv.pool.Release(be)
			}
			return false, errKilled
		}
		st, flush = s.routeMsg(ctx, &m, be, err)
	}
	if flush {
		// Answers pgtenant gave while detached: the client goroutine
		// owns cw, and writes it out of the lock.
		_ = s.cw.Flush()
		s.cwDone()
	}
	switch st {
	case stepShutdown:
		// routeMsg set cwBusy: closeIfIdle leaves cw to this goroutine.
		s.fail(fatalf(codeAdminShutdown, "pgtenant is shutting down"))
		_ = s.dropMsg(&m)
		return false, errClientGone
	case stepEnd:
		_ = s.dropMsg(&m)
		return false, errClientGone
	case stepDrop:
		return false, s.dropMsg(&m)
	}
	return true, s.send(&m)
}

// errClientDone is handle's word for a client that said Terminate.
var errClientDone = errors.New("client terminated")

// errIdleInTransaction ends a client that stayed idle in a transaction
// longer than --idle-transaction-timeout (serve tells it, see
// endIdleInTransaction).
var errIdleInTransaction = errors.New("idle in transaction longer than idle-transaction-timeout")

// idleInTransactionLocked says whether the client is idle inside a
// transaction: a backend serves it, the last ReadyForQuery it was told said
// it is in a transaction ('T', or 'E' failed), and it has sent nothing since
// (nothing owed, no batch open, nothing waiting to be sent).
func (s *session) idleInTransactionLocked() bool {
	l := &s.link
	return l.state.serving() && l.status != 'I' && l.rm.len() == 0 && !l.open && !l.rm.copyIn &&
		!l.rm.skipping && !l.unsent
}

// idleDeadline is when the client, if it sends nothing, will have been idle
// in a transaction for d: d after its last ReadyForQuery when it is idle in
// one now, else d from now (a command still runs, and its ReadyForQuery may
// yet leave the client in a transaction). ok is false when no backend serves
// the client: a detached client is never in a transaction, and only the
// client goroutine attaches one.
func (s *session) idleDeadline(d time.Duration) (deadline time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.link.state.serving() {
		return time.Time{}, false
	}
	if s.idleInTransactionLocked() {
		return monoTime(s.link.readyAt).Add(d), true
	}
	return time.Now().Add(d), true
}

// idleInTransaction says whether the client has been idle in a transaction
// for d; if so, it is marked gone, so that the backend goroutine writes
// nothing more to it (a notice, a notification) and releases the backend
// once teardown's rollback is answered.
func (s *session) idleInTransaction(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.idleInTransactionLocked() || time.Duration(monoNow()-s.link.readyAt) < d {
		return false
	}
	s.clientGone = true
	return true
}

// flushedToBackend: everything accounted has been written out. A backend
// goroutine waiting to release at a safe point may go on.
func (s *session) flushedToBackend() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.link.unsent = false
	if s.link.parked {
		s.cond.Broadcast()
	}
}

// waitPin waits until the attached backend's pin is confirmed or the
// backend is gone. Meanwhile the link says a message is waiting
// (pinWaiter), so that the backend goroutine, confirming the pin, holds the
// backend for it (unsent) rather than release it at the ReadyForQuery of
// the batch before it.
func (s *session) waitPin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.link.pinWaiter = true
	for s.link.state.serving() && s.link.pinPending {
		s.cond.Wait()
	}
	s.link.pinWaiter = false
}

// cwDone: the client goroutine finished writing cw while detached.
func (s *session) cwDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cwBusy = false
}

// routeMsg decides, under the lock, what happens to one client message:
// answered or refused by pgtenant, dropped, sent to the attached backend
// (accounted in the reply model first), or held until a backend is checked
// out. On the second call, after a checkout, be and err are its outcome.
// flush says pgtenant wrote answers to cw that the caller must flush.
func (s *session) routeMsg(ctx context.Context, m *clientMsg, be *pool.Conn, checkoutErr error) (st step, flush bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.link.state.busy() {
		s.cond.Wait() // the backend goroutine is telling the client something
	}
	if s.link.state == linkLost || s.link.state.idle() && s.cwBusy {
		// The session ended with its backend, or shutdown is telling the
		// client it ends (closeIfIdle, which owns cw meanwhile).
		if be != nil {
			s.srv.pool.Release(be)
		}
		return stepEnd, false
	}
	switch s.link.state {
	case linkSkipping:
		if be != nil {
			s.srv.pool.Release(be)
		}
		if m.typ == 'S' {
			s.setLinkLocked(linkDetached)
			s.toldError(s.link.skipErr.Code)
			_ = writeMsg(s.cw, s.link.skipErr.Response())
			_, _ = s.cw.Write(readyForQuery('I'))
			s.link.skipErr = nil
			s.cwBusy = true
			return stepDrop, true
		}
		return stepDrop, false
	case linkDetached:
		switch {
		case be != nil || checkoutErr != nil:
			if checkoutErr != nil {
				s.refuseLocked(m.typ, checkoutError(checkoutErr))
				return stepDrop, s.cwBusy
			}
		case m.typ == 'd' || m.typ == 'c' || m.typ == 'f':
			// COPY data after the server already ended the COPY (it
			// failed): PostgreSQL ignores these too.
			return stepDrop, false
		case s.srv.draining.Load():
			s.cwBusy = true
			return stepShutdown, false
		default:
			answered, reserved := s.answerDetachedLocked(ctx, m)
			if answered {
				s.cwBusy = true
				return stepDrop, true
			}
			if reserved == nil {
				return stepCheckout, false
			}
			be = reserved
		}
		s.attachLocked(be, true, true)
	default:
		if be != nil {
			// Attached meanwhile (cannot happen: only this goroutine
			// attaches); give the extra one back.
			s.srv.pool.Release(be)
		}
		if s.link.state == linkAttached && s.safePointLocked() && m.typ != 'S' && m.typ != 'H' && s.te != nil {
			s.te.limits.charge() // a transaction without a checkout pays the rate too
		}
	}
	if s.link.pinPending && s.link.pinBoundary {
		// The client's first Sync or Query is out behind an unconfirmed
		// pin: if the pin failed, the server would run this message.
		return stepWaitPin, false
	}
	s.out = s.out[:0]
	if !s.accountLocked(m) {
		return stepDrop, false
	}
	s.link.unsent = true
	if s.link.parked {
		// The backend goroutine waits to release at what was a safe
		// point; this message may end it, and the goroutine must go back
		// to reading replies rather than wait for a flush that a full
		// server socket could hold up.
		s.cond.Broadcast()
	}
	return stepSend, false
}

// body returns the message's body: from the reader's buffer when it fits
// (valid until the next read), else read off the reader into m.whole, which
// grows as the bytes arrive (readWhole): the length was only claimed.
func (s *session) body(m *clientMsg) ([]byte, error) {
	if m.whole != nil {
		return m.whole, nil
	}
	if 5+m.n <= s.cr.Size() {
		b, err := s.cr.Peek(5 + m.n)
		if err != nil {
			return nil, err
		}
		return b[5:], nil
	}
	if _, err := s.cr.Discard(5); err != nil {
		return nil, err
	}
	whole, err := readWhole(s.cr, m.n)
	if err != nil {
		return nil, err
	}
	m.whole = whole
	return whole, nil
}

// consume reads the message off the reader into m.whole, so it can be
// rewritten.
func (s *session) consume(m *clientMsg) error {
	if m.whole != nil {
		return nil
	}
	b, err := s.body(m)
	if err != nil || m.whole != nil {
		return err
	}
	m.whole = append([]byte(nil), b...)
	_, err = s.cr.Discard(5 + m.n)
	return err
}

// inspect learns what pgtenant must know of a Query, Parse, Bind, Describe,
// Close or Execute before it is sent (and before the lock is taken, as it
// may have to read the rest of the message): statement and portal names,
// and what a text means for the session.
func (s *session) inspect(m *clientMsg) error {
	bad := func() error { return fatalf(codeProtocolViolation, "malformed %q message", m.typ) }
	switch m.typ {
	case 'Q':
		body, err := s.body(m)
		if err != nil {
			return err
		}
		if len(body) == 0 || body[len(body)-1] != 0 {
			return bad()
		}
		s.scan(m, body[:len(body)-1])
	case 'P':
		body, err := s.body(m)
		if err != nil {
			return err
		}
		if len(body) > 0 && body[0] != 0 {
			// A named statement: keep the whole Parse.
			if err := s.consume(m); err != nil {
				return err
			}
			body = m.whole
			m.mapped = true
		}
		name, rest, ok := splitName(body)
		if !ok {
			return bad()
		}
		text, _, ok := splitName(rest)
		if !ok {
			return bad()
		}
		m.name = name
		s.scan(m, []byte(text))
		if m.res.refuse != nil {
			// A refused text is rewritten: it needs the whole message.
			if err := s.consume(m); err != nil {
				return err
			}
		} else if !m.mapped {
			// Remember the client's unnamed statement, to re-prepare it
			// on the next backend; the message itself is copied on from
			// the reader. The buffer is reused: one unnamed statement at
			// a time. One large statement does not keep its buffer
			// for the small ones after it (unnamedParse may still hold
			// it, until this Parse is accounted).
			if cap(s.tr.unnamedBuf) > unnamedKeep && len(rest) <= unnamedKeep {
				s.tr.unnamedBuf = nil
			}
			s.tr.unnamedBuf = append(s.tr.unnamedBuf[:0], rest...)
		}
	case 'B':
		body, err := s.body(m)
		if err != nil {
			return err
		}
		portal, rest, ok := splitName(body)
		if !ok {
			return bad()
		}
		name, _, ok := splitName(rest)
		if !ok {
			return bad()
		}
		m.name, m.portal = name, portal
		m.nameEnd = len(portal) + 1 + len(name) + 1
		m.mapped = name != ""
		if eff := s.tr.effectsOf(name); eff != nil && len(eff.params) > 0 {
			// set_config values come as parameters: keep the body to
			// read them.
			if err := s.consume(m); err != nil {
				return err
			}
		}
	case 'E':
		if len(s.tr.portalFx) == 0 {
			return nil // no portal of the client's changes anything
		}
		body, err := s.body(m)
		if err != nil {
			return err
		}
		portal, _, ok := splitName(body)
		if !ok {
			return bad()
		}
		m.portal = portal
	case 'F':
		body, err := s.body(m)
		if err != nil {
			return err
		}
		if len(body) < 4 {
			return bad()
		}
		// A function called this way may change anything a SELECT of it
		// could; pgtenant reads no arguments, so the backend is pinned
		// afresh for the next holder.
		m.dirty = true
		if what, ok := refusedFunctionCalls[binary.BigEndian.Uint32(body)]; ok {
			m.res.refuse = &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
				Message: "pgtenant: " + what + " cannot be called through a FunctionCall message",
				Hint:    "Call it in a query (SELECT ...), where pgtenant can see what it changes."}
		}
	case 'D', 'C':
		body, err := s.body(m)
		if err != nil {
			return err
		}
		if len(body) < 2 {
			return bad()
		}
		m.kind = body[0]
		name, _, ok := splitName(body[1:])
		if !ok || (m.kind != 'S' && m.kind != 'P') {
			return bad()
		}
		if m.kind == 'S' && name != "" {
			m.name, m.mapped = name, true
		}
	}
	return nil
}

// unnamedKeep is the largest unnamed statement buffer kept for the next
// unnamed Parse.
const unnamedKeep = 64 << 10

// refusedFunctionCalls are functions, by OID (fixed in PostgreSQL's
// catalog), that a FunctionCall message may not call: each changes session
// state pgtenant tracks from query texts (state.go), which it cannot read
// from a FunctionCall's binary arguments.
var refusedFunctionCalls = map[uint32]string{
	2078: "set_config",
	2880: "pg_advisory_lock", 2881: "pg_advisory_lock_shared",
	2882: "pg_try_advisory_lock", 2883: "pg_try_advisory_lock_shared",
	2886: "pg_advisory_lock", 2887: "pg_advisory_lock_shared",
	2888: "pg_try_advisory_lock", 2889: "pg_try_advisory_lock_shared",
}

// scan classifies a statement text; the quick check needs no copy.
func (s *session) scan(m *clientMsg, text []byte) {
	if len(text) == 0 || !sqlscan.Interesting(unsafe.String(&text[0], len(text))) {
		return
	}
	m.text = string(text)
	m.res = s.tr.scanText(m.text)
	if m.res.createDatabase != "" && s.tenantExists(m.res.createDatabase) {
		m.res.refuse = existingTenantDatabaseError(m.res.createDatabase)
	}
	// The text may change the session: the backend cannot be reused
	// without a pin once this client is done with it.
	m.dirty = true
}

// tenantExists reports whether this client could connect with name as its
// database: a tenant (or alias) it may use, under --tenant-from database.
// A lookup that fails says no.
func (s *session) tenantExists(name string) bool {
	if s.srv.cfg.TenantFrom != config.TenantFromDatabase {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), tenantExistsTimeout)
	defer cancel()
	t, err := s.srv.router.ResolveTenant(ctx, router.Startup{Database: name, User: s.user})
	if err != nil {
		return false
	}
	return s.srv.access.CheckAccess(ctx, s.user, t) == nil
}

// tenantExistsTimeout bounds tenantExists's registry lookup.
const tenantExistsTimeout = 5 * time.Second

// answerDetachedLocked answers, without a backend, a message that needs
// none, and reports whether it did; reserved is a backend it checked out
// instead, to attach for m at once. Then a client that prepares its
// statements outside a transaction takes no backend for it, which matters
// beyond speed: pgbench prepares with a synchronous call that blocks every
// client of its thread, so if that call had to wait for a backend held by
// another client of the same thread, neither could go on.
//   - Parse of a named statement, when no backend is free: recorded,
//     answered ParseComplete, and prepared on the backend at the first Bind
//     or Describe (so an error in it is reported there, the one difference
//     from PostgreSQL, and only under pool pressure).
//   - Close of a named statement (or of a portal, which cannot exist
//     between transactions): CloseComplete.
//   - Sync when nothing of the batch went to a server: ReadyForQuery 'I'
//     (a detached client is never in a transaction).
//   - Flush: flush what was answered.
//
// Called with cw owned by the client goroutine (no backend attached); the
// caller flushes what it wrote, outside the lock.
func (s *session) answerDetachedLocked(ctx context.Context, m *clientMsg) (answered bool, reserved *pool.Conn) {
	switch m.typ {
	case 'P':
		if m.mapped {
			if _, exists := s.tr.stmts[m.name]; !exists {
				_, rest, _ := splitName(m.whole)
				if e := s.tr.stmtLimit(m.name, rest); e != nil {
					// No backend needed: the batch is skipped to its Sync,
					// which is answered with e (refuseLocked).
					s.refuseLocked(m.typ, e)
					return true, nil
				}
			}
		}
		res := &m.res
		if !m.mapped || res.refuse != nil || res.unpoolable != "" || res.dropStatements || len(res.refs) > 0 {
			return false, nil
		}
		if _, exists := s.tr.stmts[m.name]; exists {
			return false, nil // the server must say 42P05
		}
		// Only when no backend is free: a free one answers exactly as
		// PostgreSQL would (a syntax error at once, not at first use).
		if be, err := s.checkout(ctx, false); err == nil {
			return false, be
		}
		_, rest, _ := splitName(m.whole)
		s.tr.addClientStmt(m.name, rest, stmtEffects{changes: res.changes, params: res.params}, true, s.srv.stmtSeq.Add(1))
		_, _ = s.cw.Write(parseComplete)
	case 'C':
		if m.mapped {
			s.tr.dropClientStmt(m.name)
		}
		_, _ = s.cw.Write(closeComplete)
	case 'S':
		_, _ = s.cw.Write(readyForQuery('I'))
	case 'H':
	default:
		return false, nil
	}
	return true, nil
}

// send writes what accountLocked prepared and then the message itself:
// copied on unchanged, renamed, or replaced.
func (s *session) send(m *clientMsg) error {
	if len(s.out) > 0 {
		_, _ = s.bw.Write(s.out)
	}
	var err error
	switch {
	case m.replace != nil:
		_, _ = s.bw.Write(m.replace)
		err = s.dropMsg(m)
	case m.mapped && m.typ == 'B':
		// s.out ended with the renamed front of the Bind; the rest of
		// the body follows as it came.
		if m.whole != nil {
			_, err = s.bw.Write(m.whole[m.nameEnd:])
		} else if _, err = s.cr.Discard(5 + m.nameEnd); err == nil {
			err = streamBody(s.cr, s.bw, m.n-m.nameEnd)
		}
	case m.mapped: // Parse, Describe, Close of a named statement: s.out replaced it
		err = s.dropMsg(m)
	case m.whole != nil:
		_, _ = s.bw.Write(appendHeader(nil, m.typ, m.n))
		_, err = s.bw.Write(m.whole)
	default:
		err = forward(s.cr, s.bw, m.n)
	}
	if err == nil && m.after != nil {
		_, _ = s.bw.Write(m.after)
	}
	var ce *copyError
	if err != nil && errors.As(err, &ce) && ce.write {
		// Writing to the server failed: the backend goroutine will see
		// the dead connection and tell the client.
		return nil
	}
	return err
}

// dropMsg discards a message the client sent that will not be sent on.
func (s *session) dropMsg(m *clientMsg) error {
	if m.whole != nil {
		return nil // already consumed
	}
	return discard(s.cr, m.n)
}

// refuseLocked answers a client message that cannot run because no backend
// could be had, the way PostgreSQL answers a failed command: an error, then
// ReadyForQuery at the end of the command (at once for Query and Sync, at
// the client's next Sync for an extended-protocol batch). The caller
// flushes cw when cwBusy is set.
func (s *session) refuseLocked(typ byte, e *pgError) {
	s.stats().refused(e.Code)
	switch typ {
	case 'Q', 'F', 'S':
		s.toldError(e.Code)
		_ = writeMsg(s.cw, e.Response())
		_, _ = s.cw.Write(readyForQuery('I'))
		s.cwBusy = true
	default:
		s.link.skipErr = e
		s.setLinkLocked(linkSkipping)
	}
}

// violation ends the session with a FATAL protocol error. With a backend
// attached, the backend goroutine owns the client writer: it is handed the
// error and the backend is closed, and it sends the error as it winds down.
func (s *session) violation(e *pgError) error {
	s.startDueReader()
	s.mu.Lock()
	for s.link.state.busy() {
		s.cond.Wait()
	}
	be := s.link.be
	if !s.link.state.serving() {
		// cw is this goroutine's, unless shutdown is writing to it.
		tell := !s.cwBusy
		s.cwBusy = true
		s.mu.Unlock()
		if tell {
			s.fail(e)
		}
		return e
	}
	s.link.violation = e
	s.setLinkLocked(linkClosing) // a backend goroutine parked at a safe point gives up
	s.mu.Unlock()
	_ = be.NetConn.Close()
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	s.backendDone.Wait()
	return e
}
