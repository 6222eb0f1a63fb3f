package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/user"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// pgtenant exec: one piece of SQL run in the context of each selected
// tenant, the seed's tenant_command for SQL. Two ways to reach a tenant:
//
//   - directly, as the admin role (--registry, else --backend), on a
//     connection of its own per tenant whose search_path is set to
//     "<schema>", public as the proxy's pin sets it. Quick, and needs no
//     running proxy, but the SQL runs with the admin role's privileges:
//     nothing stops it from reaching another schema, and neither role mode
//     nor the tenant's own settings apply.
//   - through a running pgtenant (--proxy HOST:PORT), connecting as a
//     client of the tenant with --user. Then the tenant's grants, role mode
//     and settings apply exactly as they do to the application: the safer
//     way on a production system.
//
// A connection per tenant, opened and closed around its run, so that
// nothing one tenant's SQL leaves in its session (a SET ROLE, a temporary
// table) can reach the next.

func execCommand() *cli.Command {
	flags := append(config.BackendFlags(), config.SettingFlags("tenant-from")...)
	flags = append(flags, tenantSelectionFlags()...)
	flags = append(flags, proxyFlags()...)
	flags = append(flags,
		&cli.StringFlag{
			Name:  "format",
			Usage: "table (a header line and an aligned table per tenant), csv (a tenant column first) or json (one object per tenant and line)",
			Value: "table",
		},
		&cli.StringFlag{
			Name:      "file",
			Aliases:   []string{"f"},
			Usage:     "read the SQL from FILE (- for standard input) instead of the argument",
			TakesFile: true,
		},
		&cli.BoolFlag{
			Name: "no-transaction",
			Usage: "run the SQL as it is, outside a transaction of pgtenant's, for statements that refuse one " +
				"(CREATE INDEX CONCURRENTLY, VACUUM); a multi-statement SQL is then still one implicit transaction unless it says otherwise",
		},
	)
	return &cli.Command{
		Name: "exec",
		Usage: "run SQL in each selected tenant's schema and print the results per tenant " +
			"(through a running pgtenant with --proxy, so that grants and role mode apply)",
		ArgsUsage: "(--tenant NAME | --all) [-j N] [--proxy HOST:PORT] [--format table|csv|json] SQL",
		Flags:     flags,
		Before:    config.LoadConfigFile(flags),
		Action:    execAction,
	}
}

// proxyFlags are --proxy and --user, of exec and each.
func proxyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:  "proxy",
			Usage: "HOST:PORT of a running pgtenant to reach the tenants through, as their clients do",
		},
		&cli.StringFlag{
			Name:  "user",
			Usage: "user to connect through --proxy as (default: PGUSER, else the operating system user); the password comes from PGPASSWORD or PGPASSFILE",
		},
	}
}

// proxyTarget is a running pgtenant and how to name a tenant to it.
type proxyTarget struct {
	Host, Port string
	// User is --user; "" lets libpq's rules pick (PGUSER, then the
	// operating system user).
	User string
	// From is serve's tenant-from: with user the tenant is the user name;
	// with sni, which a command line cannot present, the startup option
	// pgtenant.tenant names it. The database is always the tenant name.
	From config.TenantSource
}

// proxyFromContext reads --proxy, --user and --tenant-from; nil when no
// --proxy is given.
func proxyFromContext(c *cli.Context) (*proxyTarget, error) {
	addr := c.String("proxy")
	if addr == "" {
		if c.IsSet("user") {
			return nil, cli.Exit("--user applies only with --proxy HOST:PORT", exitUsage)
		}
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return nil, cli.Exit(fmt.Sprintf("--proxy %q: want HOST:PORT, as in 127.0.0.1:6432", addr), exitUsage)
	}
	p := &proxyTarget{Host: host, Port: port, User: c.String("user"), From: config.TenantSource(c.String("tenant-from"))}
	switch p.From {
	case config.TenantFromDatabase, config.TenantFromSNI:
	case config.TenantFromUser:
		if p.User != "" {
			return nil, cli.Exit("--user does not apply with tenant-from user: the tenant's name is the user name", exitUsage)
		}
	default:
		return nil, cli.Exit(fmt.Sprintf("--tenant-from must be database, user or sni, got %q", p.From), exitUsage)
	}
	return p, nil
}

// userFor is the user that connects for tenant: the tenant itself with
// tenant-from user, else --user ("" for libpq's default).
func (p *proxyTarget) userFor(tenant string) string {
	if p.From == config.TenantFromUser {
		return tenant
	}
	return p.User
}

// url is a libpq URL of tenant through the proxy, without a password.
func (p *proxyTarget) url(tenant string) string {
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(p.Host, p.Port), Path: "/" + tenant}
	if name := p.userFor(tenant); name != "" {
		u.User = url.User(name)
	}
	if p.From == config.TenantFromSNI {
		// %20, not +, for the space: libpq decodes percent escapes only.
		u.RawQuery = "options=" + strings.ReplaceAll(url.QueryEscape("-c pgtenant.tenant="+tenant), "+", "%20")
	}
	return u.String()
}

// execAction is pgtenant exec.
func execAction(c *cli.Context) error {
	sel, err := selectionFromContext(c)
	if err != nil {
		return err
	}
	format := c.String("format")
	if format != "table" && format != "csv" && format != "json" {
		return cli.Exit(fmt.Sprintf("--format must be table, csv or json, got %q", format), exitUsage)
	}
	sql, err := execSQL(c)
	if err != nil {
		return err
	}
	target, err := proxyFromContext(c)
	if err != nil {
		return err
	}
	tenants, adminDSN, err := selectTenants(c, sel)
	if err != nil || len(tenants) == 0 {
		return err
	}
	connect := directConnector(adminDSN)
	if target != nil {
		connect = target.connect
	}
	run := execRun{sql: sql, transaction: !c.Bool("no-transaction"), connect: connect}
	out := newResultWriter(format, c.App.Writer, c.App.ErrWriter)
	failures := runInOrder(c.Context, tenants, sel.Jobs, run.tenant, out.write)
	if err := out.flush(); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	return failureSummary("the SQL", tenants, failures)
}

// execSQL is the SQL to run: the argument, or --file.
func execSQL(c *cli.Context) (string, error) {
	const usage = "usage: pgtenant exec (--tenant NAME | --all) [-j N] [--proxy HOST:PORT] [--format table|csv|json] SQL (or --file FILE)"
	file := c.String("file")
	var sql string
	switch {
	case file != "" && c.NArg() > 0:
		return "", cli.Exit("give the SQL as the argument or with --file, not both", exitUsage)
	case file == "-":
		b, err := io.ReadAll(c.App.Reader)
		if err != nil {
			return "", cli.Exit(fmt.Errorf("read standard input: %w", err), exitUsage)
		}
		sql = string(b)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", cli.Exit(err, exitUsage)
		}
		sql = string(b)
	case c.NArg() == 1:
		sql = c.Args().First()
	default:
		return "", cli.Exit(usage, exitUsage)
	}
	if strings.TrimSpace(sql) == "" {
		return "", cli.Exit("the SQL is empty", exitUsage)
	}
	return sql, nil
}

// connector opens a connection in a tenant's context.
type connector func(ctx context.Context, t router.Tenant) (*pgx.Conn, error)

// directConnector connects as the admin role and sets search_path as the
// proxy's pin does.
func directConnector(dsn string) connector {
	return func(ctx context.Context, t router.Tenant) (*pgx.Conn, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil, config.NewConnectError("the database (--registry, or --backend without it)", dsn, err)
		}
		if _, err := conn.Exec(ctx, "SET search_path TO "+searchPathOf(t)); err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("set search_path: %w", err)
		}
		return conn, nil
	}
}

// searchPathOf is the search_path the proxy pins for t.
func searchPathOf(t router.Tenant) string {
	return pgx.Identifier{t.Schema}.Sanitize() + ", public"
}

// connect connects to t through the proxy, as its clients do.
func (p *proxyTarget) connect(ctx context.Context, t router.Tenant) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, p.url(t.Name))
	if err != nil {
		return nil, fmt.Errorf("connect through pgtenant: %w", err)
	}
	return conn, nil
}

// execRun runs the SQL for one tenant.
type execRun struct {
	sql         string
	transaction bool
	connect     connector
}

// tenant runs the SQL in t's context and returns the last statement's
// result; a failure is in its Err.
func (r execRun) tenant(ctx context.Context, t router.Tenant) *tenantResult {
	res := &tenantResult{Tenant: t}
	conn, err := r.connect(ctx, t)
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close(context.Background())
	pc := conn.PgConn()
	if r.transaction {
		if err := pc.Exec(ctx, "BEGIN").Close(); err != nil {
			res.Err = err
			return res
		}
	}
	last, err := runSimple(ctx, pc, r.sql)
	if last != nil {
		res.stmtResult = *last
	}
	if err != nil {
		res.Err = err
		// The connection is closed next, which rolls back; say so in
		// the SQL too, for a server that would wait on the close.
		if r.transaction {
			_ = pc.Exec(context.Background(), "ROLLBACK").Close()
		}
		return res
	}
	if r.transaction {
		if err := pc.Exec(ctx, "COMMIT").Close(); err != nil {
			res.Err = fmt.Errorf("commit: %w", err)
		}
	}
	return res
}

// runSimple runs sql with the simple protocol, so that it may hold several
// statements, and returns the last statement's result.
func runSimple(ctx context.Context, pc *pgconn.PgConn, sql string) (*stmtResult, error) {
	mrr := pc.Exec(ctx, sql)
	var last *stmtResult
	var firstErr error
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		sr := &stmtResult{}
		for _, fd := range rr.FieldDescriptions() {
			sr.Columns = append(sr.Columns, column{Name: fd.Name, OID: fd.DataTypeOID})
		}
		for rr.NextRow() {
			values := rr.Values()
			row := make([][]byte, len(values))
			for i, v := range values {
				if v != nil {
					row[i] = append([]byte{}, v...) // rr reuses its buffer
				}
			}
			sr.Rows = append(sr.Rows, row)
		}
		tag, err := rr.Close()
		sr.Command = tag.String()
		if err != nil && firstErr == nil {
			firstErr = err
		}
		last = sr
	}
	if err := mrr.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return last, firstErr
}

// failureSummary is the error a command ends with when some tenants failed:
// how many, and which. what names what failed ("the SQL", "the command").
func failureSummary(what string, tenants []router.Tenant, failures []tenantError) error {
	if len(failures) == 0 {
		return nil
	}
	var failed, notStarted []string
	for _, f := range failures {
		var ns errNotStarted
		if errors.As(f.Err, &ns) {
			notStarted = append(notStarted, f.Tenant.Name)
		} else {
			failed = append(failed, f.Tenant.Name)
		}
	}
	var b strings.Builder
	if len(failed) > 0 {
		fmt.Fprintf(&b, "%s failed for %d of %d tenants: %s", what, len(failed), len(tenants), nameList(failed))
	}
	if len(notStarted) > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "interrupted: %d of %d tenants not started: %s", len(notStarted), len(tenants), nameList(notStarted))
	}
	return cli.Exit(b.String(), exitRuntime)
}

// summaryNames is how many tenants a summary names; the output above it
// has them all.
const summaryNames = 20

// nameList is names joined, the first summaryNames of them.
func nameList(names []string) string {
	if len(names) <= summaryNames {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:summaryNames], ", "), len(names)-summaryNames)
}

// currentUser is the user libpq would connect as when neither --user nor
// PGUSER says: the operating system user.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}
