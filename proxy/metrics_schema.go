package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// schemaSizesSQL measures every tenant schema in one query: the total size
// (table, indexes, TOAST) of each table, materialized view and sequence in
// it. A tenant whose schema is gone or empty measures 0. pg_class and the
// size functions need no privilege on the tables, so the registry role can
// run it.
const schemaSizesSQL = `
SELECT t.name, COALESCE(SUM(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint
  FROM pgtenant.tenants t
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'S')
 GROUP BY t.name`

// sizeQuerier is what measureSchemaSizes needs of the registry connection
// (a *pgxpool.Pool).
type sizeQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// measureSchemaSizes runs schemaSizesSQL and stores each tenant's size in
// its entry, making entries for tenants that have had no clients yet, so
// that the console and the metrics show every tenant's size.
func measureSchemaSizes(ctx context.Context, db sizeQuerier, tenants *tenantTable) error {
	rows, err := db.Query(ctx, schemaSizesSQL)
	if err != nil {
		return err
	}
	var (
		name string
		size int64
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error {
		tenants.entry(name).stats.setSchemaSize(size)
		return nil
	})
	return err
}

// refreshSchemaSizes measures the tenant schemas at once and then every
// interval until ctx is done, in the background: never on a client's path.
// A failure is logged (once per run of failures) and tried again at the
// next tick; the sizes measured before stay.
func refreshSchemaSizes(ctx context.Context, db sizeQuerier, tenants *tenantTable, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		qctx, cancel := context.WithTimeout(ctx, min(interval, time.Minute))
		err := measureSchemaSizes(qctx, db, tenants)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			log.Warn("measuring tenant schema sizes failed; trying again at the next interval", "err", err, "interval", interval)
		case err == nil && failing:
			log.Info("measuring tenant schema sizes works again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
