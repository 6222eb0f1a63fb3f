package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NotifyChannel is the channel on which changes to pgtenant.tenants are
// announced; the payload is the tenant's name. An empty payload means
// "forget everything".
const NotifyChannel = "pgtenant_tenants"

// registryMaxConns sizes the registry's pool. Lookups are one indexed query
// behind the router's cache, so a few connections carry any load, and every
// one of them is a backend slot taken from the tenants.
const registryMaxConns = 4

// Watch's reconnect backoff: it starts short, because a restart of the
// backend is the common case, and is capped so that a proxy notices a
// returning backend within seconds.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
	// watchHealthy is how long a listening connection must have lived for
	// its loss to count as a fresh failure rather than part of a flapping
	// series, resetting the backoff.
	watchHealthy = 30 * time.Second
)

// PGRegistry is the Registry kept in the backend database, in the table
// pgtenant.tenants. It is safe for concurrent use.
type PGRegistry struct {
	pool *pgxpool.Pool
}

// OpenRegistry connects to the database at dsn (a libpq URL or key=value
// string) and checks that it answers, so that a wrong DSN fails at start-up
// rather than at the first client. The registry table need not exist yet.
func OpenRegistry(ctx context.Context, dsn string) (*PGRegistry, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("registry dsn: %w", err)
	}
	cfg.MaxConns = registryMaxConns
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		// Lets an operator tell registry connections apart in
		// pg_stat_activity.
		cfg.ConnConfig.RuntimeParams["application_name"] = "pgtenant registry"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return &PGRegistry{pool: pool}, nil
}

// Close closes the registry's connections. Watch connections are not part
// of the pool: cancel Watch's context to end them.
func (r *PGRegistry) Close() { r.pool.Close() }

// Pool returns the registry's connection pool, for the admin functions
// (EnsureRegistry, CreateTenant, ListTenants) and for tests.
func (r *PGRegistry) Pool() *pgxpool.Pool { return r.pool }

// LookupTenant returns the tenant called name. The name is only ever a bind
// parameter: it comes from a client's startup packet.
func (r *PGRegistry) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	t := Tenant{Name: name}
	err := r.pool.QueryRow(ctx,
		`SELECT schema_name, active FROM pgtenant.tenants WHERE name = $1`, name,
	).Scan(&t.Schema, &t.Active)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	case isMissingRegistry(err):
		// A backend on which no tenant was ever created has no registry;
		// that is an empty registry, not an outage.
		return Tenant{}, fmt.Errorf("tenant %q: no registry table: %w", name, ErrNotFound)
	default:
		return Tenant{}, fmt.Errorf("registry lookup: %w", err)
	}
}

// isMissingRegistry reports whether err says that the pgtenant schema or
// its table does not exist.
func isMissingRegistry(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	// 42P01 undefined_table, 3F000 invalid_schema_name.
	return pgErr.Code == "42P01" || pgErr.Code == "3F000"
}

// Watch listens on NotifyChannel and calls onChange with each
// notification's payload (a tenant name), so that every proxy drops a
// changed tenant from its cache at once instead of waiting for a TTL.
//
// It listens on a connection of its own, outside the pool: LISTEN belongs
// to a session, and a pooled connection would be handed to lookups.
// After each (re)connect, once it is listening, it calls onChange("")
// (meaning: forget everything), because notifications sent while it was
// not listening are lost. While it is disconnected it keeps the cache as
// it is, so that clients of known tenants keep working through a backend
// restart; it reconnects with backoff until ctx is done, and then returns
// ctx.Err().
//
// onChange is called from Watch's goroutine, one call at a time; it should
// be quick (Router.Forget and Router.ForgetAll are).
func (r *PGRegistry) Watch(ctx context.Context, onChange func(name string)) error {
	log := slog.Default().With("component", "registry-watch", "channel", NotifyChannel)
	backoff := watchBackoffMin
	for {
		start := time.Now()
		err := r.listen(ctx, onChange)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) >= watchHealthy {
			backoff = watchBackoffMin
		}
		log.Warn("tenant change notifications interrupted; reconnecting",
			"error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// listen runs one listening session; it returns when the connection fails
// or ctx is done.
func (r *PGRegistry) listen(ctx context.Context, onChange func(name string)) error {
	cfg := r.pool.Config().ConnConfig
	cfg.RuntimeParams["application_name"] = "pgtenant registry watch"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		// ctx may be done already; the close still needs a moment to say
		// goodbye to the server.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Forget only now that we are listening: a change committed after this
	// point is notified, and one committed before it is covered by the
	// forget.
	onChange("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		onChange(n.Payload)
	}
}
