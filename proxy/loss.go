package proxy

// How a link ends other than at a safe point: the backend dies or cannot be
// trusted (lose), the client stops reading (clientWriteFailed), or the
// client leaves (teardown: ROLLBACK and release at a message boundary,
// cancel and destroy with a command in flight).

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/pool"
)

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
		s.tellFailingLink(e, cont.pending)
		if !cont.carryOn {
			_ = s.nc.Close() // the client goroutine's read fails and it ends
		}
	}
	s.finishLose(cont.carryOn, nil)
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
	// Draining only if the release itself failed (serveBackend's recover).
	if !s.holdsLocked(be) && !(from == linkDraining && s.link.be == be) {
		return nil, out, false
	}
	out.pending, out.status = s.link.rm.clientWait, s.link.status
	inFlight := out.pending > 0 || s.link.open
	s.failLinkLocked()

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

// failLinkLocked moves the link to failing and forgets everything of the
// backend it had: what it owed, what was being sent, the pin's progress,
// the changes of the client's transaction there.
func (s *session) failLinkLocked() {
	s.link.rm.reset()
	s.setLinkLocked(linkFailing)
	s.link.curClient, s.link.curQuery = false, false
	s.link.open, s.link.pinErr, s.link.unsent = false, nil, false
	s.link.pinPending, s.link.pinBoundary = false, false
	s.tr.backendLost()
}

// tellFailingLink writes e to the client, with ReadyForQuery 'I' after it
// for each of the answers the client waits for (e alone when none). The
// link is failing: the client goroutine waits, and the backend goroutine
// owns cw until finishLose. The write is bounded: a client that does not
// read is not waited for.
func (s *session) tellFailingLink(e *pgError, answers int) {
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	s.toldError(e.Code)
	_ = writeMsg(s.cw, e.Response())
	for i := 0; i < answers; i++ {
		if i > 0 {
			_ = writeMsg(s.cw, e.Response())
		}
		_, _ = s.cw.Write(readyForQuery('I'))
	}
	_ = s.cw.Flush()
	_ = s.nc.SetWriteDeadline(time.Time{})
}

// finishLose ends the failing state: the client carries on (detached, or
// skipping the rest of its batch with skipErr when that is set) or its
// session ends (lost).
func (s *session) finishLose(carryOn bool, skipErr *pgError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !carryOn:
		s.setLinkLocked(linkLost)
	case skipErr != nil:
		s.link.status = 'I'
		s.link.skipErr = skipErr
		s.setLinkLocked(linkSkipping)
	default:
		s.link.status = 'I'
		s.setLinkLocked(linkDetached)
	}
}

// failPin handles a pin that failed on the server. The server skips what
// the client sent behind it up to a Sync, so none of it ran; the backend,
// in a state nobody knows, is closed, and the client hears one error in
// place of the first thing it sent, as if that had failed:
//   - when its Sync or Query is already out, the error and ReadyForQuery
//     now (waitPin held back anything the client sent after it);
//   - otherwise the rest of its batch is discarded up to its Sync, which is
//     answered with the error and ReadyForQuery (linkSkipping).
//
// The client was idle when the pin was sent (a backend is checked out only
// between transactions), so it goes on: its next message gets another
// backend, pinned afresh.
func (s *session) failPin(be *pool.Conn, er *pgproto3.ErrorResponse) {
	e := &pgError{Severity: "ERROR", Code: codeConnectionFailure,
		Message: "pgtenant: could not prepare a server connection for this transaction: " + er.Message,
		Detail:  "Nothing this transaction sent ran; it can be retried."}
	answer, skip, ok := s.beginPinFailure(be)
	if !ok {
		return
	}
	s.srv.pool.Destroy(be)
	if answer {
		s.tellFailingLink(e, 1)
	}
	var skipErr *pgError
	if skip {
		skipErr = e
	}
	s.finishLose(true, skipErr)
	s.logger().Warn("the pin failed on the server; closed the server connection, the client's transaction did not run",
		"sqlstate", er.Code, "err", er.Message)
}

// beginPinFailure moves the link to failing for failPin. answer: the
// client is to be answered now; skip: the rest of its batch is to be
// skipped instead.
func (s *session) beginPinFailure(be *pool.Conn) (answer, skip, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.holdsLocked(be) || s.link.state == linkClosing {
		return false, false, false
	}
	answer = s.link.pinBoundary && !s.clientGone
	skip = !s.link.pinBoundary && s.link.open && !s.clientGone
	s.failLinkLocked()
	return answer, skip, true
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
