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
// # Connections of many roles
//
// For role isolation each tenant's backends log in as the tenant's own role
// (CheckoutAs, with a RoleDialer). Size still caps every role together. A
// checkout takes its own role's most recently used idle connection; else
// dials while fewer than Size exist; else closes the least recently used
// idle connection of another role and dials in its slot (Stats.Evictions);
// else waits in the same first-come queue. A released connection goes to
// the oldest waiter whatever its role: one of another role closes it and
// dials its own in the slot, so a busy role cannot keep the slots from the
// others. A login the server refuses for one role (SQLSTATE class 28) fails
// that checkout alone and is no sign of the server failing.
//
// # Dial failures
//
// A server may refuse a dial (max_connections reached: "53300 sorry, too
// many clients already") while the connections the pool already has work.
// The caller of that dial is not failed: it queues again, first in line,
// and is served by the next released connection within its WaitTimeout.
// While dials fail the pool dials at most one at a time and only once the
// backoff has passed (50ms doubling to 5s, starting over after a success),
// so its effective size shrinks to what the server gives; a timer gives a
// waiter the next dial, so waiters are served as soon as the server has
// room, not by releases alone. One line is logged when dials start failing,
// naming PostgreSQL's error, and one when a dial succeeds again.
//
// When no connection exists at all and no dial is in progress, nothing
// could serve a waiter: the failing caller and every waiter get the dial
// error at once, and so does a checkout during the backoff.
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
