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
// queues the caller. A released connection is handed straight to a waiter,
// so a burst of new clients cannot starve those that have been waiting. A
// waiter gives up with ErrTimeout after Config.WaitTimeout.
//
// # Fair turns and a cap per key
//
// Get names whom a checkout is for (Request.Key; the proxy passes the
// tenant). Waiters queue per key, first come, first served within a key,
// and the keys that have waiters are served in turn: the key served goes to
// the back of the turns. So a key's waiter gets the next connection once
// every key ahead of it in the turns has had one, however many waiters
// those keys have: with k keys waiting it waits for at most k releases,
// not for every waiter that came before it. Checkout and CheckoutAs are Get
// with the empty key, and alone they are served strictly in order.
//
// Request.Max caps the connections a key holds at once (those being dialled
// for it included). A key at its cap takes nothing, not even an idle
// connection or an empty slot: its checkouts wait in its queue, passed over
// in the turns, until one of its connections comes back; other keys are not
// held up by it. The cap travels with each request, so a new value applies
// to the next checkout. A wait that times out at the cap returns ErrKeyMax,
// which is ErrTimeout too.
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
// else waits in its key's queue. A released connection goes to the waiter
// whose turn it is whatever its role: one of another role closes it and
// dials its own in the slot, so a busy role cannot keep the slots from the
// others. A login the server refuses for one role (SQLSTATE class 28) fails
// that checkout alone and is no sign of the server failing.
//
// # Dial failures
//
// A server may refuse a dial (max_connections reached: "53300 sorry, too
// many clients already") while the connections the pool already has work.
// The caller of that dial is not failed: it queues again, first in line
// (its key first in the turns), and is served by the next released connection within its WaitTimeout.
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
