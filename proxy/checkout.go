package proxy

import (
	"context"
	"errors"
	"math"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// checkout gets this client a backend: in schema mode one of the shared
// pool's, logged in as the backend DSN's role; in role mode one logged in
// as the tenant's own role (router.TenantRoleName), under the same global
// cap. Either way the pool queues it under the tenant's name, so that the
// tenants waiting are served in turn, and caps the backends the tenant
// holds at its max-backends. wait false is TryCheckout: ErrBusy rather
// than a wait. It is the one place the session asks the pool for a backend:
// the pool of the backend its tenant is placed on now (backends.go), so that
// a placement change applies from the tenant's next transaction.
func (s *session) checkout(ctx context.Context, wait bool) (*pool.Conn, error) {
	if s.te != nil {
		s.te.waiting.Add(1)
		defer s.te.waiting.Add(-1)
	}
	if err := s.gate(ctx, wait); err != nil {
		return nil, err
	}
	tenant := s.tr.tenant.Name
	req := pool.Request{Key: tenant, Max: s.tenantMaxBackends(), Affinity: s.tr.pin.key}
	if s.srv.cfg.Isolation == config.IsolationRole {
		req.Role = router.TenantRoleName(tenant)
	}
	p, err := s.srv.poolFor(ctx, s.backendOf())
	if err != nil {
		if s.te != nil {
			s.te.limits.giveBack()
		}
		return nil, err
	}
	be, err := p.Get(ctx, req, wait)
	if err == nil {
		return be, nil
	}
	if s.te != nil {
		s.te.limits.giveBack() // no transaction ran on the rate's token
	}
	switch {
	case errors.Is(err, pool.ErrKeyMax):
		return nil, errorf(codeQueryCanceled,
			"pgtenant: no server connection became free within query-wait-timeout: tenant %q holds its most backends at once (%d)", tenant, req.Max)
	case req.Role != "":
		return nil, roleLoginError(tenant, req.Role, err)
	}
	return nil, err
}

// roleLoginError turns PostgreSQL's refusal of a tenant role's login into
// an error that names the fix; other errors are returned as they are.
func roleLoginError(tenant, role string, err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "28") {
		return err
	}
	e := errorf(codeInvalidAuthorization, "tenant %q cannot log in to the backend as its role %q: %s", tenant, role, pe.Message)
	switch {
	case pe.Code == "28000" && strings.Contains(pe.Message, "does not exist"):
		e.Message = "tenant \"" + tenant + "\" has no role of its own, which --isolation role needs"
		e.Hint = "Run: pgtenant tenant isolate " + tenant
	case pe.Code == "28P01":
		e.Hint = "The role secret differs from the one the role's password was set with; run pgtenant tenant isolate --all with the secret serve uses."
	}
	return e
}

// gate holds a checkout back until the tenant may start another
// transaction: it is where per-tenant controls that act before a backend is
// asked for (pause, the transaction rate limit) wait. wait false is a
// checkout that must not wait (TryCheckout): a control that would make it
// wait answers pool.ErrBusy instead.
func (s *session) gate(ctx context.Context, wait bool) error {
	if s.te == nil {
		return nil
	}
	if err := s.srv.awaitServe(ctx, s.te, wait); err != nil {
		return err
	}
	perSec, burst := s.tenantRate()
	s.te.limits.setRate(perSec, burst, s.srv.liveConfig().QueryWaitTimeout)
	if err := s.te.limits.takeTxn(ctx, wait); err != nil {
		if errors.Is(err, errRateLimited) {
			return errorf(codeConfigurationLimit,
				"pgtenant: tenant %q is over its transaction rate (%g per second, burst %d): no transaction could start within query-wait-timeout", s.tr.tenant.Name, perSec, burst)
		}
		return err
	}
	return nil
}

// tenantMaxBackends is the most backends the session's tenant may hold at
// once (0: no cap): its own setting, else --tenant-max-backends.
func (s *session) tenantMaxBackends() int {
	if s.te == nil {
		return s.srv.liveConfig().TenantMaxBackends
	}
	return orDefault(s.te.conf.maxBackends(), s.srv.liveConfig().TenantMaxBackends)
}

// tenantMaxClients is the most clients the session's tenant may have at
// once (0: no cap): its own setting, else --tenant-max-clients.
func (s *session) tenantMaxClients() int {
	return orDefault(s.te.conf.maxClients(), s.srv.liveConfig().TenantMaxClients)
}

// tenantRate is the session's tenant's transaction rate (0: none) and
// burst: its own settings, else --tenant-rate and --tenant-rate-burst; a
// burst of 0 is one second's worth of the rate, at least 1.
func (s *session) tenantRate() (perSec float64, burst int) {
	perSec, burst = s.te.conf.rate()
	switch {
	case perSec < 0:
		return 0, 0
	case perSec == 0:
		perSec = s.srv.liveConfig().TenantRate
	}
	if burst <= 0 {
		burst = s.srv.liveConfig().TenantRateBurst
	}
	if perSec > 0 && burst <= 0 {
		burst = int(max(1, math.Ceil(perSec)))
	}
	return perSec, burst
}

// orDefault is a tenant's own limit, or the flag's when it has none (0); a
// negative setting is no limit.
func orDefault(own, flag int) int {
	switch {
	case own < 0:
		return 0
	case own > 0:
		return own
	}
	return flag
}

// checkTenantClients refuses a client beyond its tenant's most clients; the
// client is already counted (tenants.join), and uncounted when it goes.
func (s *session) checkTenantClients() error {
	if max := s.tenantMaxClients(); max > 0 && s.te.clients.Load() > int64(max) {
		s.stats().refused(codeTooManyClients)
		return fatalf(codeTooManyClients, "sorry, too many clients for tenant %q (at most %d)", s.tr.tenant.Name, max)
	}
	return nil
}
