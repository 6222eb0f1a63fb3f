package router

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Several backends (issue 16). A tenant's schema lives on one PostgreSQL
// server, its placement, named in pgtenant.tenants.backend; the servers are
// the rows of pgtenant.backends. The registry itself stays on one server,
// DefaultBackend, which every proxy reaches with its own --backend DSN.

// DefaultBackend is the backend that holds the registry: the server serve's
// --backend names. Its row in pgtenant.backends has an empty DSN, since each
// proxy and admin reaches it with the DSN it was started with. It cannot be
// removed, and tenants are placed on it unless told otherwise.
const DefaultBackend = "default"

// BackendNotifyPrefix starts a NotifyChannel payload announcing that a
// backend was added, removed or changed ("backend:eu2"). Tenant names and
// aliases never contain ':'.
const BackendNotifyPrefix = "backend:"

// BackendChangedFor reports whether a NotifyChannel payload announces a
// change to a backend, and which.
func BackendChangedFor(payload string) (backend string, ok bool) {
	return strings.CutPrefix(payload, BackendNotifyPrefix)
}

// tenantBackendExpr is a tenant row's placement, for queries over
// pgtenant.tenants aliased t. Going through to_jsonb keeps lookups working
// on a registry made before placements existed, until an admin command
// upgrades it (as djangoActive does for Django's models).
const tenantBackendExpr = `COALESCE(pg_catalog.to_jsonb(t) ->> 'backend', '` + DefaultBackend + `')`

// Backend is one row of pgtenant.backends.
type Backend struct {
	Name string
	// DSN is how proxies and admin commands reach the server: a libpq URL
	// or key=value string without a password. "" for DefaultBackend.
	DSN       string
	CreatedAt time.Time
}

// ValidateBackendName reports whether name may name a backend: the rule of
// tenant names (1-63 lower-case letters, digits or _ starting with a
// letter), since names are typed on command lines and shown in listings.
func ValidateBackendName(name string) error {
	if !namePattern.MatchString(name) {
		return &InvalidNameError{Kind: "backend name", Name: name, Reason: nameRule}
	}
	return nil
}

// CheckBackendDSN reports whether dsn may be stored as a backend's DSN: it
// must parse as a libpq URL or key=value string and hold no password. The
// registry is read by every proxy and admin, and its rows travel into
// logs, dumps and `backend list`; the password for a backend comes from
// the environment (PGPASSWORD), a passfile (PGPASSFILE, ~/.pgpass), or,
// in role isolation mode, the role secret.
func CheckBackendDSN(dsn string) error {
	if strings.TrimSpace(dsn) == "" {
		return errors.New("the DSN is empty; give the server's host, port and database, e.g. postgres://pgtenant@10.0.0.2:5432/app")
	}
	has, err := dsnHasPassword(dsn)
	if err != nil {
		return err
	}
	if has {
		return errors.New("the DSN holds a password; store it without one and give the password in a passfile " +
			"(PGPASSFILE or ~/.pgpass, matched by host, port, database and user) or PGPASSWORD in the environment " +
			"of every pgtenant process, or use role isolation mode's role secret")
	}
	// ParseConfig catches what the scan above does not look at (a bad
	// port, an unknown sslmode). It reads the environment and passfile too,
	// which is harmless: nothing is kept.
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return fmt.Errorf("the DSN does not parse: %w", err)
	}
	return nil
}

// dsnHasPassword reports whether a libpq URL or key=value string carries a
// password of its own (not one the environment or a passfile would add,
// which pgconn.ParseConfig cannot tell apart).
func dsnHasPassword(dsn string) (bool, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// url.Parse's message quotes the whole URL; say it without.
			return false, errors.New("the DSN is not a valid URL")
		}
		if _, ok := u.User.Password(); ok {
			return true, nil
		}
		return u.Query().Has("password"), nil
	}
	kv, err := parseKeywordValues(dsn)
	if err != nil {
		return false, err
	}
	_, ok := kv["password"]
	return ok, nil
}

// parseKeywordValues splits a libpq keyword=value string: keywords and
// values separated by '=' with optional spaces around it, values bare or in
// single quotes with backslash escapes.
func parseKeywordValues(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skip()
		if i == len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skip()
		if i == len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("the DSN is not a libpq URL or key=value string (near %q)", key)
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("the DSN has an unterminated quoted value for %q", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		out[key] = val.String()
	}
}

// AddBackend records a backend called name, reached at dsn, on which
// tenants can then be placed (CreateTenant's OnBackend, SetPlacement). dsn
// must hold no password (see CheckBackendDSN). Adding a backend that exists
// with the same DSN is harmless; with another DSN it is refused, since
// tenants placed there would silently move servers: remove it first. The
// server is not contacted.
func AddBackend(ctx context.Context, db DB, name, dsn string) error {
	if err := ValidateBackendName(name); err != nil {
		return err
	}
	if name == DefaultBackend {
		return fmt.Errorf("add backend %q: it is the registry's own server and always exists; it is reached with each process's --backend", name)
	}
	if err := CheckBackendDSN(dsn); err != nil {
		return fmt.Errorf("add backend %q: %w", name, err)
	}
	err := inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		b, found, err := getBackend(ctx, tx, name)
		switch {
		case err != nil:
			return err
		case found && b.DSN == dsn:
			return nil
		case found:
			return fmt.Errorf("it exists with DSN %q; remove it first (no tenant may be placed on it) to change its DSN", b.DSN)
		}
		_, err = tx.Exec(ctx, `INSERT INTO pgtenant.backends (name, dsn) VALUES ($1, $2)`, name, dsn)
		return err
	})
	if err != nil {
		return fmt.Errorf("add backend %q: %w", name, err)
	}
	return nil
}

// BackendInUseError says that a backend cannot be removed while tenants
// are placed on it.
type BackendInUseError struct {
	Backend string
	Tenants []string // the first few, by name
	Count   int
}

func (e *BackendInUseError) Error() string {
	return fmt.Sprintf("%d tenant(s) are placed on backend %q (%s); move them elsewhere first (tenant move NAME --to BACKEND)",
		e.Count, e.Backend, strings.Join(e.Tenants, ", "))
}

// RemoveBackend removes the backend called name and reports whether it
// existed. It refuses DefaultBackend, and a backend with tenants placed on
// it (a *BackendInUseError). Proxies close their pool to it when they hear
// of the removal.
func RemoveBackend(ctx context.Context, db DB, name string) (removed bool, err error) {
	if err := ValidateBackendName(name); err != nil {
		return false, err
	}
	if name == DefaultBackend {
		return false, fmt.Errorf("remove backend %q: it is the registry's own server and cannot be removed", name)
	}
	err = inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		var n int
		var some []string
		err := tx.QueryRow(ctx, `SELECT count(*)::int, (array_agg(name ORDER BY name))[1:5]
			FROM pgtenant.tenants WHERE backend = $1`, name).Scan(&n, &some)
		if err != nil {
			return fmt.Errorf("find tenants on it: %w", err)
		}
		if n > 0 {
			return &BackendInUseError{Backend: name, Tenants: some, Count: n}
		}
		tag, err := tx.Exec(ctx, `DELETE FROM pgtenant.backends WHERE name = $1`, name)
		removed = tag.RowsAffected() > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("remove backend %q: %w", name, err)
	}
	return removed, nil
}

// ListBackends returns every backend, DefaultBackend first and then the
// others by name. Before the registry (or its backends table) exists there
// is only DefaultBackend.
func ListBackends(ctx context.Context, db DB) ([]Backend, error) {
	ok, err := tableExists(ctx, db, "pgtenant.backends")
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	if !ok {
		return []Backend{{Name: DefaultBackend}}, nil
	}
	rows, err := db.Query(ctx, `SELECT name, dsn, created_at FROM pgtenant.backends
		ORDER BY name <> '`+DefaultBackend+`', name`)
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	bs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Backend, error) {
		var b Backend
		err := row.Scan(&b.Name, &b.DSN, &b.CreatedAt)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("list backends: %w", err)
	}
	return bs, nil
}

// GetBackend returns the backend called name, and whether there is one.
// DefaultBackend always exists, registry or not.
func GetBackend(ctx context.Context, db DB, name string) (Backend, bool, error) {
	ok, err := tableExists(ctx, db, "pgtenant.backends")
	if err != nil {
		return Backend{}, false, fmt.Errorf("look up backend %q: %w", name, err)
	}
	if !ok {
		if name == DefaultBackend {
			return Backend{Name: DefaultBackend}, true, nil
		}
		return Backend{}, false, nil
	}
	return getBackend(ctx, db, name)
}

func getBackend(ctx context.Context, db DB, name string) (Backend, bool, error) {
	b := Backend{Name: name}
	err := db.QueryRow(ctx, `SELECT dsn, created_at FROM pgtenant.backends WHERE name = $1`, name).Scan(&b.DSN, &b.CreatedAt)
	switch {
	case err == nil:
		return b, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Backend{}, false, nil
	default:
		return Backend{}, false, fmt.Errorf("look up backend %q: %w", name, err)
	}
}

// UnknownBackendError says that a command named a backend that is not in
// pgtenant.backends.
type UnknownBackendError struct{ Name string }

func (e *UnknownBackendError) Error() string {
	return fmt.Sprintf("backend %q does not exist; add it with: pgtenant backend add %s DSN", e.Name, e.Name)
}

// requireBackend fails with an *UnknownBackendError unless name is a
// backend. It runs in a registry transaction, so the table exists.
func requireBackend(ctx context.Context, db DB, name string) error {
	if err := ValidateBackendName(name); err != nil {
		return err
	}
	if _, found, err := getBackend(ctx, db, name); err != nil || found {
		return err
	}
	return &UnknownBackendError{Name: name}
}

// SetPlacement places tenant on backend: from its commit on, every proxy
// sends the tenant's new transactions to that server (the tenants table's
// trigger announces the tenant's name, and proxies reload it). It moves no
// data: the schema must already be there, which is what `tenant move`
// arranges. Placing a tenant where it is is harmless. tenant must be a
// tenant's own name (not an alias); backend must exist.
func SetPlacement(ctx context.Context, db DB, tenant, backend string) error {
	if err := ValidateTenantName(tenant); err != nil {
		return err
	}
	err := inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		return setPlacement(ctx, tx, tenant, backend)
	})
	if err != nil {
		return fmt.Errorf("place tenant %q on backend %q: %w", tenant, backend, err)
	}
	return nil
}

// setPlacement is SetPlacement inside a registry transaction the caller
// holds, so that a move can switch the placement and resume the tenant in
// one commit.
func setPlacement(ctx context.Context, tx pgx.Tx, tenant, backend string) error {
	if err := requireBackend(ctx, tx, backend); err != nil {
		return err
	}
	if err := requireTenant(ctx, tx, tenant); err != nil {
		return err
	}
	// IS DISTINCT FROM: an unchanged placement writes nothing, and so
	// announces nothing.
	_, err := tx.Exec(ctx, `UPDATE pgtenant.tenants SET backend = $2 WHERE name = $1 AND backend IS DISTINCT FROM $2`,
		tenant, backend)
	return err
}

// SetPlacementTx is SetPlacement within tx, a transaction of the caller's
// that already holds the registry lock (EnsureRegistry's work is done by
// whoever began it through the admin functions; a plain transaction gets
// it here). The change is announced when tx commits.
func SetPlacementTx(ctx context.Context, tx pgx.Tx, tenant, backend string) error {
	if err := ValidateTenantName(tenant); err != nil {
		return err
	}
	if err := ensureRegistry(ctx, tx); err != nil {
		return err
	}
	if err := setPlacement(ctx, tx, tenant, backend); err != nil {
		return fmt.Errorf("place tenant %q on backend %q: %w", tenant, backend, err)
	}
	return nil
}

// ConnectBackend opens an admin connection to the backend called name,
// with its DSN and the credentials of the environment or passfile (a
// backend's DSN holds no password). DefaultBackend has no DSN of its own:
// callers use the connection they reached the registry with, and asking
// for it here is an error. The caller closes the connection.
func ConnectBackend(ctx context.Context, db DB, name string) (*pgx.Conn, error) {
	if name == DefaultBackend {
		return nil, errors.New("backend " + DefaultBackend + " is reached with the registry's own connection")
	}
	b, found, err := GetBackend(ctx, db, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, &UnknownBackendError{Name: name}
	}
	conn, err := pgx.Connect(ctx, b.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect to backend %q: %w", name, err)
	}
	return conn, nil
}
