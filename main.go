// Command pgtenant is a PostgreSQL pooling proxy that gives every tenant its
// own schema on one shared pool of server connections.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/bench"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// Exit codes: 1 for a usage or validation error the user can fix, 2 for a
// runtime failure (backend unreachable, listener lost).
const (
	exitUsage   = 1
	exitRuntime = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := app()
	if err := a.RunContext(ctx, flagsFirst(a, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "pgtenant:", err)
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(exitUsage)
	}
}

func app() *cli.App {
	serveFlags := config.ServeFlags()
	demoFlags := config.ServeFlags()
	createFlags := append(config.BackendFlags(), &cli.StringFlag{
		Name: "schema", Usage: "schema that holds the tenant's tables (default: the tenant name)",
	})
	createFlags = append(createFlags, config.IsolationFlags()...)
	listFlags := config.BackendFlags()
	return &cli.App{
		Name:  "pgtenant",
		Usage: "schema-per-tenant PostgreSQL pooling proxy",
		Commands: []*cli.Command{
			{
				Name:   "serve",
				Usage:  "serve clients on --listen, routing each to its tenant's schema on a shared pool",
				Flags:  serveFlags,
				Before: config.LoadConfigFile(serveFlags),
				Action: serve,
			},
			{
				Name:  "tenant",
				Usage: "manage tenants in the registry (pgtenant.tenants in the backend database)",
				Subcommands: []*cli.Command{
					{
						Name:      "create",
						Usage:     "create a tenant and its schema; running it again is harmless",
						ArgsUsage: "NAME",
						Flags:     createFlags,
						Before:    config.LoadConfigFile(createFlags),
						Action:    tenantCreate,
					},
					{
						Name:   "list",
						Usage:  "list tenants",
						Flags:  listFlags,
						Before: config.LoadConfigFile(listFlags),
						Action: tenantList,
					},
					tenantIsolateCommand(),
					tenantGrantCommand(),
					tenantRevokeCommand(),
					tenantAliasCommand(),
				},
			},
			userCommand(),
			{
				Name: "demo",
				Usage: "start a throwaway local PostgreSQL with tenants acme and globex and serve it " +
					"(trust authentication on loopback; everything is removed on exit)",
				Flags:  demoFlags,
				Before: config.LoadConfigFile(demoFlags),
				Action: demo,
			},
			{
				Name: "bench",
				Usage: "benchmark pgtenant side by side with PgBouncer and a direct connection " +
					"(pgbench; starts a throwaway PostgreSQL and PgBouncer unless told where they are)",
				Flags:  bench.Flags(),
				Action: bench.Command,
			},
		},
	}
}

func serve(c *cli.Context) error {
	cfg, err := config.FromContext(c)
	if err != nil {
		return cli.Exit(err, exitUsage)
	}
	log := config.NewLogger(cfg, os.Stderr)
	if err := proxy.Run(c.Context, cfg, log); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	return nil
}

// withAdminConn connects to the backend named by --backend for an admin
// command, runs f on the connection and closes it.
func withAdminConn(c *cli.Context, f func(conn *pgx.Conn) error) error {
	dsn := c.String("backend")
	if dsn == "" {
		return cli.Exit("--backend (or PGTENANT_BACKEND, or backend in --config) is required", exitUsage)
	}
	conn, err := pgx.Connect(c.Context, dsn)
	if err != nil {
		return cli.Exit(fmt.Errorf("connect to backend: %w", err), exitRuntime)
	}
	defer conn.Close(context.Background())
	return f(conn)
}

func tenantCreate(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant tenant create NAME [--schema SCHEMA] --backend DSN", exitUsage)
	}
	name := c.Args().First()
	// Validate before connecting, so a bad name fails fast and alone.
	if err := router.ValidateTenantName(name); err != nil {
		return cli.Exit(err, exitUsage)
	}
	if s := c.String("schema"); s != "" {
		if err := router.ValidateSchemaName(s); err != nil {
			return cli.Exit(err, exitUsage)
		}
	}
	secret, err := createSecret(c)
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		t, created, err := router.CreateTenant(c.Context, conn, name, c.String("schema"))
		if err != nil {
			return adminExit(err)
		}
		if created {
			fmt.Printf("created tenant %s (schema %s)\n", t.Name, t.Schema)
		} else {
			fmt.Printf("tenant %s already exists (schema %s)\n", t.Name, t.Schema)
		}
		return isolateCreated(c, conn, t, secret)
	})
}

func tenantList(c *cli.Context) error {
	return withAdminConn(c, func(conn *pgx.Conn) error {
		ts, err := router.ListTenants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		aliases, err := router.ListAliases(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		byTenant := aliasesByTenant(aliases)
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSCHEMA\tACTIVE\tALIASES")
		for _, t := range ts {
			fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", t.Name, t.Schema, t.Active, strings.Join(byTenant[t.Name], ","))
		}
		return w.Flush()
	})
}
