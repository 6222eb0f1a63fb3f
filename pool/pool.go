package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

var (
	// ErrTimeout: no connection became free within Config.WaitTimeout.
	ErrTimeout = errors.New("pool: timed out waiting for a server connection")
	// ErrClosed: the pool is shutting down.
	ErrClosed = errors.New("pool: closed")
	// ErrBusy: TryCheckout found every connection in use.
	ErrBusy = errors.New("pool: every server connection is in use")
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
}

// Stats is a snapshot for the console and tests.
type Stats struct {
	Open    int // connections open or being dialled
	Idle    int
	Waiting int
	// Dials, Destroys and Timeouts count since the pool started.
	Dials, Destroys, Timeouts, DeadAtCheckout uint64
}

// grant is what a waiter receives: a connection, or the right to dial one
// (a slot freed by Destroy).
type grant struct {
	conn *Conn
	dial bool
}

type waiter struct {
	ch chan grant // buffered 1: the granter never blocks
}

// Pool is a fixed-size set of backend connections shared by every holder.
type Pool struct {
	cfg    Config
	dialer Dialer

	mu      sync.Mutex
	idle    []*Conn   // LIFO
	waiters []*waiter // FIFO
	open    int       // connections open or being dialled
	closed  bool
	stats   Stats

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
	p := &Pool{cfg: cfg, dialer: dialer, stop: make(chan struct{}), done: make(chan struct{})}
	go p.reap()
	return p, nil
}

// Checkout returns a connection for the caller's exclusive use, waiting up
// to Config.WaitTimeout (or until ctx ends) when all are busy.
func (p *Pool) Checkout(ctx context.Context) (*Conn, error) {
	return p.checkout(ctx, true)
}

// TryCheckout is Checkout without the wait: when every connection is in
// use it returns ErrBusy at once. It may still dial a new connection.
func (p *Pool) TryCheckout(ctx context.Context) (*Conn, error) {
	return p.checkout(ctx, false)
}

func (p *Pool) checkout(ctx context.Context, wait bool) (*Conn, error) {
	var deadline time.Time
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
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
		if p.open < p.cfg.Size {
			p.open++
			p.mu.Unlock()
			return p.dial(ctx)
		}
		if !wait {
			p.mu.Unlock()
			return nil, ErrBusy
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(p.cfg.WaitTimeout)
		}
		w := &waiter{ch: make(chan grant, 1)}
		p.waiters = append(p.waiters, w)
		p.mu.Unlock()

		g, err := p.wait(ctx, w, deadline)
		if err != nil {
			return nil, err
		}
		if g.dial {
			return p.dial(ctx)
		}
		if g.conn.usable(p.cfg.CheckIdle) {
			return g.conn, nil
		}
		// The slot of the dead connection is ours: close it and dial in
		// its place, so this waiter keeps its turn (Destroy would hand the
		// slot to the next waiter and send this one back to the queue).
		_ = g.conn.NetConn.Close()
		p.mu.Lock()
		p.stats.Destroys++
		p.stats.DeadAtCheckout++
		p.mu.Unlock()
		return p.dial(ctx)
	}
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
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			if cause == ErrTimeout {
				p.stats.Timeouts++
			}
			p.mu.Unlock()
			return grant{}, cause
		}
	}
	p.mu.Unlock()
	// Already granted: take it rather than leak it.
	return <-w.ch, nil
}

// dial opens a connection in a slot already counted in p.open.
func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	c, err := p.dialer.Dial(dctx)
	if err != nil {
		p.freeSlot()
		return nil, fmt.Errorf("connect to backend: %w", err)
	}
	c.pool = p
	c.Statements = newStatements(p.cfg.MaxStatements)
	if p.cfg.MaxLifetime > 0 {
		jitter := time.Duration(rand.Int64N(int64(p.cfg.MaxLifetime)/10 + 1))
		c.expiresAt = c.createdAt.Add(p.cfg.MaxLifetime + jitter)
	}
	p.mu.Lock()
	p.stats.Dials++
	p.mu.Unlock()
	return c, nil
}

// freeSlot gives a slot back: to the oldest waiter as the right to dial, or
// to the pool.
func (p *Pool) freeSlot() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 && !p.closed {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.ch <- grant{dial: true}
		return
	}
	p.open--
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
// oldest waiter gets it directly.
func (p *Pool) Release(c *Conn) {
	if c.pool != p {
		panic("pool: Release of a connection from another pool")
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || (!c.expiresAt.IsZero() && c.idleSince.After(c.expiresAt)) {
		p.mu.Unlock()
		p.Destroy(c)
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- grant{conn: c}
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Destroy closes a connection whose state is in doubt (or that is too old)
// and frees its slot.
func (p *Pool) Destroy(c *Conn) {
	_ = c.NetConn.Close()
	p.mu.Lock()
	p.stats.Destroys++
	p.mu.Unlock()
	p.freeSlot()
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = p.open
	s.Idle = len(p.idle)
	s.Waiting = len(p.waiters)
	return s
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
