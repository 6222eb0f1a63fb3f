package proxy

import "fmt"

// The link between a client session and a backend connection.
//
//	detached ──attach──▶ attached ──release (safe point)──▶ detached
//	                        │  └──destroy (client gone, in flight)──▶ detached
//	                        └──lose──▶ failing ──▶ detached  (the client carries on)
//	                                          └──▶ lost      (the client's session ends)
//
// detached: no backend; the client goroutine owns the client writer (cw).
// attached: a backend serves the client; the backend goroutine owns cw and
// reads the backend's replies. failing: the backend died or cannot be
// trusted; the backend goroutine is telling the client, and the client
// goroutine waits until it is done before it does anything, so that nothing
// the client sent after the loss runs before it has been told. lost: the
// client's session ended with the backend's (a transaction or a command
// whose outcome is unknown was lost); nothing more the client sends runs
// anywhere, and the client goroutine ends.
type linkState uint8

const (
	linkDetached linkState = iota
	linkAttached
	linkFailing
	linkLost
)

func (l linkState) String() string {
	switch l {
	case linkDetached:
		return "detached"
	case linkAttached:
		return "attached"
	case linkFailing:
		return "failing"
	case linkLost:
		return "lost"
	}
	return fmt.Sprintf("linkState(%d)", uint8(l))
}

// linkMoves lists the transitions setLinkLocked allows.
var linkMoves = map[[2]linkState]bool{
	{linkDetached, linkAttached}: true,
	{linkAttached, linkDetached}: true,
	{linkAttached, linkFailing}:  true,
	{linkFailing, linkDetached}:  true,
	{linkFailing, linkLost}:      true,
}

// setLinkLocked moves the link to a new state. A move the diagram does not
// have is a bug in the relay: it panics, which ends the session (serve's
// recover) with the backend destroyed, never reused. Called with mu held.
func (s *session) setLinkLocked(to linkState) {
	if !linkMoves[[2]linkState{s.link, to}] {
		panic(fmt.Sprintf("pgtenant: link state %v cannot become %v", s.link, to))
	}
	s.link = to
	s.cond.Broadcast()
}
