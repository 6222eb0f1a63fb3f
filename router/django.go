package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// DjangoPublicSchema is the schema of django-tenants' public tenant (its
// PUBLIC_SCHEMA_NAME default). That tenant is the deployment's shared
// schema, not a customer: DjangoRegistry never serves it, by its schema
// name or by its domains.
const DjangoPublicSchema = "public"

// DjangoRegistry is the Registry of a django-tenants deployment: it reads
// tenants from the tables of the tenant model (TenantMixin: schema_name,
// unique) and the domain model (DomainMixin: domain, unique; tenant_id, a
// foreign key to the tenant model's id; is_primary), so that such a
// deployment puts pgtenant in front without moving its registry. It only
// ever reads them: Django stays their owner.
//
// A name resolves to the tenant whose schema_name is the name, or else to
// the tenant of the domain that is the name (as given, or lower-cased
// without a trailing dot, the way a host name is written); a schema name
// wins over a domain. Either way the Tenant's Name and Schema are the
// schema_name: django-tenants' tenants have no other name that is unique,
// so grants, settings, metrics and logs speak of a tenant by its schema.
// Active is the tenant table's is_active column when the model has one
// (a common addition, not part of TenantMixin), and true otherwise.
//
// There is no NOTIFY on Django's tables: a tenant added, changed or
// removed there is seen when the router's cached answer expires
// (tenant-cache-ttl for a found tenant, tenant-miss-ttl for an unknown
// name).
//
// It runs its queries on a PGRegistry's connections, so a lost session is
// replaced and an unreachable server is backed off from as for pgtenant's
// own registry; pgtenant's tenant settings (pgtenant.tenant_settings) are
// still read from there, keyed by schema name, and a registry without them
// gives none.
type DjangoRegistry struct {
	reg                   *PGRegistry
	tenantTable           pgx.Identifier
	domainTable           pgx.Identifier
	lookupSQL, listSQL    string
	sizesSQL, roleNameSQL string
}

// NewDjangoRegistry reads django-tenants' tables tenantTable and
// domainTable (each "table" or "schema.table"; without a schema, in
// public) through reg's connections. It connects to nothing: CheckTables
// says whether the tables are there.
func NewDjangoRegistry(reg *PGRegistry, tenantTable, domainTable string) (*DjangoRegistry, error) {
	tp, err := config.ParseTableName(tenantTable)
	if err != nil {
		return nil, fmt.Errorf("django-tenant-table: %w", err)
	}
	dp, err := config.ParseTableName(domainTable)
	if err != nil {
		return nil, fmt.Errorf("django-domain-table: %w", err)
	}
	d := &DjangoRegistry{reg: reg, tenantTable: pgx.Identifier(tp), domainTable: pgx.Identifier(dp)}
	d.lookupSQL, d.listSQL, d.sizesSQL, d.roleNameSQL = djangoQueries(d.tenantTable, d.domainTable)
	return d, nil
}

// djangoActive is a tenant row's state: its is_active column if the model
// has one, else true. Going through to_jsonb lets one query serve both
// kinds of model without reading the catalogs first, and keeps working when
// a migration adds or drops the column while pgtenant runs.
const djangoActive = `COALESCE((pg_catalog.to_jsonb(t) ->> 'is_active')::boolean, true)`

// djangoQueries builds the registry's queries for the two tables. The
// table names are quoted identifiers; everything a client sends is a bind
// parameter.
func djangoQueries(tenants, domains pgx.Identifier) (lookup, list, sizes, roleNamed string) {
	tq, dq := tenants.Sanitize(), domains.Sanitize()
	// One round trip: the tenant by schema name, else by domain. $2 holds
	// the spellings of the name a domain may have (see domainKeys).
	lookup = `
SELECT schema_name, active FROM (
	SELECT t.schema_name::text, ` + djangoActive + ` AS active, 0 AS via
	  FROM ` + tq + ` t
	 WHERE t.schema_name = $1
	UNION ALL
	SELECT t.schema_name::text, ` + djangoActive + `, 1
	  FROM ` + dq + ` d JOIN ` + tq + ` t ON t.id = d.tenant_id
	 WHERE d.domain = ANY($2::text[])
) found
WHERE schema_name <> '` + DjangoPublicSchema + `'
ORDER BY via
LIMIT 1`
	list = `
SELECT t.schema_name::text, ` + djangoActive + `
  FROM ` + tq + ` t
 WHERE t.schema_name <> '` + DjangoPublicSchema + `'
 ORDER BY 1`
	// As schemaSizesSQL, for the tenant model's schemas.
	sizes = `
SELECT t.schema_name::text, COALESCE(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint
  FROM ` + tq + ` t
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'S')
 WHERE t.schema_name <> '` + DjangoPublicSchema + `'
   AND ($1::text[] IS NULL OR t.schema_name = ANY($1::text[]))
 GROUP BY t.schema_name`
	// As roleNamedSchemasSQL.
	roleNamed = `
SELECT t.schema_name::text, ` + djangoActive + `
  FROM ` + tq + ` t
 WHERE t.schema_name <> '` + DjangoPublicSchema + `'
   AND EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = t.schema_name)
 ORDER BY 1`
	return lookup, list, sizes, roleNamed
}

// domainKeys are the spellings under which a claimed name may be stored as
// a domain: as given, and as a host name is normally written, lower-case
// without a trailing dot (Django lower-cases the Host it matches domains
// against). Two exact matches rather than lower(domain) keep the lookup on
// the domain's unique index.
func domainKeys(name string) []string {
	norm := strings.ToLower(strings.TrimSuffix(name, "."))
	if norm == name || norm == "" {
		return []string{name}
	}
	return []string{name, norm}
}

// LookupTenant returns the tenant whose schema_name is name, or whose
// domain is name; see DjangoRegistry.
func (d *DjangoRegistry) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	err := d.reg.ask(ctx, func() error {
		return d.reg.pool.QueryRow(ctx, d.lookupSQL, name, domainKeys(name)).Scan(&t.Schema, &t.Active)
	})
	switch {
	case err == nil:
		t.Name = t.Schema
		t.Backend = DefaultBackend
		return t, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	case isMissingRegistry(err):
		// Unlike pgtenant's own registry, a missing table is not an empty
		// registry: the tables were there at start (CheckTables), so a
		// migration is renaming them or the flags name the wrong ones.
		// Failing leaves the router serving what it found before.
		return Tenant{}, fmt.Errorf("django-tenants registry lookup: %w (see --django-tenant-table and --django-domain-table)", err)
	default:
		return Tenant{}, fmt.Errorf("django-tenants registry lookup: %w", err)
	}
}

// ListTenants returns every tenant of the tenant table but the public
// one, ordered by schema name, for the admin console.
func (d *DjangoRegistry) ListTenants(ctx context.Context) ([]Tenant, error) {
	var tenants []Tenant
	err := d.reg.ask(ctx, func() error {
		rows, err := d.reg.pool.Query(ctx, d.listSQL)
		if err == nil {
			tenants, err = pgx.CollectRows(rows, scanDjangoTenant)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list django-tenants tenants: %w", err)
	}
	return tenants, nil
}

func scanDjangoTenant(row pgx.CollectableRow) (Tenant, error) {
	var t Tenant
	err := row.Scan(&t.Schema, &t.Active)
	t.Name = t.Schema
	t.Backend = DefaultBackend
	return t, err
}

// SchemaSizes is PGRegistry.SchemaSizes for the tenant table's tenants.
func (d *DjangoRegistry) SchemaSizes(ctx context.Context, tenants []string) (map[string]int64, error) {
	sizes := map[string]int64{}
	err := d.reg.ask(ctx, func() error {
		clear(sizes)
		rows, err := d.reg.pool.Query(ctx, d.sizesSQL, tenants)
		if err != nil {
			return err
		}
		var name string
		var size int64
		_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error { sizes[name] = size; return nil })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("measure tenant schemas: %w", err)
	}
	return sizes, nil
}

// LookupTenantSettings reads the tenant's settings from pgtenant's
// registry (pgtenant.tenant_settings, keyed by the schema name), which a
// django-tenants deployment may have or not: without it, a tenant has
// none.
func (d *DjangoRegistry) LookupTenantSettings(ctx context.Context, tenant string) (TenantSettings, error) {
	return d.reg.LookupTenantSettings(ctx, tenant)
}

// RoleNamedSchemas is PGRegistry.RoleNamedSchemas for the tenant table.
func (d *DjangoRegistry) RoleNamedSchemas(ctx context.Context) ([]Tenant, error) {
	rows, err := d.reg.pool.Query(ctx, d.roleNameSQL)
	var tenants []Tenant
	if err == nil {
		tenants, err = pgx.CollectRows(rows, scanDjangoTenant)
	}
	if err != nil {
		return nil, fmt.Errorf("find tenants whose schema has a role's name: %w", err)
	}
	return tenants, nil
}

// djangoColumns are the columns pgtenant reads from each table.
var (
	djangoTenantColumns = []string{"id", "schema_name"}
	djangoDomainColumns = []string{"domain", "tenant_id"}
)

// CheckTables checks that both tables exist, have the columns pgtenant
// reads and can be read by the registry's role, so that a wrong table name
// or a missing grant fails at start with the flag to fix, rather than
// every client failing later.
func (d *DjangoRegistry) CheckTables(ctx context.Context) error {
	for _, tbl := range []struct {
		flag, model string
		name        pgx.Identifier
		columns     []string
	}{
		{"django-tenant-table", "tenant model (TenantMixin)", d.tenantTable, djangoTenantColumns},
		{"django-domain-table", "domain model (DomainMixin)", d.domainTable, djangoDomainColumns},
	} {
		var exists, readable bool
		var columns []string
		err := d.reg.pool.QueryRow(ctx, `
SELECT c.oid IS NOT NULL,
       COALESCE(pg_catalog.has_table_privilege(c.oid, 'SELECT'), false),
       COALESCE((SELECT array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}')
  FROM (SELECT pg_catalog.to_regclass($1) AS oid) c`, tbl.name.Sanitize()).Scan(&exists, &readable, &columns)
		if err != nil {
			return fmt.Errorf("check the django-tenants table %s: %w", tbl.name.Sanitize(), err)
		}
		if !exists {
			return fmt.Errorf("registry-source django-tenants: there is no table %s; set --%s to the table of the %s, as table or schema.table",
				tbl.name.Sanitize(), tbl.flag, tbl.model)
		}
		for _, col := range tbl.columns {
			if !slices.Contains(columns, col) {
				return fmt.Errorf("registry-source django-tenants: table %s (--%s) has no column %s; is it the table of the %s?",
					tbl.name.Sanitize(), tbl.flag, col, tbl.model)
			}
		}
		if !readable {
			return fmt.Errorf("registry-source django-tenants: the registry role may not read %s; GRANT SELECT ON %s TO the role of --registry (or --backend)",
				tbl.name.Sanitize(), tbl.name.Sanitize())
		}
	}
	return nil
}
