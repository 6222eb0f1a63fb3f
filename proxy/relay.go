package proxy

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
)

// The safe point. A backend may change hands only when all of these hold:
//   - every Query, FunctionCall and Sync the client sent has been answered
//     by ReadyForQuery (pending == 0), and pgtenant's own queries too
//     (swallow == 0);
//   - the client has sent nothing after its last Sync (!open) and is not
//     streaming COPY data (!copyIn);
//   - the last ReadyForQuery said 'I': no transaction is open.
// The check runs when a ReadyForQuery arrives, the only moment it can
// become true. In transaction mode the backend is then released; in session
// mode only when the client has left.

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
				s.failDetached(fatalf(codeProtocolViolation, "invalid message from client: %v", err))
			}
			return err
		}
		switch typ {
		case 'X':
			return nil
		case 'Q', 'P', 'B', 'D', 'E', 'C', 'S', 'H', 'F', 'd', 'c', 'f':
		default:
			s.failDetached(fatalf(codeProtocolViolation, "invalid frontend message type %q", typ))
			return errors.New("protocol violation")
		}

		s.mu.Lock()
		if s.skipTillSync {
			if typ == 'S' {
				s.skipTillSync = false
				_ = writeMsg(s.cw, s.skipErr.response())
				_, _ = s.cw.Write(readyForQuery['I'])
				_ = s.cw.Flush()
			}
			s.mu.Unlock()
			if err := discard(s.cr, n); err != nil {
				return err
			}
			continue
		}
		if s.be == nil {
			if typ == 'd' || typ == 'c' || typ == 'f' {
				// COPY data after the server already ended the COPY
				// (it failed): PostgreSQL ignores these too.
				s.mu.Unlock()
				if err := discard(s.cr, n); err != nil {
					return err
				}
				continue
			}
			if s.srv.draining.Load() {
				s.fail(fatalf(codeAdminShutdown, "pgtenant is shutting down"))
				s.mu.Unlock()
				return errClientGone
			}
			s.mu.Unlock()
			be, err := s.srv.checkout(ctx)
			s.mu.Lock()
			if err != nil {
				s.refuseLocked(typ, checkoutError(err))
				s.mu.Unlock()
				if err := discard(s.cr, n); err != nil {
					return err
				}
				continue
			}
			s.attachLocked(be, true)
		}
		poke := s.countLocked(typ)
		s.mu.Unlock()

		if err := forward(s.cr, s.bw, n); err != nil {
			var ce *copyError
			if errors.As(err, &ce) && !ce.write {
				return err
			}
			// Writing to the server failed: the backend goroutine will see
			// the dead connection; keep reading so the client hears why.
			if err := discard(s.cr, n); err != nil {
				return err
			}
		}
		if poke {
			_, _ = s.bw.Write(syncMsg)
		}
	}
}

var syncMsg = []byte{'S', 0, 0, 0, 4}

// countLocked updates the safe-point counters for a client message about to
// be forwarded. It returns true when pgtenant must follow the message with a
// Sync of its own (see the COPY case).
func (s *session) countLocked(typ byte) (poke bool) {
	switch typ {
	case 'Q', 'F':
		s.pending++
		s.lastSimple = true
	case 'S':
		if !s.copyIn { // the server ignores Sync during COPY FROM STDIN
			s.pending++
			s.syncsSinceExec++
			s.open = false
		}
	case 'E':
		s.open = true
		s.lastSimple = false
		s.syncsSinceExec = 0
	case 'P', 'B', 'D', 'C', 'H':
		s.open = true
	case 'c', 'f':
		s.copyIn = false
		// With nothing owed to the client, no ReadyForQuery is coming
		// that could mark the safe point (the COPY already failed, or it
		// was started by an Execute whose Sync the server ignored). A Sync
		// of pgtenant's own brings one; its reply is swallowed.
		if s.pending == 0 {
			s.swallow.Add(1)
			return true
		}
	}
	return false
}

// refuseLocked answers a client message that cannot run because no backend
// could be had, the way PostgreSQL answers a failed command: an error, then
// ReadyForQuery at the end of the command (at once for Query and Sync, at
// the client's next Sync for an extended-protocol batch).
func (s *session) refuseLocked(typ byte, e *pgError) {
	switch typ {
	case 'Q', 'F', 'S':
		_ = writeMsg(s.cw, e.response())
		_, _ = s.cw.Write(readyForQuery['I'])
		_ = s.cw.Flush()
	default:
		s.skipTillSync = true
		s.skipErr = e
	}
}

// failDetached sends a FATAL error if the client goroutine owns cw.
func (s *session) failDetached(e *pgError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.be == nil {
		s.fail(e)
	}
}

// attachLocked makes be the session's backend and starts its reader. With
// pinNow, the pin is queued ahead of the client's message.
func (s *session) attachLocked(be *pool.Conn, pinNow bool) {
	s.be = be
	s.bw.Reset(be.NetConn)
	if pinNow {
		_, _ = s.bw.Write(s.pin.msgs)
		s.swallow.Add(int32(s.pin.queries))
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
			s.log.Error("backend relay panic", "panic", r)
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
		swallowing := s.swallow.Load() > 0
		switch typ {
		case 'Z':
			body, err := readBody(r, n)
			if err != nil || len(body) != 1 {
				s.lose(be, nil, errors.Join(errMalformed, err))
				return
			}
			if s.readyForQuery(be, body[0], swallowing) {
				return
			}
			continue
		case 'E':
			body, err := readBody(r, n)
			if err != nil {
				s.lose(be, nil, err)
				return
			}
			er := &pgproto3.ErrorResponse{}
			if err := er.Decode(body); err != nil {
				s.lose(be, nil, err)
				return
			}
			if er.Severity == "FATAL" || er.Severity == "PANIC" {
				// The server is closing this connection.
				s.lose(be, er, nil)
				return
			}
			if swallowing {
				s.mu.Lock()
				if s.pinErr == nil {
					s.pinErr = er
				}
				s.mu.Unlock()
				continue
			}
			if err := writeMsg(s.cw, er); err != nil {
				s.clientWriteFailed(be)
				return
			}
			continue
		case 'S':
			// Keep the connection's parameters current whoever caused the
			// change; forward only the client's own.
			if swallowing {
				if err := trackParameter(be, n); err != nil {
					s.lose(be, nil, err)
					return
				}
				continue
			}
			body, err := readBody(r, n)
			if err != nil {
				s.lose(be, nil, err)
				return
			}
			var ps pgproto3.ParameterStatus
			if err := ps.Decode(body); err == nil {
				be.Params[ps.Name] = ps.Value
			}
			if err := writeMsg(s.cw, &ps); err != nil {
				s.clientWriteFailed(be)
				return
			}
			continue
		case 'G':
			if !swallowing {
				s.mu.Lock()
				s.copyIn = true
				if !s.lastSimple {
					// Syncs sent behind the Execute that started this COPY
					// reach a server in copy-in mode, which ignores them.
					s.pending -= s.syncsSinceExec
					s.syncsSinceExec = 0
				}
				s.mu.Unlock()
			}
		case 'W':
			s.lose(be, nil, errors.New("CopyBothResponse: replication is not supported"))
			return
		}
		if swallowing {
			if err := discard(r, n); err != nil {
				s.lose(be, nil, err)
				return
			}
			continue
		}
		if err := forward(r, s.cw, n); err != nil {
			var ce *copyError
			if errors.As(err, &ce) && ce.write {
				s.clientWriteFailed(be)
			} else {
				s.lose(be, nil, err)
			}
			return
		}
	}
}

// readyForQuery accounts for one ReadyForQuery and, at a safe point,
// releases the backend. It returns true when the backend goroutine is done.
func (s *session) readyForQuery(be *pool.Conn, status byte, swallowing bool) bool {
	if !swallowing && be.Reader.Buffered() == 0 {
		// Flush before taking the lock: the client is waiting for this.
		_, _ = s.cw.Write(readyForQuery[status])
		if err := s.cw.Flush(); err != nil {
			s.clientWriteFailed(be)
			return true
		}
	} else if !swallowing {
		_, _ = s.cw.Write(readyForQuery[status])
	}

	s.mu.Lock()
	if s.be != be {
		// The client goroutine took the backend away (client gone).
		s.mu.Unlock()
		return true
	}
	if swallowing {
		s.swallow.Add(-1)
		if s.pinErr != nil {
			er := s.pinErr
			s.pinErr = nil
			s.mu.Unlock()
			s.srv.log.Error("session query failed on server; closing both connections",
				"tenant", s.tenant.Name, "sqlstate", er.Code, "err", er.Message)
			s.lose(be, nil, errors.New("pgtenant's session setup failed on the server: "+er.Message))
			return true
		}
	} else {
		s.pending--
		s.status = status
		if s.pending < 0 {
			s.mu.Unlock()
			s.lose(be, nil, errors.New("server sent an unexpected ReadyForQuery"))
			return true
		}
	}
	if s.swallow.Load() > 0 || s.pending > 0 || s.open || s.copyIn || status != 'I' ||
		(s.mode == config.PoolSession && !s.closing) {
		s.mu.Unlock()
		return false
	}
	// Safe point.
	if s.cw.Buffered() > 0 && !s.closing {
		if err := s.cw.Flush(); err != nil {
			s.mu.Unlock()
			s.clientWriteFailed(be)
			return true
		}
	}
	s.be = nil
	closing := s.closing
	s.mu.Unlock()
	if closing {
		_ = be.NetConn.SetDeadline(time.Time{}) // set by teardown
	}
	s.srv.pool.Release(be)
	return true
}

// lose handles a backend that died or cannot be trusted: it is closed, and
// the client hears about it in the least disruptive honest way.
//   - Outside a transaction, each command the client is waiting for gets an
//     error and ReadyForQuery 'I', and the client carries on: its next
//     command gets a fresh backend.
//   - Inside a transaction, or in session mode, the client's session is
//     gone with the server's: it gets FATAL and is closed, so it can never
//     mistake a rolled-back transaction for a committed one.
func (s *session) lose(be *pool.Conn, fatal *pgproto3.ErrorResponse, cause error) {
	s.mu.Lock()
	if s.be != be {
		// The client goroutine already took it away (client gone).
		s.mu.Unlock()
		return
	}
	s.be = nil
	pending, open, status, closing := s.pending, s.open, s.status, s.closing
	s.pending, s.open, s.copyIn, s.syncsSinceExec = 0, false, false, 0
	s.swallow.Store(0)
	s.pinErr = nil

	e := &pgError{Severity: "ERROR", Code: codeConnectionFailure,
		Message: "pgtenant: server connection lost"}
	if fatal != nil {
		e.Code, e.Message, e.Detail, e.Hint = fatal.Code, fatal.Message, fatal.Detail, fatal.Hint
	} else if cause != nil && !isEOF(cause) {
		e.Message += ": " + cause.Error()
	}
	switch {
	case closing:
	case s.mode == config.PoolSession || status != 'I':
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
			_, _ = s.cw.Write(readyForQuery['I'])
		}
		if open {
			s.skipTillSync = true
			s.skipErr = e
		}
		_ = s.cw.Flush()
	}
	s.mu.Unlock()
	s.srv.pool.Destroy(be)
	s.log.Warn("server connection lost", "sqlstate", e.Code, "err", e.Message,
		"client_pending", pending, "client_status", string(status))
}

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
// a message boundary is rolled back (and, in session mode, reset with
// DISCARD ALL) by pgtenant's own queries and released by the backend
// goroutine; one with a command in flight is cancelled and closed.
func (s *session) teardown() {
	s.mu.Lock()
	s.closing = true
	be := s.be
	if be == nil {
		s.mu.Unlock()
		return
	}
	if s.pending == 0 && !s.open && !s.copyIn && s.swallow.Load() == 0 {
		var q []byte
		if s.status != 'I' {
			q, _ = (&pgproto3.Query{String: "ROLLBACK"}).Encode(q)
		}
		if s.mode == config.PoolSession {
			q, _ = (&pgproto3.Query{String: "DISCARD ALL"}).Encode(q)
		}
		if len(q) > 0 {
			s.swallow.Add(int32(queryCount(s.status, s.mode)))
			s.mu.Unlock()
			_ = s.bw.Flush()
			// The server has this long to answer before the connection is
			// closed instead; the backend goroutine clears the deadline
			// when it releases.
			_ = be.NetConn.SetDeadline(time.Now().Add(s.srv.cfg.ServerConnectTimeout))
			if _, err := be.NetConn.Write(q); err != nil {
				_ = be.NetConn.Close() // the backend goroutine sees it and destroys
			}
			return
		}
		// Transaction mode at a safe point: the backend goroutine is
		// about to release it.
		s.mu.Unlock()
		return
	}
	inFlight := s.pending > 0 || s.open
	s.be = nil
	s.mu.Unlock()
	if inFlight {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.ServerConnectTimeout)
		_ = be.Cancel(ctx)
		cancel()
	}
	s.srv.pool.Destroy(be)
}

func queryCount(status byte, mode config.PoolMode) int {
	n := 0
	if status != 'I' {
		n++
	}
	if mode == config.PoolSession {
		n++
	}
	return n
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
