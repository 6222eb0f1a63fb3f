package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/proxy/sqlscan"
)

// The safe point. A backend may change hands only when all of these hold:
//   - every reply it owes is in (the reply model is empty): each message
//     sent, the client's and pgtenant's own, has been answered
//     (replies.go);
//   - the client has sent nothing after its last Sync (!open);
//   - the server is not in COPY FROM STDIN;
//   - the last ReadyForQuery said 'I': no transaction is open;
//   - everything the client goroutine decided to send has been written
//     and flushed (!unsent), and no cancel is on its way to the backend;
//   - the link is not pinned (session mode, or a session feature in use),
//     unless the client is leaving.
// The check runs when a ReadyForQuery arrives, the only moment it can become
// true (safePointLocked); then the backend is released (releaseAtSafePoint).

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
	stepEnd                  // the session is over
	stepShutdown             // tell the client pgtenant shuts down; the session is over
)

// relayClient reads client messages until the client leaves.
func (s *session) relayClient(ctx context.Context) error {
	// pending: something was written to bw since the last flush point (this
	// goroutine's own view of unsent, so the check costs no lock).
	pending := false
	for {
		// Flush point: nothing more is buffered from the client, so send
		// what it has said so far in one write before waiting for more.
		if s.cr.Buffered() == 0 && pending {
			// A write error means the server is gone; the backend
			// goroutine sees that on its side and reports it.
			_ = s.bw.Flush()
			s.flushedToBackend()
			pending = false
		}
		typ, n, err := peekHeader(s.cr)
		if err != nil {
			if errors.Is(err, errMalformed) {
				return s.violation(fatalf(codeProtocolViolation, "invalid message from client: %v", err))
			}
			return err
		}
		m := clientMsg{typ: typ, n: n}
		switch typ {
		case 'X':
			return nil
		case 'Q', 'P', 'B', 'D', 'C', 'E':
			if err := s.inspect(&m); err != nil {
				var pe *pgError
				if errors.As(err, &pe) {
					return s.violation(pe)
				}
				return err
			}
		case 'S', 'H', 'F', 'd', 'c', 'f':
		default:
			return s.violation(fatalf(codeProtocolViolation, "invalid frontend message type %q", typ))
		}

		st, flush := s.routeMsg(ctx, &m, nil, nil)
		if st == stepCheckout {
			be, err := s.srv.pool.Checkout(ctx)
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
			return errClientGone
		case stepEnd:
			_ = s.dropMsg(&m)
			return errClientGone
		case stepDrop:
			if err := s.dropMsg(&m); err != nil {
				return err
			}
			continue
		}
		pending = true
		if err := s.send(&m); err != nil {
			return err
		}
	}
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
	case linkLost:
		if be != nil {
			s.srv.pool.Release(be)
		}
		return stepEnd, false
	case linkSkipping:
		if be != nil {
			s.srv.pool.Release(be)
		}
		if m.typ == 'S' {
			s.setLinkLocked(linkDetached)
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
		s.attachLocked(be, true)
	default:
		if be != nil {
			// Attached meanwhile (cannot happen: only this goroutine
			// attaches); give the extra one back.
			s.srv.pool.Release(be)
		}
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
			// a time.
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

// scan classifies a statement text; the quick check needs no copy.
func (s *session) scan(m *clientMsg, text []byte) {
	if len(text) == 0 || !sqlscan.Interesting(unsafe.String(&text[0], len(text))) {
		return
	}
	m.text = string(text)
	m.res = s.tr.scanText(m.text)
	// The text may change the session: the backend cannot be reused
	// without a pin once this client is done with it.
	m.dirty = true
}

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
		res := &m.res
		if !m.mapped || res.refuse != nil || res.unpoolable != "" || res.dropStatements || len(res.refs) > 0 {
			return false, nil
		}
		if _, exists := s.tr.stmts[m.name]; exists {
			return false, nil // the server must say 42P05
		}
		// Only when no backend is free: a free one answers exactly as
		// PostgreSQL would (a syntax error at once, not at first use).
		if be, err := s.srv.pool.TryCheckout(ctx); err == nil {
			return false, be
		}
		_, rest, _ := splitName(m.whole)
		s.tr.addClientStmt(m.name, rest, stmtEffects{changes: res.changes, params: res.params}, true, s.srv.stmtSeq.Add(1))
		_, _ = s.cw.Write(parseComplete)
	case 'C':
		if m.mapped {
			delete(s.tr.stmts, m.name)
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

var (
	parseComplete = []byte{'1', 0, 0, 0, 4}
	closeComplete = []byte{'3', 0, 0, 0, 4}
	// bindUnnamed binds the unnamed statement to the unnamed portal, with
	// no parameters and text results; executeUnnamed runs it to the end.
	bindUnnamed    = []byte{'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0}
	executeUnnamed = []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0}
)

// ensureUnnamedLocked re-prepares the client's unnamed statement on a
// backend that has not seen it: a client may Parse it in one Sync batch and
// Bind it in the next (pgx's describe-exec mode does), and in between the
// backend may have changed hands.
func (s *session) ensureUnnamedLocked() {
	if s.link.unnamedHere || s.tr.unnamedParse == nil {
		return
	}
	s.out = appendParse(s.out, "", s.tr.unnamedParse)
	s.expectLocked(entry{kind: replyParse, own: true})
	s.link.unnamedHere = true
}

// refusedParse is the body of a Parse whose text is replaced by a
// statement that raises refuse; the parameter types stay, so the client's
// Bind still fits.
func refusedParse(m *clientMsg, refuse *pgError) []byte {
	return replacedParse(m, raiseSQL(refuse))
}

// replacedParse is the body of the Parse m with its text replaced.
func replacedParse(m *clientMsg, text string) []byte {
	name, rest, _ := splitName(m.whole)
	_, tail, _ := splitName(rest)
	out := append([]byte(name), 0)
	out = append(out, text...)
	out = append(out, 0)
	return append(out, tail...)
}

// deallocateAllStandIn is what the server runs for a client's DEALLOCATE
// ALL in transaction pooling: a statement that changes nothing (it resets
// a placeholder setting of pgtenant's), so the statements the backend keeps
// for the tenant's other clients stay.
const deallocateAllStandIn = "RESET pgtenant.deallocate_all"

// accountLocked records what the server owes for a client message about to
// be sent and queues into s.out whatever pgtenant must send before it (or,
// for mapped messages, instead of it). It returns false when the message is
// not to be sent at all.
func (s *session) accountLocked(m *clientMsg) bool {
	if m.dirty {
		s.link.dirty = true
	}
	if !s.link.rm.skipping && !s.link.rm.copyIn {
		// Statements a confirmed Parse replaced (promoteLocked) are
		// closed ahead of whatever is sent next.
		for _, name := range s.link.be.Statements.TakeCloses() {
			s.out = appendClose(s.out, 'S', name)
			s.expectLocked(entry{kind: replyClose, own: true})
		}
	}
	switch m.typ {
	case 'Q':
		// A simple Query destroys the unnamed statement.
		s.tr.unnamedParse, s.link.unnamedHere = nil, false
		e := entry{kind: replyQuery}
		var after string
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			m.replace, _ = (&pgproto3.Query{String: raiseSQL(refuse)}).Encode(nil)
		} else {
			e.changes = m.res.changes
			text := ""
			switch {
			case m.res.deallocateAllOnly && s.link.state == linkAttached:
				// The client's DEALLOCATE ALL drops the client's
				// statements (sessionEffectsLocked did), not the ones
				// the backend keeps for every client of the tenant: the
				// server runs a statement that changes nothing, and the
				// client hears the tag it expects.
				text = deallocateAllStandIn
				e.tag = "DEALLOCATE ALL"
			case len(m.res.refs) > 0:
				text = s.rewriteRefsLocked(m.text, m.res.refs)
			case m.res.discardAlone:
				// DISCARD ALL must be alone in its Query: the client's
				// defaults follow in a Query of pgtenant's.
				after = s.tr.restoreSQL(m.res.changes)
			case len(m.res.resets) > 0:
				if text = s.tr.inlineRestores(m.text, m.res.resets); text != "" {
					e.restoreInline = true
				}
			}
			if text != "" {
				m.replace, _ = (&pgproto3.Query{String: text}).Encode(nil)
			}
		}
		s.expectLocked(e)
		if after != "" {
			m.after, _ = (&pgproto3.Query{String: after}).Encode(nil)
			s.expectLocked(entry{kind: replyQuery, own: true, soft: true})
		}
	case 'F':
		s.expectLocked(entry{kind: replyQuery})
	case 'S':
		s.link.open = false
		s.expectLocked(entry{kind: replySync})
	case 'E':
		s.link.open = true
		e := entry{kind: replyExecute}
		if fx, ok := s.tr.portalFx[m.portal]; ok {
			e.changes, e.tag = fx.changes, fx.tag
		}
		s.expectLocked(e)
		if restore := s.tr.restoreSQL(e.changes); restore != "" {
			// Behind the Execute, in the same segment, so the client's next
			// statement already sees its defaults. pgtenant's statement is
			// the unnamed one: the client's is prepared again when next
			// bound (ensureUnnamedLocked).
			m.after = appendParse(m.after, "", append([]byte(restore), 0, 0, 0))
			m.after = append(m.after, bindUnnamed...)
			m.after = append(m.after, executeUnnamed...)
			s.link.unnamedHere = false
			s.expectLocked(entry{kind: replyParse, own: true, soft: true})
			s.expectLocked(entry{kind: replyBind, own: true, soft: true})
			s.expectLocked(entry{kind: replyExecute, own: true, soft: true})
		}
	case 'H':
		s.link.open = true
	case 'P':
		s.link.open = true
		effects := stmtEffects{changes: m.res.changes, params: m.res.params}
		m.res.changes, m.res.params = nil, nil // they apply when the statement is bound
		body := m.whole
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			body = refusedParse(m, refuse)
			effects = stmtEffects{}
		} else if m.res.deallocateAllOnly && s.link.state == linkAttached {
			// As for a Query (see 'Q'): the server runs a statement that
			// changes nothing, and the Execute's tag is the client's.
			if err := s.consume(m); err == nil {
				body = replacedParse(m, deallocateAllStandIn)
				effects.tag = "DEALLOCATE ALL"
			}
		}
		if m.mapped {
			_, rest, _ := splitName(body)
			s.parseNamedLocked(m.name, rest, effects)
			return true
		}
		s.tr.unnamed = effects
		if body != nil { // refused: replaced
			_, s.tr.unnamedParse, _ = splitName(body)
			m.replace = appendHeader(nil, 'P', len(body))
			m.replace = append(m.replace, body...)
		} else {
			s.tr.unnamedParse = s.tr.unnamedBuf
		}
		s.link.unnamedHere = true
		s.expectLocked(entry{kind: replyParse})
	case 'B':
		s.link.open = true
		if m.name == "" {
			s.ensureUnnamedLocked()
			if s.tr.unnamedParse == nil && !s.link.unnamedHere {
				// No unnamed statement of this client's: the backend may
				// still hold its last holder's, which must not run. Send
				// a name that exists nowhere; the server answers 26000.
				m.mapped = true
			}
		}
		if s.tr.bindChanges(m.name, m.portal, m.whole) {
			s.link.dirty = true
		}
		e := entry{kind: replyBind}
		if m.mapped {
			var name string
			name, e.key = s.backendStmtNameLocked(m.name)
			e.clientName = m.name
			s.out = appendHeader(s.out, 'B', len(m.portal)+1+len(name)+1+m.n-m.nameEnd)
			s.out = append(s.out, m.portal...)
			s.out = append(s.out, 0)
			s.out = append(s.out, name...)
			s.out = append(s.out, 0)
		}
		s.expectLocked(e)
	case 'D':
		s.link.open = true
		e := entry{kind: replyDescribePortal}
		if m.kind == 'S' {
			e.kind = replyDescribeStmt
			if m.name == "" {
				s.ensureUnnamedLocked()
			}
		}
		if m.mapped {
			var name string
			name, e.key = s.backendStmtNameLocked(m.name)
			e.clientName = m.name
			s.out = appendDescribe(s.out, 'S', name)
		}
		s.expectLocked(e)
	case 'C':
		s.link.open = true
		if m.mapped {
			// The backend's statement stays for others; the client's is
			// gone. Closing a name that does not exist is no error, so the
			// server still answers CloseComplete.
			delete(s.tr.stmts, m.name)
			s.out = appendClose(s.out, 'S', unknownStmtName(m.name))
		} else if m.kind == 'P' {
			delete(s.tr.portalFx, m.name)
		}
		s.expectLocked(entry{kind: replyClose})
	case 'd', 'c', 'f':
		if !s.link.rm.copyIn && s.link.rm.len() == 0 {
			// Nothing owed, so no COPY is under way or can start: the
			// server would ignore it (a COPY that already failed).
			return false
		}
		if m.typ != 'd' {
			s.expectLocked(entry{kind: replyCopyEnd})
		}
	}
	return true
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

// expectLocked records a message about to be sent in the reply model; one
// the server will not answer (it skips to Sync, or reads COPY data) is
// handled as skipped at once.
func (s *session) expectLocked(e entry) {
	if !s.link.rm.sent(e) {
		s.skippedLocked(e)
	}
}

// skippedLocked forgets what a message that failed or that the server
// skipped would have done. A Parse defines nothing, on the backend or for
// the client, whose statement name is free again as in PostgreSQL.
func (s *session) skippedLocked(e entry) {
	if e.kind != replyParse {
		return
	}
	if e.key != "" && s.link.be != nil {
		s.link.be.Statements.Remove(e.key)
	}
	// A statement pgtenant answered itself (answerDetachedLocked) stays:
	// the client was told it exists, so each use tries the Parse again
	// and reports its error.
	if e.stmt != nil && !e.stmt.answered && s.tr.stmts[e.clientName] == e.stmt {
		delete(s.tr.stmts, e.clientName)
	}
}

// refuseLocked answers a client message that cannot run because no backend
// could be had, the way PostgreSQL answers a failed command: an error, then
// ReadyForQuery at the end of the command (at once for Query and Sync, at
// the client's next Sync for an extended-protocol batch). The caller
// flushes cw when cwBusy is set.
func (s *session) refuseLocked(typ byte, e *pgError) {
	switch typ {
	case 'Q', 'F', 'S':
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

// attachLocked makes be the session's backend and starts its reader. With
// pinNow, the pin is queued ahead of the client's message.
//
// The pin is skipped when the backend is known to be in this client's state
// already: its last holder left it with this client's pin key (same tenant,
// same search_path and settings) and sent nothing that changes session
// state (pinReusable). Tenants never share a key, so reuse can only ever
// happen within one tenant.
func (s *session) attachLocked(be *pool.Conn, pinNow bool) {
	to := linkAttached
	if s.mode == config.PoolSession {
		to = linkPinned
	}
	s.setLinkLocked(to)
	s.link.be = be
	s.link.unnamedHere = false
	s.link.dirty = false
	s.link.queryTagged = false
	s.link.curClient, s.link.curQuery = false, false
	s.bw.Reset(be.NetConn)
	if pinNow {
		s.sendPinLocked(be)
	}
	s.backendDone.Add(1)
	go s.serveBackend(be)
}

// sendPinLocked queues the pin on a backend just attached, ahead of the
// client's first message, which goes out with it in one write; its replies
// are pgtenant's own (pinFailedLocked when one is an error).
func (s *session) sendPinLocked(be *pool.Conn) {
	if s.srv.cfg.BenchNoPin || (s.srv.cfg.PinReuse && be.State == s.tr.pin.key) {
		return
	}
	_, _ = s.bw.Write(s.tr.pin.msgs)
	for i := 0; i < s.tr.pin.queries; i++ {
		s.expectLocked(entry{kind: replyQuery, own: true})
	}
	be.State = s.tr.pin.key
	s.link.unsent = true
}

// pinLocked keeps the attached backend for the rest of the session: the
// client uses a session feature (why) that cannot move between backends.
func (s *session) pinLocked(why string) {
	s.link.pinReason = why
	if s.link.state == linkAttached {
		s.setLinkLocked(linkPinned)
	}
	s.logger().Info("client pinned to its server connection until it disconnects", "reason", why)
}

// serveBackend relays the attached backend's replies to the client until
// the backend is released or lost.
func (s *session) serveBackend(be *pool.Conn) {
	defer s.backendDone.Done()
	defer func() {
		if r := recover(); r != nil {
			// Every locked section unlocks in a defer, so mu is free
			// here and lose can take it.
			s.logger().Error("backend relay panic", "panic", r)
			s.lose(be, nil, errInternal)
		}
	}()
	r := be.Reader
	for {
		if r.Buffered() == 0 && s.cw.Buffered() > 0 {
			if err := s.cw.Flush(); err != nil {
				s.clientWriteFailed(be)
				return
			}
		}
		typ, n, err := peekHeader(r)
		if err != nil {
			s.lose(be, nil, err)
			return
		}
		if s.link.curClient && (typ == 'D' || typ == 'd') ||
			s.link.curQuery && (typ == 'T' || typ == 'C' || typ == 'I' || typ == 'N') {
			// A reply of the client's command that does not complete an
			// entry: the hot path, without the lock. The oldest entry
			// cannot change under us: only this goroutine removes
			// entries. Inside a client's Query only its ReadyForQuery
			// does; the last CommandComplete's tag is kept for it.
			if typ == 'C' {
				s.link.queryRollback, s.link.queryTagged = rollbackTag(r, n), true
			}
			if err := forward(r, s.cw, n); err != nil {
				s.forwardFailed(be, err)
				return
			}
			continue
		}
		if done := s.onReply(be, typ, n); done {
			return
		}
	}
}

// replyAction is what the backend goroutine does with one reply, decided
// under the lock (decideReply) and carried out without it.
type replyAction struct {
	forward bool   // copy the reply to the client as it came
	write   []byte // or write these bytes to the client instead
	// ready: a ReadyForQuery of the client's, after which the backend may
	// have reached a safe point; own: one of pgtenant's.
	ready, ownReady bool
	// lose: the backend cannot be trusted (a reply that fits no entry, a
	// failed pin); the error says why.
	lose error
}

// onReply handles one reply that needs the reply model. It returns true
// when the backend goroutine is done (released or lost).
func (s *session) onReply(be *pool.Conn, typ byte, n int) bool {
	r := be.Reader
	var er *pgproto3.ErrorResponse
	var body []byte
	rollback, restoring := false, false
	switch typ {
	case 'E', 'Z', 'S':
		var err error
		if body, err = readBody(r, n); err != nil {
			s.lose(be, nil, err)
			return true
		}
		if typ == 'E' {
			er = &pgproto3.ErrorResponse{}
			if err := er.Decode(body); err != nil {
				s.lose(be, nil, err)
				return true
			}
			if er.Severity == "FATAL" || er.Severity == "PANIC" {
				// The server is closing this connection.
				s.lose(be, er, nil)
				return true
			}
		}
	case 'C':
		rollback = rollbackTag(r, n)
	case 'T':
		// Is this the result of pgtenant's restore statement? Its first
		// column has a name of pgtenant's (after the field count).
		if h, err := r.Peek(min(5+n, 5+2+len(restoreColumn)+1)); err == nil && len(h) == 5+2+len(restoreColumn)+1 {
			restoring = string(h[7:7+len(restoreColumn)]) == restoreColumn && h[len(h)-1] == 0
		}
	case 'W':
		s.lose(be, nil, errors.New("CopyBothResponse: replication is not supported"))
		return true
	}
	act := s.decideReply(be, typ, body, er, rollback, restoring)
	if act.lose != nil {
		s.lose(be, nil, act.lose)
		return true
	}
	switch {
	case act.write != nil:
		if typ == 'C' {
			_ = discard(r, n)
		}
		if _, err := s.cw.Write(act.write); err != nil {
			s.clientWriteFailed(be)
			return true
		}
	case act.forward:
		if err := forward(r, s.cw, n); err != nil {
			s.forwardFailed(be, err)
			return true
		}
	case body == nil:
		if err := discard(r, n); err != nil {
			s.lose(be, nil, err)
			return true
		}
	}
	if act.ready || act.ownReady {
		return s.atReadyForQuery(be, act.ready)
	}
	return false
}

// rollbackTag says whether the CommandComplete whose header was just peeked
// is tagged ROLLBACK (also a COMMIT of a failed transaction, and ROLLBACK TO
// SAVEPOINT), for settleLocked.
func rollbackTag(r msgReader, bodyLen int) bool {
	tag, err := r.Peek(min(5+bodyLen, 5+8))
	return err == nil && bytes.HasPrefix(tag[5:], []byte("ROLLBACK"))
}

// decideReply matches one reply against the reply model and decides what
// the client gets of it. rollback: a CommandComplete tagged ROLLBACK;
// restoring: a RowDescription of pgtenant's restore statement.
func (s *session) decideReply(be *pool.Conn, typ byte, body []byte, er *pgproto3.ErrorResponse, rollback, restoring bool) (act replyAction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		f := s.link.rm.front()
		s.link.curClient = f != nil && !f.own && (f.kind == replyExecute || f.kind == replyQuery) && !s.link.swallowing
		s.link.curQuery = s.link.curClient && f.kind == replyQuery && f.tag == "" && !f.restoreInline
	}()
	if !s.holdsLocked(be) {
		return replyAction{lose: errors.New("reply for a backend no longer attached")}
	}
	v, err := s.link.rm.reply(typ, func(e entry) { s.skippedLocked(e) })
	if err != nil {
		return replyAction{lose: err}
	}
	e := v.e
	gone := s.clientGone
	if e.restoreInline && !e.own {
		// The result set of pgtenant's restore statement, inside the
		// client's Query: RowDescription, DataRow, CommandComplete.
		switch {
		case typ == 'T' && restoring:
			s.link.swallowing = true
			return act
		case s.link.swallowing && typ == 'D':
			return act
		case s.link.swallowing && typ == 'C':
			s.link.swallowing = false
			return act
		case typ == 'E' || typ == 'Z':
			s.link.swallowing = false
		}
	}
	switch typ {
	case 'Z':
		if len(body) != 1 {
			return replyAction{lose: errors.Join(errMalformed, errors.New("ReadyForQuery"))}
		}
		status := body[0]
		// The server's transaction status, whoever asked: pgtenant's own
		// queries run only at attach (the status is 'I') and after the
		// client left (its ROLLBACK ends the transaction).
		s.link.status = status
		if e.own {
			// A cancel may be waiting for the pin to be answered
			// (startCancel).
			s.cond.Broadcast()
			if s.link.pinErr != nil {
				return replyAction{lose: s.pinFailedLocked()}
			}
			return replyAction{ownReady: true}
		}
		// queryTagged: the last CommandComplete of the client's since its
		// last ReadyForQuery says whether what this one ends was rolled
		// back.
		s.tr.readyForQuery(status, e.kind == replyQuery, e.changes, s.link.queryTagged, s.link.queryRollback)
		s.link.queryTagged = false
		s.link.status = status
		if !gone {
			act.write = readyForQuery(status)
		}
		act.ready = true
		return act
	case 'E':
		if e.own && e.soft && e.kind == replyQuery {
			// The client's own statement failed first (its transaction
			// is aborted) and the server said so to the client.
			return act
		}
		if e.own && e.kind == replyQuery {
			if s.link.pinErr == nil {
				s.link.pinErr = er
			}
			return act
		}
		s.tr.commandFailed(e.kind == replyQuery)
		if v.failed {
			switch {
			case e.kind == replyParse:
				s.skippedLocked(e)
			case e.key != "" && er.Code == codeUndefinedStatement:
				s.vanishedStatementLocked(e.key)
			}
		}
		if gone {
			return act
		}
		switch {
		case er.Code == codeUndefinedStatement && e.clientName != "" && (e.kind == replyBind || e.kind == replyDescribeStmt):
			// The statement this Bind or Describe names is the client's,
			// whatever pgtenant sent it as: a Parse that failed after the
			// Bind was sent on, say, and was forgotten since.
			er.Message = `prepared statement "` + e.clientName + `" does not exist`
		case er.Code == codeUndefinedStatement || er.Code == codeDuplicateStatement:
			er.Message = s.tr.clientNames(er.Message)
		}
		if er.Where != "" && strings.HasPrefix(er.Message, "pgtenant: ") {
			// pgtenant's own refusal, raised by a DO block (raiseSQL):
			// the block's context says nothing useful to the client.
			er.Where = ""
		}
		// An error of a Parse pgtenant sent on the client's behalf (its
		// statement re-prepared here) is the client's to hear: its Bind
		// would have failed the same way on the backend it came from.
		act.write, _ = er.Encode(nil)
		return act
	case 'S':
		var ps pgproto3.ParameterStatus
		if err := ps.Decode(body); err == nil {
			be.Params[ps.Name] = ps.Value
			if (!e.own || e.soft) && !gone {
				act.write, _ = ps.Encode(nil)
			}
		}
		return act
	case '1':
		if v.done && !e.own && e.stmt != nil && e.key != "" && e.key == e.stmt.ownKey {
			s.promoteLocked(e.stmt)
		}
	case 'C':
		if !e.own {
			// Remembered for the next ReadyForQuery, as on the hot path.
			s.link.queryRollback, s.link.queryTagged = rollback, true
		}
		if v.done && !e.own && e.kind == replyExecute {
			s.tr.completed(e.changes)
		}
		if e.tag != "" && !gone {
			act.write, _ = (&pgproto3.CommandComplete{CommandTag: []byte(e.tag)}).Encode(nil)
			return act
		}
	}
	act.forward = !e.own && !gone
	return act
}

// pinFailedLocked: one of pgtenant's own queries (the pin) failed on the
// server, which reported pinErr; its ReadyForQuery just came. The backend
// is in a state pgtenant did not mean, and the returned error loses it.
func (s *session) pinFailedLocked() error {
	er := s.link.pinErr
	s.link.pinErr = nil
	s.logger().Error("pgtenant's session query failed on the server; closing the server connection",
		"sqlstate", er.Code, "err", er.Message)
	return errors.New("pgtenant's session setup failed on the server: " + er.Message)
}

// safePointLocked says whether the backend serving the client may change
// hands now (see "The safe point" above); each case is one rule.
func (s *session) safePointLocked() bool {
	l := &s.link
	switch {
	case l.rm.len() > 0: // a reply is owed, to the client or to pgtenant
	case l.open: // the client sent messages after its last Sync
	case l.rm.copyIn, l.rm.skipping: // the server is in COPY, or skipping to a Sync
	case l.status != 'I': // a transaction is open
	case l.state == linkPinned && !s.clientGone: // the client keeps its backend
	default:
		return true
	}
	return false
}

// atReadyForQuery runs after a ReadyForQuery was handled: at a safe point
// the backend is released. It returns true when it was.
func (s *session) atReadyForQuery(be *pool.Conn, client bool) bool {
	if client && be.Reader.Buffered() == 0 && s.cw.Buffered() > 0 {
		// The client is waiting for this.
		if err := s.cw.Flush(); err != nil {
			s.clientWriteFailed(be)
			return true
		}
	}
	if !s.releaseAtSafePoint(be) {
		return false
	}
	if be.Reader.Buffered() > 0 {
		// The server said more than it owed: whatever it is, it must not
		// reach the next holder as an answer.
		s.logger().Warn("server sent more than it owed at a safe point; closing the server connection")
		s.srv.pool.Destroy(be)
		return true
	}
	s.srv.pool.Release(be)
	return true
}

// releaseAtSafePoint detaches be if the session is at a safe point,
// waiting first for what the client goroutine is still sending. cw is
// flushed before the client goroutine gets it back, without the lock: the
// link is draining meanwhile.
func (s *session) releaseAtSafePoint(be *pool.Conn) bool {
	drain, ok := s.beginRelease(be)
	if !ok {
		return false
	}
	if drain {
		// Replies left unflushed (the server sent more behind the last
		// ReadyForQuery): they are the client's. The flush is bounded by
		// the client's socket, which the client goroutine is reading
		// from.
		err := s.cw.Flush()
		s.endRelease(err != nil)
	}
	return true
}

// beginRelease moves the link off be at a safe point: to detached, or to
// draining when cw holds replies for the client (drain), which the caller
// flushes and then calls endRelease. ok is false when it is no safe point.
func (s *session) beginRelease(be *pool.Conn) (drain, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		// A link closing (the client broke the protocol) is no longer
		// serving: violation() closed the backend, and the next read
		// tells the client (lose).
		if !s.holdsLocked(be) || s.link.state == linkClosing || !s.safePointLocked() {
			return false, false
		}
		if !s.link.unsent && !s.link.cancelling {
			break
		}
		s.link.parked = true
		s.cond.Wait()
		s.link.parked = false
	}
	if s.link.dirty || s.link.state == linkPinned {
		be.State = "" // next holder must pin
	}
	s.link.curClient, s.link.curQuery = false, false
	if s.clientGone {
		_ = be.NetConn.SetDeadline(time.Time{}) // set by teardown
	}
	if s.cw.Buffered() > 0 && !s.clientGone {
		s.setLinkLocked(linkDraining)
		return true, true
	}
	s.setLinkLocked(linkDetached)
	return false, true
}

// endRelease: cw is flushed (or the client is gone), and the client
// goroutine may have it.
func (s *session) endRelease(gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gone {
		s.clientGone = true
	}
	s.setLinkLocked(linkDetached)
}

// forwardFailed sorts out a failed copy of a reply to the client.
func (s *session) forwardFailed(be *pool.Conn, err error) {
	var ce *copyError
	if errors.As(err, &ce) && ce.write {
		s.clientWriteFailed(be)
		return
	}
	s.lose(be, nil, err)
}

// lose handles a backend that died or cannot be trusted: it is closed, and
// the client hears about it in the least disruptive honest way.
//   - A client waiting for one command, outside a transaction, whose server
//     said why it ended the connection (a FATAL error, so the command did
//     not complete), gets that error and ReadyForQuery 'I', and carries on:
//     its next command gets a fresh backend.
//   - Otherwise the client's session is gone with the server's: it gets
//     FATAL and is closed, and nothing more it sent runs anywhere (link
//     lost). It is told its open transaction was rolled back only when no
//     command was in flight; with one in flight and no word from the
//     server, the outcome is unknown (08007), as a COMMIT may have been
//     carried out.
func (s *session) lose(be *pool.Conn, fatal *pgproto3.ErrorResponse, cause error) {
	e, cont, ok := s.beginLose(be, fatal, cause)
	if !ok {
		return
	}
	s.srv.pool.Destroy(be)
	if e != nil {
		// The link is failing: the client goroutine waits, and this
		// goroutine owns cw until finishLose.
		_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
		if cont.pending > 0 {
			for i := 0; i < cont.pending; i++ {
				_ = writeMsg(s.cw, e.Response())
				_, _ = s.cw.Write(readyForQuery('I'))
			}
		} else {
			_ = writeMsg(s.cw, e.Response())
		}
		_ = s.cw.Flush()
		_ = s.nc.SetWriteDeadline(time.Time{})
		if !cont.carryOn {
			_ = s.nc.Close() // the client goroutine's read fails and it ends
		}
	}
	s.finishLose(cont.carryOn)
	if e != nil && !cont.violation {
		s.logger().Warn("server connection lost", "sqlstate", e.Code, "err", e.Message,
			"client_pending", cont.pending, "client_status", string(cont.status), "client_goes_on", cont.carryOn)
	}
}

// loseOutcome is what beginLose decided for the client.
type loseOutcome struct {
	pending int  // ReadyForQuery replies the client was waiting for
	status  byte // the last transaction status it was told
	carryOn bool // the client carries on (ERROR); otherwise FATAL and lost
	// violation: the client broke the protocol (the link was closing);
	// it is told that, not the loss.
	violation bool
}

// beginLose moves the link to failing and decides what the client is told
// (nil: nothing, it is gone). ok is false when be no longer serves the
// client (it was released or detached meanwhile).
func (s *session) beginLose(be *pool.Conn, fatal *pgproto3.ErrorResponse, cause error) (e *pgError, out loseOutcome, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := s.link.state
	if !s.holdsLocked(be) {
		return nil, out, false
	}
	out.pending, out.status = s.link.rm.clientWait, s.link.status
	inFlight := out.pending > 0 || s.link.open
	s.link.rm.reset()
	s.setLinkLocked(linkFailing)
	s.link.curClient, s.link.curQuery = false, false
	s.link.open, s.link.pinErr, s.link.unsent = false, nil, false
	s.tr.backendLost()

	e = &pgError{Severity: "FATAL", Code: codeConnectionFailure, Message: "pgtenant: server connection lost"}
	if fatal != nil {
		e.Code, e.Message, e.Detail, e.Hint = fatal.Code, fatal.Message, fatal.Detail, fatal.Hint
	} else if cause != nil && !isEOF(cause) && !errors.Is(cause, errClosedByUs) {
		e.Message += ": " + cause.Error()
	}
	switch {
	case s.clientGone:
		return nil, out, true
	case from == linkClosing:
		out.violation = true
		return s.link.violation, out, true
	case errors.Is(cause, errInternal):
		e.Code, e.Message = codeInternalError, errInternal.Error()
	case fatal != nil && out.pending == 1 && !s.link.open && out.status == 'I' &&
		from == linkAttached:
		// The one command the client waits for did not complete (the
		// server ended it with FATAL), and no transaction was open.
		e.Severity = "ERROR"
		out.carryOn = true
	case inFlight && fatal == nil:
		e.Code = codeTransactionResolutionUnknown
		e.Detail = "The server connection was lost while a command was in flight; whether it took effect is unknown."
	case out.status != 'I':
		e.Detail = "The open transaction was rolled back."
	}
	return e, out, true
}

// finishLose ends the failing state.
func (s *session) finishLose(carryOn bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if carryOn {
		s.link.status = 'I'
		s.setLinkLocked(linkDetached)
		return
	}
	s.setLinkLocked(linkLost)
}

var errClosedByUs = errors.New("closed by pgtenant")

// errInternal: pgtenant itself failed (a panic in the relay). The client
// hears XX000 and its session ends, whatever it was doing.
var errInternal = errors.New("pgtenant: internal error")

// clientWriteFailed: the client is gone while its backend is attached. The
// backend may be mid-command, so it is closed rather than returned.
func (s *session) clientWriteFailed(be *pool.Conn) {
	if !s.detachGone(be) {
		return
	}
	_ = s.nc.Close()
	s.srv.pool.Destroy(be)
}

func (s *session) detachGone(be *pool.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.holdsLocked(be) {
		return false
	}
	s.setLinkLocked(linkDetached)
	s.link.curClient, s.link.curQuery = false, false
	s.clientGone = true
	s.link.rm.reset()
	return true
}

// teardown runs when the client goroutine is done. An attached backend at
// a message boundary is rolled back (and, when the client held it for the
// whole session, reset with DISCARD ALL) by pgtenant's own queries and
// released by the backend goroutine; one with a command in flight is
// cancelled and closed.
func (s *session) teardown() {
	be, q, inFlight, detach := s.teardownLocked()
	if be == nil {
		return
	}
	if !detach {
		if q == nil {
			return // at a safe point: the backend goroutine releases it
		}
		// The server has this long to answer before the connection is
		// closed instead; the backend goroutine clears the deadline when
		// it releases.
		_ = be.NetConn.SetDeadline(time.Now().Add(s.srv.cfg.ServerConnectTimeout))
		if _, err := be.NetConn.Write(q); err != nil {
			_ = be.NetConn.Close() // the backend goroutine sees it and destroys
		}
		return
	}
	if inFlight {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.ServerConnectTimeout)
		_ = be.Cancel(ctx)
		cancel()
	}
	s.srv.pool.Destroy(be)
}

// teardownLocked decides teardown's course: q are pgtenant's queries to
// run before the backend goroutine releases be; detach says be was taken
// away here, to be destroyed.
func (s *session) teardownLocked() (be *pool.Conn, q []byte, inFlight, detach bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientGone = true
	for s.link.state.busy() {
		s.cond.Wait()
	}
	if !s.link.state.serving() {
		return nil, nil, false, false
	}
	be = s.link.be
	if s.link.unsent {
		// The client goroutine ended with something accounted but not
		// flushed, perhaps half a message: the backend cannot be trusted.
		s.link.unsent = false
		s.cond.Broadcast()
		inFlight = true
	} else if s.link.rm.len() == 0 && !s.link.open && !s.link.rm.copyIn && !s.link.rm.skipping {
		queries := 0
		if s.link.status != 'I' {
			q, _ = (&pgproto3.Query{String: "ROLLBACK"}).Encode(q)
			queries++
		}
		if s.link.state == linkPinned {
			q, _ = (&pgproto3.Query{String: "DISCARD ALL"}).Encode(q)
			queries++
			be.Statements.Clear() // DISCARD ALL drops them on the server
		}
		for range queries {
			s.link.rm.push(entry{kind: replyQuery, own: true})
		}
		if s.link.parked {
			s.cond.Broadcast() // clientGone changed the safe point
		}
		return be, q, false, false
	} else {
		inFlight = s.link.rm.clientWait > 0 || s.link.open
	}
	// curClient and curQuery stay: they are the backend goroutine's, which
	// is still reading and finds be gone (closed) on its next read.
	s.setLinkLocked(linkDetached)
	s.link.rm.reset()
	return be, nil, inFlight, true
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
