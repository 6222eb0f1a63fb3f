package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// The backends (issue 16): the servers tenants can be placed on, kept in
// pgtenant.backends next to the registry. The backend called default is
// the registry's own server, reached with --backend (or --registry).

func backendCommand() *cli.Command {
	return &cli.Command{
		Name: "backend",
		Usage: "manage the PostgreSQL servers tenants can be placed on (pgtenant.backends); " +
			"the backend called default is the registry's own server",
		Subcommands: []*cli.Command{
			adminCommand("add",
				"record a server tenants can be placed on (tenant create NAME --on BACKEND); "+
					"DSN holds no password: give it to every pgtenant process in PGPASSFILE, ~/.pgpass or PGPASSWORD; "+
					"running it again is harmless",
				"NAME DSN", backendAdd),
			adminCommand("remove", "forget a backend; refused while tenants are placed on it",
				"NAME", backendRemove),
			adminCommand("list", "list the backends, with how many tenants each holds", "", backendList),
		},
	}
}

// backendExit gives a backend command's error its exit code: what the
// person can correct (a name, a DSN with a password, a backend still in
// use, an unknown backend) is a usage error.
func backendExit(err error) error {
	var inUse *router.BackendInUseError
	var unknown *router.UnknownBackendError
	if errors.As(err, &inUse) || errors.As(err, &unknown) {
		return cli.Exit(err, exitUsage)
	}
	return adminExit(err)
}

func backendAdd(c *cli.Context) error {
	if c.NArg() != 2 {
		return cli.Exit("usage: pgtenant backend add NAME DSN", exitUsage)
	}
	name, dsn := c.Args().Get(0), c.Args().Get(1)
	// Checked before connecting, so that a DSN with a password is refused
	// whether or not the registry answers.
	if err := router.ValidateBackendName(name); err != nil {
		return cli.Exit(err, exitUsage)
	}
	if err := router.CheckBackendDSN(dsn); err != nil {
		return cli.Exit(fmt.Errorf("backend %q: %w", name, err), exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		if err := router.AddBackend(c.Context, conn, name, dsn); err != nil {
			if strings.Contains(err.Error(), "remove it first") || name == router.DefaultBackend {
				return cli.Exit(err, exitUsage)
			}
			return backendExit(err)
		}
		fmt.Fprintf(c.App.Writer, "backend %s: %s\n", name, dsn)
		return nil
	})
}

func backendRemove(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant backend remove NAME", exitUsage)
	}
	name := c.Args().First()
	if err := router.ValidateBackendName(name); err != nil {
		return cli.Exit(err, exitUsage)
	}
	if name == router.DefaultBackend {
		return cli.Exit("backend default is the registry's own server and cannot be removed", exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		removed, err := router.RemoveBackend(c.Context, conn, name)
		if err != nil {
			return backendExit(err)
		}
		if !removed {
			return cli.Exit(&router.UnknownBackendError{Name: name}, exitUsage)
		}
		fmt.Fprintf(c.App.Writer, "removed backend %s\n", name)
		return nil
	})
}

func backendList(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit("usage: pgtenant backend list", exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		bs, err := router.ListBackends(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		ts, err := router.ListTenants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		count := map[string]int{}
		for _, t := range ts {
			count[t.BackendOf()]++
		}
		tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTENANTS\tDSN")
		for _, b := range bs {
			dsn := b.DSN
			if b.Name == router.DefaultBackend {
				dsn = "(the registry's server: --backend)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\n", b.Name, count[b.Name], dsn)
		}
		return tw.Flush()
	})
}

// withBackendConn runs f with a connection to backend: the admin
// connection itself for the default backend, else one opened with the
// backend's DSN and the credentials of the environment or passfile.
func withBackendConn(ctx context.Context, conn *pgx.Conn, backend string, f func(target *pgx.Conn) error) error {
	if backend == "" || backend == router.DefaultBackend {
		return f(conn)
	}
	target, err := router.ConnectBackend(ctx, conn, backend)
	if err != nil {
		var unknown *router.UnknownBackendError
		if errors.As(err, &unknown) {
			return cli.Exit(err, exitUsage)
		}
		return cli.Exit(fmt.Errorf("%w (the backend's DSN holds no password: give it in PGPASSFILE, ~/.pgpass or PGPASSWORD)", err), exitRuntime)
	}
	defer target.Close(context.WithoutCancel(ctx))
	return f(target)
}

// refuseElsewhere refuses to run command for tenants placed on a backend
// other than the registry's: the command works on the registry's server
// (its schemas, its pg_dump), and running it there for a tenant whose
// schema lives elsewhere would miss the tenant's tables, or hit a stale
// copy a move left behind. All such tenants are named in one error,
// before anything runs.
func refuseElsewhere(tenants []router.Tenant, command string) error {
	var elsewhere []string
	for _, t := range tenants {
		if t.BackendOf() != router.DefaultBackend {
			elsewhere = append(elsewhere, fmt.Sprintf("%s (on %s)", t.Name, t.BackendOf()))
		}
	}
	if len(elsewhere) == 0 {
		return nil
	}
	return cli.Exit(fmt.Sprintf("pgtenant %s works on the registry's own server only, and these tenants are placed on another backend: %s; "+
		"name the tenants on the default backend (--tenant NAME)%s, or move these back first (pgtenant tenant move NAME --to default)",
		command, strings.Join(elsewhere, ", "), viaProxy(command)), exitUsage)
}

// refuseTenantElsewhere is refuseElsewhere for one tenant named on the
// command line. A tenant that does not exist passes: the command itself
// says so.
func refuseTenantElsewhere(ctx context.Context, conn *pgx.Conn, name, command string) error {
	ts, err := router.ListTenants(ctx, conn)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	for _, t := range ts {
		if t.Name == name {
			return refuseElsewhere([]router.Tenant{t}, command)
		}
	}
	return nil
}

// viaProxy suggests --proxy to the commands that can reach tenants through
// a running pgtenant, which routes each to its backend.
func viaProxy(command string) string {
	if strings.HasSuffix(command, "exec") {
		return ", run it through a pgtenant (--proxy HOST:PORT)"
	}
	return ""
}
