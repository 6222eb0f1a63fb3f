// Package cli is pgtenant's command line: the command tree, one action per
// command, and the exit codes. The root package's main only calls Main.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

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

// Main runs the command named by os.Args and exits with its exit code.
func Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is Main without the exit: it runs the command and prints its error,
// if any, on stderr, and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	code, err := Run(ctx, args, stdin, stdout, stderr)
	if err != nil {
		printError(stderr, err)
	}
	return code
}

// printError prints err with "pgtenant: " in front of each of its lines,
// once: a message that says it already is not prefixed again, and an
// indented line continues the one above it (each's list of failed
// tenants), so it stays as it is. It is the one place errors reach the
// user; cli's own printing is turned off (app's ExitErrHandler).
func printError(w io.Writer, err error) {
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			fmt.Fprintln(w, line)
			continue
		}
		for strings.HasPrefix(line, "pgtenant:") {
			line = strings.TrimSpace(strings.TrimPrefix(line, "pgtenant:"))
		}
		fmt.Fprintln(w, "pgtenant:", line)
	}
}

// notifyReload returns a channel that receives after every SIGHUP, for
// proxy.WithReload, and the function that stops listening for it. SIGHUPs
// that arrive while a reload is pending merge into it, since one reload
// rereads every file. It is the one place that handles SIGHUP, as Main is
// for SIGINT and SIGTERM; until stop, a SIGHUP no longer kills the process.
func notifyReload() (reload <-chan struct{}, stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				select {
				case ch <- struct{}{}:
				default: // one is pending already
				}
			case <-done:
				return
			}
		}
	}()
	return ch, func() {
		close(done)
		signal.Stop(hup)
	}
}

// runProxy is serve and demo's proxy: it serves until ctx ends (SIGINT,
// SIGTERM) and, on SIGHUP meanwhile, builds its config again with load
// (the file reread; flags and environment as they were) and rereads the
// files it names. level is the logger's level, which a reload may change.
func runProxy(ctx context.Context, cfg config.Config, log *slog.Logger, level *slog.LevelVar,
	load func() (config.Config, error)) error {
	reload, stop := notifyReload()
	defer stop()
	return proxy.Run(ctx, cfg, log, proxy.WithReload(reload), proxy.WithConfigLoader(load), proxy.WithLogLevel(level))
}

func app() *cli.App {
	serveFlags := config.ServeFlags()
	demoFlags := config.ServeFlags()
	createFlags := append(config.BackendFlags(), &cli.StringFlag{
		Name: "schema", Usage: "schema that holds the tenant's tables (default: the tenant name)",
	}, &cli.BoolFlag{
		Name: "adopt-schema", Usage: "make an existing schema that already holds tables (or other objects) the tenant's",
	}, &cli.StringFlag{
		Name: "on", Value: router.DefaultBackend, Usage: "the backend to place the tenant on (pgtenant backend list); " +
			"its schema is created there, and in --isolation role its role too",
	}, &cli.StringFlag{
		Name: "pool-role", Usage: "role that runs tenant traffic (serve's --backend role), recorded once in the registry; " +
			"it gets USAGE and CREATE on every tenant schema and all privileges on what is in them, nothing on the registry",
	})
	createFlags = append(createFlags, config.IsolationFlags()...)
	a := &cli.App{
		Name:    "pgtenant",
		Usage:   "schema-per-tenant PostgreSQL pooling proxy",
		Version: versionLine(),
		// Errors are printed once, by run, with the prefix: cli's
		// default handler printed them bare and exited before that.
		ExitErrHandler: func(*cli.Context, error) {},
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
				Subcommands: append([]*cli.Command{
					{
						Name:      "create",
						Usage:     "create a tenant and its schema; running it again is harmless",
						ArgsUsage: "NAME",
						Flags:     createFlags,
						Before:    config.LoadConfigFile(createFlags),
						Action:    tenantCreate,
					},
					tenantListCommand(),
					tenantSetCommand(),
					tenantUnsetCommand(),
					tenantShowCommand(),
					tenantIsolateCommand(),
					tenantGrantCommand(),
					tenantRevokeCommand(),
					tenantAliasCommand(),
				}, append(lifecycleCommands(), tenantMoveCommand(), tenantCleanupCommand())...),
			},
			userCommand(),
			backendCommand(),
			migrateCommand(),
			execCommand(),
			eachCommand(),
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
			versionCommand(),
		},
	}
	oneLineUsageErrors(a)
	return a
}

func serve(c *cli.Context) error {
	cfg, err := config.FromContext(c)
	if err != nil {
		return cli.Exit(err, exitUsage)
	}
	level := new(slog.LevelVar)
	log := config.NewLevelLogger(cfg, os.Stderr, level)
	if err := runProxy(c.Context, cfg, log, level, config.Reloader(c)); err != nil {
		return cli.Exit(err, serveExitCode(err))
	}
	return nil
}

// serveExitCode is exitUsage for a refusal the operator fixes in the setup
// (a privileged backend role), exitRuntime otherwise.
func serveExitCode(err error) int {
	var privileged *router.PrivilegedBackendError
	if errors.As(err, &privileged) {
		return exitUsage
	}
	return exitRuntime
}

// withAdminConn connects for an admin command, with --registry (the admin
// role that owns the registry) when it is set and --backend otherwise, runs
// f on the connection and closes it.
func withAdminConn(c *cli.Context, f func(conn *pgx.Conn) error) error {
	dsn := c.String("registry")
	if dsn == "" {
		dsn = c.String("backend")
	}
	if dsn == "" {
		return cli.Exit("--registry or --backend (or PGTENANT_REGISTRY, PGTENANT_BACKEND, or registry or backend in --config) is required", exitUsage)
	}
	conn, err := pgx.Connect(c.Context, dsn)
	if err != nil {
		return cli.Exit(config.NewConnectError(adminTarget(c), dsn, err), exitRuntime)
	}
	defer conn.Close(context.Background())
	return f(conn)
}

// adminTarget names, for a connection error, the flag an admin command
// connected with.
func adminTarget(c *cli.Context) string {
	if c.String("registry") != "" {
		return "the registry (--registry)"
	}
	return "the database (--backend)"
}

func tenantCreate(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant tenant create NAME [--on BACKEND] [--schema SCHEMA] [--adopt-schema] [--pool-role ROLE] --registry DSN", exitUsage)
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
	on := c.String("on")
	if err := router.ValidateBackendName(on); err != nil {
		return cli.Exit(err, exitUsage)
	}
	secret, err := createSecret(c)
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		var opts []router.CreateOption
		if c.Bool("adopt-schema") {
			opts = append(opts, router.AdoptSchema())
		}
		if r := c.String("pool-role"); r != "" {
			opts = append(opts, router.PoolRole(r))
		}
		// The schema is made on the tenant's backend, through a
		// connection of its own for any but the registry's server.
		return withBackendConn(c.Context, conn, on, func(target *pgx.Conn) error {
			opts = append(opts, router.OnBackend(on, target))
			t, created, err := router.CreateTenant(c.Context, conn, name, c.String("schema"), opts...)
			if err != nil {
				return backendExit(err)
			}
			where := ""
			if t.BackendOf() != router.DefaultBackend {
				where = ", on backend " + t.BackendOf()
			}
			if created {
				fmt.Printf("created tenant %s (schema %s%s)\n", t.Name, t.Schema, where)
			} else {
				fmt.Printf("tenant %s already exists (schema %s%s)\n", t.Name, t.Schema, where)
			}
			return isolateCreated(c, conn, t, secret)
		})
	})
}
