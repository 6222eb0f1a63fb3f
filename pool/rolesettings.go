package pool

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Role and database settings (ALTER ROLE ... SET, ALTER DATABASE ... SET,
// kept in pg_db_role_setting) are applied to every new session of the role
// and are what RESET ALL, and so the pin, restores. A tenant whose clients
// run as the pool's role can write its own role's settings from a DO block
// (ALTER ROLE CURRENT_USER SET search_path = acme, pg_catalog), and they
// would then reach every new backend of every tenant. So each new backend
// is checked once, when it is dialled (checkout stays free of it): a
// setting of the role is removed, as the role itself may, and the
// connection, which has it applied already, is closed and dialled again. A
// setting of the database, or of every role, is the database owner's or a
// superuser's to remove: the connection is refused and the error says what
// to run.

// maxSettingDials bounds the logins of one Dial that find role settings
// and remove them. A tenant that writes them back as fast as they are
// removed makes the dial fail instead of looping.
const maxSettingDials = 3

// sessionDefault is one setting found on a new backend: its name, and
// whether it belongs to the role (ofRole) and to this database
// (inDatabase). ofRole && !inDatabase is ALTER ROLE r SET; ofRole &&
// inDatabase is ALTER ROLE r IN DATABASE d SET; !ofRole && inDatabase is
// ALTER DATABASE d SET; neither is ALTER ROLE ALL SET.
type sessionDefault struct {
	name       string
	ofRole     bool
	inDatabase bool
}

// where says, for messages, where the setting is kept.
func (s sessionDefault) where(role, database string) string {
	switch {
	case s.ofRole && s.inDatabase:
		return fmt.Sprintf("of role %q in database %q", role, database)
	case s.ofRole:
		return fmt.Sprintf("of role %q", role)
	case s.inDatabase:
		return fmt.Sprintf("of database %q", database)
	default:
		return "of every role (ALTER ROLE ALL)"
	}
}

// sessionDefaultsSQL finds the settings applied to this session from
// pg_db_role_setting: those stored for the session user and this database,
// and, since an entry could have been removed between login and this query,
// those the session says it took from there (pg_settings.source). The SET
// LOCALs last for this Query's implicit transaction only: names resolve in
// pg_catalog first whatever search_path the role was given, and a role's
// statement_timeout cannot cancel the check.
const sessionDefaultsSQL = `SET LOCAL search_path = pg_catalog; SET LOCAL statement_timeout = 0; ` +
	`SELECT session_user::pg_catalog.text, pg_catalog.current_database()::pg_catalog.text, f.of_role::pg_catalog.text, f.in_db::pg_catalog.text, f.name FROM (
	SELECT s.setrole <> 0 AS of_role, s.setdatabase <> 0 AS in_db, pg_catalog.split_part(c.c, '=', 1) AS name
	  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c(c)
	 WHERE s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = session_user))
	   AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()))
	UNION
	SELECT g.source IN ('user', 'database user'), g.source IN ('database', 'database user'), g.name
	  FROM pg_catalog.pg_settings g
	 WHERE g.source IN ('user', 'database', 'database user', 'global')
) f ORDER BY 5, 3, 4`

// sessionDefaults returns the login role, the database and the settings
// found on a freshly logged-in pc (see sessionDefaultsSQL).
func sessionDefaults(ctx context.Context, pc *pgconn.PgConn) (role, database string, found []sessionDefault, err error) {
	results, err := pc.Exec(ctx, sessionDefaultsSQL).ReadAll()
	if err != nil {
		return "", "", nil, fmt.Errorf("check role settings: %w", err)
	}
	if len(results) == 0 {
		return "", "", nil, fmt.Errorf("check role settings: no result")
	}
	for _, row := range results[len(results)-1].Rows {
		if len(row) != 5 {
			return "", "", nil, fmt.Errorf("check role settings: %d columns, want 5", len(row))
		}
		role, database = string(row[0]), string(row[1])
		found = append(found, sessionDefault{
			name:       string(row[4]),
			ofRole:     string(row[2]) == "true",
			inDatabase: string(row[3]) == "true",
		})
	}
	return role, database, found, nil
}

// removeSessionDefaults removes the role's settings in found, in one
// transaction, as the session user (a role setting "role" may have made
// the current user another). It fails, removing nothing, when found holds a
// setting of the database or of every role, which the role cannot remove,
// or when the server refuses (a setting only a superuser may change).
func removeSessionDefaults(ctx context.Context, pc *pgconn.PgConn, role, database string, found []sessionDefault) error {
	var sql strings.Builder
	sql.WriteString("BEGIN READ WRITE; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; SET LOCAL ROLE NONE; ")
	for _, s := range found {
		if !s.ofRole {
			var fix string
			if s.inDatabase {
				fix = fmt.Sprintf("ALTER DATABASE %s RESET %s, as the database owner", quoteIdent(database), quoteSettingName(s.name))
			} else {
				fix = fmt.Sprintf("ALTER ROLE ALL RESET %s, as a superuser", quoteSettingName(s.name))
			}
			return fmt.Errorf("setting %q %s would reach every tenant's backends (RESET ALL restores it) and the "+
				"pool's role cannot remove it; remove it with %s", s.name, s.where(role, database), fix)
		}
		sql.WriteString("ALTER ROLE SESSION_USER ")
		if s.inDatabase {
			sql.WriteString("IN DATABASE " + quoteIdent(database) + " ")
		}
		sql.WriteString("RESET " + quoteSettingName(s.name) + "; ")
	}
	sql.WriteString("COMMIT")
	if _, err := pc.Exec(ctx, sql.String()).ReadAll(); err != nil {
		return fmt.Errorf("remove settings of role %q: %w", role, err)
	}
	return nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteSettingName quotes a setting name, each part of a dotted
// (extension) name on its own.
func quoteSettingName(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = quoteIdent(p)
	}
	return strings.Join(parts, ".")
}
