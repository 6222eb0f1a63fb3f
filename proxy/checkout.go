package proxy

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// checkout gets this client a backend: in schema mode one of the shared
// pool's, logged in as the backend DSN's role; in role mode one logged in
// as the tenant's own role (router.TenantRoleName), under the same global
// cap. wait false is TryCheckout: ErrBusy rather than a wait. It is the one
// place the session asks the pool for a backend.
func (s *session) checkout(ctx context.Context, wait bool) (*pool.Conn, error) {
	if s.te != nil {
		s.te.waiting.Add(1)
		defer s.te.waiting.Add(-1)
	}
	if err := s.gate(ctx, wait); err != nil {
		return nil, err
	}
	if s.srv.cfg.Isolation != config.IsolationRole {
		if wait {
			return s.srv.pool.Checkout(ctx)
		}
		return s.srv.pool.TryCheckout(ctx)
	}
	role := router.TenantRoleName(s.tr.tenant.Name)
	var (
		be  *pool.Conn
		err error
	)
	if wait {
		be, err = s.srv.pool.CheckoutAs(ctx, role)
	} else {
		be, err = s.srv.pool.TryCheckoutAs(ctx, role)
	}
	if err != nil {
		return nil, roleLoginError(s.tr.tenant.Name, role, err)
	}
	return be, nil
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
	if err := s.te.pause.wait(ctx, wait); err != nil {
		return err
	}
	return s.te.limits.takeTxn(ctx, wait)
}
