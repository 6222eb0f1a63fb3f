package proxy

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
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
	// status is the last transaction status the client was told.
	status byte
	// open: the client sent extended-protocol messages after its last Sync.
	open bool
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
}

// The state of the link between a client session and a backend.
//
//	              ┌─refuse─▶ skipping ──client's Sync──┐
//	              │                                    ▼
//	detached ◀────┴──────────────────────────────── detached
//	   │ attach                         ▲          ▲      ▲
//	   ▼                                │release   │      │carry on
//	attached ──safe point, cw unflushed─┼▶ draining┘      │
//	   │  │  └──pin (a session feature)─▶ pinned          │
//	   │  └──destroy (client gone)──────────────▶ detached│
//	   ├──lose────────────────────────────▶ failing ──────┘
//	   └──violation──▶ closing ──lose──▶ failing ──▶ lost
//
// pinned moves as attached does, except that it is never released while
// the client stays: session pooling attaches straight to pinned.
//
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
	{linkAttached, linkClosing}:  true, // client: violation
	{linkPinned, linkClosing}:    true, // client: violation
	{linkClosing, linkDetached}:  true, // backend: detachGone
	{linkAttached, linkFailing}:  true, // backend: lose
	{linkPinned, linkFailing}:    true, // backend: lose
	{linkClosing, linkFailing}:   true, // backend: lose
	{linkFailing, linkDetached}:  true, // backend: finishLose, the client carries on
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
	s.cond.Broadcast()
}

// holdsLocked says whether be is the backend the link holds (attached,
// pinned or closing); a goroutine of an older backend finds it is not.
func (s *session) holdsLocked(be *pool.Conn) bool {
	return s.link.be == be && (s.link.state.serving() || s.link.state == linkClosing)
}

// cancelRunning sends a cancel to the attached backend while the client has
// a command in flight there. The backend cannot change hands while the
// cancel is on its way (cancelling holds the safe point back, see
// releaseAtSafePoint), so it can never reach a command of whoever holds
// the backend next; no lock is held while it is sent. pgtenant's own queries
// are never cancelled: a cancelled pin would leave the client's command
// running in the previous holder's state.
//
// The server may already be running the client's command while the backend
// goroutine has yet to read the pin's reply; the cancel then waits (up to
// ServerConnectTimeout) for that reply rather than being dropped.
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
		if !s.link.state.serving() || f == nil || !f.own || f.kind != replyQuery || ctx.Err() != nil {
			break
		}
		s.cond.Wait()
	}
	f := s.link.rm.front()
	if !s.link.state.serving() || s.link.cancelling || (s.link.rm.clientWait == 0 && !s.link.open) || (f != nil && f.own && f.kind == replyQuery) {
		return nil
	}
	s.link.cancelling = true
	return s.link.be
}
