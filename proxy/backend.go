package proxy

// The backend loop: the backend goroutine reads the attached backend's
// replies, asks the reply model whose each one is (decideReply, under mu),
// and writes the client's to the client without the lock; the rows of a
// client's command take a lock-free hot path.

import (
	"bytes"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/pool"
)

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
	// failed query of pgtenant's); the error says why.
	lose error
	// pinFailed: the pin failed with this error (failPin).
	pinFailed *pgproto3.ErrorResponse
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
	if act.pinFailed != nil {
		s.failPin(be, act.pinFailed)
		return true
	}
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
// SAVEPOINT), for tracker.readyForQuery.
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
		s.readyLocked(status, e.kind == replyQuery)
		s.link.queryTagged = false
		s.link.status = status
		if s.srv.liveConfig().IdleTransactionTimeout > 0 && status != 'I' {
			s.link.readyAt = monoNow()
		}
		if !gone {
			act.write = readyForQuery(status)
		}
		act.ready = true
		return act
	case 'E':
		if e.pin {
			// The server now skips to the next Sync: nothing the client
			// sent behind the pin runs (pin.go).
			return replyAction{pinFailed: er}
		}
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
		if e.kind == replyExecute && !e.own {
			s.queryEndedLocked()
		}
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
		if e.refuse != nil && er.Code == codeSyntaxError {
			s.toldError(e.refuse.Code)
			act.write, _ = e.refuse.Response().Encode(nil)
			return act
		}
		s.toldError(er.Code)
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
			if (!e.own || e.soft) && !gone && s.tr.report(ps.Name, ps.Value) {
				act.write, _ = ps.Encode(nil)
			}
		}
		return act
	case 's', 'I':
		if v.done && !e.own && e.kind == replyExecute {
			s.queryEndedLocked() // suspended, or an empty query
		}
	case '1':
		if v.done && !e.own && e.stmt != nil && e.key != "" && e.key == e.stmt.ownKey {
			s.promoteLocked(e.stmt)
		}
	case 'C':
		if e.pinEnd && v.done {
			// The pin is confirmed: the client's messages held back
			// (waitPin) and a cancel waiting for it (startCancel) go on.
			s.link.pinPending = false
			if s.link.pinWaiter {
				s.link.unsent = true // the message waiting is for this backend
			}
			s.cond.Broadcast()
		}
		if !e.own {
			// Remembered for the next ReadyForQuery, as on the hot path.
			s.link.queryRollback, s.link.queryTagged = rollback, true
		}
		if v.done && !e.own && e.kind == replyExecute {
			s.tr.completed(e.changes)
			s.queryEndedLocked()
		}
		if e.tag != "" && !gone {
			act.write, _ = (&pgproto3.CommandComplete{CommandTag: []byte(e.tag)}).Encode(nil)
			return act
		}
	}
	act.forward = !e.own && !gone
	return act
}
