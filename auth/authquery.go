package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultAuthQuery calls the lookup function doc.go recommends.
const DefaultAuthQuery = "SELECT rolname, rolpassword FROM pgtenant.user_secret($1)"

// DefaultAuthQueryTimeout bounds one AuthQuery lookup when NewAuthQuery is
// given 0.
const DefaultAuthQueryTimeout = 5 * time.Second

// Querier runs the auth query: a *pgxpool.Pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// AuthQuery is a UserSource that asks the backend, as PgBouncer's
// auth_query does: the query takes the user name as its only parameter ($1)
// and returns at most one row of (rolname text, rolpassword text). No row,
// or a NULL password, is an unknown user. The user name only ever travels
// as a bind parameter of the extended protocol, whatever the pool's default
// exec mode, so no user name can change the SQL.
type AuthQuery struct {
	db      Querier
	query   string
	timeout time.Duration
}

// paramRef finds parameter references in a query, to check that it uses $1
// and nothing else.
var paramRef = regexp.MustCompile(`\$([0-9]+)`)

// NewAuthQuery returns an AuthQuery running query (DefaultAuthQuery when
// empty) on db, each lookup bounded by timeout (DefaultAuthQueryTimeout
// when 0). The query must use $1, and only $1; write every object in it
// schema-qualified (as the default does), so that nothing on the auth
// role's search_path can stand in for it.
func NewAuthQuery(db Querier, query string, timeout time.Duration) (*AuthQuery, error) {
	if db == nil {
		return nil, errors.New("auth query: no database pool")
	}
	if query == "" {
		query = DefaultAuthQuery
	}
	refs := paramRef.FindAllStringSubmatch(query, -1)
	if len(refs) == 0 {
		return nil, fmt.Errorf("auth query %q: must take the user name as $1", query)
	}
	for _, r := range refs {
		if r[1] != "1" {
			return nil, fmt.Errorf("auth query %q: only $1 (the user name) is available, not $%s", query, r[1])
		}
	}
	if timeout < 0 {
		return nil, fmt.Errorf("auth query: timeout %v is negative", timeout)
	}
	if timeout == 0 {
		timeout = DefaultAuthQueryTimeout
	}
	return &AuthQuery{db: db, query: query, timeout: timeout}, nil
}

// Lookup implements UserSource.
func (q *AuthQuery) Lookup(ctx context.Context, user string) (Secret, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	// QueryExecModeExec sends the user name as a parameter of the extended
	// protocol in one round trip, and needs no prepared statement, so it
	// works through a transaction-mode pooler too.
	rows, err := q.db.Query(ctx, q.query, pgx.QueryExecModeExec, user)
	if err != nil {
		return Secret{}, false, fmt.Errorf("auth query: %w", err)
	}
	defer rows.Close()
	var (
		name, password *string
		n              int
	)
	for rows.Next() {
		if n++; n > 1 {
			return Secret{}, false, errors.New("auth query: returned more than one row; it must return at most one")
		}
		if err := rows.Scan(&name, &password); err != nil {
			return Secret{}, false, fmt.Errorf("auth query: want (rolname text, rolpassword text): %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return Secret{}, false, fmt.Errorf("auth query: %w", err)
	}
	if n == 0 || password == nil {
		return Secret{}, false, nil
	}
	// A row for another user means a broken query, which must not let
	// anyone in with someone else's password.
	if name == nil || *name != user {
		return Secret{}, false, errors.New("auth query: returned a row for another user than $1")
	}
	secret, err := ParseSecret(*password)
	if err != nil {
		// Not the client's business, but not an outage either: the user
		// cannot log in, as in PostgreSQL with an unusable password.
		return Secret{}, false, nil
	}
	return secret, true, nil
}
