package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// pg_dump and psql are the engine of clone, export and import: pg_dump
// knows every kind of object, and psql replays its COPY sections.
//
// Renaming the schema on restore: a dump of schema src creates schema src
// and names everything src.x. Rewriting that text is fragile (function
// bodies, string literals, a table called src), so the dump is replayed
// unchanged, in one transaction, between renames of the schemas:
//
//	ALTER SCHEMA src RENAME TO <tmp>;   -- only when src exists here
//	<the dump>                          -- creates src again, fills it
//	ALTER SCHEMA src RENAME TO dst;
//	ALTER SCHEMA <tmp> RENAME TO src;
//
// Other sessions keep seeing src as it was (the renames are not committed
// until the end) and its tables are not locked, so SRC's traffic goes on
// during a clone; only DDL on the schema src itself waits for the commit.
// What is stored parsed follows the rename: views, defaults, constraints,
// foreign keys, sequences owned by columns, indexes, triggers. What is
// stored as text does not: a function body that names src.x still names
// src (the original tenant's) after the clone, and so do search_path
// settings of functions (SET search_path = src).

// pgTool finds a PostgreSQL client program: in $PGTENANT_PG_BIN, on PATH,
// or where Debian's postgresql-15 puts it, as pgcluster looks for initdb.
func pgTool(name string) (string, error) {
	if dir := os.Getenv(pgcluster.BinDirEnv); dir != "" {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if p := filepath.Join(pgcluster.DefaultBinDir, name); isExecutable(p) {
		return p, nil
	}
	return "", fmt.Errorf("%s not found on PATH, in $%s or in %s: install PostgreSQL's client programs", name,
		pgcluster.BinDirEnv, pgcluster.DefaultBinDir)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// passwordKV matches a password in a key=value connection string.
var passwordKV = regexp.MustCompile(`(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// libpqArgs turns the admin DSN into what pg_dump and psql take: the
// connection string without its password, which goes into PGPASSWORD
// instead, so that ps does not show it.
func libpqArgs(dsn string) (conn string, env []string, err error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", nil, fmt.Errorf("admin dsn: %w", err)
	}
	env = os.Environ()
	if cfg.Password == "" {
		return dsn, env, nil
	}
	env = append(env, "PGPASSWORD="+cfg.Password)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", nil, fmt.Errorf("admin dsn: %w", err)
		}
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		q.Del("password")
		u.RawQuery = q.Encode()
		return u.String(), env, nil
	}
	return passwordKV.ReplaceAllString(dsn, "$1"), env, nil
}

// adminDSN is the DSN withAdminConn connects with.
func adminDSN(c *cli.Context) string {
	if dsn := c.String("registry"); dsn != "" {
		return dsn
	}
	return c.String("backend")
}

// pgDump returns pg_dump's SQL of schema: without owners and privileges
// (the tenant it is restored as gets its own), structure only or with rows.
func pgDump(c *cli.Context, schema string, schemaOnly bool) ([]byte, error) {
	var out bytes.Buffer
	if err := pgDumpTo(c, schema, schemaOnly, &out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func pgDumpTo(c *cli.Context, schema string, schemaOnly bool, w io.Writer) error {
	bin, err := pgTool("pg_dump")
	if err != nil {
		return err
	}
	conn, env, err := libpqArgs(adminDSN(c))
	if err != nil {
		return err
	}
	// -n takes a pattern; a valid schema name holds no pattern characters,
	// and is quoted so that it is not case-folded.
	args := []string{"--no-owner", "--no-privileges", "-n", `"` + schema + `"`, "-d", conn}
	if schemaOnly {
		args = append(args, "--schema-only")
	}
	cmd := exec.CommandContext(c.Context, bin, args...)
	cmd.Env = env
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_dump of schema %s: %v: %s", schema, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// restoreAs replays dump, a dump of schema from, as schema to (see the
// renaming above) in one transaction, then registers tenant name on it
// (its pool roles granted, and its role made with --isolation role). A
// failed registration drops the restored schema again.
func restoreAs(c *cli.Context, conn *pgx.Conn, dump []byte, from, name, to, secret string) error {
	var fromExists bool
	if err := conn.QueryRow(c.Context, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)`,
		from).Scan(&fromExists); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	var script bytes.Buffer
	f, t := pgx.Identifier{from}.Sanitize(), pgx.Identifier{to}.Sanitize()
	var tmp string
	if fromExists && from != to {
		var b [6]byte
		_, _ = rand.Read(b[:])
		tmp = pgx.Identifier{"pgtenant_restore_" + hex.EncodeToString(b[:])}.Sanitize()
		fmt.Fprintf(&script, "ALTER SCHEMA %s RENAME TO %s;\n", f, tmp)
	}
	script.Write(dump)
	if from != to {
		fmt.Fprintf(&script, "\nALTER SCHEMA %s RENAME TO %s;\n", f, t)
	}
	if tmp != "" {
		fmt.Fprintf(&script, "ALTER SCHEMA %s RENAME TO %s;\n", tmp, f)
	}
	if err := runPsql(c, &script); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	tn, _, err := router.CreateTenant(c.Context, conn, name, to, router.AdoptSchema())
	if err == nil {
		err = isolateCreated(c, conn, tn, secret)
	}
	if err != nil {
		if _, derr := conn.Exec(c.Context, `DROP SCHEMA IF EXISTS `+t+` CASCADE`); derr != nil {
			err = fmt.Errorf("%w (and dropping the restored schema %s failed: %v)", err, to, derr)
		} else {
			err = fmt.Errorf("%w (the restored schema %s was dropped again)", err, to)
		}
		return adminExit(err)
	}
	return nil
}

// runPsql runs script with psql in one transaction, stopping at the first
// error.
func runPsql(c *cli.Context, script io.Reader) error {
	bin, err := pgTool("psql")
	if err != nil {
		return err
	}
	conn, env, err := libpqArgs(adminDSN(c))
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(c.Context, bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
		"-d", conn, "-f", "-")
	cmd.Env = env
	cmd.Stdin = script
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restore with psql: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
