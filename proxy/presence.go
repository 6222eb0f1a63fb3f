package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
)

// Presence: every proxy says, in the registry's database, which tenants
// have clients on it, so that `tenant drop` and `tenant rename` (run
// anywhere) can refuse while a tenant has clients, and `tenant list` can
// show through how many proxies. It holds, on one registry session of its
// own, pg_advisory_lock_shared(router.PresenceLockClass, hashtext(tenant))
// for each tenant with at least one client here (see there). A client's
// path never waits on it: joins and leaves only signal the background
// loop below, which reads the whole tenant table and takes and releases
// locks to match, so a burst of clients is one round of work.
//
// A lost session releases its locks in the server; the loop connects again
// and takes them again. Until then the tenant's clients are not seen, so a
// drop could pass meanwhile: the gap lasts as long as the registry is
// unreachable, when the drop could hardly run either.

// Presence timing: the loop also wakes every presenceTick to retry a lock
// it could not take (a drop held it) and to notice a dead session, and
// retries a failed connection after presenceRetry.
const (
	presenceTick  = 5 * time.Second
	presenceRetry = time.Second
	presenceQuery = 5 * time.Second
)

type presence struct {
	cfg     *pgx.ConnConfig
	srv     *Server
	tenants *tenantTable
	log     *slog.Logger

	conn *pgx.Conn
	held map[string]bool // tenants whose presence lock this session holds
	// serving are the tenants whose serve lock (router.ServeLockClass)
	// this session holds: their transactions may start here
	// (regpause.go).
	serving map[string]*tenantEntry
	down    bool // the last attempt failed (logged once per outage)
	// runCtx is run's: what a pause read from sync starts lives as long.
	runCtx context.Context
}

// serveRetry is how soon the loop tries again a serve lock it could not
// take: a checkout waits for it (awaitServe).
const serveRetry = 5 * time.Millisecond

func newPresence(cfg *pgx.ConnConfig, srv *Server, log *slog.Logger) *presence {
	cfg.RuntimeParams["application_name"] = "pgtenant presence"
	return &presence{cfg: cfg, srv: srv, tenants: &srv.tenants, log: log.With("component", "presence"),
		held: map[string]bool{}, serving: map[string]*tenantEntry{}}
}

// run keeps the locks in step with the tenant table until ctx ends; then
// it closes its session, which releases them all.
func (p *presence) run(ctx context.Context) {
	p.runCtx = ctx
	tick := time.NewTicker(presenceTick)
	defer tick.Stop()
	defer p.disconnect(ctx)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.tenants.changed:
		case <-tick.C:
		case <-retry:
		}
		retry = nil
		again, err := p.sync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !p.down {
				p.log.Warn("cannot hold the presence locks that tell tenant drop which tenants have clients here; retrying",
					"err", err)
				p.down = true
			}
			p.disconnect(ctx)
			retry = time.After(presenceRetry)
			continue
		}
		if p.down {
			p.log.Info("presence locks held again")
			p.down = false
		}
		p.srv.presenceUp.Store(true)
		if again {
			retry = time.After(serveRetry)
		}
	}
}

// sync takes the locks of tenants that gained clients and releases those
// of tenants that have none left. A presence lock it cannot take at once
// (a drop or rename holds it exclusively) is left for the next round; a
// serve lock it cannot take (a pauser holds it) makes it read the tenant's
// pause and report again, to be called back soon.
func (p *presence) sync(ctx context.Context) (again bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, presenceQuery)
	defer cancel()
	if p.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, p.cfg)
		if err != nil {
			return false, err
		}
		p.conn, p.held = conn, map[string]bool{}
	}
	again, err = p.syncServe(ctx)
	if err != nil {
		return false, err
	}
	return again, p.syncPresence(ctx)
}

// syncServe takes and releases the serve locks (regpause.go) to match
// wantServe. A lock is let go only after the tenant's served flag is
// cleared and the tenant is seen, a moment later, with no backend and no
// checkout past the pause: a checkout that passed awaitServe just before
// is then counted in backends, or in waiting but no longer in gating.
func (p *presence) syncServe(ctx context.Context) (again bool, err error) {
	want := map[string]*tenantEntry{}
	for _, e := range p.tenants.all() {
		if wantServe(e) {
			want[e.name] = e
		}
	}
	var letGo []*tenantEntry
	for name, e := range p.serving {
		if want[name] == nil {
			e.pause.served.Store(false)
			letGo = append(letGo, e)
		}
	}
	if len(letGo) > 0 {
		time.Sleep(time.Millisecond)
	}
	for _, e := range letGo {
		// waiting first: a checkout leaving the gate between the two
		// reads is counted as past it.
		if past := e.waiting.Load() - e.pause.gating.Load(); wantServe(e) || past > 0 {
			e.pause.served.Store(true)
			again = true
			continue
		}
		if _, err := p.conn.Exec(ctx, `SELECT pg_catalog.pg_advisory_unlock_shared($1::int4, pg_catalog.hashtext($2))`,
			router.ServeLockClass, e.name); err != nil {
			return false, err
		}
		delete(p.serving, e.name)
	}
	for name, e := range want {
		if p.serving[name] != nil {
			continue
		}
		var got bool
		if err := p.conn.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_lock_shared($1::int4, pg_catalog.hashtext($2))`,
			router.ServeLockClass, name).Scan(&got); err != nil {
			return false, err
		}
		if !got {
			// A pauser holds it: this proxy may not have heard of the
			// pause yet. Read it now, rather than when the NOTIFY comes.
			p.srv.refreshPause(p.runCtx, e)
			again = true
			continue
		}
		p.serving[name] = e
		e.pause.served.Store(true)
	}
	return again, nil
}

// syncPresence keeps the presence locks (tenants with clients here).
func (p *presence) syncPresence(ctx context.Context) error {
	want := map[string]bool{}
	for _, e := range p.tenants.all() {
		if e.clients.Load() > 0 {
			want[e.name] = true
		}
	}
	changed := false
	for name := range p.held {
		if want[name] {
			continue
		}
		changed = true
		if _, err := p.conn.Exec(ctx, `SELECT pg_catalog.pg_advisory_unlock_shared($1::int4, pg_catalog.hashtext($2))`,
			router.PresenceLockClass, name); err != nil {
			return err
		}
		delete(p.held, name)
	}
	for name := range want {
		if p.held[name] {
			continue
		}
		changed = true
		var got bool
		if err := p.conn.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_lock_shared($1::int4, pg_catalog.hashtext($2))`,
			router.PresenceLockClass, name).Scan(&got); err != nil {
			return err
		}
		if got {
			p.held[name] = true
		}
	}
	if !changed {
		// Nothing to do: make sure the session, and so the locks, are
		// still there.
		_, err := p.conn.Exec(ctx, `SELECT`)
		return err
	}
	return nil
}

func (p *presence) disconnect(ctx context.Context) {
	// Without the session, no pauser can see this proxy (nor pause it):
	// checkouts no longer wait for serve locks (awaitServe).
	p.srv.presenceUp.Store(false)
	for _, e := range p.serving {
		e.pause.served.Store(false)
	}
	p.serving = map[string]*tenantEntry{}
	if p.conn == nil {
		return
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = p.conn.Close(closeCtx)
	p.conn, p.held = nil, map[string]bool{}
}
