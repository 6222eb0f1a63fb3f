package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/pool"
)

// tenantPause is a tenant's PAUSE state (admin console). While the tenant
// is paused, every checkout of its clients waits in session.gate before it
// asks the pool for a backend: a transaction that has its backend runs on,
// a new one waits for RESUME, for its context (shutdown), or for
// query-wait-timeout.
//
// KILL of the tenant wakes the waiters too (kick): the killed clients end
// instead of waiting for a RESUME.
type tenantPause struct {
	// on is the paused flag read on every checkout without the lock.
	on atomic.Bool

	mu sync.Mutex
	// resumed is closed by resume; kicked by kick. Both nil while the
	// tenant is not paused.
	resumed, kicked chan struct{}
	// timeout is how long a checkout waits for RESUME: query-wait-timeout
	// when PAUSE was given.
	timeout time.Duration
}

// errPauseKicked ends the wait of a client whose tenant was killed.
var errPauseKicked = fatalf(codeAdminShutdown, "terminating connection due to administrator command")

// wait returns once the tenant is not paused, or with an error when ctx
// ends or, with wait false, at once if it is paused.
func (p *tenantPause) wait(ctx context.Context, wait bool) error {
	if !p.on.Load() {
		return nil
	}
	p.mu.Lock()
	resumed, kicked, timeout := p.resumed, p.kicked, p.timeout
	p.mu.Unlock()
	if resumed == nil {
		return nil // resumed meanwhile
	}
	if !wait {
		return pool.ErrBusy
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-resumed:
		return nil
	case <-kicked:
		return errPauseKicked
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		// As a checkout that found no backend in time: the client's
		// statement fails, its session goes on.
		return errorf(codeQueryCanceled, "pgtenant: the tenant is paused and was not resumed within query-wait-timeout")
	}
}

// pause pauses the tenant; checkouts wait up to timeout for RESUME. It
// reports whether the tenant was running.
func (p *tenantPause) pause(timeout time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timeout = timeout
	if p.resumed != nil {
		return false
	}
	p.resumed, p.kicked = make(chan struct{}), make(chan struct{})
	p.on.Store(true)
	return true
}

// resume lets the waiting checkouts go on; it reports whether the tenant
// was paused.
func (p *tenantPause) resume() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		return false
	}
	p.on.Store(false)
	close(p.resumed)
	p.resumed, p.kicked = nil, nil
	return true
}

// kick ends the waits of the tenant's clients (KILL): they get
// errPauseKicked. The tenant stays paused.
func (p *tenantPause) kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kicked != nil {
		close(p.kicked)
		p.kicked = make(chan struct{})
	}
}

// paused says whether the tenant is paused.
func (p *tenantPause) paused() bool { return p.on.Load() }
