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
	// console and registry are the two sources of a pause: the console's
	// PAUSE on this proxy, and a pause recorded in the registry that every
	// proxy applies (router.PauseTenant, regpause.go). The tenant runs
	// again when neither holds it; each one's RESUME lifts its own only.
	console, registry bool

	// served: this proxy's presence session holds the tenant's serve lock
	// (router.ServeLockClass), without which its transactions do not start
	// (regpause.go). Set and cleared by the presence loop.
	served atomic.Bool
	// gen counts the registry pauses applied and lifted, so that the
	// goroutine following one (drainPaused) knows when it is over.
	gen atomic.Uint64
	// gating counts the checkouts waiting in awaitServe: the tenant's
	// waiting checkouts less these are past the pause, about to attach a
	// backend (presence.go lets the serve lock go only when there are
	// none).
	gating atomic.Int64
	// refresh serialises the reads of the tenant's registry pause.
	refresh sync.Mutex
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

// pause pauses the tenant (the console's PAUSE); checkouts wait up to
// timeout for RESUME. It reports whether the tenant was running.
func (p *tenantPause) pause(timeout time.Duration) bool {
	return p.set(&p.console, true, timeout)
}

// resume lifts the console's pause and lets the waiting checkouts go on,
// unless a registry pause still holds the tenant; it reports whether the
// console had paused it.
func (p *tenantPause) resume() bool { return p.set(&p.console, false, 0) }

// pauseRegistry and resumeRegistry apply and lift a registry pause.
func (p *tenantPause) pauseRegistry(timeout time.Duration) bool {
	return p.set(&p.registry, true, timeout)
}
func (p *tenantPause) resumeRegistry() bool { return p.set(&p.registry, false, 0) }

// registryPaused says whether a registry pause holds the tenant.
func (p *tenantPause) registryPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.registry
}

// set turns the pause of one source on or off and reports whether that
// changed it; the tenant is paused while any source holds it. While both
// hold it, a checkout waits up to the longer of their timeouts.
func (p *tenantPause) set(src *bool, on bool, timeout time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := *src
	if on {
		if p.console || p.registry {
			timeout = max(timeout, p.timeout)
		}
		p.timeout = timeout
	}
	*src = on
	switch {
	case (p.console || p.registry) && p.resumed == nil:
		p.resumed, p.kicked = make(chan struct{}), make(chan struct{})
		p.on.Store(true)
	case !p.console && !p.registry && p.resumed != nil:
		p.on.Store(false)
		close(p.resumed)
		p.resumed, p.kicked = nil, nil
	}
	return was != on
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
