package router

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The registry side of `pgtenant migrate`: which migration files each
// tenant's schema (pgtenant.tenant_migrations) and public
// (pgtenant.shared_migrations) have had. The CLI reads the files, runs them
// and calls RecordMigration in the transaction that ran each one.

// MigrateLockKey is the session-level advisory lock key that keeps two
// `pgtenant migrate` runs from interleaving: a run holds it, on a
// connection of its own, from before it reads what is applied until it is
// done. It spells "pgtmigra" in ASCII, as registryLockKey spells
// "pgtenant". Any role that can connect can take an advisory lock, so a
// client holding this key can hold migrations off (never corrupt them);
// the refusal names the backend that holds it.
const MigrateLockKey int64 = 0x7067746d69677261

// AppliedMigration is one migration file applied to a tenant's schema, or
// to public when Tenant is "" (a shared migration).
type AppliedMigration struct {
	Tenant    string
	Version   int64
	Name      string
	Checksum  string
	AppliedAt time.Time
	// Duration is how long the file took to run (not counting the wait
	// for a connection or the commit).
	Duration time.Duration
}

// ListAppliedMigrations returns every tenant's applied migrations, ordered
// by tenant and version. Before the registry has the table there are none,
// which is not an error (a dry run must not create it).
func ListAppliedMigrations(ctx context.Context, db DB) ([]AppliedMigration, error) {
	return listMigrations(ctx, db, "pgtenant.tenant_migrations", `SELECT tenant, version, name, checksum, applied_at,
		(extract(epoch FROM duration) * 1000000)::bigint
		FROM pgtenant.tenant_migrations ORDER BY tenant, version`)
}

// ListSharedMigrations returns the shared migrations applied to public,
// ordered by version, with Tenant "".
func ListSharedMigrations(ctx context.Context, db DB) ([]AppliedMigration, error) {
	return listMigrations(ctx, db, "pgtenant.shared_migrations", `SELECT '', version, name, checksum, applied_at,
		(extract(epoch FROM duration) * 1000000)::bigint
		FROM pgtenant.shared_migrations ORDER BY version`)
}

func listMigrations(ctx context.Context, db DB, table, query string) ([]AppliedMigration, error) {
	if ok, err := tableExists(ctx, db, table); err != nil || !ok {
		if err != nil {
			return nil, fmt.Errorf("list migrations: %w", err)
		}
		return nil, nil
	}
	rows, err := db.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AppliedMigration, error) {
		var m AppliedMigration
		var micros int64
		err := row.Scan(&m.Tenant, &m.Version, &m.Name, &m.Checksum, &m.AppliedAt, &micros)
		m.Duration = time.Duration(micros) * time.Microsecond
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	return ms, nil
}

// RecordMigration records m as applied, to m.Tenant's schema or (Tenant "")
// to public. Call it in the transaction that ran the file, so that the row
// is there exactly when the file's changes are. A tenant deleted meanwhile
// fails the foreign key (23503), which rolls the file back with it.
func RecordMigration(ctx context.Context, db DB, m AppliedMigration) error {
	micros := m.Duration.Microseconds()
	var err error
	if m.Tenant == "" {
		_, err = db.Exec(ctx, `INSERT INTO pgtenant.shared_migrations (version, name, checksum, applied_at, duration)
			VALUES ($1, $2, $3, clock_timestamp(), $4 * interval '1 microsecond')`,
			m.Version, m.Name, m.Checksum, micros)
	} else {
		_, err = db.Exec(ctx, `INSERT INTO pgtenant.tenant_migrations (tenant, version, name, checksum, applied_at, duration)
			VALUES ($1, $2, $3, $4, clock_timestamp(), $5 * interval '1 microsecond')`,
			m.Tenant, m.Version, m.Name, m.Checksum, micros)
	}
	if err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	return nil
}

// MigrationState is a tenant's highest applied migration version and the
// time all its migrations took.
type MigrationState struct {
	Version  int64
	Duration time.Duration
}

// MigrationStates returns every tenant's MigrationState, in one query.
// Before the registry has the table there are none, which is not an error.
func MigrationStates(ctx context.Context, db DB) (map[string]MigrationState, error) {
	out := map[string]MigrationState{}
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_migrations"); err != nil || !ok {
		return out, err
	}
	rows, err := db.Query(ctx, `SELECT tenant, max(version),
		(extract(epoch FROM sum(duration)) * 1000000)::bigint
		FROM pgtenant.tenant_migrations GROUP BY tenant`)
	if err != nil {
		return nil, fmt.Errorf("migration states: %w", err)
	}
	var (
		tenant         string
		version, micro int64
	)
	_, err = pgx.ForEachRow(rows, []any{&tenant, &version, &micro}, func() error {
		out[tenant] = MigrationState{Version: version, Duration: time.Duration(micro) * time.Microsecond}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migration states: %w", err)
	}
	return out, nil
}

// MigrationStates is the package function on the registry's connections.
func (r *PGRegistry) MigrationStates(ctx context.Context) (map[string]MigrationState, error) {
	return MigrationStates(ctx, r.pool)
}
