package router

import (
	"context"
	"errors"
	"fmt"
)

// Tenant is what the router knows of one tenant.
type Tenant struct {
	// Name is what clients connect with (the database or user name).
	Name string
	// Schema is the PostgreSQL schema that holds the tenant's tables. It is
	// validated when the tenant is created, but callers must still quote it
	// as an identifier whenever it goes into SQL.
	Schema string
	// Active is false for a disabled tenant: it exists but may not connect.
	Active bool
	// Backend names the server that holds the tenant's schema, a row of
	// pgtenant.backends; DefaultBackend (the registry's own server) unless
	// the tenant was placed elsewhere. Every lookup fills it; "" is read
	// as DefaultBackend (see BackendOf).
	Backend string
}

// BackendOf returns the backend that serves t: its Backend, or
// DefaultBackend when that is empty (a Tenant made by hand, or by a
// registry that knows no placements).
func (t Tenant) BackendOf() string {
	if t.Backend == "" {
		return DefaultBackend
	}
	return t.Backend
}

// ErrNotFound is returned by a Registry when no tenant has the name.
var ErrNotFound = errors.New("tenant not found")

// Registry looks tenants up by name. It is the seam between the router and
// wherever tenants are kept (pgtenant.tenants in the backend, or a fake in
// tests).
type Registry interface {
	// LookupTenant returns the tenant called name, or an error wrapping
	// ErrNotFound.
	LookupTenant(ctx context.Context, name string) (Tenant, error)
}

// UnknownTenantError says that a client asked for a tenant that does not
// exist. The proxy answers it with FATAL 3D000.
type UnknownTenantError struct{ Name string }

func (e *UnknownTenantError) Error() string { return fmt.Sprintf("tenant %q does not exist", e.Name) }

// DisabledTenantError says that the tenant exists but is disabled. The proxy
// answers it with FATAL 55000.
type DisabledTenantError struct{ Name string }

func (e *DisabledTenantError) Error() string { return fmt.Sprintf("tenant %q is disabled", e.Name) }

// AccessDeniedError says that the user is not granted the tenant. The proxy
// answers it with FATAL 28000 naming both.
type AccessDeniedError struct{ User, Tenant string }

func (e *AccessDeniedError) Error() string {
	return fmt.Sprintf("user %q is not allowed to connect to tenant %q", e.User, e.Tenant)
}
