package proxy

import (
	"context"
	"strings"
	"time"

	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// The proxy's side of the registry pause (router/pause.go): a pause of a
// tenant recorded in the registry, which every proxy applies when the NOTIFY
// of the tenant's name arrives, acknowledged through the serve lock its
// presence session holds (presence.go).
//
// Invariant: a transaction of a tenant starts here (awaitServe lets a
// checkout through) only while this proxy's presence session holds the
// tenant's serve lock, or while the presence session is down (then nobody
// can pause the tenant: the pauser could not reach us either, and a switch
// is refused while the pause is not acknowledged). The presence loop lets
// the lock go only once a registry pause is applied and the tenant holds no
// backend here, so a pauser that gets the lock exclusive knows that no
// proxy runs, or can start, a transaction of the tenant.

// pauseLookupTimeout bounds one read of a tenant's pause.
const pauseLookupTimeout = 5 * time.Second

// awaitServe is the pause part of a checkout's gate: it returns once the
// tenant is not paused (console or registry) and this proxy holds its serve
// lock. wait false answers pool.ErrBusy instead of waiting.
func (srv *Server) awaitServe(ctx context.Context, te *tenantEntry, wait bool) error {
	te.pause.gating.Add(1)
	defer te.pause.gating.Add(-1)
	var timer *time.Timer
	for {
		if err := te.pause.wait(ctx, wait); err != nil {
			return err
		}
		if te.pause.served.Load() || !srv.presenceUp.Load() {
			return nil
		}
		if !wait {
			return pool.ErrBusy
		}
		// The first checkout since the presence loop let the lock go (or
		// never took it): ask for it, and wait.
		srv.tenants.signal()
		if timer == nil {
			timer = time.NewTimer(srv.liveConfig().QueryWaitTimeout)
			defer timer.Stop()
		}
		poll := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			poll.Stop()
			return ctx.Err()
		case <-timer.C:
			poll.Stop()
			return errorf(codeQueryCanceled, "pgtenant: tenant %q could not be served within query-wait-timeout: this proxy could not take its serve lock in the registry (a move is switching it)", te.name)
		case <-poll.C:
		}
	}
}

// pauseChanged is the registry watch's callback for a NOTIFY payload: the
// pause of the tenant it names (or of every tenant this proxy knows, for
// "") is read again, in the background.
func (srv *Server) pauseChanged(ctx context.Context, payload string) {
	if srv.registryDB == nil || strings.Contains(payload, ":") {
		return
	}
	if payload == "" {
		go srv.refreshAllPauses(ctx)
		return
	}
	if te := srv.tenants.lookup(payload); te != nil {
		go srv.refreshPause(ctx, te)
	}
}

// refreshPause reads te's registry pause and applies or lifts it. Refreshes
// of one tenant run one at a time. When the registry cannot answer, the
// state stays as it was; an applied pause still lapses at its deadline.
func (srv *Server) refreshPause(ctx context.Context, te *tenantEntry) {
	te.pause.refresh.Lock()
	defer te.pause.refresh.Unlock()
	rctx, cancel := context.WithTimeout(ctx, pauseLookupTimeout)
	defer cancel()
	p, on, err := router.LookupPause(rctx, srv.registryDB, te.name)
	if err != nil {
		if ctx.Err() == nil {
			srv.log.Warn("cannot read the tenant's pause from the registry; keeping its state", "tenant", te.name, "err", err)
		}
		return
	}
	srv.applyPause(ctx, te, p, on)
}

// refreshAllPauses is refreshPause for every tenant known here, with one
// query: a watch that reconnects (or a TRUNCATE) asks for them all, and a
// query per tenant would take as many registry connections at once, at
// start too, when a proxy short of file descriptors (or the registry's
// connection limit) can least afford them.
func (srv *Server) refreshAllPauses(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, pauseLookupTimeout)
	defer cancel()
	pauses, err := router.LookupPauses(rctx, srv.registryDB)
	if err != nil {
		if ctx.Err() == nil {
			srv.log.Warn("cannot read the tenants' pauses from the registry; keeping their state", "err", err)
		}
		return
	}
	for _, te := range srv.tenants.all() {
		p, on := pauses[te.name]
		te.pause.refresh.Lock()
		srv.applyPause(ctx, te, p, on)
		te.pause.refresh.Unlock()
	}
}

// applyPause applies te's registry pause p (on) or lifts it (!on); the
// caller holds te.pause.refresh.
func (srv *Server) applyPause(ctx context.Context, te *tenantEntry, p router.Pause, on bool) {
	if !on {
		if te.pause.registryPaused() && srv.placements != nil {
			// A move lifts its pause in the transaction that switches the
			// placement: the tenant's transactions must go to the new
			// backend from the first one, so the placement is read before
			// they are let through (its own NOTIFY handler reads it too,
			// in the background).
			srv.refreshPlacement(ctx, te)
		}
		if te.pause.resumeRegistry() {
			te.pause.gen.Add(1)
			srv.log.Info("tenant resumed (registry)", "tenant", te.name)
			srv.tenants.signal() // take the serve lock again
		}
		return
	}
	gen := te.pause.gen.Add(1)
	if te.pause.pauseRegistry(p.DeadlineIn + time.Second) {
		srv.log.Info("tenant paused (registry)", "tenant", te.name, "reason", p.Reason,
			"drain_in", p.DrainIn.Round(time.Millisecond), "lapses_in", p.DeadlineIn.Round(time.Millisecond))
	}
	go srv.drainPaused(ctx, te, gen, p)
}

// drainPaused follows a registry pause of te (generation gen) until it is
// lifted or replaced: it tells the presence loop as soon as the tenant holds
// no backend here (the loop then lets the serve lock go), ends the clients
// whose transactions still run after the pause's drain time, and lifts the
// pause at its deadline if nobody did (the pauser died), after asking the
// registry once more.
func (srv *Server) drainPaused(ctx context.Context, te *tenantEntry, gen uint64, p router.Pause) {
	current := func() bool { return te.pause.gen.Load() == gen && te.pause.registryPaused() }
	drainAt := time.Now().Add(p.DrainIn)
	deadline := time.NewTimer(max(p.DeadlineIn, 0))
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	drained, killed := false, false
	for current() {
		if !drained && te.backends.Load() == 0 {
			drained = true
			srv.tenants.signal()
			tick.Reset(50 * time.Millisecond)
		}
		if !drained && !killed && time.Now().After(drainAt) {
			killed = true
			n := srv.endHolders(te)
			srv.log.Warn("registry pause: ending the tenant's clients whose transactions outlasted the drain time",
				"tenant", te.name, "clients", n)
		}
		if drained && te.backends.Load() > 0 {
			drained = false // a pinned session came back to life: wait again
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-deadline.C:
			srv.refreshPause(ctx, te)
			if current() {
				te.pause.resumeRegistry()
				te.pause.gen.Add(1)
				srv.tenants.signal()
				srv.log.Warn("registry pause lapsed at its deadline; tenant resumed", "tenant", te.name)
			}
			return
		}
	}
}

// endHolders ends the sessions of te that hold a backend (their open
// transactions roll back) and returns how many.
func (srv *Server) endHolders(te *tenantEntry) int {
	n := 0
	for _, s := range srv.sessionList() {
		if s.te != te {
			continue
		}
		s.mu.Lock()
		holds := s.link.state.holds()
		s.mu.Unlock()
		if holds {
			s.kill()
			n++
		}
	}
	return n
}

// wantServe says whether the presence loop should hold te's serve lock:
// while it has clients, unless a registry pause is applied and the tenant
// holds no backend here (drained) and none is being checked out.
func wantServe(te *tenantEntry) bool {
	if te.clients.Load() == 0 {
		return false
	}
	return !te.pause.registryPaused() || te.backends.Load() > 0
}
