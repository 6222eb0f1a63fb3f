package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
)

// link is the session's tie to a backend: its state, the backend while it
// has one, what that backend owes (the reply model), and the counters and
// flags that hold a release back. It is guarded by the session's mu,
// except the hot-path flags, which are the backend goroutine's alone.
type link struct {
	// state says who owns what (see linkState); be is the backend while
	// the state holds one (linkState.holds), nil otherwise.
	state linkState
	be    *pool.Conn
	// rm is what be owes, in order (replies.go).
	rm replyModel
	// status is the last transaction status the client was told, and
	// readyAt when, on the monotonic clock (monoNow; set only with
	// --idle-transaction-timeout). 8 bytes where a time.Time takes 24, which
	// pays for the metrics' fields below in every idle client.
	status  byte
	readyAt int64
	// open: the client sent extended-protocol messages after its last Sync.
	open bool
	// pinPending: the pin was sent with the client's first message and is
	// not confirmed yet (its last statement has not completed).
	// pinBoundary: meanwhile the client sent a Sync, Query or FunctionCall;
	// nothing more of the client's is sent until the pin is confirmed,
	// since the server would run it even if the pin failed (pin.go).
	pinPending, pinBoundary bool
	// pinWaiter: the client goroutine holds a message back until the pin
	// is confirmed (waitPin).
	pinWaiter bool
	// unsent: the client goroutine accounted a message it has not yet
	// written out and flushed to the backend; the backend must not change
	// hands before it is. parked: the backend goroutine waits for that.
	unsent, parked bool
	// cancelling: a cancel request is being forwarded to be; it must not
	// change hands until the server acted on it.
	cancelling bool
	// dirty: since be was attached, the client sent something that may
	// change session state, so be is released without its pin key (see
	// attachLocked).
	dirty bool
	// unnamedHere: be has the client's unnamed statement
	// (tracker.unnamedParse).
	unnamedHere bool
	// pinErr is the error one of pgtenant's own queries reported (pinFailed).
	pinErr *pgproto3.ErrorResponse
	// pinReason says why the link is linkPinned in transaction pooling (a
	// session feature that cannot move between backends).
	pinReason string
	// skipErr is what a client skipping to its Sync is told then
	// (linkSkipping); violation the FATAL error a client that broke the
	// protocol is told (linkClosing).
	skipErr, violation *pgError
	// swallowing: the rows of pgtenant's restore statement inside a
	// client's Query are arriving (backend goroutine, under mu).
	swallowing bool

	// The backend goroutine's hot path, read without the lock and written
	// by that goroutine alone (under mu with each verdict):
	// curClient: the oldest reply owed is the client's Execute or Query,
	// so a DataRow or CopyData is the client's and is forwarded without
	// the lock. curQuery: more precisely, a Query of the client's with
	// nothing of pgtenant's inside it, whose RowDescription,
	// CommandComplete, EmptyQueryResponse and notices go the same way.
	// queryRollback and queryTagged carry the client's last
	// CommandComplete's ROLLBACK tag, seen on the hot path or under the
	// lock, to the next ReadyForQuery (tracker.readyForQuery).
	curClient, curQuery, queryRollback, queryTagged bool

	// For the metrics (metrics_session.go): how many of the client's
	// queries are in flight (it sits in the bools' padding), and when its
	// open transaction and its oldest query in flight started (monoNow; 0:
	// none).
	queriesOpen          uint16
	txnStart, queryStart int64
}

// The state of the link between a client session and a backend. Its moves,
// and who makes them (linkMoves is the same list as a table):
//
//	detached ─▶ skipping        client: a batch found no backend (refuseLocked)
//	skipping ─▶ detached        client: that batch's Sync is answered (routeMsg)
//	detached ─▶ attached        client: attachLocked, transaction pooling
//	detached ─▶ pinned          client: attachLocked, session pooling
//	attached ─▶ pinned          client: a session feature (pinLocked)
//	attached ─▶ detached        backend: a safe point (beginRelease), the client
//	                            stopped reading (detachGone); client: teardown
//	                            with a command in flight
//	pinned   ─▶ detached        the same, once the client has left
//	attached, pinned ─▶ draining  backend: a safe point with replies to flush
//	draining ─▶ detached        backend: flushed (endRelease)
//	attached, pinned ─▶ closing   client: a protocol violation (violation)
//	closing  ─▶ detached        backend: the client stopped reading (detachGone)
//	attached, pinned, closing, draining ─▶ failing   backend: lose
//	failing  ─▶ detached        backend: the client carries on (finishLose, failPin)
//	failing  ─▶ skipping        backend: the pin failed in the middle of the
//	                            client's batch, whose rest is skipped (failPin)
//	failing  ─▶ lost            backend: the client's session ends (finishLose)
//
// The states:
//   - detached: no backend; the client goroutine owns the client writer
//     (cw). skipping: the same, and the client's extended-protocol batch
//     could not be sent (no backend could be had): like PostgreSQL after an
//     error, its messages up to its Sync are discarded, and the Sync is
//     answered with skipErr and ReadyForQuery.
//   - attached: a backend serves the client; the backend goroutine owns cw
//     and reads the backend's replies. pinned: the same, and the backend
//     stays until the client leaves (session pooling, or a session feature
//     in use under --unpoolable=pin).
//   - draining: at a safe point, the backend goroutine flushes what it
//     wrote to cw before handing cw back, without the lock; the client
//     goroutine waits.
//   - closing: the client broke the protocol; the client goroutine closed
//     the backend, and the backend goroutine tells the client (violation)
//     as it winds down.
//   - failing: the backend died or cannot be trusted; the backend goroutine
//     is telling the client, without the lock, and the client goroutine
//     waits until it is done before it does anything, so that nothing the
//     client sent after the loss runs before it has been told.
//   - lost: the client's session ended with the backend's (a transaction
//     or a command whose outcome is unknown was lost); nothing more the
//     client sends runs anywhere, and the client goroutine ends.
type linkState uint8

const (
	linkDetached linkState = iota
	linkSkipping
	linkAttached
	linkPinned
	linkDraining
	linkClosing
	linkFailing
	linkLost
)

func (l linkState) String() string {
	switch l {
	case linkDetached:
		return "detached"
	case linkSkipping:
		return "skipping"
	case linkAttached:
		return "attached"
	case linkPinned:
		return "pinned"
	case linkDraining:
		return "draining"
	case linkClosing:
		return "closing"
	case linkFailing:
		return "failing"
	case linkLost:
		return "lost"
	}
	return fmt.Sprintf("linkState(%d)", uint8(l))
}

// serving says whether a backend serves the client: attached or pinned.
func (l linkState) serving() bool { return l == linkAttached || l == linkPinned }

// holds says whether the link holds a backend in this state (for the
// tenant's count of backends held).
func (l linkState) holds() bool {
	return l == linkAttached || l == linkPinned || l == linkDraining || l == linkClosing
}

// busy says whether the backend goroutine is telling the client something
// without the lock (draining, failing): the client goroutine waits it out.
func (l linkState) busy() bool { return l == linkDraining || l == linkFailing }

// idle says whether no backend is attached and the client goroutine owns
// cw: detached or skipping.
func (l linkState) idle() bool { return l == linkDetached || l == linkSkipping }

// linkMoves lists the transitions setLinkLocked allows, and who makes them.
var linkMoves = map[[2]linkState]bool{
	{linkDetached, linkSkipping}: true, // client: refuseLocked
	{linkSkipping, linkDetached}: true, // client: the client's Sync
	{linkDetached, linkAttached}: true, // client: attachLocked
	{linkDetached, linkPinned}:   true, // client: attachLocked, session pooling
	{linkAttached, linkPinned}:   true, // client: pinLocked
	{linkAttached, linkDetached}: true, // backend: release, detachGone; client: teardown
	{linkPinned, linkDetached}:   true, // the same, once the client is gone
	{linkAttached, linkDraining}: true, // backend: release with cw to flush
	{linkPinned, linkDraining}:   true, // the same, once the client is gone
	{linkDraining, linkDetached}: true, // backend: cw flushed
	{linkDraining, linkFailing}:  true, // backend: lose, a panic while draining
	{linkAttached, linkClosing}:  true, // client: violation
	{linkPinned, linkClosing}:    true, // client: violation
	{linkClosing, linkDetached}:  true, // backend: detachGone
	{linkAttached, linkFailing}:  true, // backend: lose
	{linkPinned, linkFailing}:    true, // backend: lose
	{linkClosing, linkFailing}:   true, // backend: lose
	{linkFailing, linkDetached}:  true, // backend: finishLose, failPin, the client carries on
	{linkFailing, linkSkipping}:  true, // backend: failPin in the middle of a batch
	{linkFailing, linkLost}:      true, // backend: finishLose, the session ends
}

// setLinkLocked moves the link to a new state; it is the only place the
// state changes. A move the diagram does not have is a bug in the relay: it
// panics, which ends the session (serve's recover) with the backend
// destroyed, never reused. Leaving the states that hold a backend forgets
// it. Called with mu held.
func (s *session) setLinkLocked(to linkState) {
	from := s.link.state
	if !linkMoves[[2]linkState{from, to}] {
		panic(fmt.Sprintf("pgtenant: link state %v cannot become %v", from, to))
	}
	s.link.state = to
	switch to {
	case linkDetached, linkFailing, linkLost:
		s.link.be = nil
	}
	if h := to.holds(); h != from.holds() && s.te != nil {
		if h {
			s.te.backends.Add(1)
		} else {
			s.te.backends.Add(-1)
		}
	}
	s.cond.Broadcast()
}

// holdsLocked says whether be is the backend the link holds (attached,
// pinned or closing); a goroutine of an older backend finds it is not.
func (s *session) holdsLocked(be *pool.Conn) bool {
	return s.link.be == be && (s.link.state.serving() || s.link.state == linkClosing)
}

// attachLocked makes be the session's backend and starts its reader, at
// once or, forMessage (a client's message is about to be sent), after the
// first write to be (backendWriter). With pinNow, the pin is queued ahead
// of the client's message.
//
// The pin is skipped when the backend is known to be in this client's state
// already: its last holder left it with this client's pin key (same tenant,
// same search_path and settings) and sent nothing that changes session
// state (pinReusable). Tenants never share a key, so reuse can only ever
// happen within one tenant.
func (s *session) attachLocked(be *pool.Conn, pinNow, forMessage bool) {
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
	s.link.txnStart, s.link.queryStart, s.link.queriesOpen = 0, 0, 0
	s.bwTo = backendWriter{s: s, be: be, due: true}
	s.bw.Reset(&s.bwTo)
	if pinNow {
		s.sendPinLocked(be)
	}
	if !forMessage {
		s.startReader()
	}
}

// backendWriter is what bw writes to: the attached backend's connection.
//
// The backend goroutine of an attachment made for a client's message starts
// once the first write to the backend has returned (due), not at the
// attach. Started at the attach, it would be runnable while the client
// goroutine sits in that write, and Go's scheduler gives a P whose
// goroutine is in a system call to another thread when runnable work waits
// (sysmon's retake): a thread wake-up per transaction, for a goroutine
// whose first read cannot find a reply yet. Nothing can be owed by the
// backend before that write, so nothing waits on the reader meanwhile; the
// paths that end a session start it if it is still due (startDueReader),
// since their clean-up goes through it. Client goroutine only.
type backendWriter struct {
	s   *session
	be  *pool.Conn
	due bool
}

func (w *backendWriter) Write(p []byte) (int, error) {
	n, err := w.be.NetConn.Write(p)
	if w.due {
		// After a failed write too: the reader finds the backend gone and
		// tells the client.
		w.s.startReader()
	}
	return n, err
}

// startReader starts the backend goroutine of the current attachment.
func (s *session) startReader() {
	s.bwTo.due = false
	s.backendDone.Add(1)
	go s.serveBackend(s.bwTo.be)
}

// startDueReader starts the backend goroutine if the attachment has not
// written to its backend yet: a session that ends, or breaks the protocol,
// leaves its backend to that goroutine (teardown, violation).
func (s *session) startDueReader() {
	if s.bwTo.due {
		s.startReader()
	}
}

// sendPinLocked queues the pin on a backend just attached, ahead of the
// client's first message, which goes out with it in one write; its replies
// are pgtenant's own, and an error in one fails the pin (failPin). Until
// its last statement completes (pinPending), nothing of the client's past
// its first Sync or Query goes out (waitPin).
func (s *session) sendPinLocked(be *pool.Conn) {
	s.link.pinPending, s.link.pinBoundary = false, false
	s.followConfLocked()
	if s.srv.noPin {
		return
	}
	if s.srv.cfg.PinReuse && be.State == s.tr.pin.key {
		s.stats().pinned(true)
		return
	}
	s.stats().pinned(false)
	msgs, statements := s.pinFor(be)
	_, _ = s.bw.Write(msgs)
	for i := 0; i < statements; i++ {
		last := i == statements-1
		s.expectLocked(entry{kind: replyParse, own: true, pin: true})
		s.expectLocked(entry{kind: replyBind, own: true, pin: true})
		s.expectLocked(entry{kind: replyExecute, own: true, pin: true, pinEnd: last})
	}
	be.State = s.tr.pin.key
	s.link.pinPending = true
	s.link.unsent = true
}

// pinFor returns the pin to send on be and how many statements it holds.
// A backend that last served another tenant has every prepared statement
// dropped first (deallocatePin), and its statement cache with it.
func (s *session) pinFor(be *pool.Conn) ([]byte, int) {
	if be.Tenant == s.tr.tenant.Name {
		return s.tr.pin.msgs, s.tr.pin.statements
	}
	be.Tenant = s.tr.tenant.Name
	be.Statements.Clear()
	return append(append([]byte(nil), deallocatePin...), s.tr.pin.msgs...), s.tr.pin.statements + 1
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

// pinFailedLocked: one of pgtenant's own queries (the rollback or reset of
// a client that left) failed on the server, which reported pinErr; its
// ReadyForQuery just came. The backend is in a state pgtenant did not
// mean, and the returned error loses it. (A failed pin is failPin's.)
func (s *session) pinFailedLocked() error {
	er := s.link.pinErr
	s.link.pinErr = nil
	s.logger().Error("pgtenant's session query failed on the server; closing the server connection",
		"sqlstate", er.Code, "err", er.Message)
	return errors.New("pgtenant's session setup failed on the server: " + er.Message)
}

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
	return s.releaseAtSafePoint(be)
}

// releaseAtSafePoint gives be back to the pool if the session is at a safe
// point, waiting first for what the client goroutine is still sending. cw
// is flushed before the client goroutine gets it back, without the lock:
// the link is draining meanwhile.
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
		s.endRelease(be, err != nil)
	}
	return true
}

// beginRelease moves the link off be at a safe point: to detached, with be
// given back (giveBackLocked), or to draining when cw holds replies for the
// client (drain), which the caller flushes and then calls endRelease. ok
// is false when it is no safe point.
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
	s.giveBackLocked(be)
	s.setLinkLocked(linkDetached)
	return false, true
}

// endRelease: cw is flushed (or the client is gone), be goes back to the
// pool, and the client goroutine may have cw.
func (s *session) endRelease(be *pool.Conn, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gone {
		s.clientGone = true
	}
	s.giveBackLocked(be)
	s.setLinkLocked(linkDetached)
}

// giveBackLocked returns be, released at a safe point, to the pool. It
// runs before the link shows detached, with mu held: the client goroutine
// waits on mu for the link, so when its next transaction checks a backend
// out, be is already the pool's most recently used idle connection, and
// the client gets back the backend that holds its prepared statements
// (unless another client took it first). Released after the link showed
// detached, be could still be on its way back while the client took
// another backend, where its statements are prepared again: a statement
// that directly would fail for a schema change in between (a stale plan)
// would then succeed, depending on timing. The pool never calls into a
// session, so taking its lock under mu cannot deadlock.
func (s *session) giveBackLocked(be *pool.Conn) {
	if be.Reader.Buffered() > 0 {
		// The server said more than it owed: whatever it is, it must not
		// reach the next holder as an answer.
		s.logger().Warn("server sent more than it owed at a safe point; closing the server connection")
		s.srv.pool.Destroy(be)
		return
	}
	s.srv.pool.Release(be)
}

// cancelRunning sends a cancel to the attached backend while the client has
// a command in flight there. The backend cannot change hands while the
// cancel is on its way (cancelling holds the safe point back, see
// releaseAtSafePoint), so it can never reach a command of whoever holds
// the backend next; no lock is held while it is sent. pgtenant's own queries
// are never cancelled: a cancelled pin fails, and the client's transaction
// with it, though the cancel was meant for a command of the client's.
//
// The server may already be running the client's command while the backend
// goroutine has yet to read the pin's confirmation; the cancel then waits
// (up to ServerConnectTimeout) for it rather than being dropped.
func (s *session) cancelRunning() {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.ServerConnectTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	be := s.startCancel(ctx)
	if be == nil {
		s.logger().Debug("cancel request with nothing running: dropped")
		return
	}
	err := be.Cancel(ctx)
	s.mu.Lock()
	s.link.cancelling = false
	s.cond.Broadcast()
	s.mu.Unlock()
	if err != nil {
		s.logger().Warn("forwarding cancel request failed", "err", err)
		return
	}
	s.logger().Info("cancel request forwarded", "server_pid", be.PID)
}

// startCancel waits out the pin's replies and returns the backend to cancel,
// marked cancelling, or nil when nothing of the client's is running.
func (s *session) startCancel(ctx context.Context) *pool.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		f := s.link.rm.front()
		ownQuery := f != nil && f.own && f.kind == replyQuery
		if !s.link.state.serving() || !(s.link.pinPending || ownQuery) || ctx.Err() != nil {
			break
		}
		s.cond.Wait()
	}
	f := s.link.rm.front()
	if !s.link.state.serving() || s.link.cancelling || (s.link.rm.clientWait == 0 && !s.link.open) ||
		s.link.pinPending || (f != nil && f.own && f.kind == replyQuery) {
		return nil
	}
	s.link.cancelling = true
	return s.link.be
}
