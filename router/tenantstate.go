package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SetTenantActive enables (active) or disables a tenant in the registry and
// reports whether the tenant exists. The trigger on pgtenant.tenants
// announces the change at commit, so every proxy forgets its cached entry:
// new clients of a disabled tenant are refused with 55000, clients already
// connected stay. Setting the state a tenant already has is harmless.
//
// db should be the registry's (admin) connection: the role that owns the
// registry, which the pool's role may not be.
func SetTenantActive(ctx context.Context, db DB, name string, active bool) (found bool, err error) {
	if err := ValidateTenantName(name); err != nil {
		return false, err
	}
	// A plain UPDATE takes ROW EXCLUSIVE on the table, which conflicts with
	// the SHARE ROW EXCLUSIVE lock registry changes take, so it is
	// serialised with them without taking that lock itself.
	var got bool
	err = db.QueryRow(ctx,
		`UPDATE pgtenant.tenants SET active = $2 WHERE name = $1 RETURNING active`, name, active,
	).Scan(&got)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	default:
		verb := "disable"
		if active {
			verb = "enable"
		}
		return false, fmt.Errorf("%s tenant %q: %w", verb, name, err)
	}
}

// FindTenant returns the tenant called name (not an alias) as the registry
// has it, and whether it exists.
func FindTenant(ctx context.Context, db DB, name string) (Tenant, bool, error) {
	return tenantByName(ctx, db, name)
}
