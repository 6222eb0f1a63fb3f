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
//   - every reply it owes is in (the reply queue is empty): each Query,
//     FunctionCall and Sync of the client's has its ReadyForQuery, and
//     pgtenant's own messages theirs;
//   - the client has sent nothing after its last Sync (!open);
//   - no COPY FROM STDIN is under way: every one the server started
//     (CopyInResponse) the client has ended (CopyDone/CopyFail);
//   - the last ReadyForQuery said 'I': no transaction is open;
//   - the client is not pinned to the backend (session mode, or a session
//     feature in use), unless it is leaving.
// The check runs when a ReadyForQuery arrives, the only moment it can become
// true; then the backend is released.

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
	portal  string // Bind
	kind    byte   // Describe, Close: 'S' or 'P'
	// Query and Parse: what the text means for the session.
	res  scanResult
	text string
	// replace: the message is sent as these bytes instead (a refusal).
	replace []byte
}

// relayClient reads client messages until the client leaves.
func (s *session) relayClient(ctx context.Context) error {
	for {
		// Flush point: nothing more is buffered from the client, so send
		// what it has said so far in one write before waiting for more.
		if s.cr.Buffered() == 0 && s.bw.Buffered() > 0 {
			// A write error means the server is gone; the backend
			// goroutine sees that on its side and reports it.
			_ = s.bw.Flush()
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
		case 'Q', 'P', 'B', 'D', 'C':
			if err := s.inspect(&m); err != nil {
				var pe *pgError
				if errors.As(err, &pe) {
					return s.violation(pe)
				}
				return err
			}
		case 'E', 'S', 'H', 'F', 'd', 'c', 'f':
		default:
			return s.violation(fatalf(codeProtocolViolation, "invalid frontend message type %q", typ))
		}

		s.mu.Lock()
		if s.skipTillSync {
			if typ == 'S' {
				s.skipTillSync = false
				_ = writeMsg(s.cw, s.skipErr.response())
				_, _ = s.cw.Write(readyForQuery('I'))
				_ = s.cw.Flush()
			}
			s.mu.Unlock()
			if err := s.dropMsg(&m); err != nil {
				return err
			}
			continue
		}
		if s.be == nil {
			if typ == 'd' || typ == 'c' || typ == 'f' {
				// COPY data after the server already ended the COPY (it
				// failed): PostgreSQL ignores these too.
				s.mu.Unlock()
				if err := s.dropMsg(&m); err != nil {
					return err
				}
				continue
			}
			if s.srv.draining.Load() {
				s.fail(fatalf(codeAdminShutdown, "pgtenant is shutting down"))
				s.mu.Unlock()
				return errClientGone
			}
			if s.answerDetachedLocked(ctx, &m) {
				s.mu.Unlock()
				if err := s.dropMsg(&m); err != nil {
					return err
				}
				continue
			}
			var be *pool.Conn
			var err error
			if be = s.reserved; be != nil {
				s.reserved = nil
			} else {
				s.mu.Unlock()
				be, err = s.srv.pool.Checkout(ctx)
				s.mu.Lock()
			}
			if err != nil {
				s.refuseLocked(typ, checkoutError(err))
				s.mu.Unlock()
				if err := s.dropMsg(&m); err != nil {
					return err
				}
				continue
			}
			s.attachLocked(be, true)
		}
		s.out = s.out[:0]
		if s.dirtyText {
			s.dirty = true
			s.dirtyText = false
		}
		s.accountLocked(&m)
		s.mu.Unlock()

		if err := s.send(&m); err != nil {
			return err
		}
	}
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

// inspect learns what pgtenant must know of a Query, Parse, Bind, Describe
// or Close before it is sent: statement names, and what a text means for
// the session.
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
			s.unnamedBuf = append(s.unnamedBuf[:0], rest...)
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
		if eff := s.effectsOf(name); eff != nil && len(eff.params) > 0 {
			// set_config values come as parameters: keep the body to
			// read them.
			if err := s.consume(m); err != nil {
				return err
			}
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

// scan classifies a statement text; the quick check needs no copy.
func (s *session) scan(m *clientMsg, text []byte) {
	if len(text) == 0 || !sqlscan.Interesting(unsafe.String(&text[0], len(text))) {
		return
	}
	m.text = string(text)
	m.res = s.scanText(m.text)
	// The text may change the session: the backend cannot be reused
	// without a pin once this client is done with it.
	s.dirtyText = true
}

// effectsOf returns the session effects of the client's statement name
// ("" for the unnamed one), or nil. Client goroutine only.
func (s *session) effectsOf(name string) *stmtEffects {
	if name == "" {
		return &s.unnamed
	}
	if cs, ok := s.stmts[name]; ok {
		return &cs.effects
	}
	return nil
}

// accountLocked records what the server owes for a client message about to
// be sent and queues into s.out whatever pgtenant must send before it (or,
// for mapped messages, instead of it).
func (s *session) accountLocked(m *clientMsg) {
	switch m.typ {
	case 'Q':
		// A simple Query destroys the unnamed statement.
		s.unnamedParse, s.unnamedHere = nil, false
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			m.replace, _ = (&pgproto3.Query{String: raiseSQL(refuse)}).Encode(nil)
		} else if len(m.res.refs) > 0 {
			if text := s.rewriteRefsLocked(m.text, m.res.refs); text != "" {
				m.replace, _ = (&pgproto3.Query{String: text}).Encode(nil)
			}
		}
		s.expectLocked(expectation{kind: expectQuery})
	case 'F':
		s.expectLocked(expectation{kind: expectQuery})
	case 'S':
		if s.copyStarted > s.copyEnded {
			break // the server ignores Sync in copy-in mode
		}
		s.expectLocked(expectation{kind: expectSync, copyWindow: s.copyWindow})
		s.open = false
	case 'E':
		s.open = true
		s.execSeq++
		s.copyWindow = s.execSeq
	case 'H':
		s.open = true
	case 'P':
		s.open = true
		effects := stmtEffects{changes: m.res.changes, params: m.res.params}
		m.res.changes, m.res.params = nil, nil // they apply when the statement is bound
		body := m.whole
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			body = refusedParse(m, refuse)
			effects = stmtEffects{}
		}
		if m.mapped {
			_, rest, _ := splitName(body)
			s.parseNamedLocked(m.name, rest, effects)
			return
		}
		s.unnamed = effects
		if body != nil { // refused: replaced
			_, s.unnamedParse, _ = splitName(body)
			m.replace = appendHeader(nil, 'P', len(body))
			m.replace = append(m.replace, body...)
		} else {
			s.unnamedParse = s.unnamedBuf
		}
		s.unnamedHere = true
		s.expectLocked(expectation{kind: expectParse})
	case 'B':
		s.open = true
		if m.name == "" {
			s.ensureUnnamedLocked()
			if s.unnamedParse == nil && !s.unnamedHere {
				// No unnamed statement of this client's: the backend may
				// still hold its last holder's, which must not run. Send
				// a name that exists nowhere; the server answers 26000.
				m.mapped = true
			}
		}
		if eff := s.effectsOf(m.name); eff != nil && !eff.empty() {
			s.tentative = append(s.tentative, eff.changes...)
			for _, pc := range eff.params {
				if v, ok := bindParamText(m.whole, pc.param); ok {
					s.tentative = append(s.tentative, change{name: pc.name, value: quoteLiteral(v)})
				}
			}
		}
		if m.mapped {
			name := s.backendStmtNameLocked(m.name)
			s.out = appendHeader(s.out, 'B', len(m.portal)+1+len(name)+1+m.n-m.nameEnd)
			s.out = append(s.out, m.portal...)
			s.out = append(s.out, 0)
			s.out = append(s.out, name...)
			s.out = append(s.out, 0)
		}
	case 'D':
		s.open = true
		if m.kind == 'S' && m.name == "" {
			s.ensureUnnamedLocked()
		}
		if m.mapped {
			s.out = appendDescribe(s.out, 'S', s.backendStmtNameLocked(m.name))
		}
	case 'C':
		s.open = true
		if m.mapped {
			// The backend's statement stays for others; the client's is
			// gone. Closing a name that does not exist is no error, so the
			// server still answers CloseComplete.
			delete(s.stmts, m.name)
			s.out = appendClose(s.out, 'S', unknownStmtName(m.name))
		}
		s.expectLocked(expectation{kind: expectClose})
	case 'c', 'f':
		s.copyEnded++
		s.copyWindow = 0
		// With no ReadyForQuery owed to the client, none is coming that
		// could mark the safe point (the COPY already failed, or it was
		// started by an Execute whose Sync the server ignored): a Sync of
		// pgtenant's own brings one, after the client's message.
		if s.clientWait == 0 {
			s.poke = true
		}
	}
}

// answerDetachedLocked answers, without a backend, a message that needs
// none, and reports whether it did. Then a client that prepares its
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
// Called with cw owned by the client goroutine (no backend attached).
func (s *session) answerDetachedLocked(ctx context.Context, m *clientMsg) bool {
	switch m.typ {
	case 'P':
		res := &m.res
		if !m.mapped || res.refuse != nil || res.unpoolable != "" || res.dropStatements || len(res.refs) > 0 {
			return false
		}
		if _, exists := s.stmts[m.name]; exists {
			return false // the server must say 42P05
		}
		// Only when no backend is free: a free one answers exactly as
		// PostgreSQL would (a syntax error at once, not at first use).
		if be, err := s.srv.pool.TryCheckout(ctx); err == nil {
			s.reserved = be
			return false
		}
		_, rest, _ := splitName(m.whole)
		s.addClientStmt(m.name, rest, stmtEffects{changes: res.changes, params: res.params}, true)
		_, _ = s.cw.Write(parseComplete)
	case 'C':
		if m.mapped {
			delete(s.stmts, m.name)
		}
		_, _ = s.cw.Write(closeComplete)
	case 'S':
		_, _ = s.cw.Write(readyForQuery('I'))
		_ = s.cw.Flush()
	case 'H':
		_ = s.cw.Flush()
	default:
		return false
	}
	return true
}

var closeComplete = []byte{'3', 0, 0, 0, 4}

// ensureUnnamedLocked re-prepares the client's unnamed statement on a
// backend that has not seen it: a client may Parse it in one Sync batch and
// Bind it in the next (pgx's describe-exec mode does), and in between the
// backend may have changed hands.
func (s *session) ensureUnnamedLocked() {
	if s.unnamedHere || s.unnamedParse == nil {
		return
	}
	s.out = appendParse(s.out, "", s.unnamedParse)
	s.expectLocked(expectation{kind: expectParse, own: true})
	s.unnamedHere = true
}

// refusedParse is the body of a Parse whose text is replaced by a
// statement that raises refuse; the parameter types stay, so the client's
// Bind still fits.
func refusedParse(m *clientMsg, refuse *pgError) []byte {
	body := m.whole
	name, rest, _ := splitName(body)
	_, tail, _ := splitName(rest)
	out := append([]byte(name), 0)
	out = append(out, raiseSQL(refuse)...)
	out = append(out, 0)
	return append(out, tail...)
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
	if s.poke {
		s.poke = false
		_, _ = s.bw.Write(syncMsg)
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

var syncMsg = []byte{'S', 0, 0, 0, 4}

// expectLocked queues an expectation.
func (s *session) expectLocked(e expectation) {
	s.q.push(e)
	if e.own {
		s.own.Add(1)
	} else if e.kind == expectSync || e.kind == expectQuery {
		s.clientWait++
	}
}

// popLocked removes the oldest expectation, keeping the counters.
func (s *session) popLocked() expectation {
	e := s.q.pop()
	s.uncountLocked(e)
	if e.own && e.kind == expectQuery {
		s.ownDone.Broadcast() // a cancel may be waiting for the pin
	}
	return e
}

func (s *session) uncountLocked(e expectation) {
	if e.own {
		s.own.Add(-1)
	} else if e.kind == expectSync || e.kind == expectQuery {
		s.clientWait--
	}
}

// skipToSyncLocked drops the expectations the server will not answer after
// an error in the extended protocol: it skips messages up to the next Sync.
func (s *session) skipToSyncLocked() {
	for f := s.q.front(); f != nil && f.kind != expectSync && f.kind != expectQuery; f = s.q.front() {
		s.parseFailedLocked(s.popLocked())
	}
}

// parseFailedLocked forgets what a Parse that failed or was skipped would
// have defined: on the backend, and for the client, whose statement name is
// free again as in PostgreSQL (a failed Parse defines nothing).
func (s *session) parseFailedLocked(e expectation) {
	if e.kind != expectParse {
		return
	}
	if e.key != "" {
		s.be.Statements.Remove(e.key)
	}
	// A statement pgtenant answered itself (answerDetachedLocked) stays:
	// the client was told it exists, so each use tries the Parse again
	// and reports its error.
	if e.stmt != nil && !e.stmt.answered && s.stmts[e.clientName] == e.stmt {
		delete(s.stmts, e.clientName)
	}
}

// refuseLocked answers a client message that cannot run because no backend
// could be had, the way PostgreSQL answers a failed command: an error, then
// ReadyForQuery at the end of the command (at once for Query and Sync, at
// the client's next Sync for an extended-protocol batch).
func (s *session) refuseLocked(typ byte, e *pgError) {
	switch typ {
	case 'Q', 'F', 'S':
		_ = writeMsg(s.cw, e.response())
		_, _ = s.cw.Write(readyForQuery('I'))
		_ = s.cw.Flush()
	default:
		s.skipTillSync = true
		s.skipErr = e
	}
}

// violation ends the session with a FATAL protocol error. With a backend
// attached, the backend goroutine owns the client writer: it is handed the
// error and the backend is closed, and it sends the error as it winds down.
func (s *session) violation(e *pgError) error {
	s.mu.Lock()
	be := s.be
	if be == nil {
		s.fail(e)
		s.mu.Unlock()
		return e
	}
	s.violated = e
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
	s.be = be
	s.unnamedHere = false
	s.dirty = false
	s.bw.Reset(be.NetConn)
	if pinNow && !s.srv.cfg.BenchNoPin && !(s.srv.cfg.PinReuse && be.State == s.pin.key) {
		_, _ = s.bw.Write(s.pin.msgs)
		for i := 0; i < s.pin.queries; i++ {
			s.expectLocked(expectation{kind: expectQuery, own: true})
		}
		be.State = s.pin.key
	}
	s.backendDone.Add(1)
	go s.serveBackend(be)
}

// serveBackend relays the attached backend's replies to the client until
// the backend is released or lost.
func (s *session) serveBackend(be *pool.Conn) {
	defer s.backendDone.Done()
	defer func() {
		if r := recover(); r != nil {
			s.logger().Error("backend relay panic", "panic", r)
			s.lose(be, nil, errors.New("internal error"))
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
		switch typ {
		case 'Z', '1', '3', 'E', 'S', 'G', 'W':
		default:
			if typ == 'C' {
				// CommandComplete: remember whether a transaction just
				// rolled back, for settleLocked.
				if tag, err := r.Peek(min(5+n, 5+8)); err == nil {
					s.lastRollback = bytes.HasPrefix(tag[5:], []byte("ROLLBACK"))
				}
			}
			if s.own.Load() == 0 {
				// Nothing of pgtenant's is outstanding, so this reply is
				// the client's: the hot path, without the lock.
				if err := forward(r, s.cw, n); err != nil {
					s.forwardFailed(be, err)
					return
				}
				continue
			}
		}
		if done := s.route(be, typ, n); done {
			return
		}
	}
}

// route handles a reply that needs the reply queue. It returns true when
// the backend goroutine is done (released or lost).
func (s *session) route(be *pool.Conn, typ byte, n int) bool {
	r := be.Reader
	s.mu.Lock()
	front := s.q.front()
	swallowQuery := front != nil && front.kind == expectQuery && front.own
	switch typ {
	case 'Z':
		body, err := readBody(r, n)
		if err != nil || len(body) != 1 {
			s.mu.Unlock()
			s.lose(be, nil, errors.Join(errMalformed, err))
			return true
		}
		return s.readyForQueryLocked(be, body[0])
	case '1', '3':
		want := expectParse
		if typ == '3' {
			want = expectClose
		}
		if front == nil || front.kind != want {
			s.mu.Unlock()
			s.lose(be, nil, errors.New("server sent an unexpected ParseComplete/CloseComplete"))
			return true
		}
		e := s.popLocked()
		if e.own {
			_ = discard(r, n)
			s.mu.Unlock()
			return false
		}
	case 't', 'T', 'n':
		if front != nil && front.kind == expectParseViaDescribe {
			_ = discard(r, n)
			if typ != 't' {
				s.popLocked()
				_, _ = s.cw.Write(parseComplete)
			}
			s.mu.Unlock()
			return false
		}
	case 'E':
		body, err := readBody(r, n)
		if err != nil {
			s.mu.Unlock()
			s.lose(be, nil, err)
			return true
		}
		er := &pgproto3.ErrorResponse{}
		if err := er.Decode(body); err != nil {
			s.mu.Unlock()
			s.lose(be, nil, err)
			return true
		}
		if er.Severity == "FATAL" || er.Severity == "PANIC" {
			// The server is closing this connection.
			s.mu.Unlock()
			s.lose(be, er, nil)
			return true
		}
		if swallowQuery {
			if s.pinErr == nil {
				s.pinErr = er
			}
			s.mu.Unlock()
			return false
		}
		if front != nil && front.kind != expectQuery {
			s.skipToSyncLocked()
		}
		s.segmentFailed = true
		if er.Code == "26000" || er.Code == "42P05" {
			er.Message = s.clientNames(er.Message)
		}
		if er.Where != "" && strings.HasPrefix(er.Message, "pgtenant: ") {
			// pgtenant's own refusal, raised by a DO block (raiseSQL):
			// the block's context says nothing useful to the client.
			er.Where = ""
		}
		_ = writeMsg(s.cw, er)
		s.mu.Unlock()
		return false
	case 'S':
		// Keep the connection's parameters current whoever caused the
		// change; forward only the client's own.
		body, err := readBody(r, n)
		if err != nil {
			s.mu.Unlock()
			s.lose(be, nil, err)
			return true
		}
		var ps pgproto3.ParameterStatus
		if err := ps.Decode(body); err == nil {
			be.Params[ps.Name] = ps.Value
			if !swallowQuery {
				_ = writeMsg(s.cw, &ps)
			}
		}
		s.mu.Unlock()
		return false
	case 'G':
		if !swallowQuery {
			s.copyStarted++
			if front != nil && front.kind == expectSync && front.copyWindow != 0 {
				// Started by an Execute: the Syncs sent behind it reach a
				// server in copy-in mode, which ignores them.
				for _, e := range s.q.removeCopyWindow(front.copyWindow) {
					s.uncountLocked(e)
				}
			}
		}
	case 'W':
		s.mu.Unlock()
		s.lose(be, nil, errors.New("CopyBothResponse: replication is not supported"))
		return true
	}
	if swallowQuery {
		_ = discard(r, n)
		s.mu.Unlock()
		return false
	}
	s.mu.Unlock()
	// Forwarding happens outside the lock: a large message may take a
	// while to stream, and the client goroutine must not wait for it.
	if err := forward(r, s.cw, n); err != nil {
		s.forwardFailed(be, err)
		return true
	}
	return false
}

var parseComplete = []byte{'1', 0, 0, 0, 4}

// readyForQueryLocked accounts for a ReadyForQuery and, at a safe point,
// releases the backend. Called with mu held; returns with it released.
func (s *session) readyForQueryLocked(be *pool.Conn, status byte) bool {
	if s.be != be {
		// The client goroutine took the backend away (client gone).
		s.mu.Unlock()
		return true
	}
	front := s.q.front()
	if front == nil || (front.kind != expectSync && front.kind != expectQuery) {
		s.mu.Unlock()
		s.lose(be, nil, errors.New("server sent an unexpected ReadyForQuery"))
		return true
	}
	e := s.popLocked()
	if e.own {
		if s.pinErr != nil && e.kind == expectQuery {
			er := s.pinErr
			s.pinErr = nil
			s.mu.Unlock()
			s.logger().Error("pgtenant's session query failed on the server; closing the server connection",
				"sqlstate", er.Code, "err", er.Message)
			s.lose(be, nil, errors.New("pgtenant's session setup failed on the server: "+er.Message))
			return true
		}
	} else {
		s.status = status
		s.settleLocked(status)
		_, _ = s.cw.Write(readyForQuery(status))
	}
	if s.q.len() > 0 || s.open || s.copyStarted != s.copyEnded || status != 'I' ||
		((s.mode == config.PoolSession || s.pinned != "") && !s.closing) {
		s.mu.Unlock()
		if !e.own && be.Reader.Buffered() == 0 {
			// The client is waiting for this.
			if err := s.cw.Flush(); err != nil {
				s.clientWriteFailed(be)
				return true
			}
		}
		return false
	}
	// Safe point. Flush while holding mu: once be is nil the client
	// goroutine owns cw.
	if s.cw.Buffered() > 0 && !s.closing {
		if err := s.cw.Flush(); err != nil {
			s.mu.Unlock()
			s.clientWriteFailed(be)
			return true
		}
	}
	s.be = nil
	s.copyStarted, s.copyEnded = 0, 0
	if s.dirty || s.pinned != "" || s.mode == config.PoolSession {
		be.State = "" // next holder must pin
	}
	closing := s.closing
	s.mu.Unlock()
	if closing {
		_ = be.NetConn.SetDeadline(time.Time{}) // set by teardown
	}
	s.srv.pool.Release(be)
	return true
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
//   - Outside a transaction, each command the client is waiting for gets an
//     error and ReadyForQuery 'I', and the client carries on: its next
//     command gets a fresh backend.
//   - Inside a transaction, pinned, or in session mode, the client's session
//     is gone with the server's: it gets FATAL and is closed, so it can
//     never mistake a rolled-back transaction for a committed one.
func (s *session) lose(be *pool.Conn, fatal *pgproto3.ErrorResponse, cause error) {
	s.mu.Lock()
	if s.be != be {
		// The client goroutine already took it away (client gone).
		s.mu.Unlock()
		return
	}
	s.be = nil
	pending, open, status, closing := s.clientWait, s.open, s.status, s.closing
	s.q.reset()
	s.ownDone.Broadcast()
	s.own.Store(0)
	s.clientWait, s.open, s.pinErr = 0, false, nil
	s.copyStarted, s.copyEnded, s.copyWindow = 0, 0, 0

	e := &pgError{Severity: "ERROR", Code: codeConnectionFailure,
		Message: "pgtenant: server connection lost"}
	if fatal != nil {
		e.Code, e.Message, e.Detail, e.Hint = fatal.Code, fatal.Message, fatal.Detail, fatal.Hint
	} else if cause != nil && !isEOF(cause) && !errors.Is(cause, errClosedByUs) {
		e.Message += ": " + cause.Error()
	}
	switch {
	case closing:
	case s.violated != nil:
		_ = writeMsg(s.cw, s.violated.response())
		_ = s.cw.Flush()
		e = s.violated
	case s.mode == config.PoolSession || s.pinned != "" || status != 'I':
		e.Severity = "FATAL"
		if status != 'I' {
			e.Detail = "The open transaction was rolled back."
		}
		_ = writeMsg(s.cw, e.response())
		_ = s.cw.Flush()
		_ = s.nc.Close() // the client goroutine's read fails and it ends
	default:
		for i := 0; i < pending; i++ {
			_ = writeMsg(s.cw, e.response())
			_, _ = s.cw.Write(readyForQuery('I'))
		}
		if open {
			s.skipTillSync = true
			s.skipErr = e
		}
		_ = s.cw.Flush()
	}
	s.mu.Unlock()
	s.srv.pool.Destroy(be)
	if s.violated == nil && !closing {
		s.logger().Warn("server connection lost", "sqlstate", e.Code, "err", e.Message,
			"client_pending", pending, "client_status", string(status))
	}
}

var errClosedByUs = errors.New("closed by pgtenant")

// clientWriteFailed: the client is gone while its backend is attached. The
// backend may be mid-command, so it is closed rather than returned.
func (s *session) clientWriteFailed(be *pool.Conn) {
	s.mu.Lock()
	if s.be != be {
		s.mu.Unlock()
		return
	}
	s.be = nil
	s.closing = true
	s.mu.Unlock()
	_ = s.nc.Close()
	s.srv.pool.Destroy(be)
}

// teardown runs when the client goroutine is done. An attached backend at
// a message boundary is rolled back (and, when the client held it for the
// whole session, reset with DISCARD ALL) by pgtenant's own queries and
// released by the backend goroutine; one with a command in flight is
// cancelled and closed.
func (s *session) teardown() {
	s.mu.Lock()
	s.closing = true
	if s.reserved != nil {
		s.srv.pool.Release(s.reserved)
		s.reserved = nil
	}
	be := s.be
	if be == nil {
		s.mu.Unlock()
		return
	}
	if s.q.len() == 0 && !s.open && s.copyStarted == s.copyEnded {
		var q []byte
		queries := 0
		if s.status != 'I' {
			q, _ = (&pgproto3.Query{String: "ROLLBACK"}).Encode(q)
			queries++
		}
		if s.mode == config.PoolSession || s.pinned != "" {
			q, _ = (&pgproto3.Query{String: "DISCARD ALL"}).Encode(q)
			queries++
			be.Statements.Clear() // DISCARD ALL drops them on the server
		}
		if queries == 0 {
			// Transaction mode at a safe point: the backend goroutine is
			// about to release it.
			s.mu.Unlock()
			return
		}
		for range queries {
			s.expectLocked(expectation{kind: expectQuery, own: true})
		}
		s.mu.Unlock()
		_ = s.bw.Flush()
		// The server has this long to answer before the connection is
		// closed instead; the backend goroutine clears the deadline when
		// it releases.
		_ = be.NetConn.SetDeadline(time.Now().Add(s.srv.cfg.ServerConnectTimeout))
		if _, err := be.NetConn.Write(q); err != nil {
			_ = be.NetConn.Close() // the backend goroutine sees it and destroys
		}
		return
	}
	inFlight := s.clientWait > 0 || s.open
	s.be = nil
	s.mu.Unlock()
	if inFlight {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.ServerConnectTimeout)
		_ = be.Cancel(ctx)
		cancel()
	}
	s.srv.pool.Destroy(be)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
