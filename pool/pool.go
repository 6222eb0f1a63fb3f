package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrTimeout: no connection became free within Config.WaitTimeout.
	ErrTimeout = errors.New("pool: timed out waiting for a server connection")
	// ErrClosed: the pool is shutting down.
	ErrClosed = errors.New("pool: closed")
	// ErrBusy: TryCheckout found every connection in use.
	ErrBusy = errors.New("pool: every server connection is in use")
	// ErrKeyMax: the wait timed out while the key held its Request.Max
	// connections. errors.Is(ErrKeyMax, ErrTimeout) holds.
	ErrKeyMax = fmt.Errorf("%w: the key holds its maximum of connections", ErrTimeout)
)

// Config tunes a Pool. Durations of 0 disable the feature they bound, except
// WaitTimeout and ConnectTimeout, which must be positive.
type Config struct {
	// Size is the most connections open at once.
	Size int
	// WaitTimeout bounds how long Checkout waits for a free connection.
	WaitTimeout time.Duration
	// ConnectTimeout bounds one dial and login.
	ConnectTimeout time.Duration
	// IdleTimeout closes connections idle this long.
	IdleTimeout time.Duration
	// MaxLifetime closes connections this old (plus up to 10% jitter).
	MaxLifetime time.Duration
	// CheckIdle: connections idle longer than this are probed at checkout.
	CheckIdle time.Duration
	// MaxStatements bounds the named prepared statements kept per
	// connection (0: DefaultMaxStatements).
	MaxStatements int
	// Logger receives a line when dials start failing and one when they
	// succeed again (nil: discard).
	Logger *slog.Logger
}

// Stats is a snapshot for the console and tests.
type Stats struct {
	Size    int // the most connections open at once
	Open    int // connections open or being dialled
	Idle    int
	Waiting int
	// Dials, Destroys and Timeouts count since the pool started.
	Dials, Destroys, Timeouts, DeadAtCheckout uint64
	// DialFailures counts dials that failed (not those whose caller gave
	// up).
	DialFailures uint64
	// Evictions counts idle connections of one role closed to make room
	// for a connection of another (CheckoutAs); they count as Destroys
	// too.
	Evictions uint64
	// Checkouts counts connections handed out (for the metrics).
	Checkouts uint64
}

// grant is what a waiter receives: a connection, the right to dial one (a
// slot that is free and a server that may have room), or the error that
// ends its wait (dials fail and no connection is left to serve it).
type grant struct {
	conn *Conn
	dial bool
	err  error
}

type waiter struct {
	ch   chan grant // buffered 1: the granter never blocks
	role string     // the login the waiter wants ("" for the Dialer's own)
	key  string     // whom it waits for (Request.Key)
	max  int        // the most connections key may hold (Request.Max; 0: no cap)
}

// Request is what a checkout asks for (Get).
type Request struct {
	// Key names whom the connection is for (the proxy passes the tenant).
	// Waiters are queued per key and the keys are served in turn, so one
	// key's wait does not grow with the number of waiters of another.
	Key string
	// Role is the login the connection must have: "" for the Dialer's
	// own, else a role the pool's RoleDialer dials (see CheckoutAs).
	Role string
	// Max is the most connections Key may hold at once, counting those
	// being dialled for it (0: no cap but Size). It is read at every
	// checkout, so a change applies to the next one. A key at its Max
	// waits in its own queue, even while the pool has room, and holds up
	// no other key.
	Max int
}

// Pool is a set of at most Size backend connections shared by every holder.
//
// Connections may be logged in as different roles (CheckoutAs, for role
// isolation, where each tenant logs in as a role of its own); Size caps
// them all together. A checkout takes an idle connection of its own role
// first (the most recently used), else dials one if there is room, else
// closes the least recently used idle connection of another role and dials
// in its slot, else waits. Waiters are served in order: a released
// connection goes to the oldest waiter, which closes it and dials its own
// role in the slot when the roles differ, so that a busy role cannot keep
// the slots from the others.
type Pool struct {
	cfg    Config
	dialer Dialer
	log    *slog.Logger
	// now is the clock of the dial backoff; tests replace it.
	now func() time.Time

	mu   sync.Mutex
	idle []*Conn // by release time: the last is the most recently used
	// queues are the waiters of each key, and turns the keys that have
	// waiters in the order they are served: the one served goes to the
	// back. Within a queue waiters are FIFO, but a caller whose dial
	// failed goes first, and its key to the front of turns.
	queues  map[string]*keyQueue
	turns   []*keyQueue
	nwait   int            // waiters in all queues
	held    map[string]int // per key: connections held or being dialled for it (Conn.claimed)
	open    int            // connections open or being dialled
	dialing int            // of open, the dials in progress
	health  dialHealth
	// retry, when set, will give the oldest waiter the right to dial once
	// the backoff has passed (see armRetryLocked).
	retry  *time.Timer
	closed bool
	stats  Stats
	// checkouts is Stats.Checkouts, apart from mu: it is counted on every
	// checkout, and needs no lock.
	checkouts atomic.Uint64

	stop chan struct{}
	done chan struct{}
}

// New starts a pool. It dials nothing until the first Checkout.
func New(cfg Config, dialer Dialer) (*Pool, error) {
	if cfg.Size < 1 {
		return nil, fmt.Errorf("pool: size must be at least 1, got %d", cfg.Size)
	}
	if cfg.WaitTimeout <= 0 || cfg.ConnectTimeout <= 0 {
		return nil, errors.New("pool: WaitTimeout and ConnectTimeout must be positive")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{cfg: cfg, dialer: dialer, log: log.With("component", "pool"), now: time.Now,
		queues: map[string]*keyQueue{}, held: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.reap()
	return p, nil
}

// Checkout returns a connection for the caller's exclusive use, waiting up
// to Config.WaitTimeout (or until ctx ends) when all are busy.
func (p *Pool) Checkout(ctx context.Context) (*Conn, error) {
	return p.counted(p.checkout(ctx, Request{}, true))
}

// TryCheckout is Checkout without the wait: when every connection is in
// use it returns ErrBusy at once. It may still dial a new connection.
func (p *Pool) TryCheckout(ctx context.Context) (*Conn, error) {
	return p.counted(p.checkout(ctx, Request{}, false))
}

// CheckoutAs is Checkout of a connection logged in as role, which the
// pool's Dialer must be able to dial (RoleDialer). When the pool is full
// and no connection of role is idle, the least recently used idle
// connection of another role is closed to make room. A dial that the
// server refuses for role alone (SQLSTATE class 28: no such role, wrong
// password) returns its error to this caller only: it does not count as
// the server failing.
func (p *Pool) CheckoutAs(ctx context.Context, role string) (*Conn, error) {
	if err := p.checkRole(role); err != nil {
		return nil, err
	}
	return p.counted(p.checkout(ctx, Request{Role: role}, true))
}

// TryCheckoutAs is CheckoutAs without the wait, as TryCheckout is to
// Checkout.
func (p *Pool) TryCheckoutAs(ctx context.Context, role string) (*Conn, error) {
	if err := p.checkRole(role); err != nil {
		return nil, err
	}
	return p.counted(p.checkout(ctx, Request{Role: role}, false))
}

// Get is the checkout of req: a connection for req.Key logged in as
// req.Role, under req.Key's Max. With wait it waits as Checkout does (up to
// Config.WaitTimeout, or until ctx ends), in req.Key's queue; without, it
// is TryCheckout: ErrBusy at once when it would wait, whether because every
// connection is in use or because req.Key holds its Max. A wait that ends
// at the timeout while the key held its Max returns ErrKeyMax (which is
// ErrTimeout too). Checkout, CheckoutAs and their Try forms are Get with
// the empty key and no Max.
func (p *Pool) Get(ctx context.Context, req Request, wait bool) (*Conn, error) {
	if req.Role != "" {
		if err := p.checkRole(req.Role); err != nil {
			return nil, err
		}
	}
	return p.counted(p.checkout(ctx, req, wait))
}

// counted passes a checkout's outcome on, counting it when it succeeded.
func (p *Pool) counted(c *Conn, err error) (*Conn, error) {
	if err == nil {
		p.checkouts.Add(1)
	}
	return c, err
}

func (p *Pool) checkRole(role string) error {
	if role == "" {
		return errors.New("pool: CheckoutAs needs a role")
	}
	if _, ok := p.dialer.(RoleDialer); !ok {
		return errors.New("pool: the dialer cannot log in as another role")
	}
	return nil
}

// takeIdleLocked removes and returns the most recently used idle
// connection of role, or nil.
func (p *Pool) takeIdleLocked(role string) *Conn {
	for i := len(p.idle) - 1; i >= 0; i-- {
		if c := p.idle[i]; c.Role == role {
			p.idle = slices.Delete(p.idle, i, i+1)
			return c
		}
	}
	return nil
}

func (p *Pool) checkout(ctx context.Context, req Request, wait bool) (*Conn, error) {
	deadline := time.Now().Add(p.waitTimeout())
	role, key := req.Role, req.Key
	// dialErr is this caller's own failed dial. While other connections
	// exist it does not end the checkout: the caller queues again, first
	// in line, for the next released connection or the next dial.
	var dialErr error
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		now := p.now()
		// A key at its Max takes nothing, even what is free: it waits
		// for one of its own connections to come back.
		free := p.underMaxLocked(key, req.Max)
		if free {
			if c := p.takeIdleLocked(role); c != nil {
				p.claimLocked(c, key)
				p.mu.Unlock()
				if c.usable(p.cfg.CheckIdle) {
					return c, nil
				}
				p.mu.Lock()
				p.stats.DeadAtCheckout++
				p.mu.Unlock()
				p.Destroy(c)
				continue
			}
		}
		// Room is taken only when no waiter could use it: a newcomer
		// does not pass those that wait (waiters of keys at their Max
		// are not in its way).
		first := free && !p.servableLocked()
		if first && p.mayDialLocked(now) {
			p.open++
			p.dialing++
			p.held[key]++
			p.mu.Unlock()
			c, done, err := p.dialForCheckout(ctx, role, key)
			if done {
				return c, err
			}
			dialErr = err
			continue
		}
		if first && len(p.idle) > 0 && p.healthAllowsDialLocked(now) {
			// Full, and what is idle is another role's (this role's
			// would have been taken above): close the least recently
			// used and dial in its slot.
			victim := p.idle[0]
			p.idle = slices.Delete(p.idle, 0, 1)
			p.stats.Evictions++
			p.stats.Destroys++
			p.dialing++
			p.held[key]++
			p.mu.Unlock()
			_ = victim.NetConn.Close()
			c, done, err := p.dialForCheckout(ctx, role, key)
			if done {
				return c, err
			}
			dialErr = err
			continue
		}
		if p.health.failing && p.open == 0 {
			// No connection and no dial in progress: nothing could serve
			// a waiter before the backoff ends, so say now why there is
			// none rather than at the wait timeout.
			err := p.health.err
			p.mu.Unlock()
			return nil, err
		}
		if !wait || !time.Now().Before(deadline) {
			// TryCheckout, or a dial that used up the whole wait.
			err := dialErr
			switch {
			case err != nil:
			case !wait:
				err = ErrBusy
			default:
				p.stats.Timeouts++
				err = ErrTimeout
				if !free {
					err = ErrKeyMax
				}
			}
			p.mu.Unlock()
			return nil, err
		}
		w := &waiter{ch: make(chan grant, 1), role: role, key: key, max: req.Max}
		// This caller's turn may have gone to a dial that failed; then it
		// keeps its turn for what comes next.
		p.enqueueLocked(w, dialErr != nil)
		p.armRetryLocked(now)
		p.mu.Unlock()

		g, err := p.wait(ctx, w, deadline)
		switch {
		case err != nil:
			return nil, err
		case g.err != nil:
			return nil, g.err
		case !g.dial && g.conn.Role == role && g.conn.usable(p.cfg.CheckIdle):
			// Counted in p.held[key] when it was granted.
			g.conn.key, g.conn.claimed = key, true
			return g.conn, nil
		case !g.dial:
			// The slot of the dead connection, or of one logged in as
			// another role, is ours: close it and dial in its place, so
			// this waiter keeps its turn (Destroy would hand the slot to
			// the next waiter and send this one back to the queue).
			_ = g.conn.NetConn.Close()
			p.mu.Lock()
			p.stats.Destroys++
			if g.conn.Role == role {
				p.stats.DeadAtCheckout++
			} else {
				p.stats.Evictions++
			}
			p.dialing++
			p.mu.Unlock()
		}
		c, done, err := p.dialForCheckout(ctx, role, key)
		if done {
			return c, err
		}
		dialErr = err
	}
}

// keyQueue is the waiters of one key, oldest first.
type keyQueue struct {
	key     string
	waiters []*waiter
}

// enqueueLocked queues w in its key's queue: at the back, or at the front
// (first, a caller whose dial failed), its key then served next.
func (p *Pool) enqueueLocked(w *waiter, first bool) {
	q := p.queues[w.key]
	if q == nil {
		q = &keyQueue{key: w.key}
		p.queues[w.key] = q
		p.turns = append(p.turns, q)
	}
	p.nwait++
	if !first {
		q.waiters = append(q.waiters, w)
		return
	}
	q.waiters = slices.Insert(q.waiters, 0, w)
	i := slices.Index(p.turns, q)
	copy(p.turns[1:i+1], p.turns[:i])
	p.turns[0] = q
}

// turnLocked returns the index in p.turns of the key whose turn it is: the
// first under its Max (-1 if every waiting key holds its Max). The cost is
// the number of keys waiting, which is at most the number of waiters.
func (p *Pool) turnLocked() int {
	for i, q := range p.turns {
		if p.underMaxLocked(q.key, q.waiters[0].max) {
			return i
		}
	}
	return -1
}

// popLocked removes and returns the oldest waiter of p.turns[i], whose key
// goes to the back of the turns; the connection the waiter is about to get
// is counted as its key's already.
func (p *Pool) popLocked(i int) *waiter {
	q := p.turns[i]
	w := q.waiters[0]
	q.waiters[0] = nil
	q.waiters = q.waiters[1:]
	p.nwait--
	p.turns = slices.Delete(p.turns, i, i+1)
	if len(q.waiters) > 0 {
		p.turns = append(p.turns, q)
	} else {
		delete(p.queues, q.key)
	}
	p.held[w.key]++
	return w
}

// servableLocked says whether some waiter's key is under its Max: such a
// waiter is owed whatever becomes free before a newcomer.
func (p *Pool) servableLocked() bool { return p.turnLocked() >= 0 }

// withdrawLocked removes w from its queue; false when it is not queued
// (it was granted).
func (p *Pool) withdrawLocked(w *waiter) bool {
	q := p.queues[w.key]
	if q == nil {
		return false
	}
	i := slices.Index(q.waiters, w)
	if i < 0 {
		return false
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	p.nwait--
	if len(q.waiters) == 0 {
		delete(p.queues, q.key)
		p.turns = slices.Delete(p.turns, slices.Index(p.turns, q), slices.Index(p.turns, q)+1)
	}
	return true
}

// underMaxLocked says whether key may have one more connection.
func (p *Pool) underMaxLocked(key string, max int) bool {
	return max <= 0 || p.held[key] < max
}

// claimLocked counts c as held by key.
func (p *Pool) claimLocked(c *Conn, key string) {
	c.key, c.claimed = key, true
	p.held[key]++
}

// unclaimLocked counts c as no longer held (Release, Destroy).
func (p *Pool) unclaimLocked(c *Conn) {
	if c.claimed {
		c.claimed = false
		p.unholdLocked(c.key)
	}
}

func (p *Pool) unholdLocked(key string) {
	if p.held[key] <= 1 {
		delete(p.held, key) // keys come and go: keep the map to those holding
		return
	}
	p.held[key]--
}

// dialForCheckout dials in a checkout's slot, already counted as key's.
// done says the checkout is over: it has a connection, or its context
// ended; otherwise the dial failed and the caller goes back to the queue
// with err.
func (p *Pool) dialForCheckout(ctx context.Context, role, key string) (c *Conn, done bool, err error) {
	c, err = p.dial(ctx, role, key)
	if err == nil {
		return c, true, nil
	}
	// A login refused for this role alone will be refused again: waiting
	// for another turn would only delay the error.
	return nil, ctx.Err() != nil || (role != "" && roleRefused(err)), err
}

// mayDialLocked says whether a new connection may be dialled now: there is
// room, and dials are not failing, or their backoff has passed and no other
// dial is already trying the server.
func (p *Pool) mayDialLocked(now time.Time) bool {
	return p.open < p.cfg.Size && p.healthAllowsDialLocked(now)
}

// healthAllowsDialLocked says whether the backoff lets a dial start now.
func (p *Pool) healthAllowsDialLocked(now time.Time) bool {
	return !p.health.failing || (p.dialing == 0 && !now.Before(p.health.next))
}

// wait blocks until w is granted or the deadline passes. On timeout it
// withdraws w; if a grant raced in first, the grant wins.
func (p *Pool) wait(ctx context.Context, w *waiter, deadline time.Time) (grant, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	var cause error
	select {
	case g := <-w.ch:
		return g, nil
	case <-t.C:
		cause = ErrTimeout
	case <-ctx.Done():
		cause = ctx.Err()
	case <-p.stop:
		cause = ErrClosed
	}
	p.mu.Lock()
	if p.withdrawLocked(w) {
		if cause == ErrTimeout {
			p.stats.Timeouts++
			if !p.underMaxLocked(w.key, w.max) {
				cause = ErrKeyMax
			}
		}
		p.mu.Unlock()
		return grant{}, cause
	}
	p.mu.Unlock()
	// Already granted: take it rather than leak it.
	return <-w.ch, nil
}

// dial opens a connection for key in a slot already counted in p.open,
// p.dialing and p.held[key]. A failure frees the slot and feeds the
// backoff; when it leaves no connection at all, the waiters get the error
// too, since none could be served.
func (p *Pool) dial(ctx context.Context, role, key string) (*Conn, error) {
	started := p.now()
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	var (
		c   *Conn
		err error
	)
	if role == "" {
		c, err = p.dialer.Dial(dctx)
	} else {
		c, err = p.dialer.(RoleDialer).DialAs(dctx, role)
	}
	cancel()
	if err != nil {
		if role != "" {
			err = fmt.Errorf("connect to backend as role %s: %w", role, err)
		} else {
			err = fmt.Errorf("connect to backend: %w", err)
		}
		p.dialFailed(ctx, err, role != "" && roleRefused(err), key)
		return nil, err
	}
	c.pool = p
	c.Role = role
	c.key, c.claimed = key, true // counted in p.held since the dial began
	c.Statements = newStatements(p.cfg.MaxStatements)
	if p.cfg.MaxLifetime > 0 {
		jitter := time.Duration(rand.Int64N(int64(p.cfg.MaxLifetime)/10 + 1))
		c.expiresAt = c.createdAt.Add(p.cfg.MaxLifetime + jitter)
	}
	p.mu.Lock()
	p.dialing--
	p.stats.Dials++
	ended, failures, lasted := p.health.succeeded(started, p.now())
	if ended {
		p.stopRetryLocked()
		// The server has room again: the waiters need not wait for
		// releases alone.
		p.serveWaitersLocked()
	}
	p.mu.Unlock()
	if ended {
		p.log.Info("backend dials succeed again", "failed_dials", failures, "failing_for", lasted.Round(time.Millisecond))
	}
	return c, nil
}

// dialFailed gives back the slot of key's failed dial. forRole says the
// server refused the login of that dial's role alone.
func (p *Pool) dialFailed(ctx context.Context, err error, forRole bool, key string) {
	p.mu.Lock()
	p.dialing--
	p.open--
	p.unholdLocked(key)
	if ctx.Err() != nil || forRole {
		// The caller gave up, or the server refused one role: that says
		// nothing about the server.
		p.serveWaitersLocked()
		p.mu.Unlock()
		return
	}
	p.stats.DialFailures++
	first := p.health.failed(p.now(), err)
	live := p.open - p.dialing
	if p.open == 0 {
		for _, q := range p.turns {
			for _, w := range q.waiters {
				w.ch <- grant{err: err}
			}
		}
		clear(p.queues)
		clear(p.turns)
		p.turns = p.turns[:0]
		p.nwait = 0
	} else {
		p.serveWaitersLocked()
	}
	p.mu.Unlock()
	if first {
		p.log.Warn("backend dials failing; waiting clients are served by the connections open",
			"pg_error", dialErrorText(err), "open", live, "pool_size", p.cfg.Size, "err", err)
	}
}

// serveWaitersLocked serves waiters, in turn, with what is free: an idle
// connection of the waiter's role (idle connections and waiters meet when
// the waiters' keys were at their Max as the connections came back), else
// the right to dial as far as the size and the backoff allow (while dials
// fail, one at a time), else an idle connection of another role to close
// and dial in its slot; and otherwise makes sure that one will get the right
// to dial when the backoff has passed.
func (p *Pool) serveWaitersLocked() {
	if p.closed {
		return
	}
	now := p.now()
	for {
		i := p.turnLocked()
		if i < 0 {
			break // nobody waits, or every waiting key holds its Max
		}
		w := p.turns[i].waiters[0]
		var g grant
		if c := p.takeIdleLocked(w.role); c != nil {
			g.conn = c
		} else if p.mayDialLocked(now) {
			p.open++
			p.dialing++
			g.dial = true
		} else if len(p.idle) > 0 && p.healthAllowsDialLocked(now) {
			// Full, yet connections of other roles sit idle while
			// someone waits: that happens only when dials were failing
			// as the waiter came (a checkout does not wait while it may
			// evict). The waiter gets the least recently used one and
			// dials its own role in that slot, one dial at a time while
			// they fail.
			g.conn = p.idle[0]
			p.idle = slices.Delete(p.idle, 0, 1)
		} else {
			break
		}
		p.popLocked(i)
		w.ch <- g
		if g.conn != nil && g.conn.Role != w.role && p.health.failing {
			break
		}
	}
	p.armRetryLocked(now)
}

// armRetryLocked starts the timer that serves waiters when the backoff
// passes, if dials are failing, someone waits, and no timer is running.
// Without it, waiters would be served only by releases, even once the
// server has room again.
func (p *Pool) armRetryLocked(now time.Time) {
	if !p.health.failing || p.nwait == 0 || p.retry != nil || p.closed ||
		p.dialing > 0 || p.open >= p.cfg.Size {
		// Not failing, nobody waits, or what is in flight (a timer, a
		// dial, the holders of every slot) will serve the waiters.
		return
	}
	p.retry = time.AfterFunc(max(p.health.next.Sub(now), 0), p.retryDial)
}

func (p *Pool) retryDial() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retry = nil
	p.serveWaitersLocked()
}

func (p *Pool) stopRetryLocked() {
	if p.retry != nil {
		p.retry.Stop()
		p.retry = nil
	}
}

// usable says whether an idle connection may be handed out.
func (c *Conn) usable(checkIdle time.Duration) bool {
	if !c.expiresAt.IsZero() && time.Now().After(c.expiresAt) {
		return false
	}
	if c.Reader.Buffered() > 0 {
		return false // the server spoke while nobody asked: doubtful
	}
	if checkIdle > 0 && time.Since(c.idleSince) > checkIdle {
		return alive(c.NetConn)
	}
	return true
}

// Release returns a connection that its holder left at a safe point. The
// waiter whose turn it is gets it directly.
//
// A connection of another pool goes back to its own: a proxy with several
// pools (one per backend server) can release through any of them.
func (p *Pool) Release(c *Conn) {
	if c.pool != p {
		if c.pool == nil {
			panic("pool: Release of a connection no pool dialled")
		}
		c.pool.Release(c)
		return
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	p.unclaimLocked(c)
	if p.closed || p.overSizeLocked() || (!c.expiresAt.IsZero() && c.idleSince.After(c.expiresAt)) {
		p.mu.Unlock()
		p.Destroy(c)
		return
	}
	if i := p.turnLocked(); i >= 0 {
		w := p.popLocked(i)
		p.mu.Unlock()
		w.ch <- grant{conn: c}
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Destroy closes a connection whose state is in doubt (or that is too old)
// and frees its slot: to the waiter whose turn it is, as the right to
// dial, or to the pool.
//
// As Release, a connection of another pool is destroyed by its own.
func (p *Pool) Destroy(c *Conn) {
	if c.pool != nil && c.pool != p {
		c.pool.Destroy(c)
		return
	}
	_ = c.NetConn.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unclaimLocked(c)
	p.stats.Destroys++
	p.open--
	p.serveWaitersLocked()
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Size = p.cfg.Size
	s.Open = p.open
	s.Idle = len(p.idle)
	s.Waiting = p.nwait
	s.Checkouts = p.checkouts.Load()
	return s
}

// Held returns how many connections key holds (or are being dialled for
// it), and how many of its checkouts wait.
func (p *Pool) Held(key string) (held, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q := p.queues[key]; q != nil {
		waiting = len(q.waiters)
	}
	return p.held[key], waiting
}

// Close refuses new checkouts, wakes waiters with ErrClosed and closes idle
// connections. Connections still held are closed when their holders release
// or destroy them.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.stopRetryLocked()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	for _, c := range idle {
		_ = c.NetConn.Close()
	}
}

// reap closes idle connections past their idle timeout or lifetime, so a
// quiet pool shrinks and an old one is renewed without waiting for use.
func (p *Pool) reap() {
	defer close(p.done)
	every := time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			var victims []*Conn
			p.mu.Lock()
			kept := p.idle[:0]
			for _, c := range p.idle {
				if (p.cfg.IdleTimeout > 0 && now.Sub(c.idleSince) > p.cfg.IdleTimeout) ||
					(!c.expiresAt.IsZero() && now.After(c.expiresAt)) {
					victims = append(victims, c)
					continue
				}
				kept = append(kept, c)
			}
			for i := len(kept); i < len(p.idle); i++ {
				p.idle[i] = nil
			}
			p.idle = kept
			p.mu.Unlock()
			for _, c := range victims {
				p.Destroy(c)
			}
		}
	}
}
