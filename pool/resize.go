package pool

import "time"

// SetSize changes the most connections the pool keeps open, while it
// serves (a settings reload). Growing lets waiting callers dial at once, in
// their order. Shrinking closes idle connections over the new size at once,
// the least recently used first; busy ones over it are closed when their
// holders release them (Release), so no holder loses its connection and
// the pool comes down to the size as transactions end. A size below 1 is
// taken as 1.
func (p *Pool) SetSize(n int) {
	n = max(n, 1)
	p.mu.Lock()
	p.cfg.Size = n
	var victims []*Conn
	for p.open > n && len(p.idle) > 0 {
		victims = append(victims, p.idle[0])
		p.idle[0] = nil
		p.idle = p.idle[1:]
		p.open--
		p.stats.Destroys++
	}
	p.serveWaitersLocked()
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.NetConn.Close()
	}
}

// Size is the most connections the pool keeps open now.
func (p *Pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Size
}

// SetWaitTimeout changes how long a checkout that starts from now on waits
// for a connection (Config.WaitTimeout); d must be positive.
func (p *Pool) SetWaitTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	p.mu.Lock()
	p.cfg.WaitTimeout = d
	p.mu.Unlock()
}

// waitTimeout is Config.WaitTimeout as SetWaitTimeout last set it.
func (p *Pool) waitTimeout() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.WaitTimeout
}

// overSizeLocked says whether more connections are open than the size
// allows (after SetSize shrank it): a released one is closed instead of
// kept.
func (p *Pool) overSizeLocked() bool { return p.open > p.cfg.Size }
