package proxy

// What the server owes for each message sent: the client goroutine,
// under mu, records each message it is about to send in the reply model
// (replies.go) and queues what pgtenant must send before or instead of it
// (statements re-prepared, renamed, refused, the client's defaults
// restored).

import (
	"github.com/jackc/pgx/v5/pgproto3"
)

var (
	parseComplete = []byte{'1', 0, 0, 0, 4}
	closeComplete = []byte{'3', 0, 0, 0, 4}
	// bindUnnamed binds the unnamed statement to the unnamed portal, with
	// no parameters and text results; executeUnnamed runs it to the end.
	bindUnnamed    = []byte{'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0}
	executeUnnamed = []byte{'E', 0, 0, 0, 9, 0, 0, 0, 0, 0}
	// syncMsg ends an extended-protocol batch; flushMsg asks the server
	// to send what it has buffered.
	syncMsg  = []byte{'S', 0, 0, 0, 4}
	flushMsg = []byte{'H', 0, 0, 0, 4}
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
	if s.link.pinPending && (m.typ == 'S' || m.typ == 'Q' || m.typ == 'F') {
		s.link.pinBoundary = true
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
		s.statementLocked(true)
		// A simple Query destroys the unnamed statement.
		s.tr.unnamedParse, s.link.unnamedHere = nil, false
		e := entry{kind: replyQuery}
		var after string
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			s.stats().refused(refuse.Code)
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
		s.statementLocked(true)
		if m.res.refuse != nil {
			s.stats().refused(m.res.refuse.Code)
			m.replace, _ = (&pgproto3.Query{String: raiseSQL(m.res.refuse)}).Encode(nil)
		}
		s.expectLocked(entry{kind: replyQuery})
	case 'S':
		s.link.open = false
		s.expectLocked(entry{kind: replySync})
	case 'E':
		s.statementLocked(true)
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
		if m.mapped {
			if _, exists := s.tr.stmts[m.name]; !exists {
				_, rest, _ := splitName(m.whole)
				if e := s.tr.stmtLimit(m.name, rest); e != nil {
					s.refuseParseLocked(m, e)
					return true
				}
			}
		}
		effects := stmtEffects{changes: m.res.changes, params: m.res.params}
		m.res.changes, m.res.params = nil, nil // they apply when the statement is bound
		body := m.whole
		if refuse := s.sessionEffectsLocked(&m.res); refuse != nil {
			s.stats().refused(refuse.Code)
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
			s.tr.dropClientStmt(m.name)
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
	// Only the client's own Parse that failed undefines its statement. One
	// pgtenant sent to prepare it again on this backend (own) does not:
	// the client prepared it successfully before, and directly it would
	// still exist (in an aborted transaction, say, where every Parse
	// fails with 25P02). Nor does one pgtenant answered itself
	// (answerDetachedLocked): the client was told it exists. Each use
	// tries the Parse again and reports its error.
	if !e.own && e.stmt != nil && !e.stmt.answered && s.tr.stmts[e.clientName] == e.stmt {
		s.tr.dropClientStmt(e.clientName)
	}
}
