// Package pool owns the backend connections that every tenant shares.
//
// It knows nothing of clients or tenants: a Conn is a logged-in PostgreSQL
// connection plus the facts the pool and its user need about it (cancel key,
// the parameters the server reported, an opaque State label that the holder
// uses to remember what session state it left behind). The proxy decides what
// runs on a Conn; the pool decides how many exist and who gets the next one.
//
// # Checkout and release
//
// Checkout hands out an idle connection (most recently used first, so the
// working set stays warm), dials a new one while fewer than Size exist, or
// queues the caller. Waiters are served strictly first come, first served,
// and a released connection is handed straight to the oldest waiter, so a
// burst of new clients cannot starve one that has been waiting. A waiter gives
// up with ErrTimeout after Config.WaitTimeout.
//
// Release returns a connection that the holder has brought to a safe point;
// Destroy closes one whose state is in doubt. The pool never inspects what a
// holder did: returning a dirty connection is the holder's bug, so when in
// doubt the holder destroys.
//
// # Health
//
// Connections older than MaxLifetime (with up to 10% jitter, so a pool
// started at once does not reconnect at once) or idle longer than IdleTimeout
// are closed by a reaper. A connection idle for longer than CheckIdle is
// probed at checkout with one non-blocking peek: a server that terminated it
// meanwhile has left an error or EOF on the socket, and the caller gets a
// fresh connection instead of a dead one.
package pool
