package router

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what the admin functions need of a connection. *pgxpool.Pool,
// *pgx.Conn and pgx.Tx all satisfy it, so the CLI can use a pool and tests a
// single connection or a transaction of their own.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// registryLockKey is the pg_advisory_xact_lock key that serialises changes
// to the registry. It spells "pgtenant" in ASCII, to be recognisable in
// pg_locks and unlikely to clash with an application's own keys.
const registryLockKey int64 = 0x706774656e616e74

// registryDDL creates the registry. Concurrent CREATE ... IF NOT EXISTS of
// one object can still fail with a unique violation in the catalogs, which
// is why it runs under registryLockKey.
var registryDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS pgtenant`,
	`CREATE TABLE IF NOT EXISTS pgtenant.tenants (
		name        text        PRIMARY KEY,
		schema_name text        NOT NULL UNIQUE,
		active      boolean     NOT NULL DEFAULT true,
		created_at  timestamptz NOT NULL DEFAULT now()
	)`,
}

// EnsureRegistry creates the pgtenant schema and its tenants table if they
// do not exist. It is safe to run concurrently, from several proxies or
// CLI invocations at once.
func EnsureRegistry(ctx context.Context, db DB) error {
	return inTx(ctx, db, func(tx pgx.Tx) error { return ensureRegistry(ctx, tx) })
}

// ensureRegistry takes the registry lock for the rest of tx and creates the
// registry if needed.
func ensureRegistry(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, registryLockKey); err != nil {
		return fmt.Errorf("lock registry: %w", err)
	}
	for _, stmt := range registryDDL {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create registry: %w", err)
		}
	}
	return nil
}

// inTx runs f in a transaction of db and commits it when f succeeds.
func inTx(ctx context.Context, db DB, f func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Rollback after a successful Commit is a no-op (ErrTxClosed).
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// CreateTenant registers a tenant called name whose tables live in schema
// (schema "" means a schema called like the tenant), creating the schema if
// it does not exist. An existing schema that no tenant owns is adopted,
// which is how an application's existing schemas are brought under
// pgtenant.
//
// Running it again with the same arguments is harmless and returns
// created=false. It fails, changing nothing, when the tenant exists with
// another schema or the schema belongs to another tenant. Names are
// validated before the database is touched.
//
// Everything happens in one transaction, ending with a notification on
// NotifyChannel, so proxies that cached the name as unknown see the new
// tenant as soon as it commits.
func CreateTenant(ctx context.Context, db DB, name, schema string) (t Tenant, created bool, err error) {
	if schema == "" {
		schema = name
	}
	if err := ValidateTenantName(name); err != nil {
		return Tenant{}, false, err
	}
	if err := ValidateSchemaName(schema); err != nil {
		return Tenant{}, false, err
	}
	err = inTx(ctx, db, func(tx pgx.Tx) error {
		// The registry lock taken here is held until commit, so concurrent
		// creates run one at a time and the checks below cannot race.
		if err := ensureRegistry(ctx, tx); err != nil {
			return err
		}
		existing, found, err := tenantByName(ctx, tx, name)
		if err != nil {
			return err
		}
		if found {
			if existing.Schema != schema {
				return fmt.Errorf("tenant %q already exists with schema %q, not %q", name, existing.Schema, schema)
			}
			t = existing
			// Recreate the schema if someone dropped it, so that a second
			// run repairs rather than reports success over a broken tenant.
			return createSchema(ctx, tx, schema)
		}
		var owner string
		err = tx.QueryRow(ctx, `SELECT name FROM pgtenant.tenants WHERE schema_name = $1`, schema).Scan(&owner)
		switch {
		case err == nil:
			return fmt.Errorf("schema %q already belongs to tenant %q; choose another schema for tenant %q", schema, owner, name)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("check schema owner: %w", err)
		}
		if err := createSchema(ctx, tx, schema); err != nil {
			return err
		}
		t = Tenant{Name: name, Schema: schema}
		err = tx.QueryRow(ctx,
			`INSERT INTO pgtenant.tenants (name, schema_name) VALUES ($1, $2)
			 ON CONFLICT DO NOTHING
			 RETURNING active`, name, schema,
		).Scan(&t.Active)
		if errors.Is(err, pgx.ErrNoRows) {
			// Only a writer that skips the registry lock (a hand-written
			// INSERT) can get here.
			return fmt.Errorf("tenant %q or schema %q was registered concurrently; run the command again", name, schema)
		}
		if err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		created = true
		// pg_notify is delivered at commit, and not at all on rollback.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, name); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
		return nil
	})
	if err != nil {
		return Tenant{}, false, fmt.Errorf("create tenant %q: %w", name, err)
	}
	return t, created, nil
}

func createSchema(ctx context.Context, tx pgx.Tx, schema string) error {
	// ValidateSchemaName has already refused anything odd, but an
	// identifier goes into SQL quoted, always.
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("create schema %q: %w", schema, err)
	}
	return nil
}

func tenantByName(ctx context.Context, db DB, name string) (Tenant, bool, error) {
	t := Tenant{Name: name}
	err := db.QueryRow(ctx,
		`SELECT schema_name, active FROM pgtenant.tenants WHERE name = $1`, name,
	).Scan(&t.Schema, &t.Active)
	switch {
	case err == nil:
		return t, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, false, nil
	default:
		return Tenant{}, false, fmt.Errorf("look up tenant: %w", err)
	}
}

// ListTenants returns every tenant, ordered by name. Before the registry
// exists there are no tenants, which is not an error.
func ListTenants(ctx context.Context, db DB) ([]Tenant, error) {
	// Ask whether the table exists rather than catching 42P01: an error
	// would abort the caller's transaction when db is a pgx.Tx.
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('pgtenant.tenants') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT name, schema_name, active FROM pgtenant.tenants ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	tenants, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := row.Scan(&t.Name, &t.Schema, &t.Active)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return tenants, nil
}

// namePattern is what tenant and schema names must look like. Names are
// typed as database or user names and used as schema names, so they are
// kept to what PostgreSQL would accept unquoted and would not fold: 1 to 63
// (NAMEDATALEN-1) bytes of lower-case ASCII letters, digits and underscores,
// starting with a letter.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// nameRule says, for error messages, what namePattern allows.
const nameRule = "use 1-63 lower-case letters, digits or _ starting with a letter"

// InvalidNameError says that a tenant or schema name was refused, why, and
// what is allowed.
type InvalidNameError struct {
	// Kind is "tenant name" or "schema name".
	Kind string
	Name string
	// Reason says what is wrong and what would be accepted.
	Reason string
}

func (e *InvalidNameError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Kind, e.Name, e.Reason)
}

// ValidateTenantName reports whether name may name a tenant.
func ValidateTenantName(name string) error {
	if !namePattern.MatchString(name) {
		return &InvalidNameError{Kind: "tenant name", Name: name, Reason: nameRule}
	}
	return nil
}

// ValidateSchemaName reports whether schema may hold a tenant's tables. On
// top of the name rule it refuses the schemas that PostgreSQL or pgtenant
// own, since putting a tenant there would share them with everyone.
func ValidateSchemaName(schema string) error {
	if !namePattern.MatchString(schema) {
		return &InvalidNameError{Kind: "schema name", Name: schema, Reason: nameRule}
	}
	switch {
	case schema == "public", schema == "pgtenant", schema == "information_schema",
		strings.HasPrefix(schema, "pg_"):
		return &InvalidNameError{Kind: "schema name", Name: schema,
			Reason: "it is reserved; use a schema of the tenant's own, not public, pgtenant, information_schema or pg_*"}
	}
	return nil
}
