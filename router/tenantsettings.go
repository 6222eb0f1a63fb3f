package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Per-tenant settings live in pgtenant.tenant_settings, one row per key, and
// reach every proxy through NotifyChannel (the payload is the tenant's
// name). The keys:
//
//   - max_backends, max_clients: the most backends the tenant holds at once
//     and the most clients it may have connected; 0 (or unset) means the
//     proxy's flag default.
//   - rate, rate_burst: the tenant's transactions per second (a decimal)
//     and the burst above that rate; 0 means the flag default.
//   - storage_quota: the most bytes the tenant's schema may take (tables,
//     their indexes and TOAST) before its sessions turn read-only; a number
//     of bytes or one with a unit (500MB, 10GB: units are 1024-based, as in
//     PostgreSQL); 0 means none.
//   - tier: a free-form label (plan, feature tier) shown in the console and
//     the metrics.
//   - set.NAME: a session setting (set.statement_timeout=5s) that the pin
//     applies on every backend serving the tenant, as a default its clients
//     may override in their sessions, like ALTER ROLE ... SET.
const (
	SettingMaxBackends  = "max_backends"
	SettingMaxClients   = "max_clients"
	SettingRate         = "rate"
	SettingRateBurst    = "rate_burst"
	SettingStorageQuota = "storage_quota"
	SettingTier         = "tier"
	// SessionSettingPrefix starts the key of a session setting.
	SessionSettingPrefix = "set."
)

// SettingKeys are the plain keys, in the order `tenant show` lists them.
var SettingKeys = []string{SettingMaxBackends, SettingMaxClients, SettingRate, SettingRateBurst, SettingStorageQuota, SettingTier}

// TenantSettings are a tenant's settings, parsed. Zero values mean "not
// set": the proxy's defaults apply.
type TenantSettings struct {
	MaxBackends  int
	MaxClients   int
	Rate         float64
	RateBurst    int
	StorageQuota int64
	Tier         string
	// Session are the set.NAME settings, by name (lower case).
	Session []SessionSetting
}

// SessionSetting is one run-time parameter the pin sets for a tenant.
type SessionSetting struct{ Name, Value string }

// InvalidSettingError says that a tenant setting was refused, and why.
type InvalidSettingError struct {
	Key, Value string
	Reason     string
}

func (e *InvalidSettingError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid tenant setting %q: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("invalid tenant setting %s=%q: %s", e.Key, e.Value, e.Reason)
}

// gucName is what a session setting's name may be: a plain or dotted
// (extension) parameter name, as the proxy accepts from clients.
var gucName = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$`)

// refusedSessionSettings are the parameters a tenant may not be given,
// and why. The first three are those the proxy refuses from clients
// (proxy.reservedParams): pgtenant owns search_path, and the others change
// who the session is. client_encoding and standard_conforming_strings decide
// how pgtenant's statement lexer reads a text, and the transaction_*
// parameters mean nothing outside a transaction.
var refusedSessionSettings = map[string]string{
	"search_path":                 "pgtenant pins search_path to the tenant's schema",
	"session_authorization":       "it would change who the session is",
	"role":                        "it would change who the session is",
	"client_encoding":             "it is the client's to choose, and pgtenant reads statements in it",
	"standard_conforming_strings": "pgtenant requires it on",
	"transaction_isolation":       "it lasts one transaction; use default_transaction_isolation",
	"transaction_read_only":       "it lasts one transaction; use default_transaction_read_only",
	"transaction_deferrable":      "it lasts one transaction; use default_transaction_deferrable",
}

// maxSettingValue bounds a value's length: settings go into every pin.
const maxSettingValue = 1024

// ValidateSetting checks one key=value offline (without a server) and
// returns the key as stored (lower case) and the value as stored (trimmed).
// A session setting's value is checked by the server too, in
// SetTenantSettings.
func ValidateSetting(key, value string) (string, string, error) {
	key = strings.ToLower(strings.TrimSpace(key))
	value = strings.TrimSpace(value)
	bad := func(reason string) (string, string, error) {
		return "", "", &InvalidSettingError{Key: key, Value: value, Reason: reason}
	}
	if len(value) > maxSettingValue {
		return bad(fmt.Sprintf("longer than %d bytes", maxSettingValue))
	}
	if strings.IndexByte(value, 0) >= 0 {
		return bad("contains a NUL byte")
	}
	if name, ok := strings.CutPrefix(key, SessionSettingPrefix); ok {
		if err := ValidateSessionSettingName(name); err != nil {
			return "", "", err
		}
		return key, value, nil
	}
	switch key {
	case SettingMaxBackends, SettingMaxClients, SettingRateBurst:
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return bad("want a whole number, 0 or more (0: the proxy's default)")
		}
		return key, strconv.Itoa(n), nil
	case SettingRate:
		f, err := strconv.ParseFloat(value, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return bad("want transactions per second, a number 0 or more (0: the proxy's default)")
		}
		return key, value, nil
	case SettingStorageQuota:
		if _, err := ParseSize(value); err != nil {
			return bad(err.Error())
		}
		return key, value, nil
	case SettingTier:
		if len(value) > 64 {
			return bad("longer than 64 bytes")
		}
		for _, r := range value {
			if !unicode.IsPrint(r) {
				return bad("contains a control character")
			}
		}
		return key, value, nil
	}
	return bad("unknown key; keys are " + strings.Join(SettingKeys, ", ") + " and " + SessionSettingPrefix + "NAME for a session setting")
}

// ValidateSessionSettingName checks the NAME of a set.NAME key.
func ValidateSessionSettingName(name string) error {
	key := SessionSettingPrefix + name
	if !gucName.MatchString(name) || len(name) > 63 {
		return &InvalidSettingError{Key: key, Reason: "not a run-time parameter name"}
	}
	if why, ok := refusedSessionSettings[name]; ok {
		return &InvalidSettingError{Key: key, Reason: "a tenant cannot be given " + name + ": " + why}
	}
	if strings.HasPrefix(name, "pgtenant.") {
		return &InvalidSettingError{Key: key, Reason: "pgtenant.* parameters are pgtenant's own"}
	}
	return nil
}

// ValidateSettingKey checks a key to unset.
func ValidateSettingKey(key string) (string, error) {
	key = strings.ToLower(strings.TrimSpace(key))
	if name, ok := strings.CutPrefix(key, SessionSettingPrefix); ok {
		return key, ValidateSessionSettingName(name)
	}
	for _, k := range SettingKeys {
		if k == key {
			return key, nil
		}
	}
	return "", &InvalidSettingError{Key: key, Reason: "unknown key; keys are " + strings.Join(SettingKeys, ", ") +
		" and " + SessionSettingPrefix + "NAME for a session setting"}
}

// sizeUnits are the units ParseSize accepts, 1024-based as PostgreSQL's
// memory units are.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// ParseSize reads a size in bytes: a whole number, optionally followed by
// a unit (B, kB, MB, GB, TB; 1024-based; case and a blank before the unit
// do not matter).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("want a size in bytes, such as 500MB or 10GB")
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok {
		return 0, fmt.Errorf("unknown unit in %q; use B, kB, MB, GB or TB", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// ParseSettings turns stored rows (key to value) into TenantSettings. A
// row that does not parse (inserted by hand) is left out and reported in
// the error, which the proxy logs; the rest still apply.
func ParseSettings(rows map[string]string) (TenantSettings, error) {
	var s TenantSettings
	var errs []error
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		key, value, err := ValidateSetting(k, rows[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch key {
		case SettingMaxBackends:
			s.MaxBackends, _ = strconv.Atoi(value)
		case SettingMaxClients:
			s.MaxClients, _ = strconv.Atoi(value)
		case SettingRate:
			s.Rate, _ = strconv.ParseFloat(value, 64)
		case SettingRateBurst:
			s.RateBurst, _ = strconv.Atoi(value)
		case SettingStorageQuota:
			s.StorageQuota, _ = ParseSize(value)
		case SettingTier:
			s.Tier = value
		default:
			s.Session = append(s.Session, SessionSetting{Name: strings.TrimPrefix(key, SessionSettingPrefix), Value: value})
		}
	}
	return s, errors.Join(errs...)
}

// SetTenantSettings stores settings (key to value) for tenant, replacing
// the values of keys it already has, in one registry transaction; every
// proxy reloads the tenant's settings when it commits. Every key is
// checked first (ValidateSetting); a session setting must also be one the
// server knows and that an ordinary role may set in its session (its
// pg_settings context is user), and its value one the server accepts, which
// is tried with set_config in a savepoint. Extension parameters
// (set.ext.name) are taken as they are, since an extension that is not
// loaded in the admin session cannot check them. Nothing is stored when
// any is refused.
func SetTenantSettings(ctx context.Context, db DB, tenant string, settings map[string]string) error {
	checked := make(map[string]string, len(settings))
	for k, v := range settings {
		key, value, err := ValidateSetting(k, v)
		if err != nil {
			return err
		}
		checked[key] = value
	}
	keys := make([]string, 0, len(checked))
	for k := range checked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if err := requireTenant(ctx, tx, tenant); err != nil {
			return err
		}
		for _, key := range keys {
			if name, ok := strings.CutPrefix(key, SessionSettingPrefix); ok {
				if err := checkSessionSetting(ctx, tx, name, checked[key]); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx,
				`INSERT INTO pgtenant.tenant_settings (tenant, key, value) VALUES ($1, $2, $3)
				 ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
				tenant, key, checked[key]); err != nil {
				return fmt.Errorf("store tenant setting %s: %w", key, err)
			}
		}
		return nil
	})
}

// checkSessionSetting asks the server whether name is a parameter a
// tenant's session may set, and whether value is a value of it.
func checkSessionSetting(ctx context.Context, tx pgx.Tx, name, value string) error {
	key := SessionSettingPrefix + name
	if !strings.Contains(name, ".") {
		var context string
		err := tx.QueryRow(ctx, `SELECT context FROM pg_catalog.pg_settings WHERE name = $1`, name).Scan(&context)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return &InvalidSettingError{Key: key, Value: value, Reason: "the server has no such parameter"}
		case err != nil:
			return fmt.Errorf("look up parameter %s: %w", name, err)
		case context != "user":
			return &InvalidSettingError{Key: key, Value: value,
				Reason: fmt.Sprintf("an ordinary role cannot set it in its session (its context is %s)", context)}
		}
	}
	if _, err := tx.Exec(ctx, `SAVEPOINT pgtenant_check_setting`); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `SELECT pg_catalog.set_config($1, $2, true)`, name, value)
	if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT pgtenant_check_setting`); rerr != nil && err == nil {
		err = rerr
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &InvalidSettingError{Key: key, Value: value, Reason: "the server refuses it: " + pe.Message}
	}
	return err
}

// UnsetTenantSettings removes keys from tenant's settings (they go back to
// the proxy's defaults) and returns the keys it removed.
func UnsetTenantSettings(ctx context.Context, db DB, tenant string, keys []string) ([]string, error) {
	checked := make([]string, 0, len(keys))
	for _, k := range keys {
		key, err := ValidateSettingKey(k)
		if err != nil {
			return nil, err
		}
		checked = append(checked, key)
	}
	var removed []string
	err := inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if err := requireTenant(ctx, tx, tenant); err != nil {
			return err
		}
		rows, err := tx.Query(ctx,
			`DELETE FROM pgtenant.tenant_settings WHERE tenant = $1 AND key = ANY($2) RETURNING key`, tenant, checked)
		if err != nil {
			return fmt.Errorf("unset tenant settings: %w", err)
		}
		removed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	sort.Strings(removed)
	return removed, err
}

// ListTenantSettings returns tenant's stored settings (key to value as
// stored). A tenant that does not exist is an *UnknownTenantError.
func ListTenantSettings(ctx context.Context, db DB, tenant string) (Tenant, map[string]string, error) {
	t, found, err := tenantByName(ctx, db, tenant)
	if err != nil {
		return Tenant{}, nil, err
	}
	if !found {
		return Tenant{}, nil, requireTenant(ctx, db, tenant)
	}
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_settings"); err != nil || !ok {
		return t, map[string]string{}, err
	}
	kv, err := querySettings(ctx, db, tenant)
	return t, kv, err
}

func querySettings(ctx context.Context, db DB, tenant string) (map[string]string, error) {
	rows, err := db.Query(ctx, `SELECT key, value FROM pgtenant.tenant_settings WHERE tenant = $1`, tenant)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { kv[k] = v; return nil })
	if err != nil {
		return nil, fmt.Errorf("read tenant settings: %w", err)
	}
	return kv, nil
}

// LookupTenantSettings returns the settings of tenant (by its own name),
// for the proxy: when its first client arrives and when a NOTIFY says they
// changed. A registry made before settings existed has none. Rows that do
// not parse are left out and reported in the error, together with the
// settings that do (see ParseSettings); a failed query returns only the
// error.
func (r *PGRegistry) LookupTenantSettings(ctx context.Context, tenant string) (TenantSettings, error) {
	var kv map[string]string
	err := r.ask(ctx, func() error {
		var err error
		kv, err = querySettings(ctx, r.pool, tenant)
		return err
	})
	switch {
	case isMissingRegistry(err):
		return TenantSettings{}, nil
	case err != nil:
		return TenantSettings{}, &SettingsLookupError{Err: err}
	}
	return ParseSettings(kv)
}

// SettingsLookupError says that a tenant's settings could not be read at
// all (as opposed to some rows not parsing).
type SettingsLookupError struct{ Err error }

func (e *SettingsLookupError) Error() string { return "registry settings lookup: " + e.Err.Error() }
func (e *SettingsLookupError) Unwrap() error { return e.Err }

// schemaSizesSQL sums the on-disk size of each tenant schema's tables,
// materialized views and sequences with their indexes and TOAST, in one
// query (pg_class and the size functions need no privilege on the tables): the
// catalogs are read once, whatever the number of tenants. A relation
// dropped meanwhile has no size (NULL), which sum skips.
const schemaSizesSQL = `
SELECT t.name, COALESCE(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint
  FROM pgtenant.tenants t
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'S')
 WHERE $1::text[] IS NULL OR t.name = ANY($1::text[])
 GROUP BY t.name`

// SchemaSizes returns the size in bytes of the schemas of tenants (nil:
// every tenant), by tenant name. It runs on the registry's connections,
// in the background, never on a client's path.
func (r *PGRegistry) SchemaSizes(ctx context.Context, tenants []string) (map[string]int64, error) {
	sizes := map[string]int64{}
	err := r.ask(ctx, func() error {
		clear(sizes)
		rows, err := r.pool.Query(ctx, schemaSizesSQL, tenants)
		if err != nil {
			return err
		}
		var name string
		var size int64
		_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error { sizes[name] = size; return nil })
		return err
	})
	if isMissingRegistry(err) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("measure tenant schemas: %w", err)
	}
	return sizes, nil
}
